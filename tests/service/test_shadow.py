"""Shadow rows evaluated off the answer's path, in groups (service/shadow.py)."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any, cast

import numpy as np
import pytest

from service import metric_names as names
from service.features import extract
from service.metric_names import Source
from service.metrics import ServiceMetrics
from service.models import LoadedModel
from service.rules import RuleEngine
from service.serving_config import ServingConfig
from service.shadow import ShadowQueue, ShadowRows
from service.suggest import Batch
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
    """Every sample of ``name`` by its labels (reading the registry flushes the queue)."""
    return Counter(
        {
            tuple(sorted(s.labels.items())): s.value
            for m in served.service.metrics.registry.collect()
            for s in m.samples
            if s.name == name and s.value
        }
    )


def test_small_requests_shadows_wait_and_reading_the_metrics_counts_them(
    serve: ServeFactory,
) -> None:
    served = serve(FULL_SHADOW, shadow_batch_rows=32, coalesce=False)
    queue = served.service.suggester.shadow
    for txn in varied(5):
        assert served.suggest(txn)["suggestions"][0]["served_by"] == "stable"
    assert queue.pending_rows == 5
    assert queue.evaluations == 0
    candidate = {"role": "candidate", "model_version": CANDIDATE_VERSION, "path": "shadow"}
    assert served.metric(f"{names.INFERENCE_SECONDS}_count", **candidate) == 1  # one group
    assert queue.pending_rows == 0
    assert queue.evaluations == 1
    assert sum(samples(served, names.SHADOW_COMPARISONS_TOTAL).values()) == 5
    stable = {"role": "stable", "model_version": STABLE_VERSION, "path": "served"}
    assert served.metric(f"{names.INFERENCE_SECONDS}_count", **stable) == 5


def test_the_queue_evaluates_by_itself_once_it_holds_batch_rows(serve: ServeFactory) -> None:
    served = serve(FULL_SHADOW, shadow_batch_rows=4, coalesce=False)
    queue = served.service.suggester.shadow
    for i, txn in enumerate(varied(9)):
        served.suggest(txn)
        if i in (3, 7):  # the 4th and 8th rows fill it: evaluated in the loop's next turn
            evaluations = i // 4 + 1
            wait_until(lambda n=evaluations: queue.evaluations == n, timeout=10, what="a flush")
    assert (queue.evaluations, queue.pending_rows) == (2, 1)


def test_on_the_event_loop_a_full_queue_is_evaluated_after_the_answer(
    serve: ServeFactory,
) -> None:
    service = serve(FULL_SHADOW, shadow_batch_rows=2, coalesce=False).service
    queue = service.suggester.shadow
    one = Batch(ids=["a"], merchants=["UBER *TRIP"], memos=[""], amounts=[-21.5], user_ids=["u"])

    async def main() -> tuple[int, int, int]:
        await service.answer(one)
        await service.answer(one)  # fills the queue; its answer is back before the flush
        before = queue.evaluations
        pending = queue.pending_rows
        await asyncio.sleep(0)  # the loop's next turn
        return before, pending, queue.evaluations

    assert asyncio.run(main()) == (0, 2, 1)
    assert queue.pending_rows == 0


def test_a_batch_of_batch_rows_or_more_is_compared_with_its_answer(serve: ServeFactory) -> None:
    served = serve(FULL_SHADOW, shadow_batch_rows=4, coalesce=False)
    served.suggest(*varied(4))
    queue = served.service.suggester.shadow
    assert (queue.evaluations, queue.pending_rows) == (0, 0)
    assert served.service.metrics.shadow_comparisons.collect()[0].samples  # counted already


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
def test_deferred_comparisons_equal_comparisons_made_with_the_answer(
    serve: ServeFactory, config: ServingConfig
) -> None:
    now = serve(config, shadow_batch_rows=1, coalesce=False)
    later = serve(config, shadow_batch_rows=7, coalesce=False)
    txns = varied(60)
    for txn in txns:
        [a], [b] = now.suggest(txn)["suggestions"], later.suggest(txn)["suggestions"]
        assert {**a, "event_id": None} == {**b, "event_id": None}
    assert later.service.suggester.shadow.evaluations >= 1
    compared = samples(now, names.SHADOW_COMPARISONS_TOTAL)
    assert sum(compared.values()) == 60
    assert samples(later, names.SHADOW_COMPARISONS_TOTAL) == compared
    assert samples(later, names.PREDICTIONS_TOTAL) == samples(now, names.PREDICTIONS_TOTAL)


def test_a_shadow_that_raises_later_is_counted_and_answers_nothing(
    serve: ServeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = serve(FULL_SHADOW, shadow_batch_rows=32, coalesce=False)
    served.suggest(transaction("a"))
    original = LoadedModel.predict_proba

    def broken_candidate(self: LoadedModel, features: np.ndarray) -> np.ndarray:
        if self.version == CANDIDATE_VERSION:
            raise RuntimeError("boom")
        return original(self, features)

    monkeypatch.setattr(LoadedModel, "predict_proba", broken_candidate)
    served.suggest(transaction("b"))
    assert served.metric(names.MODEL_ERRORS_TOTAL, role="candidate", model_version="v2") == 1
    assert served.metric(names.MODEL_ERRORS_TOTAL, role="stable", model_version="v1") == 0
    assert sum(samples(served, names.SHADOW_COMPARISONS_TOTAL).values()) == 0
    assert served.service.suggester.shadow.pending_rows == 0


def test_a_comparison_keeps_the_version_it_was_routed_to(serve: ServeFactory) -> None:
    served = serve(FULL_SHADOW, shadow_batch_rows=32, coalesce=False)
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


def test_rows_added_from_many_threads_are_all_compared_once() -> None:
    metrics = ServiceMetrics()
    evaluated: list[int] = []

    def evaluate(role: Source, model: Any, x: np.ndarray) -> np.ndarray:
        evaluated.append(len(x))
        return np.tile([0.9, 0.1], (len(x), 1))

    queue = ShadowQueue(evaluate, RuleEngine.default(), metrics, batch_rows=16)
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
    queue.flush()
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
    rows = ShadowRows(
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
        min_confidence=0.9,
    )
    queue.add(rows)  # fills the queue: flushed at once, off any event loop
    assert queue.pending_rows == 0
    assert "1 rows of candidate dropped" in caplog.text
    assert metrics.registry.get_sample_value(names.SHADOW_COMPARISONS_TOTAL, {
        "baseline": "stable", "baseline_version": "s1", "shadow_version": "m1", "category": "A",
        "agree": "true",
    }) is None  # fmt: skip


def test_batch_rows_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ShadowQueue(lambda *_: None, RuleEngine.default(), ServiceMetrics(), batch_rows=0)
