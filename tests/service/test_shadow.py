"""Shadow rows evaluated off the answer's path, in groups (service/shadow.py)."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pytest

from service import metric_names as names
from service.features import FeatureBatch, extract
from service.metric_names import Source
from service.metrics import ServiceMetrics
from service.models import LoadedModel
from service.rules import RuleEngine
from service.serving_config import ServingConfig
from service.shadow import ShadowQueue, ShadowRows
from testbed.process import wait_until
from tests.service.conftest import CANDIDATE_VERSION, STABLE_VERSION, ServeFactory, transaction

FULL_SHADOW = ServingConfig(
    generation=1, stable=STABLE_VERSION, candidate=CANDIDATE_VERSION, shadow_percent=100
)
MERCHANTS = [
    ("WHOLEFDS MKT #10233", "weekly grocery run", -54.2),
    ("UBER *TRIP", "", -21.5),
    ("ACME CORP PAYROLL", "salary", 3200.0),
    ("SHELL OIL 5521", "gas", -48.1),
    ("NETFLIX.COM", "", -15.49),
    ("ZZQX 0001", "", -3.0),  # nothing known: low confidence, the rules' answer
]


def varied(n: int) -> list[dict[str, Any]]:
    return [
        transaction(f"t{i}", merchant=m, memo=d, amount=a, user_id=f"user-{i}")
        for i, (m, d, a) in enumerate((MERCHANTS * (n // len(MERCHANTS) + 1))[:n])
    ]


def samples(served: Any, name: str) -> Counter[tuple[tuple[str, str], ...]]:
    """Every sample of ``name`` by its labels, once the shadow's worker has compared
    everything queued so far."""
    assert served.service.suggester.shadow.drain(30), "the shadow queue did not drain"
    return Counter(
        {
            tuple(sorted(s.labels.items())): s.value
            for m in served.service.metrics.registry.collect()
            for s in m.samples
            if s.name == name and s.value
        }
    )


def test_the_worker_compares_small_requests_shadows_in_groups(serve: ServeFactory) -> None:
    served = serve(FULL_SHADOW, shadow_batch_rows=32, coalesce=False)
    queue = served.service.suggester.shadow
    for txn in varied(5):
        assert served.suggest(txn)["suggestions"][0]["served_by"] == "stable"
    assert sum(samples(served, names.SHADOW_COMPARISONS_TOTAL).values()) == 5
    assert queue.pending_rows == 0
    candidate = {"role": "candidate", "model_version": CANDIDATE_VERSION, "path": "shadow"}
    assert served.metric(f"{names.INFERENCE_SECONDS}_count", **candidate) == queue.evaluations
    assert 1 <= queue.evaluations <= 5
    stable = {"role": "stable", "model_version": STABLE_VERSION, "path": "served"}
    assert served.metric(f"{names.INFERENCE_SECONDS}_count", **stable) == 5


def test_reading_the_metrics_or_the_probes_evaluates_no_model(serve: ServeFactory) -> None:
    served = serve(FULL_SHADOW, shadow_batch_rows=32, coalesce=False)
    queue = served.service.suggester.shadow
    queue.max_wait = 3600.0  # the worker waits for 32 rows: only a reader could flush
    for txn in varied(5):
        served.suggest(txn)
    for path in ("/metrics", "/readyz", "/healthz", "/v1/models"):
        assert served.client.get(path).status_code == 200
    assert (queue.evaluations, queue.pending_rows) == (0, 5)
    text = served.client.get("/metrics").text
    assert names.SHADOW_COMPARISONS_TOTAL + "{" not in text


def test_the_worker_evaluates_once_batch_rows_wait(serve: ServeFactory) -> None:
    served = serve(FULL_SHADOW, shadow_batch_rows=4, coalesce=False)
    queue = served.service.suggester.shadow
    queue.max_wait = 3600.0
    for i, txn in enumerate(varied(9)):
        served.suggest(txn)
        if i in (3, 7):  # the 4th and 8th rows make a group
            evaluations = i // 4 + 1
            wait_until(lambda n=evaluations: queue.evaluations == n, timeout=10, what="a group")
    assert (queue.evaluations, queue.pending_rows) == (2, 1)


def test_the_oldest_row_waits_at_most_max_wait(serve: ServeFactory) -> None:
    served = serve(FULL_SHADOW, shadow_batch_rows=1000, coalesce=False)
    served.suggest(transaction())
    queue = served.service.suggester.shadow
    wait_until(lambda: queue.evaluations == 1, timeout=10, what="the lone row compared")
    assert queue.pending_rows == 0


def test_a_large_batch_is_answered_before_its_shadow_is_evaluated(
    serve: ServeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = serve(FULL_SHADOW, shadow_batch_rows=4, coalesce=False, shadow_process=False)
    gate = Gate(monkeypatch)
    answers = served.suggest(*varied(100))["suggestions"]  # on a worker thread: > inline_rows
    assert {a["served_by"] for a in answers} <= {"stable", "rules"}
    wait_until(lambda: gate.stuck == 1, timeout=10, what="the candidate evaluating")
    gate.open()
    assert sum(samples(served, names.SHADOW_COMPARISONS_TOTAL).values()) == 100


class Gate:
    """The candidate's evaluations wait until :meth:`open` (30 s at most): a candidate that
    never finishes while the test runs. ``stuck`` counts evaluations waiting now."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self.stuck = 0
        original = LoadedModel.predict_proba

        def gated(model: LoadedModel, features: Any) -> Any:
            if model.version == CANDIDATE_VERSION:
                with self._lock:
                    self.stuck += 1
                self._event.wait(30)
                with self._lock:
                    self.stuck -= 1
            return original(model, features)

        monkeypatch.setattr(LoadedModel, "predict_proba", gated)

    def open(self) -> None:
        self._event.set()


def test_a_candidate_that_never_finishes_slows_no_answer_and_its_shed_rows_are_counted(
    serve: ServeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bounded load (120 one-transaction requests, 1 batch of 30) against a candidate in
    100% shadow that does not finish any evaluation until the test lets it: every answer
    comes back, from stable, while the candidate is stuck (so none waited for it); what
    the queue could not hold is shed and counted; after the candidate finishes, every row
    is either compared or shed, never both, never lost."""
    served = serve(
        FULL_SHADOW,
        shadow_batch_rows=8,
        shadow_queue_rows=40,
        coalesce=False,
        shadow_process=False,  # the Gate patches this process's models
    )
    queue = served.service.suggester.shadow
    gate = Gate(monkeypatch)
    try:
        for txn in varied(120):
            [answer] = served.suggest(txn)["suggestions"]
            assert (answer["served_by"], answer["model_version"]) in {
                ("stable", STABLE_VERSION),
                ("rules", None),  # low confidence: the rules answer, as without shadow
            }
        batch = served.suggest(*varied(30))["suggestions"]
        assert len(batch) == 30
        wait_until(lambda: gate.stuck == 1, timeout=10, what="the candidate evaluating")
        shed = {
            reason: served.metric(
                names.SHADOW_SHED_TOTAL,
                settle=False,  # the worker is stuck: nothing to wait for
                reason=reason,
                shadow_version=CANDIDATE_VERSION,
            )
            for reason in ("queue_full", "cpu_budget", "stopped")
        }
        assert shed["queue_full"] > 0
        assert shed["cpu_budget"] == shed["stopped"] == 0
        assert queue.pending_rows <= 40
        assert served.metric(names.PREDICTIONS_TOTAL, settle=False, served_by="candidate",
                             model_version=CANDIDATE_VERSION) == 0  # fmt: skip
    finally:
        gate.open()
    compared = sum(samples(served, names.SHADOW_COMPARISONS_TOTAL).values())
    assert compared + shed["queue_full"] == 150
    assert compared == queue.compared_rows > 0


def test_rows_left_at_stop_and_offered_after_it_are_shed_as_stopped(serve: ServeFactory) -> None:
    served = serve(FULL_SHADOW, shadow_batch_rows=32, coalesce=False)
    queue = served.service.suggester.shadow
    queue.max_wait = 3600.0
    for txn in varied(3):
        served.suggest(txn)
    queue.stop()
    served.suggest(transaction("after"))
    stopped = served.metric(
        names.SHADOW_SHED_TOTAL, reason="stopped", shadow_version=CANDIDATE_VERSION
    )
    assert (stopped, queue.pending_rows, queue.evaluations) == (4, 0, 0)


@pytest.mark.parametrize(
    "config",
    [
        FULL_SHADOW,
        ServingConfig(
            generation=1,
            stable=STABLE_VERSION,
            candidate=CANDIDATE_VERSION,
            canary_percent=50.0,
            shadow_percent=100.0,
        ),
        ServingConfig(generation=1, mode="heuristic", stable=STABLE_VERSION, shadow_percent=100),
        ServingConfig(
            generation=1,
            stable=STABLE_VERSION,
            candidate=CANDIDATE_VERSION,
            shadow_percent=100,
            min_confidence=0.9,  # many shadow answers fall back to the rules
        ),
    ],
    ids=["shadow", "canary-and-shadow", "rules-and-shadow", "high-threshold"],
)
def test_grouped_comparisons_equal_comparisons_made_one_request_at_a_time(
    serve: ServeFactory, config: ServingConfig
) -> None:
    one = serve(config, shadow_batch_rows=1, coalesce=False)  # a group per request
    grouped = serve(config, shadow_batch_rows=7, coalesce=False)
    grouped.service.suggester.shadow.max_wait = 3600.0  # groups of 7 (and a last one)
    now, later = one, grouped
    txns = varied(60)
    for txn in txns:
        [a], [b] = now.suggest(txn)["suggestions"], later.suggest(txn)["suggestions"]
        assert {**a, "event_id": None} == {**b, "event_id": None}
    compared = samples(now, names.SHADOW_COMPARISONS_TOTAL)
    assert sum(compared.values()) == 60
    assert samples(later, names.SHADOW_COMPARISONS_TOTAL) == compared
    assert samples(later, names.PREDICTIONS_TOTAL) == samples(now, names.PREDICTIONS_TOTAL)


def test_a_shadow_that_raises_later_is_counted_and_answers_nothing(
    serve: ServeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = serve(FULL_SHADOW, shadow_batch_rows=32, coalesce=False, shadow_process=False)
    served.suggest(transaction("a"))
    original = LoadedModel.predict_proba

    def broken_candidate(self: LoadedModel, features: np.ndarray) -> np.ndarray:
        if self.version == CANDIDATE_VERSION:
            raise RuntimeError("boom")
        return original(self, features)

    assert served.service.suggester.shadow.drain(30)
    monkeypatch.setattr(LoadedModel, "predict_proba", broken_candidate)
    served.suggest(transaction("b"))
    assert served.service.suggester.shadow.drain(30)
    assert served.metric(names.MODEL_ERRORS_TOTAL, role="candidate", model_version="v2") == 1
    assert served.metric(names.MODEL_ERRORS_TOTAL, role="stable", model_version="v1") == 0
    assert sum(samples(served, names.SHADOW_COMPARISONS_TOTAL).values()) == 1  # only "a"
    assert served.service.suggester.shadow.pending_rows == 0


def test_a_comparison_keeps_the_version_it_was_routed_to(serve: ServeFactory) -> None:
    served = serve(FULL_SHADOW, shadow_batch_rows=32, coalesce=False)
    served.service.suggester.shadow.max_wait = 3600.0  # "a" still queued at the swap
    served.suggest(transaction("a"))
    swapped = ServingConfig(
        generation=2, stable=CANDIDATE_VERSION, candidate=STABLE_VERSION, shadow_percent=100
    )
    served.configure(swapped)
    served.suggest(transaction("b"))
    by_version = Counter(
        dict(labels)["shadow_version"]
        for labels, count in samples(served, names.SHADOW_COMPARISONS_TOTAL).items()
        for _ in range(int(count))
    )
    assert by_version == {CANDIDATE_VERSION: 1, STABLE_VERSION: 1}


class _Model:
    """A stand-in with what the queue reads of a LoadedModel."""

    version = "m1"
    classes = ("A", "B")


def one_row(min_confidence: float) -> ShadowRows:
    """One candidate row for merchant "m", served "A" by stable s1."""
    return ShadowRows(
        role=Source.CANDIDATE,
        model=cast(Any, _Model()),
        features=extract(["m"], [""], [1.0]),
        baselines=["stable"],
        baseline_versions=["s1"],
        served_top1=["A"],
        rules_top1=[None],
        merchants=["m"],
        memos=[""],
        amounts=[1.0],
        min_confidence=min_confidence,
    )


def test_rows_added_from_many_threads_are_all_compared_once() -> None:
    metrics = ServiceMetrics()
    evaluated: list[int] = []

    def evaluate(role: Source, model: Any, x: np.ndarray) -> np.ndarray:
        evaluated.append(len(x))
        return np.tile([0.9, 0.1], (len(x), 1))

    queue = ShadowQueue(evaluate, RuleEngine.default(), metrics, batch_rows=16, max_rows=4 * 600)
    model: Any = _Model()

    def add(n: int) -> None:
        for _ in range(n):
            queue.add(
                ShadowRows(
                    role=Source.CANDIDATE,
                    model=model,
                    features=extract(["m"] * 3, [""] * 3, [1.0] * 3),
                    baselines=["stable"] * 3,
                    baseline_versions=["s1"] * 3,
                    served_top1=["A", "B", "A"],
                    rules_top1=[None] * 3,
                    merchants=["m"] * 3,
                    memos=[""] * 3,
                    amounts=[1.0] * 3,
                    min_confidence=0.5,
                )
            )

    threads = [threading.Thread(target=add, args=(200,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert queue.drain(30)
    queue.stop()
    assert sum(evaluated) == 4 * 200 * 3
    agree = metrics.registry.get_sample_value(
        names.SHADOW_COMPARISONS_TOTAL,
        {
            "baseline": "stable",
            "baseline_version": "s1",
            "shadow_version": "m1",
            "category": "A",
            "agree": "true",
        },
    )
    disagree = metrics.registry.get_sample_value(
        names.SHADOW_COMPARISONS_TOTAL,
        {
            "baseline": "stable",
            "baseline_version": "s1",
            "shadow_version": "m1",
            "category": "B",
            "agree": "false",
        },
    )
    assert (agree, disagree) == (1600, 800)


def test_a_failing_comparison_drops_its_rows_and_never_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BrokenRules(RuleEngine):
        def suggest(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("rules broke")

    metrics = ServiceMetrics()
    unsure = np.array([[0.5, 0.5]])  # below min_confidence: the rules' answer is needed
    queue = ShadowQueue(lambda role, model, x: unsure, BrokenRules.default(), metrics, batch_rows=1)
    rows = one_row(min_confidence=0.9)
    assert queue.add(rows)
    assert queue.drain(30)
    queue.stop()
    assert queue.pending_rows == 0
    assert "1 rows of candidate dropped" in caplog.text
    assert metrics.registry.get_sample_value(names.SHADOW_COMPARISONS_TOTAL, {
        "baseline": "stable", "baseline_version": "s1", "shadow_version": "m1", "category": "A",
        "agree": "true",
    }) is None  # fmt: skip


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"batch_rows": 0}, "batch_rows must be at least 1"),
        ({"cpu_share": 0.0}, "cpu_share must be in"),
        ({"cpu_share": 1.5}, "cpu_share must be in"),
        ({"max_rows": 0}, "max_rows must be at least 1"),
        ({"max_wait": -1.0}, "max_wait must not be negative"),
    ],
)
def test_the_budget_must_make_sense(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ShadowQueue(
            lambda *_: None, RuleEngine.default(), ServiceMetrics(), **{"batch_rows": 1, **settings}
        )


def test_a_shadow_not_confident_enough_is_compared_as_the_rules_answer_with_the_cards_mcc() -> None:
    """The user would have seen the rules' answer, and the rules read the MCC (5812 is a
    restaurant): a merchant nothing else knows is Dining with its code, not the rules'
    answer without one."""
    rules = RuleEngine.default()
    unknown = "ZZQX 0001"
    with_code = rules.suggest(unknown, "", -3.0, 1, "5812").top
    assert with_code == "Dining"
    assert rules.suggest(unknown, "", -3.0, 1).top != with_code

    metrics = ServiceMetrics()
    unsure = np.array([[0.5, 0.5]])  # below min_confidence: the rules' answer is needed
    queue = ShadowQueue(lambda role, model, x: unsure, rules, metrics, batch_rows=1)
    rows = ShadowRows(
        role=Source.CANDIDATE,
        model=cast(Any, _Model()),
        features=extract([unknown], [""], [-3.0], ["5812"]),
        baselines=["stable"],
        baseline_versions=["s1"],
        served_top1=["Dining"],
        rules_top1=[None],
        merchants=[unknown],
        memos=[""],
        amounts=[-3.0],
        min_confidence=0.9,
        mccs=["5812"],
    )
    assert queue.add(rows)
    assert queue.drain(30)
    queue.stop()
    assert metrics.registry.get_sample_value(names.SHADOW_COMPARISONS_TOTAL, {
        "baseline": "stable", "baseline_version": "s1", "shadow_version": "m1",
        "category": "Dining", "agree": "true",
    }) == 1  # fmt: skip


@pytest.mark.parametrize(("idle", "policy"), [(True, "SCHED_IDLE"), (False, "SCHED_OTHER")])
def test_the_worker_thread_alone_runs_in_the_idle_scheduling_class(idle: bool, policy: str) -> None:
    """The worker gets a core only when serving does not want one; the event loop's thread
    (here the test's) keeps its class."""
    seen: dict[str, int] = {}

    def evaluate(role: Source, model: Any, x: Any) -> np.ndarray:
        seen["worker"] = os.sched_getscheduler(0)  # 0: the calling thread, on Linux
        return np.tile([0.9, 0.1], (len(x), 1))

    before = os.sched_getscheduler(0)
    queue = ShadowQueue(
        evaluate, RuleEngine.default(), ServiceMetrics(), batch_rows=1, idle_priority=idle
    )
    rows = one_row(min_confidence=0.5)
    assert queue.add(rows)
    assert queue.drain(30)
    queue.stop()
    assert seen["worker"] == getattr(os, policy)
    assert queue.scheduling == ("idle" if idle else "normal")
    assert os.sched_getscheduler(0) == before == os.SCHED_OTHER


def test_offers_signal_the_worker_only_when_it_waits_for_rows_and_they_are_news() -> None:
    """Every signal makes the worker take the GIL from the event loop, so an offer signals
    it only for the first rows or when a group's worth is reached, never once per offer and
    never while it waits out its CPU budget."""

    def evaluate(role: Source, model: Any, x: FeatureBatch) -> npt.NDArray[np.float64]:
        started = time.thread_time()
        while time.thread_time() - started < 0.01:  # 10 ms of CPU: a pause of ~10 s
            pass
        return np.tile([0.9, 0.1], (len(x), 1))

    queue = ShadowQueue(
        evaluate, RuleEngine.default(), ServiceMetrics(), batch_rows=4, cpu_share=0.001
    )
    for _ in range(3):  # the first starts the worker; the others are not a group yet
        assert queue.add(one_row(0.5))
    assert queue.signals == 0
    assert queue.add(one_row(0.5))  # a group's worth
    assert queue.signals == 1
    wait_until(lambda: queue.pausing, timeout=30, what="the worker pausing for its budget")
    for _ in range(40):  # while it pauses: queued, and no signal
        assert queue.add(one_row(0.5))
    assert queue.signals == 1
    assert queue.pending_rows == 40
    queue.stop()
    assert queue.shed_rows == 40
