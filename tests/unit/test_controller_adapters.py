"""The adapters' pure parts: merge patches, the API error mapping, Lease reports, watch
triggers, and the Alertmanager webhook (its aiohttp app, served on loopback in-process)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import kopf
import pytest
from aiohttp.test_utils import TestClient, TestServer

from controller.handlers import Controller, Settings, lease_report
from controller.kube import KubeError, kopf_error, merge_patch
from controller.model import ReceivedAlert
from controller.webhook import RolloutRef, TokenSource, firing_alerts, matches, webhook_app
from service.serving_config import REPORT_ANNOTATION, TARGET_LABEL

pytestmark = pytest.mark.unit


def test_merge_patch_nulls_removed_keys_and_replaces_lists() -> None:
    old = {
        "phase": "Canary",
        "stepIndex": 1,
        "serving": {"candidate": "v2", "stable": "v1"},
        "history": [1],
    }
    new = {"phase": "RolledBack", "serving": {"stable": "v1"}, "history": [1, 2]}
    assert merge_patch(old, new) == {
        "history": [1, 2],
        "phase": "RolledBack",
        "serving": {"candidate": None},
        "stepIndex": None,
    }
    assert merge_patch(new, new) == {}


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (0, kopf.TemporaryError),
        (409, kopf.TemporaryError),
        (429, kopf.TemporaryError),
        (503, kopf.TemporaryError),
        (403, kopf.PermanentError),
        (422, kopf.PermanentError),
    ],
)
def test_api_errors_map_to_retry_or_give_up(status: int, kind: type[Exception]) -> None:
    assert isinstance(kopf_error(KubeError(status, "R", "m"), "writing status"), kind)


def lease(
    report: dict[str, Any] | str, renew: str = "2026-01-01T00:00:00.000000Z"
) -> dict[str, Any]:
    raw = report if isinstance(report, str) else json.dumps(report)
    return {
        "namespace": "prod",
        "labels": {TARGET_LABEL: "suggest"},
        "annotations": {REPORT_ANNOTATION: raw},
        "spec": {"renewTime": renew, "leaseDurationSeconds": 15},
    }


def test_lease_report_keys_by_namespace_and_target_with_expiry() -> None:
    got = lease_report(**lease({"pod": "a", "generation": 7}))
    entry = got[("prod", "suggest")]
    assert entry.report.generation == 7
    assert entry.expires == 1767225600.0 + 15


@pytest.mark.parametrize("bad", ["not json", json.dumps({"pod": "a"}), json.dumps([1])])
def test_unreadable_lease_reports_are_skipped(bad: str) -> None:
    assert lease_report(**lease(bad)) == {}


def test_live_reports_drop_expired_leases() -> None:
    a = lease_report(**lease({"pod": "a", "generation": 1}))[("prod", "suggest")]
    index = {("prod", "suggest"): [a]}
    assert len(Controller.live_reports(index, "prod", "suggest", a.expires - 1)) == 1
    assert Controller.live_reports(index, "prod", "suggest", a.expires + 1) == []


@pytest.mark.parametrize(
    ("meta", "status", "needed"),
    [
        ({"generation": 2}, {"observedGeneration": 2}, False),
        ({"generation": 3}, {"observedGeneration": 2}, True),
        (
            {"generation": 2},
            {"observedGeneration": 2, "alerts": [{"fingerprint": "f", "startsAt": "s"}]},
            True,
        ),
        (
            {"generation": 2},
            {
                "observedGeneration": 2,
                "alerts": [{"fingerprint": "f", "startsAt": "s"}],
                "handledAlerts": ["f@s"],
            },
            False,
        ),
        (
            {"generation": 2, "annotations": {"modelrollout.io/promote": "t"}},
            {"observedGeneration": 2},
            True,
        ),
        (
            {"generation": 2, "annotations": {"modelrollout.io/abort": "t"}},
            {"observedGeneration": 2, "handledAbort": "t"},
            False,
        ),
    ],
)
def test_watch_events_that_need_an_answer_now(
    meta: dict[str, Any], status: dict[str, Any], needed: bool
) -> None:
    body = {"metadata": {"uid": "u", "name": "r", "namespace": "n", **meta}, "status": status}
    assert Controller(Settings()).needs_attention(body) is needed


# ------------------------------------------------------------------------------ webhook

REF = RolloutRef("prod", "suggest-v2", True, {"team": "ml"})


@pytest.mark.parametrize(
    ("labels", "ref", "expected"),
    [
        ({"team": "ml", "alertname": "X"}, REF, True),
        ({"team": "web"}, REF, False),
        ({"modelrollout": "suggest-v2"}, REF, True),
        ({"modelrollout": "suggest-v2", "namespace": "prod"}, REF, True),
        ({"modelrollout": "suggest-v2", "namespace": "dev"}, REF, False),
        ({"team": "ml"}, RolloutRef("prod", "x", False, {"team": "ml"}), False),
        ({"team": "ml"}, RolloutRef("prod", "x", True, {}), False),
    ],
)
def test_alert_matching(labels: dict[str, str], ref: RolloutRef, expected: bool) -> None:
    assert matches(labels, ref) is expected


def test_only_firing_alerts_are_taken() -> None:
    payload = {"alerts": [
        {"status": "firing", "fingerprint": "a1", "startsAt": "t", "labels": {"alertname": "A"},
         "annotations": {"summary": "bad"}},
        {"status": "resolved", "fingerprint": "b2", "labels": {"alertname": "B"}},
    ]}  # fmt: skip
    got = firing_alerts(payload)
    assert [(a.fingerprint, a.alertname, a.summary, a.key) for _, a in got] == [
        ("a1", "A", "bad", "a1@t")
    ]
    with pytest.raises(ValueError, match="alerts"):
        firing_alerts({"nope": 1})


def test_token_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("one\n")
    tokens = TokenSource(path)
    assert tokens.accepts("Bearer one")
    assert not tokens.accepts("Bearer two")
    assert not tokens.accepts("one")
    assert not tokens.accepts(None)
    path.write_text("two\n")
    os.utime(path, (1, 1))
    assert tokens.accepts("Bearer two")


def test_no_token_configured_refuses_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELROLLOUT_WEBHOOK_TOKEN")
    assert not TokenSource(None).accepts("Bearer ")
    assert not TokenSource(None).accepts("Bearer anything")


@pytest.fixture(autouse=True)
def _webhook_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELROLLOUT_WEBHOOK_TOKEN", "s3cret")


def _run_webhook(
    headers: dict[str, str], payload: Any, *, listing: KubeError | None = None
) -> tuple[int, Any, list[Any]]:
    recorded: list[tuple[RolloutRef, ReceivedAlert]] = []

    async def rollouts() -> list[RolloutRef]:
        if listing is not None:
            raise listing
        return [REF]

    async def record(ref: RolloutRef, alert: ReceivedAlert) -> bool:
        recorded.append((ref, alert))
        return True

    async def go() -> tuple[int, Any]:
        tokens = TokenSource(None)
        app = webhook_app(tokens, rollouts, record)
        async with TestClient(TestServer(app)) as client:
            resp = await client.post("/alertmanager/webhook", json=payload, headers=headers)
            return resp.status, await resp.json()

    status, body = asyncio.run(go())
    return status, body, recorded


FIRING = {
    "version": "4",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "fingerprint": "f1",
            "startsAt": "t",
            "labels": {"team": "ml", "alertname": "X"},
        },
    ],
}


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "s3cret"}]
)
def test_webhook_refuses_without_the_token_and_records_nothing(headers: dict[str, str]) -> None:
    status, _, recorded = _run_webhook(headers, FIRING)
    assert status == 401
    assert recorded == []


def test_webhook_records_a_matched_firing_alert() -> None:
    status, body, recorded = _run_webhook({"Authorization": "Bearer s3cret"}, FIRING)
    assert status == 200
    assert body["matched"] == [{"rollout": "prod/suggest-v2", "alert": "X", "new": "true"}]
    assert recorded[0][1].fingerprint == "f1"


def test_webhook_rejects_a_malformed_payload() -> None:
    status, body, recorded = _run_webhook({"Authorization": "Bearer s3cret"}, [1, 2])
    assert status == 400
    assert "invalid payload" in body["error"]
    assert recorded == []


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(KubeError(0, "Unreachable", "connection refused"), id="apiserver-down"),
        pytest.param(KubeError(403, "Forbidden", "cannot list"), id="forbidden"),
    ],
)
def test_webhook_that_cannot_list_rollouts_answers_503_so_alertmanager_retries(
    error: KubeError,
) -> None:
    """Before: matching used an in-memory map (empty on a standby or at start-up) and
    answered 200 with nothing matched, which Alertmanager never retries."""
    status, body, recorded = _run_webhook({"Authorization": "Bearer s3cret"}, FIRING,
                                          listing=error)  # fmt: skip
    assert status == 503
    assert recorded == []
    assert body["matched"] == []
