"""Analyses judge the right series and catch subtle bad models, with the default thresholds.

Real parts: trained model versions, real suggestion processes (``python -m service``) of
one or two targets in one namespace, one Prometheus scraping them all, loopback load, and
``python -m controller``. The bad candidates are the good model ``v2`` made bad by the
service's fault knobs on the processes of one target (``MODELROLLOUT_FAULTS``,
service/faults.py), so the same version is good on one target and bad on another:

- two rollouts of v2 on two targets, one of whose processes answer three big categories as
  Shopping: the good one is promoted and the bad one rolled back (each analysis reads its
  own target only; unscoped, they averaged each other);
- a candidate wrong in one category only (Rent answered as Transfers, about 5% of the
  test bed's traffic, overall agreement still above minAgreement) is rolled back on that
  category;
- a candidate slow only in its tail (15% of its scoring calls burn 30 ms of CPU) is rolled
  back in canary on its p95 when serving, relative to stable's in the same window; one
  slow in 4% of its calls with ``latencyQuantile: 0.99``.

Thresholds are the defaults; timings are the test bed's (analysis every 1 s over 5 s,
``minSamples`` 30, two shadow passes, canary steps 10 and 50 of 1 s). Each test prints
(``pytest -rP``) the time from the rollout's start, when the bad model first runs, to the
rollback (or to the promotion of the good one).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from service.serving_config import ServingConfig
from testbed.controlplane import ControlPlane
from testbed.prometheus import Prometheus, ScrapeTarget
from testbed.stack import CRD, Cluster, ControllerProcess, Load, ServiceProcess, rollout_body

WRONG_IN_THREE = {"relabel": {"Dining": "Shopping", "Groceries": "Shopping", "Transfers": "Rent"}}


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    training = pytest.importorskip("training.pipeline")
    from training.train import TrainParams  # noqa: PLC0415 - after the importorskip

    root = tmp_path_factory.mktemp("models")
    params = TrainParams(n_jobs=1)
    training.train_and_publish(root, rows=8000, seed=1, version="v1", params=params)
    # v2 is v1 trained again on the same rows: any disagreement is the fault knobs' doing.
    # (Two good models of different data agree on ~88-90% of the test bed's traffic, below
    # the default minAgreement of 0.9; what that default should be is not these tests'
    # business: the demo rolls out a v2 trained with another seed.)
    training.train_and_publish(root, rows=8000, seed=1, version="v2", params=params)
    return root


@dataclass
class Stack:
    clusters: dict[str, Cluster]
    controller: ControllerProcess
    load: Load
    prometheus: Prometheus

    def roll_out(self, target: str, version: str, **spec: Any) -> None:
        self.clusters[target].apply(
            rollout_body(target, version, self.prometheus.url, target=target, **spec)
        )

    def finished(self, target: str, timeout: float = 150) -> dict[str, Any]:
        cluster = self.clusters[target]
        return cluster.wait_status(
            target,
            lambda st: st.get("phase") in ("Succeeded", "RolledBack", "Failed"),
            f"the rollout on {target} to finish",
            self.controller,
            timeout,
        )


StartStack = Callable[[dict[str, dict[str, Any]]], Stack]


@pytest.fixture
def start_stack(
    control_plane: ControlPlane,
    namespace: str,
    prometheus: Prometheus,
    models_root: Path,
    tmp_path: Path,
) -> Iterator[StartStack]:
    """``start_stack({target: faults})``: one suggestion process per target (with those
    fault knobs, by version), stable v1 serving on each, load on all, one controller."""
    with _stack_factory(control_plane, namespace, prometheus, models_root, tmp_path) as start:
        yield start


@contextmanager
def _stack_factory(
    control_plane: ControlPlane,
    namespace: str,
    prometheus: Prometheus,
    models_root: Path,
    tmp_path: Path,
) -> Iterator[StartStack]:
    control_plane.kubectl("apply", "-f", str(CRD))
    control_plane.wait_established("modelrollouts.modelrollout.io")
    services: list[ServiceProcess] = []
    controller = ControllerProcess(control_plane, namespace, tmp_path, prometheus.url)
    loads: list[Load] = []

    def start(targets: dict[str, dict[str, Any]]) -> Stack:
        clusters = {}
        for target, faults in targets.items():
            cluster = Cluster(control_plane, namespace, target=target)
            cluster.write_serving(ServingConfig(generation=1, stable="v1"))
            clusters[target] = cluster
            env = {"MODELROLLOUT_FAULTS": json.dumps(faults)} if faults else {}
            services.append(
                ServiceProcess(f"{target}-0", namespace, control_plane.admin_kubeconfig,
                               models_root, tmp_path / f"{target}-0.log", target=target, env=env)
            )  # fmt: skip
        with ThreadPoolExecutor(len(services)) as pool:
            starting = [pool.submit(svc.start) for svc in services]
            # No target label here: each process labels its own series with its target.
            prometheus.set_targets(
                [ScrapeTarget(s.address, job="suggest", labels={"pod": s.pod}) for s in services]
            )
            for pending in starting:
                pending.result()
        controller.start()
        load = Load(services)
        loads.append(load)
        load.start()
        return Stack(clusters, controller, load, prometheus)

    try:
        yield start
    finally:
        for load in loads:
            load.stop()
        controller.stop()
        for svc in services:
            svc.stop()


def _seconds_to(st: dict[str, Any], to: str) -> float:
    """Seconds from the rollout's start (the candidate's first shadow) to phase ``to``."""
    times = {h["to"]: datetime.fromisoformat(h["time"]) for h in st["history"]}
    started = next(datetime.fromisoformat(h["time"]) for h in st["history"] if h["to"] == "Shadow")
    return (times[to] - started).total_seconds()


def _report(name: str, seconds: float) -> None:
    """A figure of the run (shown with ``pytest -rP``)."""
    print(f"figure: {name} = {seconds:.1f}")


def _history(st: dict[str, Any]) -> str:
    return json.dumps(st.get("history"), indent=1)


def test_two_rollouts_on_two_targets_in_one_namespace_do_not_mix(start_stack: StartStack) -> None:
    stack = start_stack({"alpha": {}, "beta": {"v2": WRONG_IN_THREE}})
    stack.roll_out("alpha", "v2")
    stack.roll_out("beta", "v2")
    beta = stack.finished("beta")
    alpha = stack.finished("alpha")
    assert alpha["phase"] == "Succeeded", _history(alpha)
    assert alpha["stableVersion"] == "v2"
    assert beta["phase"] == "RolledBack", _history(beta)
    assert beta["history"][-1]["reason"] == "AnalysisFailed"
    assert "agreement" in beta["message"]
    assert beta["lastAnalysis"]["figures"]["agreement"] < 0.8
    assert stack.clusters["beta"].serving() is not None
    assert stack.clusters["beta"].serving().candidate is None  # type: ignore[union-attr]
    assert stack.load.errors == 0, stack.load.error_samples
    _report("scoping: bad target start -> RolledBack, s", _seconds_to(beta, "RolledBack"))
    _report("scoping: good target start -> Succeeded, s", _seconds_to(alpha, "Succeeded"))


def test_a_candidate_wrong_in_one_category_only_is_rolled_back_with_the_default_spec(
    start_stack: StartStack,
) -> None:
    stack = start_stack({"cards": {"v2": {"relabel": {"Rent": "Transfers"}}}})
    stack.roll_out("cards", "v2")
    st = stack.finished("cards")
    assert st["phase"] == "RolledBack", _history(st)
    assert st["history"][-1]["reason"] == "AnalysisFailed"
    assert "category 'Rent'" in st["message"], st["message"]
    figures = st["lastAnalysis"]["figures"]
    # Overall agreement alone would have passed: only the category gate saw it.
    assert figures["agreement"] >= 0.9, figures  # the default minAgreement
    assert "agreement 0." not in st["message"].split("category")[0], st["message"]
    _report("one category: start -> RolledBack, s", _seconds_to(st, "RolledBack"))


# The relative bound is a test (controller.analysis): a 15% tail at p95 needs ~50 served
# evaluations to reach P < 0.01, a 3% tail at p99 a few hundred. With the test bed's 1 s
# canary steps a step has a few dozen, and both cases were promoted now and then: each
# step lasts 5 s, and the p99 case has a 4% tail over 15 s windows (production defaults:
# 30 s steps).
@pytest.mark.parametrize(
    ("fault", "analysis", "step", "name"),
    [
        pytest.param(
            {"burn": 0.03, "fraction": 0.15}, {"thresholds": {}}, "5s", "p95", id="p95-default"
        ),
        pytest.param(
            {"burn": 0.03, "fraction": 0.04},
            # 15 s windows: a 4% tail (p95 still normal) against p99's 1% share needs ~150.
            {"thresholds": {"latencyQuantile": 0.99}, "window": "15s"},
            "5s",
            "p99",
            id="p99-asked",
        ),
    ],
)
def test_a_candidate_slow_only_in_its_tail_is_rolled_back_with_the_default_spec(
    start_stack: StartStack,
    fault: dict[str, float],
    analysis: dict[str, Any],
    step: str,
    name: str,
) -> None:
    stack = start_stack({"cards": {"v2": fault}})
    stack.roll_out(
        "cards",
        "v2",
        analysis=analysis,
        canary={"percent": 100, "steps": [10, 50], "stepInterval": step},
    )
    st = stack.finished("cards")
    assert st["phase"] == "RolledBack", _history(st)
    assert st["history"][-1]["reason"] == "AnalysisFailed"
    assert f"{name} latency" in st["message"], st["message"]
    assert "serving > 1.5x stable's" in st["message"], st["message"]
    assert "agreement" not in st["message"], st["message"]  # a good model, slow in its tail
    figures = st["lastAnalysis"]["figures"]
    assert figures["servedLatencySeconds"] > 1.5 * figures["stableLatencySeconds"] + 0.002
    _report(f"tail slow ({name}): start -> RolledBack, s", _seconds_to(st, "RolledBack"))
