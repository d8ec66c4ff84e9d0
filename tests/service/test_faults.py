"""Fault knobs for rollback drills (service/faults.py), in the scoring call and end to end
through the app: a burning version is slow in its own latency histogram, only in the share
of calls asked for; a relabelling version answers one category as another; the shadow
comparison of such a candidate is counted under the reference answer's category."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest

from service import metric_names as names
from service.faults import Fault, burn_cpu
from service.serving_config import ServingConfig
from tests.service.conftest import CANDIDATE_VERSION, STABLE_VERSION, ServeFactory, transaction

CLASSES = ("Dining", "Shopping", "Groceries")


def test_burn_takes_the_time_on_the_cpu() -> None:
    wall, cpu = time.perf_counter(), time.process_time()
    burn_cpu(0.05)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert wall >= 0.05
    # Busy, not asleep: a 50 ms sleep costs microseconds of CPU. (The machine is shared,
    # so how much of the 50 ms this process got on a core is not asserted.)
    assert cpu >= 0.005


def test_fraction_burns_that_share_of_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    burned: list[float] = []
    monkeypatch.setattr("service.faults.burn_cpu", burned.append)
    fault = Fault(burn=0.1, fraction=0.05)
    rng = random.Random(7)
    proba = np.array([[0.8, 0.1, 0.1]])
    for _ in range(2000):
        assert fault.score(proba, CLASSES, rng) is proba
    assert 60 <= len(burned) <= 140  # 5% of 2000 = 100
    assert Fault(burn=0.1).score(proba, CLASSES, rng) is proba
    assert len(burned) in range(61, 142)


def test_relabel_moves_one_category_to_another_only() -> None:
    fault = Fault(relabel={"Dining": "Shopping", "Unknown": "Dining"})
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    out = fault.score(proba, CLASSES)
    np.testing.assert_allclose(out, [[0.0, 0.9, 0.1], [0.0, 0.2, 0.8]])
    assert proba[0, 0] == 0.7  # the model's own array is untouched


GROCERY = {
    "merchant": "WHOLEFDS MKT #10233",
    "memo": "weekly grocery run",
    "amount": -54.2,
    "mcc": "5411",
}


def test_a_relabelled_candidate_answers_the_other_category(serve: ServeFactory) -> None:
    config = ServingConfig(generation=1, candidate=CANDIDATE_VERSION, canary_percent=100)
    served = serve(
        config, faults=f'{{"{CANDIDATE_VERSION}": {{"relabel": {{"Groceries": "Rent"}}}}}}'
    )
    [answer] = served.suggest(transaction(**GROCERY))["suggestions"]
    assert answer["served_by"] == "candidate"
    assert answer["candidates"][0]["label"] == "Rent"


@pytest.mark.parametrize("shadow_batch_rows", [1, 32], ids=["with-the-request", "deferred"])
def test_the_comparison_category_is_the_reference_answer_in_canary(
    serve: ServeFactory, shadow_batch_rows: int
) -> None:
    """Canary: the candidate serves, stable is its shadow. The candidate says Rent where
    stable says Groceries: the disagreement is counted under Groceries (what stable said),
    with the served version, never under Rent."""
    config = ServingConfig(
        generation=1,
        stable=STABLE_VERSION,
        candidate=CANDIDATE_VERSION,
        shadow_percent=100,
        canary_percent=100,
    )
    served = serve(
        config,
        faults=f'{{"{CANDIDATE_VERSION}": {{"relabel": {{"Groceries": "Rent"}}}}}}',
        shadow_batch_rows=shadow_batch_rows,
        coalesce=False,
    )
    [answer] = served.suggest(transaction(**GROCERY))["suggestions"]
    assert (answer["served_by"], answer["candidates"][0]["label"]) == ("candidate", "Rent")
    common = {
        "baseline": "candidate",
        "baseline_version": CANDIDATE_VERSION,
        "shadow_version": STABLE_VERSION,
    }
    assert (
        served.metric(names.SHADOW_COMPARISONS_TOTAL, **common, category="Groceries", agree="false")
        == 1
    )
    assert (
        served.metric(names.SHADOW_COMPARISONS_TOTAL, **common, category="Rent", agree="false") == 0
    )


def test_in_shadow_the_reference_is_the_served_answer(serve: ServeFactory) -> None:
    config = ServingConfig(
        generation=1, stable=STABLE_VERSION, candidate=CANDIDATE_VERSION, shadow_percent=100
    )
    served = serve(
        config, faults=f'{{"{CANDIDATE_VERSION}": {{"relabel": {{"Groceries": "Rent"}}}}}}'
    )
    [answer] = served.suggest(transaction(**GROCERY))["suggestions"]
    assert (answer["served_by"], answer["candidates"][0]["label"]) == ("stable", "Groceries")
    assert (
        served.metric(
            names.SHADOW_COMPARISONS_TOTAL,
            baseline="stable",
            baseline_version=STABLE_VERSION,
            shadow_version=CANDIDATE_VERSION,
            category="Groceries",
            agree="false",
        )
        == 1
    )


def test_a_burning_version_is_slow_in_its_own_histogram(serve: ServeFactory) -> None:
    config = ServingConfig(generation=1, stable=STABLE_VERSION)
    served = serve(config, faults=f'{{"{STABLE_VERSION}": {{"burn": 0.03}}}}', coalesce=False)
    served.suggest(transaction(**GROCERY))
    labels = {"role": "stable", "model_version": STABLE_VERSION, "path": "served"}
    assert served.metric(f"{names.INFERENCE_SECONDS}_count", **labels) == 1
    assert served.metric(f"{names.INFERENCE_SECONDS}_sum", **labels) >= 0.03
    assert served.metric(f"{names.INFERENCE_SECONDS}_bucket", **labels, le="0.025") == 0


def test_every_exposed_series_carries_the_target(serve: ServeFactory) -> None:
    served = serve(ServingConfig(generation=1, stable=STABLE_VERSION), target="cards")
    served.suggest(transaction(**GROCERY))
    lines = [
        line
        for line in served.client.get("/metrics").text.splitlines()
        if line.startswith("modelrollout_") and not line.startswith("#")
    ]
    assert lines
    assert all('target="cards"' in line for line in lines)
