"""Leader election on a Lease: one holder, takeover only after expiry, never two at once.

The API server is a dict with resourceVersion checks (409 on a stale PUT, as the real one
answers); the clock is a number the test moves.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from controller.kube import KubeError
from controller.leader import ElectionConfig, LeaderElector

pytestmark = pytest.mark.unit

PATH = "/apis/coordination.k8s.io/v1/namespaces/ml/leases"


class FakeLeases:
    """Just enough of the API server for one Lease."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.rv = 0
        self.down = False

    async def request(self, method: str, path: str, *, body: Any = None, **_: Any) -> Any:
        if self.down:
            raise KubeError(0, "Unreachable", "connection refused")
        if method == "GET":
            if self.lease is None:
                raise KubeError(404, "NotFound", "leases not found")
            return copy.deepcopy(self.lease)
        if method == "POST":
            if self.lease is not None:
                raise KubeError(409, "AlreadyExists", "exists")
            return self._store(body)
        assert method == "PUT"
        assert path == f"{PATH}/ctl"
        assert self.lease is not None
        if body["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", "the object has been modified")
        return self._store(body)

    def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        stored = copy.deepcopy(body)
        stored.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
        self.lease = stored
        return copy.deepcopy(stored)

    @property
    def holder(self) -> str | None:
        return None if self.lease is None else self.lease["spec"].get("holderIdentity")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def elector(api: FakeLeases, clock: Clock, identity: str) -> LeaderElector:
    cfg = ElectionConfig(namespace="ml", name="ctl", identity=identity)
    return LeaderElector(api, cfg, clock=clock)  # type: ignore[arg-type]


async def round_(e: LeaderElector, clock: Clock) -> bool:
    """One campaign round as :meth:`LeaderElector.run` does it."""
    started = clock()
    try:
        ok = await e.try_acquire_or_renew(started)
    except KubeError:
        return e.is_leader()
    e._renewed_at = started if ok else None
    return e.is_leader()


def test_first_replica_takes_the_lease_and_the_other_stands_by() -> None:
    api, clock = FakeLeases(), Clock()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")

    async def go() -> None:
        assert await round_(a, clock)
        assert not await round_(b, clock)
        for _ in range(30):  # a renews every second: b never takes over
            clock.t += 1
            assert await round_(a, clock)
            assert not await round_(b, clock)

    asyncio.run(go())
    assert api.holder == "a"
    assert api.lease is not None
    assert api.lease["spec"]["leaseTransitions"] == 0


def test_standby_takes_over_only_after_the_lease_duration_by_its_own_clock() -> None:
    api, clock = FakeLeases(), Clock()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")

    async def go() -> list[float]:
        await round_(a, clock)
        await round_(b, clock)  # b sees a's record now
        killed = clock.t
        took: list[float] = []
        while not took:
            clock.t += 1
            if await round_(b, clock):
                took.append(clock.t - killed)
        return took

    (after,) = asyncio.run(go())
    assert after == 8.0  # lease duration, no sooner
    assert api.holder == "b"
    assert api.lease is not None
    assert api.lease["spec"]["leaseTransitions"] == 1


def test_a_leader_that_cannot_renew_stops_acting_before_anyone_may_take_over() -> None:
    api, clock = FakeLeases(), Clock()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")

    async def go() -> tuple[float, float]:
        await round_(a, clock)
        await round_(b, clock)
        cut = clock.t
        stopped = took = None
        while took is None:
            clock.t += 0.5
            api.down = True  # a's requests fail (a partition between a and the server)
            if not await round_(a, clock) and stopped is None:
                stopped = clock.t - cut
            api.down = False
            if await round_(b, clock):
                took = clock.t - cut
            assert not (a.is_leader() and b.is_leader()), "two leaders at once"
        assert stopped is not None
        return stopped, took

    stopped, took = asyncio.run(go())
    assert stopped == 5.0  # the renew deadline
    assert took == 8.0
    assert stopped < took


def test_two_standbys_racing_for_an_expired_lease_yield_one_leader() -> None:
    api, clock = FakeLeases(), Clock()
    a, b, c = (elector(api, clock, n) for n in "abc")

    async def go() -> None:
        await round_(a, clock)
        await round_(b, clock)
        await round_(c, clock)
        clock.t += 9
        # Both read the expired record, then both write it: the second write is stale.
        lease_b = await b.try_acquire_or_renew(clock.t)
        lease_c = await c.try_acquire_or_renew(clock.t)
        assert (lease_b, lease_c) == (True, False)

    asyncio.run(go())
    assert api.holder == "b"


def test_released_lease_is_taken_at_once() -> None:
    api, clock = FakeLeases(), Clock()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")

    async def go() -> None:
        await round_(a, clock)
        await round_(b, clock)
        await a.release()
        assert not a.is_leader()
        clock.t += 1
        assert await round_(b, clock)

    asyncio.run(go())
    assert api.holder == "b"


@pytest.mark.parametrize(("duration", "deadline", "retry"), [(5, 5, 1), (8, 5, 4.5), (8, 9, 1)])
def test_inconsistent_timings_are_refused(duration: float, deadline: float, retry: float) -> None:
    with pytest.raises(ValueError, match="lease duration > renew deadline"):
        ElectionConfig("ml", "ctl", "a", duration, deadline, retry)
