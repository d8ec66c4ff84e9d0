"""Suggestion processes reconfigured live through the real API server, under load.

Three real suggestion processes (``python -m service``, one uvicorn worker each) watch
their ConfigMap through a real kube-apiserver and report in Leases; a real Prometheus
scrapes them every second; bounded loopback load (:class:`testbed.stack.Load`) runs the
whole time. The test writes four serving configurations in turn:

1. stable ``v1`` only (before the processes start);
2. candidate ``v2`` in the shadow of 100% of transactions;
3. canary 50% (still 100% shadow: the served answer is compared with the other model's);
4. ``v2`` promoted to stable, no candidate.

After each write it polls ``GET /v1/models`` of every process until all serve the new
generation (the propagation time is printed, never asserted), and it requires that no
request failed at any point.

Every transaction sent and every answer is recorded. Afterwards the test computes, with
the same model versions loaded in this process by the service's own loader
(:func:`service.models.load_model`) and the service's rule engine, what each transaction
must have been answered and whether its shadow agreed, following the documented semantics
(``service/suggest.py``, ``service/routing.py``) in code of its own:

- who serves: the candidate for a user in the canary (``canary_bucket < percent x 100``),
  else the stable;
- a model whose top-1 confidence is below ``min_confidence`` hands the row to rules;
- the shadow (the other model) "answers" its own top-1, or the rules' top-1 when it is not
  confident enough; it agrees when that equals the served top-1.

It checks every answer against that, canary stickiness per user across processes, and
that Prometheus, summing the processes' instant counters, finds exactly the expected
comparison counts and agreement ratio.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.features import extract
from service.metric_names import SHADOW_COMPARISONS_TOTAL, Source
from service.models import LoadedModel, load_model
from service.routing import canary_bucket
from service.rules import RuleEngine
from service.serving_config import BUCKETS, REPORT_ANNOTATION, TARGET_LABEL, ServingConfig
from testbed.controlplane import ControlPlane
from testbed.process import wait_until
from testbed.prometheus import Prometheus, ScrapeTarget
from testbed.stack import Cluster, Load, ServiceProcess

TARGET = "suggest"
PODS = 3
SALT = "live-test"
MIN_CONFIDENCE = 0.5
"""High enough that some answers of each model fall back to rules (they are calibrated)."""
ANSWERS_PER_PHASE = 30
"""Requests (of 10 transactions) each process answers at a generation before the next write."""
USERS = 100
"""Few enough that a user's transactions reach every process within one phase."""

CONFIGS = {
    c.generation: c
    for c in (
        ServingConfig(rollout=f"ns/{TARGET}", generation=1, stable="v1",
                      min_confidence=MIN_CONFIDENCE, salt=SALT),
        ServingConfig(rollout=f"ns/{TARGET}", generation=2, stable="v1", candidate="v2",
                      shadow_percent=100, min_confidence=MIN_CONFIDENCE, salt=SALT),
        ServingConfig(rollout=f"ns/{TARGET}", generation=3, stable="v1", candidate="v2",
                      shadow_percent=100, canary_percent=50, min_confidence=MIN_CONFIDENCE,
                      salt=SALT),
        ServingConfig(rollout=f"ns/{TARGET}", generation=4, stable="v2",
                      min_confidence=MIN_CONFIDENCE, salt=SALT),
    )
}  # fmt: skip

AGREEMENT = f'sum({SHADOW_COMPARISONS_TOTAL}{{agree="true"}}) / sum({SHADOW_COMPARISONS_TOTAL})'


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    training = pytest.importorskip("training.pipeline")
    from training.gate import GateConfig  # noqa: PLC0415 - after the importorskip
    from training.train import TrainParams  # noqa: PLC0415

    root = tmp_path_factory.mktemp("models")
    quick = TrainParams.quick()
    no_gate = GateConfig(enforce=False)
    training.train_and_publish(root, rows=6000, seed=1, version="v1", params=quick, gate=no_gate)
    # v2 learns from far fewer rows: less confident, and now and then of another opinion.
    training.train_and_publish(root, rows=1500, seed=2, version="v2", params=quick, gate=no_gate)
    return root


@dataclass(frozen=True)
class Exchange:
    """One answered request: which process, what was sent, what came back."""

    pod: str
    sent: list[dict[str, Any]]
    body: dict[str, Any]

    @property
    def generation(self) -> int:
        return int(self.body["generation"])


class Recorder:
    """Collects every exchange of the load (called on the load's thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.exchanges: list[Exchange] = []

    def __call__(
        self, svc: ServiceProcess, sent: list[dict[str, Any]], body: dict[str, Any]
    ) -> None:
        with self.lock:
            self.exchanges.append(Exchange(svc.pod, sent, body))

    def answered_at(self, generation: int) -> Counter[str]:
        """Requests answered at ``generation``, per process."""
        with self.lock:
            return Counter(e.pod for e in self.exchanges if e.generation == generation)


@dataclass(frozen=True)
class Offline:
    """The two model versions and the rules, evaluated in this process."""

    models: dict[str, LoadedModel]
    rules: RuleEngine

    def top1(
        self, version: str, txns: Sequence[dict[str, Any]]
    ) -> tuple[list[str], npt.NDArray[np.float64]]:
        """Each transaction's top-1 class under ``version`` and its confidence."""
        model = self.models[version]
        proba = model.predict_proba(
            extract([t["merchant"] for t in txns], [t["memo"] for t in txns],
                    [t["amount"] for t in txns], [t.get("mcc") for t in txns])
        )  # fmt: skip
        best = proba.argmax(axis=1)
        return [model.classes[int(j)] for j in best], proba[np.arange(len(txns)), best]


@dataclass
class Expected:
    """What the service must have done, per the documented semantics."""

    comparisons: Counter[tuple[str, str]]  # (baseline, agree) -> count
    served: Counter[tuple[int, str]]  # (generation, served_by) -> count
    low_confidence: int  # served answers handed to rules
    shadow_low_confidence: int  # shadow answers that were the rules'
    mismatches: list[str]


def expectation(offline: Offline, exchanges: Sequence[Exchange]) -> Expected:
    txns = [t for e in exchanges for t in e.sent]
    answers = [(e, a) for e in exchanges for a in e.body["suggestions"]]
    assert len(txns) == len(answers), "an answer per transaction"
    top = {v: offline.top1(v, txns) for v in offline.models}
    out = Expected(Counter(), Counter(), 0, 0, [])

    def answer_of(version: str | None, i: int, min_conf: float) -> tuple[str, bool]:
        """(top-1 label, from a model?) of ``version`` for transaction ``i``; rules when it
        is not confident enough (or there is no model)."""
        if version is not None:
            labels, conf = top[version]
            if conf[i] >= min_conf:
                return labels[i], True
        t = txns[i]
        rules = offline.rules.suggest(
            t["merchant"], t["memo"], float(t["amount"]), mcc=t.get("mcc")
        )
        return rules.top, False

    for i, (txn, (exchange, got)) in enumerate(zip(txns, answers, strict=True)):
        config = CONFIGS[exchange.generation]
        assert got["id"] == txn["id"]
        in_canary = config.candidate is not None and canary_bucket(
            config.salt, txn["user_id"]
        ) < round(config.canary_percent * BUCKETS / 100)
        role, version, other = (
            (Source.CANDIDATE, config.candidate, config.stable)
            if in_canary
            else (Source.STABLE, config.stable, config.candidate)
        )
        top1, by_model = answer_of(version, i, config.min_confidence)
        served_by = role.value if by_model else Source.RULES.value
        if version is not None and not by_model:
            out.low_confidence += 1
        out.served[(exchange.generation, served_by)] += 1
        seen = (got["served_by"], got["model_version"], got["candidates"][0]["label"])
        want = (served_by, version if by_model else None, top1)
        if seen != want:
            out.mismatches.append(
                f"{exchange.pod} gen {exchange.generation} {txn}: {seen} != {want}"
            )
        if other is not None and config.shadow_percent == 100:
            shadow_top1, shadow_by_model = answer_of(other, i, config.min_confidence)
            out.shadow_low_confidence += not shadow_by_model
            out.comparisons[(served_by, str(shadow_top1 == top1).lower())] += 1
        else:
            assert config.shadow_percent == 0, "the expectation handles 0% and 100% shadow only"
    return out


def comparisons_in(text: str) -> Counter[tuple[str, str]]:
    """(baseline, agree) -> count in one process's /metrics exposition."""
    counts: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == SHADOW_COMPARISONS_TOTAL:
                counts[(sample.labels["baseline"], sample.labels["agree"])] += int(sample.value)
    return counts


def lease_generations(cluster: Cluster) -> dict[str, int]:
    leases = json.loads(
        cluster.kubectl("get", "leases", "-l", f"{TARGET_LABEL}={TARGET}", "-o", "json")
    )
    reports = [
        json.loads(item["metadata"]["annotations"][REPORT_ANNOTATION]) for item in leases["items"]
    ]
    return {r["pod"]: int(r["generation"]) for r in reports}


@pytest.fixture
def procs(
    control_plane: ControlPlane, namespace: str, models_root: Path, tmp_path: Path
) -> Iterator[list[ServiceProcess]]:
    """The suggestion processes (not started), stopped after the test."""
    made = [
        ServiceProcess(f"pod-{i}", namespace, control_plane.admin_kubeconfig, models_root,
                       tmp_path / f"pod-{i}.log", target=TARGET)
        for i in range(PODS)
    ]  # fmt: skip
    try:
        yield made
    finally:
        for svc in made:
            svc.stop()


def test_processes_reconfigured_live_under_load_and_prometheus_counts_agreement(
    control_plane: ControlPlane,
    namespace: str,
    models_root: Path,
    procs: list[ServiceProcess],
    start_prometheus: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster = Cluster(control_plane, namespace, TARGET)
    cluster.write_serving(CONFIGS[1])
    recorder = Recorder()
    load = Load(procs, users=USERS, on_response=recorder)
    offline = Offline({v: load_model(models_root, v) for v in ("v1", "v2")}, RuleEngine.default())

    def tails() -> str:
        return "\n".join(f"--- {s.pod}\n{s.tail()}" for s in procs)

    def on_generation(generation: int) -> bool:
        return all(s.serving_generation() == generation for s in procs)

    def answered(generation: int) -> bool:
        counts = recorder.answered_at(generation)
        return all(counts[s.pod] >= ANSWERS_PER_PHASE for s in procs)

    try:
        # The processes start side by side (each imports for seconds), Prometheus meanwhile.
        with ThreadPoolExecutor(PODS) as pool:
            starting = [pool.submit(svc.start) for svc in procs]
            prom: Prometheus = start_prometheus(
                [ScrapeTarget(s.address, job="suggest", labels={"pod": s.pod}) for s in procs]
            )
            for pending in starting:
                pending.result()
        wait_until(partial(on_generation, 1), timeout=30, what="every process on generation 1",
                   on_timeout=tails)  # fmt: skip
        prom.wait_for_targets_up()
        load.start()
        wait_until(partial(answered, 1), timeout=60, what="load answered at generation 1",
                   on_timeout=tails)  # fmt: skip

        propagation: list[tuple[int, float, float]] = []
        for generation in (2, 3, 4):
            started = time.monotonic()
            cluster.write_serving(CONFIGS[generation])
            written = time.monotonic()
            wait_until(
                partial(on_generation, generation), timeout=30, interval=0.01,
                what=f"every process on generation {generation}", on_timeout=tails,
            )  # fmt: skip
            propagation.append((generation, written - started, time.monotonic() - written))
            assert load.errors == 0, load.error_samples
            wait_until(
                partial(answered, generation), timeout=60,
                what=f"load answered at generation {generation}", on_timeout=tails,
            )  # fmt: skip
        wait_until(lambda: lease_generations(cluster) == {s.pod: 4 for s in procs}, timeout=30,
                   what="every Lease reporting generation 4")  # fmt: skip
    finally:
        load.stop()

    assert not load.is_alive()
    assert load.errors == 0, load.error_samples  # no failed request, no 5xx, ever
    assert load.answers == len(recorder.exchanges) == load.requests

    # -- every answer is what the documented semantics say it must be
    expected = expectation(offline, recorder.exchanges)
    assert not expected.mismatches, "\n".join(expected.mismatches[:10])
    for generation, config in CONFIGS.items():
        assert expected.served[(generation, "stable")] > 0
        if config.canary_percent:
            assert expected.served[(generation, "candidate")] > 0
    # The paths the test means to exercise were exercised.
    assert expected.low_confidence > 0
    assert expected.shadow_low_confidence > 0
    assert {agree for _, agree in expected.comparisons} == {"true", "false"}
    assert {base for base, _ in expected.comparisons} >= {"stable", "candidate"}

    # -- canary routing is sticky per user, across processes, at every generation
    arms: dict[tuple[int, str], set[str]] = defaultdict(set)
    pods_of: dict[tuple[int, str], set[str]] = defaultdict(set)
    for e in recorder.exchanges:
        for txn, got in zip(e.sent, e.body["suggestions"], strict=True):
            if got["served_by"] != "rules":  # a low-confidence answer is the rules'
                key = (e.generation, txn["user_id"])
                arms[key].add(got["served_by"])
                pods_of[key].add(e.pod)
    assert all(len(a) == 1 for a in arms.values()), {k: a for k, a in arms.items() if len(a) > 1}
    canary_users = [k for k, a in arms.items() if k[0] == 3 and a == {"candidate"}]
    spread = [k for k in canary_users if len(pods_of[k]) == PODS]
    assert len(spread) >= 10, f"only {len(spread)} canary users answered by every process"

    # -- Prometheus sums exactly the comparisons the test expects
    # The shadow is compared on each process's worker thread after the answer: wait until
    # every process has counted all it made (nothing is shed at this load).
    def reported_now() -> Counter[tuple[str, str]]:
        per_process = [comparisons_in(httpx.get(f"{s.url}/metrics").text) for s in procs]
        return sum(per_process, Counter())

    want_total = sum(expected.comparisons.values())
    wait_until(lambda: sum(reported_now().values()) >= want_total, timeout=30,
               what="every shadow comparison counted", on_timeout=tails)  # fmt: skip
    reported = reported_now()
    total = sum(reported.values())
    # Wait for a scrape after the last request (the counters are still now).
    prom.wait_for(f"sum({SHADOW_COMPARISONS_TOTAL})", lambda v: v == total, timeout=30)
    by_label = {
        (s.labels["baseline"], s.labels["agree"]): s.value
        for s in prom.query(f"sum by (baseline, agree) ({SHADOW_COMPARISONS_TOTAL})")
    }
    ratio = prom.query_scalar(AGREEMENT)
    want = expected.comparisons
    want_ratio = sum(n for (_, agree), n in want.items() if agree == "true") / sum(want.values())

    with capsys.disabled():
        print("\n  propagation of each write (kubectl apply; then until every process serves it):")
        for generation, write, converge in propagation:
            print(f"    generation {generation}: apply {write * 1000:.0f} ms, "
                  f"converged {converge * 1000:.0f} ms later")  # fmt: skip
        print(f"  requests {load.requests}, answers {sum(expected.served.values())}, "
              f"errors {load.errors}; served {dict(sorted(expected.served.items()))}")  # fmt: skip
        print(f"  comparisons expected {dict(sorted(want.items()))}, "
              f"Prometheus {dict(sorted(by_label.items()))}; agreement expected "
              f"{want_ratio:.6f}, PromQL {ratio}")  # fmt: skip
        print(f"  low confidence: {expected.low_confidence} served by rules, "
              f"{expected.shadow_low_confidence} shadow answers were the rules'")  # fmt: skip
        print(f"  {len(canary_users)} canary users, {len(spread)} answered by every process")

    assert reported == want, "the processes counted other comparisons than they made"
    assert by_label == {k: float(n) for k, n in want.items()}
    assert ratio == want_ratio
