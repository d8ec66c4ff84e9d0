"""Routing: sticky, monotonic canary buckets; independent shadow sampling; the decision table."""

from __future__ import annotations

import pytest

from service.metric_names import FallbackReason, Source
from service.routing import (
    Route,
    Router,
    canary_bucket,
    percent_threshold,
    shadow_bucket,
)
from service.serving_config import BUCKETS, ServingConfig, SuggestMode

pytestmark = pytest.mark.unit

USERS = [f"user-{i}" for i in range(100_000)]
STABLE, CANDIDATE, RULES = Source.STABLE, Source.CANDIDATE, Source.RULES


@pytest.fixture(scope="module")
def buckets() -> list[int]:
    return [canary_bucket("salt-1", u) for u in USERS]


def test_a_bucket_is_a_stable_hash_in_range() -> None:
    # Fixed values: a change of hash would move every user, so it must be deliberate.
    assert canary_bucket("modelrollout", "u1") == canary_bucket("modelrollout", "u1")
    assert 0 <= canary_bucket("modelrollout", "u1") < BUCKETS
    assert canary_bucket("modelrollout", "u1") != canary_bucket("modelrollout2", "u1")
    # Salt and key are separated: ("a", "bc") is not ("ab", "c").
    assert canary_bucket("a", "bc") != canary_bucket("ab", "c")


def test_bucket_values_are_pinned() -> None:
    """Pinned so that a refactor that silently reshuffles users fails here."""
    assert [canary_bucket("modelrollout", f"u{i}") for i in range(3)] == PINNED_CANARY
    assert [shadow_bucket("modelrollout", f"t{i}") for i in range(3)] == PINNED_SHADOW


PINNED_CANARY = [7515, 9505, 7335]
PINNED_SHADOW = [4167, 3577, 2160]


@pytest.mark.parametrize("percent", [0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 90.0])
def test_the_canary_holds_the_configured_share_of_users(buckets: list[int], percent: float) -> None:
    threshold = percent_threshold(percent)
    share = sum(b < threshold for b in buckets) / len(buckets) * 100
    assert abs(share - percent) <= 0.5, f"{share:.2f}% of users in a {percent}% canary"


def test_raising_the_percent_never_moves_a_user_out_of_the_canary(buckets: list[int]) -> None:
    steps = [0.0, 1.0, 2.5, 5.0, 10.0, 12.34, 25.0, 50.0, 75.0, 100.0]
    previous: set[int] = set()
    for pct in steps:
        threshold = percent_threshold(pct)
        members = {i for i, b in enumerate(buckets) if b < threshold}
        assert previous <= members, f"users left the canary when it grew to {pct}%"
        previous = members
    assert len(previous) == len(USERS)  # 100% is everyone


def test_membership_is_sticky_across_routers_and_requests() -> None:
    config = ServingConfig(stable="v1", candidate="v2", canary_percent=30.0, salt="s")
    a = Router.build(config, frozenset({STABLE, CANDIDATE}))
    b = Router.build(config.model_copy(update={"generation": 9}), frozenset({STABLE, CANDIDATE}))
    for user in USERS[:2000]:
        served = {a.route(user, f"t{n}").serve for n in range(3)}
        assert len(served) == 1, f"{user} moved between models across requests"
        assert b.route(user, "t-other").serve in served


@pytest.mark.parametrize(
    ("percent", "threshold"),
    [(0.0, 0), (0.01, 1), (0.29, 29), (10.0, 1000), (12.345, 1234), (99.99, 9999), (100.0, 10000)],
)
def test_percent_threshold(percent: float, threshold: int) -> None:
    assert percent_threshold(percent) == threshold


def test_percent_threshold_is_monotonic() -> None:
    values = [percent_threshold(p / 1000) for p in range(100_001)]
    assert values == sorted(values)


def test_shadow_sampling_is_independent_of_canary_membership() -> None:
    """2x2 contingency (in canary x shadowed) over 100k requests: chi-square, 1 dof."""
    config = ServingConfig(
        stable="v1", candidate="v2", canary_percent=20.0, shadow_percent=30.0, salt="s"
    )
    router = Router.build(config, frozenset({STABLE, CANDIDATE}))
    counts = {(c, s): 0 for c in (False, True) for s in (False, True)}
    for i, user in enumerate(USERS):
        tid = f"txn-{i}"
        counts[(router.in_canary(user), router.shadowed(tid))] += 1
    n = len(USERS)
    chi2 = 0.0
    for (c, s), observed in counts.items():
        row = counts[(c, False)] + counts[(c, True)]
        col = counts[(False, s)] + counts[(True, s)]
        expected = row * col / n
        chi2 += (observed - expected) ** 2 / expected
    assert chi2 < 10.83, f"chi-square {chi2:.2f} (p < 0.001): shadow depends on canary {counts}"
    shadowed = (counts[(False, True)] + counts[(True, True)]) / n * 100
    assert abs(shadowed - 30.0) <= 0.5
    # And within the canary, the shadowed share is the configured one too.
    in_canary = counts[(True, False)] + counts[(True, True)]
    assert abs(counts[(True, True)] / in_canary * 100 - 30.0) <= 1.0


def test_shadow_and_canary_hashes_differ_for_the_same_key() -> None:
    same = sum(canary_bucket("s", k) == shadow_bucket("s", k) for k in USERS[:20_000])
    assert same < 10  # ~2 expected by chance in 10,000 buckets


def _route(
    *,
    stable: str | None = "v1",
    candidate: str | None = "v2",
    loaded: frozenset[Source] = frozenset({STABLE, CANDIDATE}),
    canary: float = 0.0,
    shadow: float = 0.0,
    mode: SuggestMode = SuggestMode.AUTO,
    enabled: bool = True,
) -> Route:
    config = ServingConfig(
        stable=stable,
        candidate=candidate,
        canary_percent=canary,
        shadow_percent=shadow,
        mode=mode,
        enabled=enabled,
    )
    return Router.build(config, loaded).route("user", "txn")


ALL = frozenset({STABLE, CANDIDATE})
NO_CANDIDATE = frozenset({STABLE})
NOTHING: frozenset[Source] = frozenset()
HEURISTIC, MODEL = SuggestMode.HEURISTIC, SuggestMode.MODEL
DISABLED, NO_MODEL = FallbackReason.DISABLED, FallbackReason.NO_MODEL


@pytest.mark.parametrize(
    ("case", "kwargs", "expected"),
    [
        # canary 100%: everyone's transactions go to the candidate, the stable in shadow
        ("canary user", {"canary": 100, "shadow": 100}, Route(CANDIDATE, STABLE)),
        ("canary user, no shadow", {"canary": 100}, Route(CANDIDATE, None)),
        # canary 0%: the stable serves, the candidate in shadow
        ("stable user", {"shadow": 100}, Route(STABLE, CANDIDATE)),
        ("stable user, no shadow", {}, Route(STABLE, None)),
        ("no candidate", {"candidate": None, "shadow": 100}, Route(STABLE, None)),
        # rules only by configuration; with a candidate, it is the shadow
        ("rules only", {"stable": None, "candidate": None, "shadow": 100}, Route(RULES, None)),
        (
            "legacy canary: candidate only, user outside",
            {"stable": None, "shadow": 100},
            Route(RULES, CANDIDATE),
        ),
        (
            "legacy canary: candidate only, user inside",
            {"stable": None, "canary": 100, "shadow": 100},
            Route(CANDIDATE, None),
        ),
        # heuristic mode: rules serve; the candidate, else the stable, in shadow
        ("heuristic", {"mode": HEURISTIC, "shadow": 100}, Route(RULES, CANDIDATE)),
        (
            "heuristic, original shadow",
            {"mode": HEURISTIC, "candidate": None, "shadow": 100},
            Route(RULES, STABLE),
        ),
        ("heuristic, no shadow", {"mode": HEURISTIC, "canary": 100}, Route(RULES, None)),
        ("model mode", {"mode": MODEL, "shadow": 100}, Route(STABLE, CANDIDATE)),
        # disabled: rules, nothing computed
        ("disabled", {"enabled": False, "shadow": 100}, Route(RULES, None, DISABLED)),
        (
            "disabled, nothing configured",
            {"enabled": False, "stable": None, "candidate": None},
            Route(RULES, None),
        ),
        # a configured version that did not load never serves
        (
            "candidate failed, canary user",
            {"canary": 100, "shadow": 100, "loaded": NO_CANDIDATE},
            Route(STABLE, None),
        ),
        (
            "candidate failed, stable user",
            {"shadow": 100, "loaded": NO_CANDIDATE},
            Route(STABLE, None),
        ),
        (
            "stable failed, stable user",
            {"shadow": 100, "loaded": frozenset({CANDIDATE})},
            Route(RULES, CANDIDATE, NO_MODEL),
        ),
        (
            "stable failed, canary user",
            {"canary": 100, "shadow": 100, "loaded": frozenset({CANDIDATE})},
            Route(CANDIDATE, None),
        ),
        (
            "both failed",
            {"canary": 100, "shadow": 100, "loaded": NOTHING},
            Route(RULES, None, NO_MODEL),
        ),
        (
            "candidate only, failed, canary user",
            {"stable": None, "canary": 100, "loaded": NOTHING},
            Route(RULES, None, NO_MODEL),
        ),
        (
            "heuristic, stable failed",
            {"mode": HEURISTIC, "candidate": None, "shadow": 100, "loaded": NOTHING},
            Route(RULES, None),
        ),
    ],
)
def test_decision_table(case: str, kwargs: dict[str, object], expected: Route) -> None:
    assert _route(**kwargs) == expected, case  # type: ignore[arg-type]


def test_shadow_percent_samples_transactions() -> None:
    config = ServingConfig(stable="v1", candidate="v2", shadow_percent=10.0, salt="x")
    router = Router.build(config, ALL)
    routes = [router.route("same-user", f"t{i}") for i in range(50_000)]
    share = sum(r.shadow is CANDIDATE for r in routes) / len(routes) * 100
    assert abs(share - 10.0) <= 0.5
    assert all(r.serve is STABLE for r in routes)
