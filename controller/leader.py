"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go's leaderelection does.

Several controller replicas share one Lease. The holder renews ``spec.renewTime`` every
``retry_period``; the others read it every ``retry_period`` and may take it only once the
record has not changed for ``lease_duration`` by **their own clock** (the time they first
saw the current record, not the writer's ``renewTime``: clocks of two nodes may differ).
Every write is a ``PUT`` carrying the ``resourceVersion`` that was read, so of two replicas
that try to take an expired Lease at once exactly one succeeds (the other gets 409).

The holder stops acting (``is_leader()`` turns false, ``lost`` is set) when its last
successful renewal *started* more than ``renew_deadline`` ago. Because
``renew_deadline < lease_duration`` and a standby's clock starts after that renewal was
sent, the old holder has stopped before any other replica may take over: never two at
once, provided the clocks run at about the same rate (the assumption client-go makes too).

Timing with the defaults (8 s / 5 s / 1 s): the holder is SIGKILLed at ``t``; its last
renewal was seen by a standby no later than ``t + 1``; the record expires for it at
``t + 9``; its next try (``<= t + 10``) takes the Lease.

Pure asyncio over :class:`controller.kube.Kube`; the clock is injectable for tests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from controller.kube import Kube, KubeError

log = logging.getLogger(__name__)

LEASE_PATH: Final = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"


def micro_time(moment: datetime) -> str:
    """A ``MicroTime`` as the API server stores it (six fractional digits, ``Z``).

    >>> micro_time(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    '2026-01-02T03:04:05.000000Z'
    """
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class ElectionConfig:
    namespace: str
    name: str
    identity: str
    lease_duration: float = 8.0
    renew_deadline: float = 5.0
    retry_period: float = 1.0

    def __post_init__(self) -> None:
        # client-go's constraints: leaseDuration > renewDeadline > retryPeriod * 1.2.
        if not self.lease_duration > self.renew_deadline > self.retry_period * 1.2:
            raise ValueError(
                "leader election needs lease duration > renew deadline > 1.2 x retry period: "
                f"{self.lease_duration} / {self.renew_deadline} / {self.retry_period}"
            )
        if not self.identity:
            raise ValueError("leader election needs a non-empty identity")


@dataclass
class LeaderElector:
    """Campaigns for the Lease forever; ``is_leader()`` says whether this replica may act."""

    kube: Kube
    config: ElectionConfig
    clock: Callable[[], float] = time.monotonic
    on_started: Callable[[], None] | None = None
    on_stopped: Callable[[], None] | None = None
    _observed_key: tuple[str, str, str] | None = None
    _observed_at: float = 0.0
    _renewed_at: float | None = None
    """Monotonic time at which our last successful acquire/renew request was *sent*."""
    transitions: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def path(self) -> str:
        return LEASE_PATH.format(namespace=self.config.namespace)

    def is_leader(self) -> bool:
        """True while our last successful renewal started within ``renew_deadline``."""
        if self._renewed_at is None:
            return False
        return self.clock() - self._renewed_at < self.config.renew_deadline

    async def run(self) -> None:
        """Try to acquire or renew every ``retry_period``, until cancelled."""
        was_leader = False
        while True:
            started = self.clock()
            try:
                if await self.try_acquire_or_renew(started):
                    self._renewed_at = started
                else:
                    self._renewed_at = None  # another replica holds it: stop at once
            except Exception as exc:
                log.warning("leader election on Lease %s: %s", self.config.name, exc)
            leader = self.is_leader()
            if leader != was_leader:
                was_leader = leader
                self.transitions += 1
                self.changed.set()
                if leader:
                    cfg = self.config
                    log.info("became the leader (Lease %s/%s, identity %s)",
                             cfg.namespace, cfg.name, cfg.identity)  # fmt: skip
                    if self.on_started is not None:
                        self.on_started()
                else:
                    cfg = self.config
                    log.warning("stopped leading (Lease %s/%s)", cfg.namespace, cfg.name)
                    if self.on_stopped is not None:
                        self.on_stopped()
            await asyncio.sleep(max(0.0, self.config.retry_period - (self.clock() - started)))

    async def release(self) -> None:
        """On a clean shutdown: give the Lease up at once so a standby need not wait."""
        if self._renewed_at is None:
            return
        self._renewed_at = None
        try:
            lease = await self.kube.request("GET", f"{self.path}/{self.config.name}")
            if (lease.get("spec") or {}).get("holderIdentity") != self.config.identity:
                return
            lease["spec"]["holderIdentity"] = None
            lease["spec"]["leaseDurationSeconds"] = 1
            await self.kube.request("PUT", f"{self.path}/{self.config.name}", body=lease)
        except KubeError as exc:
            log.info("could not release Lease %s: %s", self.config.name, exc)

    def _record(
        self, now_wall: datetime, *, acquire: str | None, transitions: int
    ) -> dict[str, Any]:
        return {
            "holderIdentity": self.config.identity,
            "leaseDurationSeconds": max(1, round(self.config.lease_duration)),
            "acquireTime": acquire or micro_time(now_wall),
            "renewTime": micro_time(now_wall),
            "leaseTransitions": transitions,
        }

    async def try_acquire_or_renew(self, now: float) -> bool:
        """One round: True when we hold the Lease after it (renewed or newly taken)."""
        cfg = self.config
        wall = datetime.now(UTC)
        try:
            lease = await self.kube.request("GET", f"{self.path}/{cfg.name}")
        except KubeError as exc:
            if exc.status != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                "spec": self._record(wall, acquire=None, transitions=0),
            }
            try:
                await self.kube.request("POST", self.path, body=body)
            except KubeError as create_exc:
                if create_exc.conflict:
                    return False  # another replica created it first
                raise
            return True

        spec = lease.get("spec") or {}
        meta = lease.get("metadata") or {}
        holder = spec.get("holderIdentity") or ""
        key = (holder, str(spec.get("renewTime") or ""), str(meta.get("resourceVersion") or ""))
        if key != self._observed_key:
            self._observed_key = key
            self._observed_at = now
        duration = float(spec.get("leaseDurationSeconds") or cfg.lease_duration)
        mine = holder == cfg.identity
        if holder and not mine and now - self._observed_at < duration:
            return False  # held by another replica, not expired by our clock
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        lease["spec"] = self._record(
            wall, acquire=spec.get("acquireTime") if mine else None, transitions=transitions
        )
        try:
            written = await self.kube.request("PUT", f"{self.path}/{cfg.name}", body=lease)
        except KubeError as exc:
            if exc.conflict:
                return False  # someone else wrote first; read again next round
            raise
        wmeta = written.get("metadata") or {}
        wspec = written.get("spec") or {}
        self._observed_key = (
            cfg.identity,
            str(wspec.get("renewTime") or ""),
            str(wmeta.get("resourceVersion") or ""),
        )
        self._observed_at = now
        return True
