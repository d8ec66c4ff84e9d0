"""The shadow's evaluations in a child process (service/shadow_process.py)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from service import metric_names as names
from service.features import CACHED_BATCH_ROWS, FeatureBatch, extract
from service.metric_names import NO_VERSION, Source
from service.rules import RuleEngine
from service.shadow import ShadowQueue, ShadowRows, compare_rows
from service.shadow_process import ShadowProcess, payload_features
from testbed.process import wait_until
from tests.service.conftest import CANDIDATE_VERSION, STABLE_VERSION, ServeFactory
from tests.service.test_shadow import FULL_SHADOW, _Model, samples, varied


def child_of(queue: ShadowQueue) -> ShadowProcess:
    assert queue.process is not None, "the shadow runs on a thread, not in a process"
    return queue.process


def test_comparisons_made_in_the_child_equal_those_made_on_the_worker_thread(
    serve: ServeFactory,
) -> None:
    in_thread = serve(FULL_SHADOW, shadow_batch_rows=7, coalesce=False, shadow_process=False)
    in_child = serve(FULL_SHADOW, shadow_batch_rows=7, coalesce=False, shadow_process=True)
    for txn in varied(60):
        [a] = in_thread.suggest(txn)["suggestions"]
        [b] = in_child.suggest(txn)["suggestions"]
        assert {**a, "event_id": None} == {**b, "event_id": None}
    compared = samples(in_thread, names.SHADOW_COMPARISONS_TOTAL)
    assert sum(compared.values()) == 60
    assert samples(in_child, names.SHADOW_COMPARISONS_TOTAL) == compared
    assert samples(in_child, names.PREDICTIONS_TOTAL) == samples(in_thread, names.PREDICTIONS_TOTAL)
    # the child's evaluation times are observed here, under the shadow's labels
    shadow_timed = in_child.metric(
        names.INFERENCE_SECONDS + "_count", role="candidate", model_version=CANDIDATE_VERSION,
        path="shadow",
    )  # fmt: skip
    assert shadow_timed == in_child.service.suggester.shadow.evaluations > 0
    child = child_of(in_child.service.suggester.shadow)
    assert child.pid is not None
    assert child.pid != os.getpid()
    assert child.starts == 1
    assert child.lost == 0


def test_the_child_alone_runs_in_the_idle_scheduling_class(serve: ServeFactory) -> None:
    served = serve(FULL_SHADOW, shadow_batch_rows=1, coalesce=False)
    served.suggest(*varied(3))
    served.settle()
    child = child_of(served.service.suggester.shadow)
    assert child.pid is not None
    assert (child.scheduling, os.sched_getscheduler(child.pid)) == ("idle", os.SCHED_IDLE)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # serving keeps its class
    shown = served.client.get("/v1/models").json()["shadow"]
    assert shown["evaluated_in"] == "process"
    assert (shown["pid"], shown["scheduling"], shown["process_starts"]) == (child.pid, "idle", 1)
    assert shown["compared_rows"] == 3


def test_a_candidate_burning_cpu_in_the_child_slows_no_answer_and_its_shed_rows_are_counted(
    serve: ServeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bounded load (120 one-transaction requests, 1 batch of 30) against a candidate whose
    every evaluation burns 10 s of CPU in the child: every answer comes back from stable
    (or the rules) while the first group is still in the child, so none waited for it;
    what the queue cannot hold is shed and counted; at stop the group in the child and the
    rows still queued are shed as ``stopped``: every row offered is compared or shed."""
    monkeypatch.setenv("MODELROLLOUT_FAULTS", json.dumps({CANDIDATE_VERSION: {"burn": 10}}))
    served = serve(FULL_SHADOW, shadow_batch_rows=8, shadow_queue_rows=40, coalesce=False)
    queue = served.service.suggester.shadow
    for txn in varied(120):
        [answer] = served.suggest(txn)["suggestions"]
        assert (answer["served_by"], answer["model_version"]) in {
            ("stable", STABLE_VERSION),
            ("rules", None),  # low confidence: the rules answer, as without shadow
        }
    assert len(served.suggest(*varied(30))["suggestions"]) == 30
    # All answered, and the first group is still in the child (it takes 10 s): had an
    # answer waited for a shadow evaluation, a second group would have been sent by now.
    wait_until(lambda: queue.busy, timeout=30, what="the first group in the child")
    assert queue.evaluations == 1
    full = served.metric(names.SHADOW_SHED_TOTAL, settle=False, reason="queue_full",
                         shadow_version=CANDIDATE_VERSION)  # fmt: skip
    assert full > 0
    assert queue.pending_rows <= 40
    queue.stop()
    stopped = served.metric(names.SHADOW_SHED_TOTAL, settle=False, reason="stopped",
                            shadow_version=CANDIDATE_VERSION)  # fmt: skip
    assert sum(samples(served, names.SHADOW_COMPARISONS_TOTAL).values()) == 0
    assert full + stopped == queue.shed_rows == 150
    assert served.metric(names.MODEL_ERRORS_TOTAL, settle=False, role="candidate",
                         model_version=CANDIDATE_VERSION) == 0  # fmt: skip
    assert child_of(queue).lost == 0  # stopped, not lost


def test_a_child_killed_while_evaluating_counts_a_model_error_and_is_replaced(
    serve: ServeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELROLLOUT_FAULTS", json.dumps({CANDIDATE_VERSION: {"burn": 10}}))
    served = serve(FULL_SHADOW, shadow_batch_rows=1, coalesce=False, shadow_cpu_share=1.0)
    queue = served.service.suggester.shadow
    child = child_of(queue)
    served.suggest(*varied(1))
    wait_until(lambda: queue.busy and child.pid is not None, timeout=30, what="a group sent")
    first = child.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: child.lost == 1, timeout=30, what="the loss seen")
    assert served.metric(names.MODEL_ERRORS_TOTAL, settle=False, role="candidate",
                         model_version=CANDIDATE_VERSION) == 1  # fmt: skip
    assert served.metric(names.MODEL_ERRORS_TOTAL, settle=False, role="stable",
                         model_version=STABLE_VERSION) == 0  # fmt: skip
    served.suggest(*varied(1))  # the next group starts a new child
    wait_until(lambda: child.starts == 2, timeout=60, what="a new child")
    assert child.pid != first
    queue.stop()


def test_a_child_that_died_while_idle_is_replaced_and_nothing_is_lost(serve: ServeFactory) -> None:
    served = serve(FULL_SHADOW, shadow_batch_rows=1, coalesce=False)
    queue = served.service.suggester.shadow
    child = child_of(queue)
    served.suggest(*varied(2))
    served.settle()
    first = child.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: not os.path.exists(f"/proc/{first}/status") or _zombie(first),
               timeout=10, what="the child gone")  # fmt: skip
    served.suggest(*varied(3))
    compared = sum(samples(served, names.SHADOW_COMPARISONS_TOTAL).values())
    errors = served.metric(names.MODEL_ERRORS_TOTAL, role="candidate",
                           model_version=CANDIDATE_VERSION)  # fmt: skip
    # a dead child is seen before a group is sent to it: a new one evaluates the rows
    assert (compared, errors, child.lost, child.starts) == (5, 0, 0, 2)
    assert child.pid != first


def _zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        return any(line.startswith("State:") and "Z" in line for line in f)


def test_chunks_sent_to_the_child_are_merged_without_changing_a_comparison() -> None:
    """Requests' chunks are sent as one payload per run of the same threshold (a
    reconfiguration may change it between two requests of one group), every field's rows
    in order and no features; the child computes the same features from the transactions,
    and its comparisons are those of the chunks one by one."""

    def chunk(i: int, threshold: float, mcc: str | None) -> ShadowRows:
        merchants = [f"M{i}A", f"M{i}B"]
        return ShadowRows(
            role=Source.CANDIDATE,
            model=cast(Any, _Model()),
            features=extract(merchants, ["", "x"], [1.0, -2.0], [mcc, mcc] if mcc else None),
            baselines=["stable", "rules"],
            baseline_versions=["s1", NO_VERSION],
            served_top1=["A", "B"],
            rules_top1=[None, "B"],
            merchants=merchants,
            memos=["", "x"],
            amounts=[1.0, -2.0],
            min_confidence=threshold,
            mccs=[mcc, mcc] if mcc else (),
        )

    chunks = [chunk(0, 0.5, None), chunk(1, 0.5, "5812"), chunk(2, 0.7, None), chunk(3, 0.5, None)]
    payloads = ShadowRows.payloads(chunks)
    assert [(len(p["baselines"]), p["min_confidence"]) for p in payloads] == [
        (4, 0.5),
        (2, 0.7),
        (2, 0.5),
    ]
    assert payloads[0]["mccs"] == [None, None, "5812", "5812"]
    assert payloads[1]["mccs"] == ()
    assert payloads[0]["merchants"] == ["M0A", "M0B", "M1A", "M1B"]
    assert all("features" not in p for p in payloads)

    rebuilt = [
        ShadowRows(
            role=Source.CANDIDATE, model=cast(Any, _Model()), features=payload_features(p), **p
        )
        for p in payloads
    ]
    together = FeatureBatch.concat([c.features for c in chunks])
    again = FeatureBatch.concat([r.features for r in rebuilt])
    for a, b in zip(
        (together.dense, together.indptr, together.indices, together.data),
        (again.dense, again.indptr, again.indices, again.data),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)

    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.55, 0.45]] * 2)
    rules = RuleEngine.default()
    one_by_one = compare_rows(chunks, cast(Any, _Model()), proba, rules).comparisons
    assert compare_rows(rebuilt, cast(Any, _Model()), proba, rules).comparisons == one_by_one
    assert sum(one_by_one.values()) == 8


def test_the_child_computes_the_features_of_more_rows_than_one_cached_batch() -> None:
    rows = [("WHOLEFDS MKT #10233", "weekly", -54.2, "5411"), ("UBER *TRIP", "", -21.5, None)]
    n = 2 * CACHED_BATCH_ROWS + 3
    picked = [rows[i % 2] for i in range(n)]
    merchants, memos, amounts, mccs = (list(c) for c in zip(*picked, strict=True))
    payload = {"merchants": merchants, "memos": memos, "amounts": amounts, "mccs": mccs}
    got, want = payload_features(payload), extract(merchants, memos, amounts, mccs)
    for name in ("dense", "indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))


def test_the_child_scores_from_the_compiled_trees_once_serving_does(
    serve: ServeFactory, tmp_path: Path
) -> None:
    served = serve(FULL_SHADOW, shadow_batch_rows=1, coalesce=False, compile_models=True,
                   compile_cache=tmp_path / "compiled")  # fmt: skip
    child = child_of(served.service.suggester.shadow)
    served.suggest(*varied(1))
    served.settle()
    assert child.scorers == {CANDIDATE_VERSION: "lightgbm"}  # not compiled yet
    candidate = served.state.models[Source.CANDIDATE]
    wait_until(lambda: candidate.scorer == "compiled", timeout=300, what="the compiled trees",
               on_timeout=lambda: candidate.scorer_detail)  # fmt: skip
    served.suggest(*varied(2))
    served.settle()
    assert child.scorers == {CANDIDATE_VERSION: "compiled"}  # loaded from the cache
    assert served.client.get("/v1/models").json()["shadow"]["process_scorers"] == child.scorers
    assert child.starts == 1
