"""Shadow comparisons evaluated off the request path, on a worker thread, within a budget.

A shadow answer is never returned, only compared with the served one, so no request waits
for it: the suggester hands the rows a shadow must see to a :class:`ShadowQueue` (their
features, already computed for serving, and what was served) and answers at once. One
worker thread evaluates them in groups (a group once ``batch_rows`` rows wait, or the
oldest has waited ``max_wait`` seconds) and counts the comparisons. LightGBM's predictor
and the compiled trees run in native code without the GIL, so the candidate's trees use
the other core while the event loop goes on; what holds the GIL (joining rows, picking the
top-1, counting) is a few microseconds a row.

The budget (what keeps a heavy or slow candidate from slowing users):

- **CPU share**: after each group the worker pauses for ``cost * (1 / cpu_share - 1)``,
  where ``cost`` is the CPU time the group took on the worker's thread
  (``time.thread_time``), so over any stretch of work it uses at most ``cpu_share`` of one
  core (default 0.25).
- **Queue**: at most ``max_rows`` rows wait. An offer that does not fit is shed, never
  queued and never evaluated, and counted in ``modelrollout_shadow_shed_total{reason}``:
  ``cpu_budget`` when the worker is pausing for its budget (the candidate costs more than
  its share), ``queue_full`` when it is evaluating (it does not keep up even so),
  ``stopped`` for rows offered to, or left in, a queue that was stopped.

Shed rows are simply not compared: the controller sees fewer samples (an inconclusive
analysis if too few), never a false pass. Nothing reads the queue on a scrape: ``/metrics``
and the probes never evaluate a model. Serving never depends on the candidate: the answer
is sent before its shadow is evaluated, whatever the candidate costs or raises.

Each chunk keeps the model object it was routed to, so a comparison is counted under the
version that was configured when the request was answered, even if the configuration
changed since. A model that raises here is counted in ``modelrollout_model_errors_total``
and its comparisons are dropped, as when it raised on the answer's path; anything else
that goes wrong in a group is logged and drops that group, never failing a request.

Because a shadow evaluation covers a group of rows, the shadow's
``modelrollout_inference_seconds`` observations are the time of such a group: an upper
bound of what one request costs it, so a latency threshold never passes a slow candidate
because it was measured in shadow.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from service.features import FeatureBatch
from service.metric_names import NO_VERSION, EvaluationPath, ShedReason, Source
from service.metrics import ServiceMetrics
from service.models import LoadedModel
from service.rules import RuleEngine

log = logging.getLogger(__name__)


def reference(baseline: str, served_top1: str, shadow_top1: str) -> str:
    """The category a comparison is counted under: the *reference* answer, what the
    known-good side said (stable, or rules), never the candidate's.

    In shadow the candidate is the shadow, so the reference is the served answer; in canary
    the candidate serves its users with stable in its shadow, so the reference is the
    shadow's answer. Labelled by the served answer instead, a candidate that sends every
    Dining transaction to Shopping would, in canary, count its disagreements under
    Shopping, and Dining would look perfect (issue 12, point 4).

    >>> reference("stable", "Dining", "Shopping"), reference("candidate", "Shopping", "Dining")
    ('Dining', 'Dining')
    """
    return shadow_top1 if baseline == Source.CANDIDATE.value else served_top1


Evaluate = Callable[[Source, LoadedModel, FeatureBatch], npt.NDArray[np.float64] | None]
"""``(role, model, features) -> probabilities``, or None when the model raised (counted)."""


@dataclass(frozen=True, slots=True)
class ShadowRows:
    """The rows of one request (or coalesced group) that one shadow model must see."""

    role: Source
    model: LoadedModel
    features: FeatureBatch  # one row per transaction
    baselines: Sequence[str]  # who served each row (a Source value)
    baseline_versions: Sequence[str]  # the version that served it (NO_VERSION: rules)
    served_top1: Sequence[str]  # the label returned first
    rules_top1: Sequence[str | None]  # the rules' top-1 when already known, else None
    merchants: Sequence[str]
    memos: Sequence[str]
    amounts: Sequence[float]
    min_confidence: float
    mccs: Sequence[str | None] = ()  # the card's merchant category code per row, when sent

    def __len__(self) -> int:
        return len(self.baselines)


DEFAULT_CPU_SHARE: Final = 0.25
DEFAULT_MAX_ROWS: Final = 4096
DEFAULT_MAX_WAIT: Final = 0.05
GROUP_ROWS: Final = 256
"""At most this many rows (whole chunks, at least one) per evaluation: the part of a group
that holds the GIL stays short."""


def lower_priority() -> str:
    """Put the calling thread in Linux's idle scheduling class (``SCHED_IDLE``: it runs
    only when no normal thread of the machine, or of the pod's CPU cgroup, wants the
    core), else at nice 19; what was done (``idle``, ``nice 19`` or ``normal``).

    Lowering one's own priority needs no privilege. On Linux, ``pid`` 0 of
    ``sched_setscheduler`` and the thread id of ``setpriority`` address this thread only,
    not the process: the event loop keeps its priority.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        pass
    else:
        return "idle"
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        return "normal"
    return "nice 19"


class ShadowQueue:
    """Pending shadow rows and the worker thread that compares them; :meth:`add` is
    thread-safe and never waits for an evaluation."""

    def __init__(
        self,
        evaluate: Evaluate,
        rules: RuleEngine,
        metrics: ServiceMetrics,
        *,
        batch_rows: int,
        cpu_share: float = DEFAULT_CPU_SHARE,
        max_rows: int = DEFAULT_MAX_ROWS,
        max_wait: float = DEFAULT_MAX_WAIT,
        idle_priority: bool = True,
    ) -> None:
        if batch_rows < 1:
            raise ValueError("batch_rows must be at least 1")
        if not 0.0 < cpu_share <= 1.0:
            raise ValueError(f"cpu_share must be in (0, 1], got {cpu_share}")
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        if max_wait < 0:
            raise ValueError("max_wait must not be negative")
        self.batch_rows = batch_rows
        self.cpu_share = cpu_share
        self.max_rows = max_rows
        self.max_wait = max_wait
        self.idle_priority = idle_priority
        self.scheduling = "not started"
        """How the worker thread is scheduled (``idle``, ``nice 19`` or ``normal``)."""
        self._evaluate = evaluate
        self._rules = rules
        self._metrics = metrics
        self._cond = threading.Condition()
        self._pending: deque[ShadowRows] = deque()
        self._rows = 0
        self._oldest = 0.0  # when the oldest pending chunk was added (monotonic)
        self._pausing = False  # the worker is waiting out its CPU budget
        self._busy = False  # the worker holds a group it has not finished
        self._hurry = 0  # drain() callers waiting: evaluate without lingering
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.evaluations = 0
        """Model evaluations made by the worker (for tests and the benchmark)."""
        self.compared_rows = 0
        self.shed_rows = 0
        self.cpu_seconds = 0.0
        """CPU time the worker's evaluations and comparisons took (its thread's clock)."""

    @property
    def pending_rows(self) -> int:
        return self._rows

    def add(self, rows: ShadowRows) -> bool:
        """Queue ``rows`` for the worker, or shed them (counted) when they do not fit or the
        queue is stopped. Never evaluates anything on the caller's thread."""
        n = len(rows)
        with self._cond:
            if self._stopped:
                reason = ShedReason.STOPPED
            elif self._rows + n > self.max_rows:
                reason = ShedReason.CPU_BUDGET if self._pausing else ShedReason.QUEUE_FULL
            else:
                if not self._pending:
                    self._oldest = time.monotonic()
                self._pending.append(rows)
                self._rows += n
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._work, name="shadow-worker", daemon=True
                    )
                    self._thread.start()
                elif self._rows >= self.batch_rows or len(self._pending) == 1:
                    self._cond.notify_all()
                return True
            self.shed_rows += n
        self._metrics.shadow_shed.labels(reason.value, rows.model.version).inc(n)
        return False

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait (without evaluating anything here) until every row queued so far is compared
        or dropped; False if that takes longer than ``timeout``. For tests and benchmarks."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._hurry += 1
            self._cond.notify_all()
            try:
                while self._rows or self._busy:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(left)
                return True
            finally:
                self._hurry -= 1

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker (a group being evaluated is finished, within ``timeout``); rows
        still queued are shed as ``stopped``."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        with self._cond:
            left = list(self._pending)
            self._pending.clear()
            self._rows = 0
            self.shed_rows += sum(len(c) for c in left)
            self._cond.notify_all()
        for chunk in left:
            self._metrics.shadow_shed.labels(ShedReason.STOPPED.value, chunk.model.version).inc(
                len(chunk)
            )

    def _take(self) -> list[ShadowRows] | None:
        """The next group (whole chunks, up to :data:`GROUP_ROWS` rows), once there is one to
        evaluate; None when stopped."""
        with self._cond:
            while True:
                if self._stopped:
                    return None
                if self._rows and (self._rows >= self.batch_rows or self._hurry):
                    break
                if self._rows:
                    left = self._oldest + self.max_wait - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                else:
                    self._cond.wait()
            group = [self._pending.popleft()]
            rows = len(group[0])
            while self._pending and rows + len(self._pending[0]) <= GROUP_ROWS:
                chunk = self._pending.popleft()
                group.append(chunk)
                rows += len(chunk)
            self._rows -= rows
            self._oldest = time.monotonic()
            self._busy = True
            return group

    def _work(self) -> None:
        self.scheduling = lower_priority() if self.idle_priority else "normal"
        while True:
            group = self._take()
            if group is None:
                return
            started = time.thread_time()
            compared = 0
            try:
                compared = self._flush(group)
            finally:
                cost = time.thread_time() - started
                with self._cond:
                    self._busy = False
                    self.compared_rows += compared
                    self.cpu_seconds += cost
                    self._cond.notify_all()
            pause = cost * (1.0 / self.cpu_share - 1.0)
            if pause > 0:
                with self._cond:
                    self._pausing = True
                    try:
                        self._cond.wait_for(lambda: self._stopped, timeout=pause)
                    finally:
                        self._pausing = False

    def _flush(self, pending: list[ShadowRows]) -> int:
        """Evaluate and count ``pending``; how many rows were compared."""
        groups: dict[tuple[Source, int], list[ShadowRows]] = {}
        for chunk in pending:
            groups.setdefault((chunk.role, id(chunk.model)), []).append(chunk)
        compared = 0
        for (role, _), chunks in groups.items():
            try:
                compared += self._compare(role, chunks)
            except Exception:  # a shadow never fails a request
                rows = sum(len(c) for c in chunks)
                log.exception("shadow comparison failed; %d rows of %s dropped", rows, role.value)
        return compared

    def _compare(self, role: Source, chunks: list[ShadowRows]) -> int:
        model = chunks[0].model
        x = FeatureBatch.concat([c.features for c in chunks])
        self.evaluations += 1
        proba = self._evaluate(role, model, x)
        if proba is None:
            return 0
        best_index = proba.argmax(axis=1)
        best_p = proba[np.arange(len(best_index)), best_index].tolist()
        best = best_index.tolist()
        classes = model.classes
        version = model.version
        comparisons: Counter[tuple[str, str, str, str]] = Counter()
        rules_seconds = 0.0
        i = 0
        for chunk in chunks:
            for j in range(len(chunk)):
                if best_p[i] >= chunk.min_confidence:
                    shadow_top1 = classes[best[i]]
                else:  # not confident: the user would have seen the rules' answer
                    known = chunk.rules_top1[j]
                    if known is None:
                        started = time.perf_counter()
                        known = self._rules.suggest(
                            chunk.merchants[j],
                            chunk.memos[j],
                            float(chunk.amounts[j]),
                            1,
                            chunk.mccs[j] if chunk.mccs else None,
                        ).top
                        rules_seconds += time.perf_counter() - started
                    shadow_top1 = known
                top1 = chunk.served_top1[j]
                agree = "true" if shadow_top1 == top1 else "false"
                baseline = chunk.baselines[j]
                category = reference(baseline, top1, shadow_top1)
                comparisons[(baseline, chunk.baseline_versions[j], category, agree)] += 1
                i += 1
        m = self._metrics
        if rules_seconds:
            m.inference_seconds.labels(
                Source.RULES.value, NO_VERSION, EvaluationPath.SHADOW.value
            ).observe(rules_seconds)
        for (baseline, baseline_version, category, agree), count in comparisons.items():
            m.shadow_comparisons.labels(baseline, baseline_version, version, category, agree).inc(
                count
            )
        return i
