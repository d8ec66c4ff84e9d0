"""The controller as users run it (``python -m controller``) against a real API server and
a real Prometheus. Pods are stood in for by what the controller actually reads: report
Leases written by the test, and the service's metrics served by a loopback exporter that
a background thread feeds like traffic would (good, disagreeing or slow candidate).

Timing: analysis every 1 s over a 5 s window, Prometheus scraping every 1 s; every wait
polls a condition with a deadline.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.metric_names import (
    INFERENCE_BUCKETS,
    INFERENCE_SECONDS,
    MODEL_ERRORS_TOTAL,
    SHADOW_COMPARISONS_TOTAL,
)
from service.serving_config import (
    ServingConfig,
    configmap_name,
)
from testbed.alertmanager import Alertmanager
from testbed.controlplane import ControlPlane
from testbed.exporter import MetricsExporter
from testbed.process import wait_until
from testbed.prometheus import Prometheus, ScrapeTarget
from testbed.stack import CRD, Cluster, ControllerProcess, rollout_body

TARGET = "suggest"

# ------------------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def crd(control_plane: ControlPlane) -> None:
    control_plane.kubectl("apply", "-f", str(CRD))
    control_plane.wait_established("modelrollouts.modelrollout.io")


class FakeTraffic:
    """Feeds the exporter the service's metrics for one candidate, ~100 comparisons/s."""

    def __init__(self, exporter: MetricsExporter, candidate: str) -> None:
        self.exporter = exporter
        self.candidate = candidate
        self.agreement = 0.97
        self.latency = 0.002
        self.error_rate = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FakeTraffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        e, v = self.exporter, self.candidate
        while not self._stop.wait(0.1):
            agree = round(10 * self.agreement)
            for category, n in (("coffee", agree // 2), ("rent", agree - agree // 2)):
                e.inc(
                    SHADOW_COMPARISONS_TOTAL,
                    n,
                    {
                        "baseline": "stable",
                        "baseline_version": "none",
                        "shadow_version": v,
                        "category": category,
                        "agree": "true",
                    },
                )
            e.inc(
                SHADOW_COMPARISONS_TOTAL,
                10 - agree,
                {
                    "baseline": "stable",
                    "baseline_version": "none",
                    "shadow_version": v,
                    "category": "coffee",
                    "agree": "false",
                },
            )
            labels = {"role": "candidate", "model_version": v}
            for le in [*INFERENCE_BUCKETS, float("inf")]:
                if self.latency <= le:
                    e.inc(f"{INFERENCE_SECONDS}_bucket", 10, {**labels, "le": _le(le)})
                else:
                    e.inc(f"{INFERENCE_SECONDS}_bucket", 0, {**labels, "le": _le(le)})
            e.inc(f"{INFERENCE_SECONDS}_count", 10, labels)
            e.inc(f"{INFERENCE_SECONDS}_sum", 10 * self.latency, labels)
            e.inc(MODEL_ERRORS_TOTAL, 10 * self.error_rate, labels)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


@pytest.fixture
def env(
    crd: None,
    control_plane: ControlPlane,
    namespace: str,
    prometheus: Prometheus,
    metrics_exporter: MetricsExporter,
    tmp_path: Path,
) -> Iterator[tuple[Cluster, ControllerProcess]]:
    # The exporter stands in for the pods of target TARGET (which label every series).
    prometheus.set_targets([ScrapeTarget(metrics_exporter.address, labels={"target": TARGET})])
    controller = ControllerProcess(control_plane, namespace, tmp_path, prometheus.url)
    controller.start()
    try:
        yield Cluster(control_plane, namespace), controller
    finally:
        controller.stop()


def phase_is(*phases: str) -> Callable[[dict[str, Any]], bool]:
    return lambda st: st.get("phase") in phases


# ------------------------------------------------------------------------------ apiserver only


def test_rollout_is_reconciled_into_the_serving_configmap_and_status(
    env: tuple[Cluster, ControllerProcess], prometheus: Prometheus
) -> None:
    cluster, controller = env
    cluster.apply(rollout_body("r1", "v2", prometheus.url))
    st = cluster.wait_status("r1", phase_is("Shadow"), "phase Shadow", controller)
    assert st["candidateVersion"] == "v2"
    serving = wait_until(cluster.serving, timeout=10, what="the serving ConfigMap")
    assert (serving.stable, serving.candidate, serving.shadow_percent) == (None, "v2", 100.0)
    assert serving.generation == st["servingGeneration"]
    assert serving.rollout == f"{cluster.ns}/r1"
    cm = json.loads(cluster.kubectl("get", "configmap", configmap_name(TARGET), "-o", "json"))
    owner = cm["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("ModelRollout", "r1")
    assert any(e["reason"] == "Started" for e in cluster.events("r1"))


def test_convergence_follows_the_pods_reports(
    env: tuple[Cluster, ControllerProcess], prometheus: Prometheus
) -> None:
    cluster, controller = env
    cluster.apply(rollout_body("r2", "v2", prometheus.url))
    st = cluster.wait_status("r2", phase_is("Shadow"), "phase Shadow", controller)
    gen = st["servingGeneration"]
    cluster.report("pod-a", gen - 1)
    cluster.report("pod-b", gen)

    def converged(status: dict[str, Any]) -> Any:
        return next(c for c in status.get("conditions", []) if c["type"] == "Converged")

    st = cluster.wait_status(
        "r2", lambda s: s.get("pods") == {"live": 2, "converged": 1}, "one of two pods", controller
    )
    assert converged(st)["status"] == "False"
    cluster.report("pod-a", gen)
    st = cluster.wait_status(
        "r2", lambda s: s.get("pods") == {"live": 2, "converged": 2}, "both pods", controller
    )
    assert converged(st)["status"] == "True"


def test_candidate_that_fails_to_load_fails_the_rollout_and_leaves_serving(
    env: tuple[Cluster, ControllerProcess], prometheus: Prometheus
) -> None:
    cluster, controller = env
    cluster.apply(rollout_body("r3", "v2", prometheus.url))
    st = cluster.wait_status("r3", phase_is("Shadow"), "phase Shadow", controller)
    cluster.report("pod-a", st["servingGeneration"], v2="sha256 of model.txt differs")
    st = cluster.wait_status("r3", phase_is("Failed"), "phase Failed", controller)
    assert "sha256 of model.txt differs" in st["message"]
    assert st["quarantined"][0]["version"] == "v2"
    serving = cluster.serving()
    assert serving is not None
    assert serving.candidate is None
    assert any(e["reason"] == "LoadError" and e["type"] == "Warning" for e in cluster.events("r3"))


def test_deleted_serving_configmap_is_put_back(
    env: tuple[Cluster, ControllerProcess], prometheus: Prometheus
) -> None:
    cluster, controller = env
    cluster.apply(rollout_body("r4", "v2", prometheus.url))
    cluster.wait_status("r4", phase_is("Shadow"), "phase Shadow", controller)
    first = wait_until(cluster.serving, timeout=10, what="the serving ConfigMap")
    cluster.kubectl("delete", "configmap", configmap_name(TARGET))
    again = wait_until(cluster.serving, timeout=20, what="the ConfigMap written again")
    assert again == first


def test_second_rollout_of_the_same_target_is_refused(
    env: tuple[Cluster, ControllerProcess], prometheus: Prometheus
) -> None:
    cluster, controller = env
    cluster.apply(rollout_body("first", "v2", prometheus.url))
    cluster.wait_status("first", phase_is("Shadow"), "phase Shadow", controller)
    cluster.apply(rollout_body("second", "v3", prometheus.url))
    st = cluster.wait_status("second", phase_is("Conflict"), "phase Conflict", controller)
    assert "first" in st["message"]
    serving = cluster.serving()
    assert serving is not None
    assert serving.candidate == "v2"


def test_abort_request_rolls_back_and_retry_starts_over(
    env: tuple[Cluster, ControllerProcess], prometheus: Prometheus
) -> None:
    cluster, controller = env
    cluster.apply(rollout_body("r5", "v2", prometheus.url))
    cluster.wait_status("r5", phase_is("Shadow"), "phase Shadow", controller)
    cluster.kubectl("annotate", "--overwrite", "mro", "r5", "modelrollout.io/abort=t1")
    st = cluster.wait_status("r5", phase_is("RolledBack"), "phase RolledBack", controller)
    assert st["history"][-1]["reason"] == "ManualAbort"
    cluster.kubectl("patch", "mro", "r5", "--type=merge", "-p", '{"spec":{"retry":1}}')
    st = cluster.wait_status("r5", phase_is("Shadow"), "Shadow again", controller)
    assert st["history"][-1]["reason"] == "Retry"


# ------------------------------------------------------------------------------ with Prometheus


def test_good_model_goes_shadow_canary_promotion(
    env: tuple[Cluster, ControllerProcess],
    prometheus: Prometheus,
    metrics_exporter: MetricsExporter,
) -> None:
    cluster, controller = env
    with FakeTraffic(metrics_exporter, "v2"):
        cluster.apply(rollout_body("good", "v2", prometheus.url))
        st = cluster.wait_status("good", phase_is("Succeeded"), "phase Succeeded", controller, 90)
    assert st["stableVersion"] == "v2"
    assert "candidateVersion" not in st
    path = [(h["to"], h["reason"]) for h in st["history"]]
    assert path == [
        ("Shadow", "Started"),
        ("Canary", "ShadowPassed"),
        ("Canary", "StepAdvanced"),
        ("Canary", "StepAdvanced"),
        ("Promoting", "CanaryPassed"),
        ("Succeeded", "Promoted"),
    ]
    assert st["lastAnalysis"]["outcome"] == "Pass"
    assert st["lastAnalysis"]["figures"]["agreement"] > 0.9
    serving = cluster.serving()
    assert serving is not None
    assert (serving.stable, serving.candidate, serving.canary_percent) == ("v2", None, 0.0)
    text = controller.metrics()
    assert 'modelrollout_controller_analyses_total{outcome="Pass"}' in text


@pytest.mark.parametrize(
    ("breach", "reason"),
    [
        pytest.param({"agreement": 0.5}, "agreement", id="disagreeing-model"),
        pytest.param({"latency": 0.2}, "p95 latency", id="slow-model"),
    ],
)
def test_bad_model_is_rolled_back_with_the_reason(
    env: tuple[Cluster, ControllerProcess],
    prometheus: Prometheus,
    metrics_exporter: MetricsExporter,
    breach: dict[str, float],
    reason: str,
) -> None:
    cluster, controller = env
    with FakeTraffic(metrics_exporter, "v2") as traffic:
        for key, value in breach.items():
            setattr(traffic, key, value)
        cluster.apply(rollout_body(
            "bad", "v2", prometheus.url,
            analysis={"thresholds": {"maxLatencyP95Seconds": 0.05}},
        ))  # fmt: skip
        st = cluster.wait_status("bad", phase_is("RolledBack"), "phase RolledBack", controller)
    assert st["history"][-1]["reason"] == "AnalysisFailed"
    assert reason in st["message"]
    assert st["quarantined"][-1]["version"] == "v2"
    serving = cluster.serving()
    assert serving is not None
    assert serving.candidate is None
    warnings = [e for e in cluster.events("bad") if e["type"] == "Warning"]
    assert any(e["reason"] == "AnalysisFailed" and reason in e["message"] for e in warnings)
    assert 'modelrollout_controller_rollbacks_total{reason="AnalysisFailed"} 1.0' in (
        controller.metrics()
    )


def test_prometheus_down_is_inconclusive_and_the_rollout_holds(
    env: tuple[Cluster, ControllerProcess], prometheus: Prometheus
) -> None:
    cluster, controller = env
    prometheus.stop()
    cluster.apply(rollout_body("blind", "v2", prometheus.url))
    st = cluster.wait_status(
        "blind", lambda s: s.get("consecutiveInconclusive", 0) >= 4, "4 inconclusive", controller
    )
    assert st["phase"] == "Shadow"
    assert st["lastAnalysis"]["outcome"] == "Inconclusive"
    assert "unreachable" in st["lastAnalysis"]["reasons"][0]
    assert any(e["reason"] == "AnalysisHeld" for e in cluster.events("blind"))


def test_controller_killed_mid_rollout_resumes_without_advancing_twice(
    env: tuple[Cluster, ControllerProcess],
    prometheus: Prometheus,
    metrics_exporter: MetricsExporter,
) -> None:
    cluster, controller = env
    with FakeTraffic(metrics_exporter, "v2"):
        cluster.apply(rollout_body(
            "phoenix", "v2", prometheus.url,
            canary={"percent": 100, "steps": [10, 20, 50], "stepInterval": "2s"},
        ))  # fmt: skip
        cluster.wait_status("phoenix", phase_is("Canary"), "phase Canary", controller, 60)
        controller.kill()
        before = cluster.status("phoenix")
        controller.start()
        st = cluster.wait_status("phoenix", phase_is("Succeeded"), "Succeeded", controller, 90)
    steps = [h["message"] for h in st["history"] if h["reason"] == "StepAdvanced"]
    assert len(steps) == len(set(steps)) == 3, steps
    assert before["servingGeneration"] <= st["servingGeneration"]
    gens = [h for h in st["history"] if h["to"] == "Promoting"]
    assert len(gens) == 1


# ------------------------------------------------------------------------------ alerts


def test_firing_alert_from_alertmanager_rolls_back(
    env: tuple[Cluster, ControllerProcess], prometheus: Prometheus
) -> None:
    cluster, controller = env
    cluster.apply(
        rollout_body("alerted", "v2", prometheus.url, alerts={"matchLabels": {"team": "ml"}})
    )
    cluster.wait_status("alerted", phase_is("Shadow"), "phase Shadow", controller)
    with Alertmanager(controller.webhook_url, bearer_token=controller.token) as am:
        am.fire({"alertname": "SuggestAgreementDrop", "team": "ml", "severity": "page"},
                {"summary": "agreement below 75%"})  # fmt: skip
        st = cluster.wait_status("alerted", phase_is("RolledBack"), "RolledBack", controller, 30)
    assert st["history"][-1]["reason"] == "AlertFiring"
    assert "SuggestAgreementDrop" in st["message"]
    assert st["alerts"][0]["alertname"] == "SuggestAgreementDrop"
    serving = cluster.serving()
    assert serving is not None
    assert serving.candidate is None


@pytest.mark.parametrize(
    "headers",
    [pytest.param({}, id="no-token"), pytest.param({"Authorization": "Bearer wrong"}, id="wrong")],
)
def test_webhook_without_the_token_changes_nothing(
    env: tuple[Cluster, ControllerProcess], prometheus: Prometheus, headers: dict[str, str]
) -> None:
    cluster, controller = env
    cluster.apply(rollout_body("guarded", "v2", prometheus.url))
    cluster.wait_status("guarded", phase_is("Shadow"), "phase Shadow", controller)
    payload = {
        "version": "4",
        "status": "firing",
        "alerts": [{"status": "firing", "fingerprint": "f00", "startsAt": "2026-01-01T00:00:00Z",
                    "labels": {"alertname": "X", "modelrollout": "guarded"}}],
    }  # fmt: skip
    resp = httpx.post(controller.webhook_url, json=payload, headers=headers)
    assert resp.status_code == 401
    st = cluster.status("guarded")
    assert st["phase"] == "Shadow"
    assert not st.get("alerts")
    # The same request with the token does roll back: the refusal was the token alone.
    ok = httpx.post(
        controller.webhook_url, json=payload,
        headers={"Authorization": f"Bearer {controller.token}"},
    )  # fmt: skip
    assert ok.status_code == 200
    assert ok.json()["matched"][0]["rollout"] == f"{cluster.ns}/guarded"
    cluster.wait_status("guarded", phase_is("RolledBack"), "RolledBack", controller, 20)


class PodStandIn(threading.Thread):
    """A pod that follows the rollout's serving generation in its report Lease, until
    ``freeze`` is set: then it stays on the last generation (a promotion never converges)."""

    def __init__(self, cluster: Cluster, name: str, *, freeze_in: str = "Promoting") -> None:
        super().__init__(daemon=True)
        self.cluster, self.name_ = cluster, name
        self.freeze_in = freeze_in
        self.stop = threading.Event()
        self.reported = -1

    def run(self) -> None:
        while not self.stop.wait(0.2):
            try:
                st = self.cluster.status(self.name_)
            except Exception:
                continue
            gen = int(st.get("servingGeneration") or 0)
            if st.get("phase") != self.freeze_in and gen != self.reported:
                self.cluster.report("pod-a", gen)
                self.reported = gen


def test_alert_during_promoting_rolls_back_to_the_previous_stable(
    env: tuple[Cluster, ControllerProcess],
    prometheus: Prometheus,
    metrics_exporter: MetricsExporter,
) -> None:
    """Before: an alert in Promoting was 'handled' and ignored, and the previous stable was
    already overwritten, so there was nothing to roll back to."""
    cluster, controller = env
    cluster.write_serving(ServingConfig(generation=1, stable="v1"))
    pod = PodStandIn(cluster, "baked")
    with FakeTraffic(metrics_exporter, "v2"):
        cluster.apply(rollout_body(
            "baked", "v2", prometheus.url, canary={"percent": 0},
            alerts={"matchLabels": {"team": "ml"}},
        ))  # fmt: skip
        pod.start()
        try:
            st = cluster.wait_status("baked", phase_is("Promoting"), "Promoting", controller, 60)
            assert st["stableVersion"] == "v2"
            assert st["promotion"]["previous"] == "v1"
            with Alertmanager(controller.webhook_url, bearer_token=controller.token) as am:
                am.fire({"alertname": "SuggestAgreementDrop", "team": "ml"})
                st = cluster.wait_status("baked", phase_is("RolledBack", "Succeeded"),
                                         "the rollback", controller, 30)  # fmt: skip
        finally:
            pod.stop.set()
    assert st["phase"] == "RolledBack", json.dumps(st["history"], indent=1)
    assert (st.get("stableVersion"), st["candidateVersion"]) == ("v1", "v2")
    assert st["history"][-1]["reason"] == "AlertFiring"
    assert "all traffic back to v1" in st["message"]
    assert st["quarantined"][-1]["version"] == "v2"
    serving = cluster.serving()
    assert serving is not None
    assert (serving.stable, serving.candidate) == ("v1", None)
    warnings = [e for e in cluster.events("baked") if e["type"] == "Warning"]
    assert any(e["reason"] == "AlertFiring" and "promotion of v2" in e["message"]
               for e in warnings)  # fmt: skip


def test_deleting_a_rollout_mid_rollout_hands_the_target_back_to_the_stable_version(
    env: tuple[Cluster, ControllerProcess], prometheus: Prometheus
) -> None:
    """Before: the ConfigMap was garbage-collected with the rollout and the pods, which keep
    their last configuration, went on serving the candidate."""
    cluster, controller = env
    cluster.write_serving(ServingConfig(generation=3, stable="v1"))
    cluster.apply(rollout_body("gone", "v2", prometheus.url))
    st = cluster.wait_status("gone", phase_is("Shadow"), "phase Shadow", controller)
    wait_until(lambda: (c := cluster.serving()) is not None and c.candidate == "v2",
               timeout=20, what="v2 in shadow")  # fmt: skip
    cluster.kubectl("delete", "mro", "gone", "--wait=true", "--timeout=30s")
    serving = cluster.serving()
    assert serving is not None, "the ConfigMap was deleted with the rollout"
    assert (serving.stable, serving.candidate, serving.shadow_percent) == ("v1", None, 0.0)
    assert serving.generation > st["servingGeneration"]
    cm = json.loads(cluster.kubectl("get", "configmap", configmap_name(TARGET), "-o", "json"))
    assert not cm["metadata"].get("ownerReferences")
    # The next rollout of the target adopts what it serves.
    cluster.apply(rollout_body("next", "v3", prometheus.url))
    st = cluster.wait_status("next", phase_is("Shadow"), "phase Shadow", controller)
    assert st["stableVersion"] == "v1"


class HangingPrometheus:
    """Accepts connections and never answers: each connection is recorded with the time it
    opened and, once the client gives up, closed."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections: list[dict[str, float | None]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            entry: dict[str, float | None] = {"opened": time.monotonic(), "closed": None}
            self.connections.append(entry)
            threading.Thread(target=self._hold, args=(conn, entry), daemon=True).start()

    @staticmethod
    def _hold(conn: socket.socket, entry: dict[str, float | None]) -> None:
        with conn:
            while True:
                try:
                    if not conn.recv(4096):
                        break
                except OSError:
                    break
        entry["closed"] = time.monotonic()

    def open_since(self, moment: float) -> bool:
        return any(c["closed"] is None and (c["opened"] or 0) < moment for c in self.connections)

    def close(self) -> None:
        self.sock.close()


def test_alert_rolls_back_while_a_prometheus_query_still_hangs(
    env: tuple[Cluster, ControllerProcess],
) -> None:
    """Before: the Prometheus call held the per-rollout lock, so an alert rollback waited
    behind a slow Prometheus (up to the query timeout, every analysis interval)."""
    cluster, controller = env
    prom = HangingPrometheus()
    try:
        cluster.apply(rollout_body("stuck", "v2", prom.url))
        cluster.wait_status("stuck", phase_is("Shadow"), "phase Shadow", controller)
        wait_until(lambda: prom.open_since(time.monotonic()), timeout=20,
                   what="an analysis query hanging")  # fmt: skip
        posted = time.monotonic()
        payload = {"version": "4", "status": "firing", "alerts": [{
            "status": "firing", "fingerprint": "5l0w", "startsAt": "2026-12-02T00:00:00Z",
            "labels": {"alertname": "X", "modelrollout": "stuck"}}]}  # fmt: skip
        resp = httpx.post(controller.webhook_url, json=payload,
                          headers={"Authorization": f"Bearer {controller.token}"})  # fmt: skip
        assert resp.status_code == 200
        cluster.wait_status("stuck", phase_is("RolledBack"), "RolledBack", controller, 30)
        assert prom.open_since(posted), "the rollback waited for the hanging query"
    finally:
        prom.close()
