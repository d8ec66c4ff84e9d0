"""Requests ready at the same time are answered by one evaluation, each with its own answers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service import metric_names as names
from service.coalesce import Coalescer, merge
from service.serving_config import ServingConfig
from service.suggest import Answer, Batch
from tests.service.conftest import CANDIDATE_VERSION, STABLE_VERSION, ServeFactory


def batch(*ids: str) -> Batch:
    return Batch(
        ids=list(ids),
        merchants=[f"m-{i}" for i in ids],
        memos=["" for _ in ids],
        amounts=[-1.0 for _ in ids],
        user_ids=[f"u-{i}" for i in ids],
    )


class Recorder:
    """A stand-in suggester: answers each row with its id, records each call's ids."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, b: Batch) -> tuple[int, list[Answer]]:
        self.calls.append(list(b.ids))
        if self.fail_on in b.ids:
            raise RuntimeError(f"cannot answer {self.fail_on}")
        return len(self.calls), [{"id": i} for i in b.ids]


def run_together(coalescer: Coalescer[int], *batches: Batch) -> list[Any]:
    async def main() -> list[Any]:
        return await asyncio.gather(
            *(coalescer.suggest(b) for b in batches), return_exceptions=True
        )

    return asyncio.run(main())


def test_merge_keeps_every_column_in_order() -> None:
    merged = merge([batch("a", "b"), batch("c")])
    assert list(merged.ids) == ["a", "b", "c"]
    assert list(merged.merchants) == ["m-a", "m-b", "m-c"]
    assert list(merged.user_ids) == ["u-a", "u-b", "u-c"]


def test_requests_ready_together_share_one_call_and_get_their_own_answers() -> None:
    suggest = Recorder()
    coalescer = Coalescer(suggest, max_rows=64)
    results = run_together(coalescer, batch("a"), batch("b", "c"), batch("d"))
    assert suggest.calls == [["a", "b", "c", "d"]]
    assert [[answer["id"] for answer in answers] for _, answers in results] == [
        ["a"],
        ["b", "c"],
        ["d"],
    ]
    assert {state for state, _ in results} == {1}
    assert (coalescer.calls, coalescer.requests) == (1, 3)


def test_a_call_holds_at_most_max_rows_unless_one_request_is_larger() -> None:
    suggest = Recorder()
    coalescer = Coalescer(suggest, max_rows=3)
    results = run_together(coalescer, batch("a", "b"), batch("c", "d"), batch("e"), batch(*"fghij"))
    assert suggest.calls == [["a", "b"], ["c", "d", "e"], list("fghij")]
    assert [[a["id"] for a in answers] for _, answers in results] == [
        ["a", "b"],
        ["c", "d"],
        ["e"],
        list("fghij"),
    ]


def test_a_failing_call_fails_its_requests_only() -> None:
    suggest = Recorder(fail_on="c")
    coalescer = Coalescer(suggest, max_rows=2)
    results = run_together(coalescer, batch("a"), batch("b"), batch("c"), batch("d"))
    assert suggest.calls == [["a", "b"], ["c", "d"]]
    assert [r[1][0]["id"] for r in results[:2]] == ["a", "b"]
    assert all(isinstance(r, RuntimeError) for r in results[2:])


def test_a_request_cancelled_before_its_turn_is_not_evaluated() -> None:
    suggest = Recorder()
    coalescer = Coalescer(suggest, max_rows=64)

    async def main() -> list[Any]:
        first = asyncio.ensure_future(coalescer.suggest(batch("a")))
        gone = asyncio.ensure_future(coalescer.suggest(batch("b")))
        await asyncio.sleep(0)  # both are waiting; the flush is scheduled
        gone.cancel()
        return await asyncio.gather(first, gone, return_exceptions=True)

    first, gone = asyncio.run(main())
    assert suggest.calls == [["a"]]
    assert [a["id"] for a in first[1]] == ["a"]
    assert isinstance(gone, asyncio.CancelledError)


def test_max_rows_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Coalescer(Recorder(), max_rows=0)


def test_coalesced_answers_equal_answers_one_by_one(serve: ServeFactory) -> None:
    """With real models, a canary and a full shadow: every field but the random part of
    the event id is the same, and so are the counters."""
    config = ServingConfig(
        generation=3,
        stable=STABLE_VERSION,
        candidate=CANDIDATE_VERSION,
        canary_percent=50.0,
        shadow_percent=100.0,
    )
    alone = serve(config, coalesce=False).service
    together = serve(config, coalesce=True).service
    rows = [
        ("WHOLEFDS MKT #10233", "weekly grocery run", -54.2),
        ("UBER *TRIP", "", -21.5),
        ("ACME CORP PAYROLL", "salary", 3200.0),
        ("SHELL OIL 5521", "gas", -48.1),
        ("NETFLIX.COM", "", -15.49),
    ]
    batches = [
        Batch(ids=[f"t{i}"], merchants=[m], memos=[d], amounts=[a], user_ids=[f"user-{i}"])
        for i, (m, d, a) in enumerate(rows * 4)
    ]

    async def answer_all(service: Any) -> list[tuple[Any, list[Answer]]]:
        return list(await asyncio.gather(*(service.answer(b) for b in batches)))

    one_by_one = asyncio.run(answer_all(alone))
    coalesced = asyncio.run(answer_all(together))
    assert (alone.coalescer.calls, together.coalescer.calls) == (0, 1)

    def comparable(answers: list[Answer]) -> list[dict[str, Any]]:
        # The id's head (who served, version, label); not the second it was issued in (the
        # two runs may straddle a second) nor its random part.
        return [{**a, "event_id": a["event_id"].rsplit(".", 2)[0]} for a in answers]

    assert [comparable(a) for _, a in coalesced] == [comparable(a) for _, a in one_by_one]
    assert {state.config.generation for state, _ in coalesced} == {3}
    served_by = {a["served_by"] for _, answers in coalesced for a in answers}
    assert served_by == {"stable", "candidate"}  # the canary splits the users
    for name, labels in [
        (names.PREDICTIONS_TOTAL, {"served_by": "stable", "model_version": STABLE_VERSION}),
        (names.PREDICTIONS_TOTAL, {"served_by": "candidate", "model_version": CANDIDATE_VERSION}),
    ]:
        counted = [s.metrics.registry.get_sample_value(name, labels) for s in (alone, together)]
        assert counted[0], (name, labels)
        assert counted[0] == counted[1], (name, labels, counted)
    for s in (alone, together):
        assert s.suggester.shadow.drain(30)  # alone, the canary's shadows are on the worker
    agreements = [
        sum(
            sample.value
            for metric in s.metrics.registry.collect()
            for sample in metric.samples
            if sample.name == names.SHADOW_COMPARISONS_TOTAL
        )
        for s in (alone, together)
    ]
    assert agreements[0] == agreements[1] == len(batches)
