"""High availability: two controller replicas with the chart's arguments, on the real API
server, Prometheus and (for the outage) real suggestion processes.

- exactly one replica acts (the holder of the Lease); the standby never reconciles;
- the leader SIGKILLed mid-canary while a bad candidate serves: the standby takes the
  Lease and rolls the candidate back (the failover times are printed: ``pytest -s``);
- an alert posted to the standby's webhook rolls back (the webhook of every replica
  records the alert on the ModelRollout; the leader acts on it);
- the API server stopped and restarted mid-canary with etcd compacted meanwhile (every
  watch resumes from a resourceVersion that no longer exists: 410 Gone): the controller
  and the suggestion processes' configuration watches recover, the rollout finishes, the
  processes serve the final configuration.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from test_controller_rollout import FakeTraffic

from service.serving_config import ServingConfig
from testbed.controlplane import ControlPlane
from testbed.exporter import MetricsExporter
from testbed.process import wait_until
from testbed.prometheus import Prometheus, ScrapeTarget
from testbed.stack import CRD, ROOT, Cluster, ControllerProcess, ServiceProcess, rollout_body

LEASE = "r1-modelrollout-controller"
ELECTION_FLAGS = ("--leader-election-lease=", "--lease-duration=", "--renew-deadline=",
                  "--retry-period=")  # fmt: skip


def chart_election_args() -> list[str]:
    """The leader-election arguments exactly as the chart renders them (2 replicas)."""
    bin_dir = subprocess.run(
        [str(ROOT / "hack" / "tools.sh"), "--print"], capture_output=True, text=True, check=True
    ).stdout.strip()
    out = subprocess.run(
        [f"{bin_dir}/helm", "template", "r1", str(ROOT / "charts" / "modelrollout"),
         "--namespace", "ml", "--set", "controller.replicas=2"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    dep = next(
        d
        for d in yaml.safe_load_all(out)
        if d and d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-controller")
    )
    assert dep["spec"]["replicas"] == 2
    args: list[str] = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    election = [a for a in args if a.startswith(ELECTION_FLAGS)]
    assert f"--leader-election-lease={LEASE}" in election
    return election


@pytest.fixture(scope="module")
def crd(control_plane: ControlPlane) -> None:
    control_plane.kubectl("apply", "-f", str(CRD))
    control_plane.wait_established("modelrollouts.modelrollout.io")


def replica(
    control_plane: ControlPlane, namespace: str, workdir: Path, prometheus_url: str, pod: str,
    token: str,
) -> ControllerProcess:  # fmt: skip
    """One controller replica as the chart runs it: its pod name and namespace from the
    downward API, the chart's leader-election flags, the shared webhook token."""
    workdir.mkdir(parents=True, exist_ok=True)
    ctl = ControllerProcess(
        control_plane, namespace, workdir, prometheus_url,
        extra_args=chart_election_args(), standalone=False,
        env={"POD_NAME": pod, "POD_NAMESPACE": namespace},
    )  # fmt: skip
    ctl.token = token
    ctl.token_file.write_text(token + "\n")
    return ctl


@pytest.fixture
def pair(
    crd: None,
    control_plane: ControlPlane,
    namespace: str,
    prometheus: Prometheus,
    metrics_exporter: MetricsExporter,
    tmp_path: Path,
) -> Iterator[tuple[Cluster, dict[str, ControllerProcess]]]:
    prometheus.set_targets([ScrapeTarget(metrics_exporter.address, labels={"target": "suggest"})])
    replicas = {
        pod: replica(control_plane, namespace, tmp_path / pod, prometheus.url, pod, "t0k3n")
        for pod in ("ctl-a", "ctl-b")
    }
    cluster = Cluster(control_plane, namespace)
    try:
        replicas["ctl-a"].start()
        wait_until(lambda: holder(cluster) == "ctl-a", timeout=30, what="ctl-a leads")
        replicas["ctl-b"].start()
        yield cluster, replicas
    finally:
        for ctl in replicas.values():
            ctl.stop()


def holder(cluster: Cluster) -> str | None:
    got = cluster.cp.kubectl("-n", cluster.ns, "get", "lease", LEASE, "-o", "json", check=False)
    if got.returncode != 0:
        return None
    spec = json.loads(got.stdout)["spec"]
    return spec.get("holderIdentity")


def reconciliations(ctl: ControllerProcess) -> float:
    """How many reconciliations this replica ran (its tick histogram's count)."""
    for line in ctl.metrics().splitlines():
        if line.startswith("modelrollout_controller_tick_seconds_count"):
            return float(line.split()[-1])
    return 0.0


def phase_is(*phases: str) -> Callable[[dict[str, Any]], bool]:
    return lambda st: st.get("phase") in phases


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_standby_takes_over_a_killed_leader_and_rolls_back_the_bad_canary(
    pair: tuple[Cluster, dict[str, ControllerProcess]],
    prometheus: Prometheus,
    metrics_exporter: MetricsExporter,
) -> None:
    cluster, replicas = pair
    a, b = replicas["ctl-a"], replicas["ctl-b"]
    with FakeTraffic(metrics_exporter, "v2") as traffic:
        cluster.apply(rollout_body(
            "ha", "v2", prometheus.url,
            canary={"percent": 100, "steps": [10, 50], "stepInterval": "10m"},
        ))  # fmt: skip
        cluster.wait_status("ha", phase_is("Canary"), "phase Canary", a, 90)
        assert holder(cluster) == "ctl-a"
        assert reconciliations(a) > 0
        assert reconciliations(b) == 0, "the standby reconciled while ctl-a led"

        a.kill()
        killed, killed_wall = time.monotonic(), datetime.now(UTC)
        traffic.agreement = 0.5  # the candidate turns bad while no replica is alive to act

        wait_until(lambda: holder(cluster) == "ctl-b", timeout=60, interval=0.1,
                   what="ctl-b takes the Lease", on_timeout=b.tail)  # fmt: skip
        leased = time.monotonic() - killed

        def acted(st: dict[str, Any]) -> bool:
            last = st.get("lastAnalysis")
            return last is not None and _time(last["time"]) > killed_wall

        cluster.wait_status("ha", acted, "ctl-b's first analysis", b, 60)
        first_act = time.monotonic() - killed
        st = cluster.wait_status("ha", phase_is("RolledBack"), "the rollback", b, 60)
        rolled_back = time.monotonic() - killed
    print(
        f"\nfailover after SIGKILL of the leader: Lease taken {leased:.1f} s, "
        f"first analysis by the new leader {first_act:.1f} s, rolled back {rolled_back:.1f} s"
    )
    assert st["history"][-1]["reason"] == "AnalysisFailed"
    assert "agreement" in st["message"]
    assert st.get("stableVersion") != "v2"
    serving = cluster.serving()
    assert serving is not None
    assert serving.candidate is None
    lease = json.loads(cluster.kubectl("get", "lease", LEASE, "-o", "json"))
    assert lease["spec"]["leaseTransitions"] == 1


def test_alert_posted_to_the_standbys_webhook_rolls_back(
    pair: tuple[Cluster, dict[str, ControllerProcess]], prometheus: Prometheus
) -> None:
    cluster, replicas = pair
    a, b = replicas["ctl-a"], replicas["ctl-b"]
    cluster.apply(rollout_body("paged", "v2", prometheus.url))
    cluster.wait_status("paged", phase_is("Shadow"), "phase Shadow", a)
    payload = {
        "version": "4",
        "status": "firing",
        "alerts": [{"status": "firing", "fingerprint": "ab12", "startsAt": "2026-12-02T03:00:00Z",
                    "labels": {"alertname": "SuggestAgreementDrop", "modelrollout": "paged"}}],
    }  # fmt: skip
    resp = httpx.post(b.webhook_url, json=payload, headers={"Authorization": "Bearer t0k3n"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["matched"] == [
        {"rollout": f"{cluster.ns}/paged", "alert": "SuggestAgreementDrop", "new": "true"}
    ]
    st = cluster.wait_status("paged", phase_is("RolledBack"), "RolledBack", a, 30)
    assert st["history"][-1]["reason"] == "AlertFiring"
    assert holder(cluster) == "ctl-a"
    assert reconciliations(b) == 0, "the standby acted on the alert itself"


# ------------------------------------------------------------------------------ outages


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    training = pytest.importorskip("training.pipeline")
    from training.gate import GateConfig  # noqa: PLC0415 - after the importorskip
    from training.train import TrainParams  # noqa: PLC0415

    root = tmp_path_factory.mktemp("models")
    params = TrainParams(n_jobs=1)
    for seed, version in ((1, "v1"), (2, "v2")):
        # The models' quality is not what this is about: small, ungated.
        training.train_and_publish(root, rows=3000, seed=seed, version=version, params=params,
                                   gate=GateConfig(enforce=False))  # fmt: skip
    return root


@pytest.mark.timeout(600)  # two small models are trained first
def test_api_server_restart_and_expired_watches_lose_nothing(
    crd: None,
    control_plane: ControlPlane,
    namespace: str,
    prometheus: Prometheus,
    metrics_exporter: MetricsExporter,
    models_root: Path,
    tmp_path: Path,
) -> None:
    prometheus.set_targets([ScrapeTarget(metrics_exporter.address, labels={"target": "suggest"})])
    cluster = Cluster(control_plane, namespace)
    cluster.write_serving(ServingConfig(generation=1, stable="v1"))
    pods = [
        ServiceProcess(f"pod-{i}", namespace, control_plane.admin_kubeconfig, models_root,
                       tmp_path / f"pod-{i}.log")
        for i in range(2)
    ]  # fmt: skip
    ctl = replica(control_plane, namespace, tmp_path / "ctl", prometheus.url, "ctl-a", "t")
    try:
        for pod in pods:
            pod.start(timeout=180)  # imports take long on a loaded machine
        ctl.start()
        with FakeTraffic(metrics_exporter, "v2"):
            cluster.apply(rollout_body(
                "outage", "v2", prometheus.url,
                canary={"percent": 100, "steps": [10, 50], "stepInterval": "3s"},
            ))  # fmt: skip
            before = cluster.wait_status("outage", phase_is("Canary"), "phase Canary", ctl, 90)

            control_plane.stop_apiserver()
            try:
                # Down longer than the renew deadline: the leader must step down, not act.
                wait_until(lambda: "stopped leading" in ctl.tail(), timeout=30,
                           what="the controller to step down", on_timeout=ctl.tail)  # fmt: skip
                control_plane.compact_etcd()
            finally:
                control_plane.start_apiserver()

            st = cluster.wait_status("outage", phase_is("Succeeded", "RolledBack", "Failed"),
                                     "the rollout to finish", ctl, 120)  # fmt: skip
        assert st["phase"] == "Succeeded", json.dumps(st["history"], indent=1)
        assert st["stableVersion"] == "v2"
        steps = [h["message"] for h in st["history"] if h["reason"] == "StepAdvanced"]
        assert len(steps) == len(set(steps)), steps  # nothing advanced twice
        assert st["servingGeneration"] > before["servingGeneration"]
        serving = cluster.serving()
        assert serving is not None
        assert (serving.stable, serving.candidate) == ("v2", None)

        def all_serve() -> bool:
            return all(p.serving_generation() >= serving.generation for p in pods)

        wait_until(all_serve, timeout=30, what="both pods on the final configuration",
                   on_timeout=pods[0].tail)  # fmt: skip
        assert all("410 Gone" in p.log.read_text() for p in pods), pods[0].tail()
    finally:
        ctl.stop()
        for pod in pods:
            pod.stop()
