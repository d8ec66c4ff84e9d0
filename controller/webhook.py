"""The Alertmanager webhook: a firing alert matched to a rollout rolls it back in seconds.

``POST /alertmanager/webhook`` with ``Authorization: Bearer <token>`` (Alertmanager's
``http_config.authorization.credentials_file``). The token comes from a file mounted from
a Secret (re-read on change, so rotation needs no restart) or ``$MODELROLLOUT_WEBHOOK_TOKEN``;
it is compared in constant time. No token configured, a missing or a wrong one: 401 and
nothing changes.

Matching: an alert matches a rollout whose ``spec.alerts.enabled`` is true when the
alert carries every label of ``spec.alerts.matchLabels`` (a non-empty set), or carries
``modelrollout=<rollout name>`` (and, if it has a ``namespace`` label, the rollout's
namespace). Only ``status: firing`` alerts count.

What it writes: the alert (fingerprint, startsAt, name, summary) into the rollout's
``status.alerts``, with the resourceVersion it read (retried on conflict). The leader's
watch sees the new alert at once and its decision rolls the rollout back: status first,
then the serving ConfigMap. An alert is handled once per firing (fingerprint and startsAt),
however often Alertmanager repeats it.

Every replica serves the webhook, the leader and the standbys alike (the Service spreads
requests over them): it matches against the ModelRollouts it lists from the API server
for each request, never against what a watch of its own has shown it, and it writes
nothing but ``status.alerts``. Whenever it cannot list or cannot record, it answers 503,
and Alertmanager retries; a 200 means every matched alert is in the rollout's status.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from controller import metrics
from controller.kube import Kube, KubeError
from controller.model import (
    ALERTS_LIMIT,
    DEFAULT_ALERT_LABEL,
    ReceivedAlert,
    parse_status,
    utcnow,
)

log = logging.getLogger(__name__)

PATH: Final = "/alertmanager/webhook"
TOKEN_ENV: Final = "MODELROLLOUT_WEBHOOK_TOKEN"
MAX_BODY: Final = 1 << 20


@dataclass(frozen=True)
class RolloutRef:
    """What matching needs to know about one rollout."""

    namespace: str
    name: str
    enabled: bool
    match_labels: Mapping[str, str]


def matches(labels: Mapping[str, str], rollout: RolloutRef) -> bool:
    """Whether an alert with ``labels`` is about ``rollout``.

    >>> r = RolloutRef("prod", "suggest-v2", True, {"service": "suggest"})
    >>> matches({"service": "suggest", "severity": "page"}, r)
    True
    >>> matches({"modelrollout": "suggest-v2", "namespace": "dev"}, r)
    False
    >>> matches({"modelrollout": "suggest-v2"}, r)
    True
    """
    if not rollout.enabled:
        return False
    if labels.get(DEFAULT_ALERT_LABEL) == rollout.name:
        return labels.get("namespace", rollout.namespace) == rollout.namespace
    if not rollout.match_labels:
        return False
    return all(labels.get(k) == v for k, v in rollout.match_labels.items())


def firing_alerts(payload: Mapping[str, Any]) -> list[tuple[dict[str, str], ReceivedAlert]]:
    """(labels, alert) for each firing alert of an Alertmanager webhook payload."""
    out: list[tuple[dict[str, str], ReceivedAlert]] = []
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise ValueError("payload has no alerts list")
    now = utcnow()
    for raw in alerts:
        if not isinstance(raw, dict) or raw.get("status") != "firing":
            continue
        labels = {str(k): str(v) for k, v in (raw.get("labels") or {}).items()}
        fingerprint = str(raw.get("fingerprint") or "")
        if not fingerprint:
            # Alertmanager always sends one; a hand-made payload gets one from its labels.
            fingerprint = "labels:" + ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        annotations = raw.get("annotations") or {}
        out.append(
            (
                labels,
                ReceivedAlert(
                    fingerprint=fingerprint[:128],
                    starts_at=str(raw.get("startsAt") or "")[:64],
                    alertname=labels.get("alertname", "")[:128],
                    summary=str(annotations.get("summary", ""))[:256],
                    received=now,
                ),
            )
        )
    return out


class TokenSource:
    """The expected bearer token, from a file (re-read when it changes) or the environment."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._mtime: float | None = None
        self._token: str | None = os.environ.get(TOKEN_ENV) or None

    def current(self) -> str | None:
        if self._path is None:
            return self._token
        try:
            mtime = self._path.stat().st_mtime
            if mtime != self._mtime:
                self._token = self._path.read_text().strip() or None
                self._mtime = mtime
        except OSError:
            log.warning("webhook token file %s unreadable: every request is refused", self._path)
            self._token = None
        return self._token

    def accepts(self, header: str | None) -> bool:
        expected = self.current()
        if not expected or not header or not header.startswith("Bearer "):
            return False
        given = header.removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode(), expected.encode())


async def record_alert(kube: Kube, ref: RolloutRef, alert: ReceivedAlert) -> bool:
    """Add ``alert`` to the rollout's ``status.alerts``; False when it was already known."""
    for _ in range(5):
        body = await kube.get_rollout(ref.namespace, ref.name)
        status = parse_status(body.get("status"))
        if alert.key in status.handled_alerts or any(a.key == alert.key for a in status.alerts):
            return False
        alerts = [a.dump() for a in status.alerts] + [alert.dump()]
        try:
            await kube.patch_rollout_status(
                ref.namespace,
                ref.name,
                {"alerts": alerts[-ALERTS_LIMIT:]},
                body["metadata"]["resourceVersion"],
            )
        except KubeError as exc:
            if exc.conflict:
                continue
            raise
        return True
    raise KubeError(409, "Conflict", f"status of {ref.namespace}/{ref.name} kept changing")


def webhook_app(
    tokens: TokenSource,
    rollouts: Callable[[], Awaitable[Iterable[RolloutRef]]],
    record: Callable[[RolloutRef, ReceivedAlert], Awaitable[bool]],
) -> web.Application:
    """The aiohttp app; ``rollouts`` lists the rollouts (raising KubeError when it cannot),
    ``record`` writes one alert into one rollout's status."""

    async def receive(request: web.Request) -> web.Response:
        if not tokens.accepts(request.headers.get("Authorization")):
            metrics.WEBHOOK_REQUESTS.labels("unauthorized").inc()
            return web.json_response({"error": "unauthorized"}, status=401)
        try:
            payload = await request.json()
            if not isinstance(payload, dict):
                raise ValueError("payload is not an object")
            alerts = firing_alerts(payload)
        except ValueError as exc:
            metrics.WEBHOOK_REQUESTS.labels("invalid").inc()
            return web.json_response({"error": f"invalid payload: {exc}"}, status=400)

        matched: list[dict[str, str]] = []
        try:
            known = list(await rollouts()) if alerts else []
            for labels, alert in alerts:
                for ref in known:
                    if matches(labels, ref):
                        new = await record(ref, alert)
                        matched.append(
                            {
                                "rollout": f"{ref.namespace}/{ref.name}",
                                "alert": alert.alertname or alert.fingerprint,
                                "new": str(new).lower(),
                            }
                        )
        except KubeError as exc:
            # Alertmanager retries a failed notification: let it.
            log.warning("webhook could not record an alert: %s", exc)
            metrics.WEBHOOK_REQUESTS.labels("error").inc()
            return web.json_response({"error": str(exc), "matched": matched}, status=503)
        metrics.WEBHOOK_REQUESTS.labels("matched" if matched else "unmatched").inc()
        if matched:
            log.info("alerts matched rollouts: %s", matched)
        return web.json_response({"matched": matched})

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post(PATH, receive)
    return app
