"""The whole loop with real parts: trained model versions, two real suggestion processes
(``python -m service``) watching their ConfigMap and reporting in Leases, Prometheus
scraping them, loopback load, and ``python -m controller`` deciding.

- a good model goes shadow -> canary -> promoted: it served canary users on the real
  processes, and both processes end up serving it alone;
- a bad model (trained on rotated labels: confident and nearly always disagreeing) is
  rolled back on agreement during the shadow phase, with the reason in status and in an
  Event: it never answered a user, and the processes go back to the stable version alone;
- a slow model (a good model that the processes delay by 20 ms per evaluation, the
  service's rollback-drill knob ``MODELROLLOUT_FAULT_DELAY``) is rolled back on its p95
  latency, measured by Prometheus from the processes' own histograms.

No request fails in either. Models use the default shape with one training thread (OpenMP
on every core collapses when other suites run beside this one).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from service.serving_config import ROLLOUT_LABEL, ServingConfig, configmap_name
from testbed.controlplane import ControlPlane
from testbed.process import wait_until
from testbed.prometheus import Prometheus, ScrapeTarget
from testbed.stack import CRD, Cluster, ControllerProcess, Load, ServiceProcess, rollout_body

TARGET = "suggest"
PODS = 2


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    training = pytest.importorskip("training.pipeline")
    from training.gate import GateConfig  # noqa: PLC0415 - after the importorskip
    from training.train import TrainParams  # noqa: PLC0415

    root = tmp_path_factory.mktemp("models")
    params = TrainParams(n_jobs=1)
    training.train_and_publish(root, rows=8000, seed=1, version="v1", params=params)
    training.train_and_publish(root, rows=8000, seed=2, version="v2", params=params)
    training.train_and_publish(
        root, rows=8000, seed=3, version="bad", corrupt="rotate_labels", params=params,
        gate=GateConfig(enforce=False),
    )  # fmt: skip
    training.train_and_publish(root, rows=8000, seed=4, version="slow", params=params)
    return root


@pytest.fixture
def stack(
    control_plane: ControlPlane,
    namespace: str,
    prometheus: Prometheus,
    models_root: Path,
    tmp_path: Path,
) -> Iterator[tuple[Cluster, ControllerProcess, list[ServiceProcess], Load]]:
    control_plane.kubectl("apply", "-f", str(CRD))
    cluster = Cluster(control_plane, namespace)
    # What serves before any rollout: stable v1 (as an earlier promotion would have left it).
    cluster.write_serving(ServingConfig(generation=1, stable="v1"))
    services = [
        ServiceProcess(f"pod-{i}", namespace, control_plane.admin_kubeconfig, models_root,
                       tmp_path / f"pod-{i}.log", env={"MODELROLLOUT_FAULT_DELAY": "slow=0.02"})
        for i in range(PODS)
    ]  # fmt: skip
    controller = ControllerProcess(control_plane, namespace, tmp_path, prometheus.url)
    load = Load(services)
    try:
        # The processes start side by side (each imports for seconds) while Prometheus
        # takes its new targets (service discovery applies them in ~5 s batches).
        with ThreadPoolExecutor(PODS) as pool:
            starting = [pool.submit(svc.start) for svc in services]
            prometheus.set_targets(
                [ScrapeTarget(s.address, job="suggest", labels={"pod": s.pod}) for s in services]
            )
            for pending in starting:
                pending.result()
        controller.start()
        load.start()
        yield cluster, controller, services, load
    finally:
        load.stop()
        controller.stop()
        for svc in services:
            svc.stop()


def phase_is(*phases: str) -> Callable[[dict[str, Any]], bool]:
    return lambda st: st.get("phase") in phases


def _all_serve(services: list[ServiceProcess], generation: int) -> bool:
    return all(s.serving_generation() >= generation for s in services)


def _loaded(svc: ServiceProcess) -> dict[str, str]:
    """role -> version of the models one process has loaded."""
    return {m["role"]: m["version"] for m in svc.models()["models"]}


def _rolled_back_to_v1(
    stack: tuple[Cluster, ControllerProcess, list[ServiceProcess], Load], reason: str
) -> dict[str, Any]:
    """Wait for the rollback and check what every rollback must leave: the reason in status
    and in an Event, v1 alone in the ConfigMap and on both processes, no failed request."""
    cluster, controller, services, load = stack
    st = cluster.wait_status("suggest", phase_is("RolledBack", "Failed", "Succeeded"),
                             "the rollback", controller, 120)  # fmt: skip
    assert st["phase"] == "RolledBack", json.dumps(st["history"], indent=1)
    assert st["history"][-1]["reason"] == "AnalysisFailed"
    assert reason in st["message"]
    serving = cluster.serving()
    assert serving is not None
    assert (serving.stable, serving.candidate) == ("v1", None)
    wait_until(lambda: _all_serve(services, serving.generation), timeout=10,
               what="both processes back on v1")  # fmt: skip
    assert [_loaded(s) for s in services] == [{"stable": "v1"}] * PODS
    assert load.errors == 0, load.error_samples
    events = cluster.events("suggest")
    assert any(e["reason"] == "AnalysisFailed" and reason in e["message"] for e in events)
    return st


def test_good_model_is_promoted_on_real_suggestion_processes(
    stack: tuple[Cluster, ControllerProcess, list[ServiceProcess], Load], prometheus: Prometheus
) -> None:
    cluster, controller, services, load = stack
    cluster.apply(rollout_body(
        "suggest", "v2", prometheus.url,
        analysis={"minSamples": 50, "thresholds": {"minAgreement": 0.8}},
    ))  # fmt: skip
    st = cluster.wait_status("suggest", phase_is("Succeeded", "RolledBack", "Failed"),
                             "the rollout to finish", controller, 180)  # fmt: skip
    assert st["phase"] == "Succeeded", json.dumps(st["history"], indent=1)
    assert st["stableVersion"] == "v2"
    assert [h["to"] for h in st["history"]][-2:] == ["Promoting", "Succeeded"]
    serving = cluster.serving()
    assert serving is not None
    assert (serving.stable, serving.candidate) == ("v2", None)
    wait_until(lambda: _all_serve(services, serving.generation), timeout=10,
               what="both processes serving the promotion")  # fmt: skip
    assert [_loaded(s) for s in services] == [{"stable": "v2"}] * PODS
    assert load.errors == 0, load.error_samples
    assert load.served_by.get("candidate", 0) > 0, load.served_by  # the canary was real


def test_disagreeing_model_is_rolled_back_on_real_suggestion_processes(
    stack: tuple[Cluster, ControllerProcess, list[ServiceProcess], Load], prometheus: Prometheus
) -> None:
    cluster, _, _, load = stack
    cluster.apply(rollout_body(
        "suggest", "bad", prometheus.url,
        analysis={"minSamples": 50, "thresholds": {"minAgreement": 0.8}},
    ))  # fmt: skip
    st = _rolled_back_to_v1(stack, "agreement")
    assert st["lastAnalysis"]["figures"]["agreement"] < 0.8
    cm = json.loads(cluster.kubectl("get", "configmap", configmap_name(TARGET), "-o", "json"))
    assert cm["metadata"]["labels"][ROLLOUT_LABEL] == "suggest"
    assert load.served_by.get("candidate", 0) == 0, load.served_by  # it never answered a user


def test_slow_model_is_rolled_back_on_latency_on_real_suggestion_processes(
    stack: tuple[Cluster, ControllerProcess, list[ServiceProcess], Load], prometheus: Prometheus
) -> None:
    cluster = stack[0]
    cluster.apply(rollout_body(
        "suggest", "slow", prometheus.url,
        analysis={"minSamples": 50,
                  "thresholds": {"minAgreement": 0.8, "maxLatencyP95Seconds": 0.01}},
    ))  # fmt: skip
    st = _rolled_back_to_v1(stack, "p95 latency")
    assert "agreement" not in st["message"]  # a good model: only its latency failed
    assert st["lastAnalysis"]["figures"]["latencySeconds"] > 0.01
