"""Shadow comparisons evaluated off the request path, within a budget.

A shadow answer is never returned, only compared with the served one, so no request waits
for it: the suggester hands the rows a shadow must see to a :class:`ShadowQueue` (their
features, already computed for serving, and what was served) and answers at once. One
worker thread takes them in groups (a group once ``batch_rows`` rows wait, or the oldest
has waited ``max_wait`` seconds) and counts the comparisons. By default
(``MODELROLLOUT_SHADOW_PROCESS``) it hands each group to the shadow's own process
(:mod:`service.shadow_process`) and waits without the GIL, so the candidate shares no
interpreter lock with the event loop. Without it, the worker evaluates the group itself:
LightGBM's predictor and the compiled trees run without the GIL, but joining rows, the
text stage, calibration and comparing hold it.

The budget (what keeps a heavy or slow candidate from slowing users):

- **CPU share**: after each group the worker pauses for ``cost * (1 / cpu_share - 1)``,
  where ``cost`` is the CPU time the group took on the worker's thread
  (``time.thread_time``) plus, with a process, the child's CPU time for it, so over any
  stretch of work it uses at most ``cpu_share`` of one core (default 0.25).
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from service.faults import Fault
from service.features import FeatureBatch
from service.metric_names import NO_VERSION, EvaluationPath, ShedReason, Source
from service.metrics import ServiceMetrics
from service.models import LoadedModel
from service.rules import RuleEngine

if TYPE_CHECKING:
    from service.shadow_process import ShadowProcess

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


def checked_proba(
    model: LoadedModel, x: FeatureBatch, faults: Mapping[str, Fault] | None = None
) -> npt.NDArray[np.float64]:
    """``model``'s probabilities for ``x``, with the drill's fault of its version applied
    (:mod:`service.faults`); raises when the model raised or answered nonsense (a wrong
    shape, a value that is not finite)."""
    proba = model.predict_proba(x)
    fault = faults.get(model.version) if faults else None
    if fault is not None:
        proba = fault.score(proba, model.classes)
    if proba.shape != (len(x), len(model.classes)) or not np.isfinite(proba).all():
        raise ValueError(f"unusable probabilities of shape {proba.shape}")
    return proba


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

    @staticmethod
    def payloads(chunks: Sequence[ShadowRows]) -> list[dict[str, Any]]:
        """``chunks`` of one model as the shadow's process is sent them: one dict per run of
        chunks with the same threshold (a reconfiguration may change it within a group),
        each field's rows joined in order, and no features. The child computes the features
        again from the transactions (:func:`service.features.extract`: the same values);
        joining and pickling the arrays cost the serving process more than a few lists of
        strings, and the serving process is where a shadow must cost nothing."""
        out: list[dict[str, Any]] = []
        for threshold, group in groupby(chunks, key=lambda c: c.min_confidence):
            run = list(group)
            payload: dict[str, Any] = {
                name: [v for c in run for v in getattr(c, name)] for name in _SENT_COLUMNS
            }
            payload["min_confidence"] = threshold
            payload["mccs"] = (
                [v for c in run for v in (c.mccs or [None] * len(c))]
                if any(c.mccs for c in run)
                else ()
            )
            out.append(payload)
        return out


_SENT_COLUMNS: Final = (
    "baselines",
    "baseline_versions",
    "served_top1",
    "rules_top1",
    "merchants",
    "memos",
    "amounts",
)


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
        process: ShadowProcess | None = None,
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
        self.process = process
        """Where the models run: None, on the worker thread; else a child process
        (:mod:`service.shadow_process`) that the worker thread hands each group to."""
        self._child_cpu = 0.0  # the child's CPU seconds for the group just flushed
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
        self._stopping = threading.Event()  # set with _stopped: ends a pause at once
        self._thread: threading.Thread | None = None
        self.evaluations = 0
        """Model evaluations made by the worker (for tests and the benchmark)."""
        self.signals = 0
        """How many offers signalled the worker (for tests)."""
        self.compared_rows = 0
        self.shed_rows = 0
        self.cpu_seconds = 0.0
        """CPU time the worker's evaluations and comparisons took (its thread's clock)."""

    @property
    def pending_rows(self) -> int:
        return self._rows

    @property
    def busy(self) -> bool:
        """The worker holds a group it has not finished (evaluating, or in the child)."""
        return self._busy

    @property
    def pausing(self) -> bool:
        """The worker waits out its CPU budget (offers that do not fit are shed as
        ``cpu_budget``)."""
        return self._pausing

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
                elif not self._pausing and (
                    len(self._pending) == 1 or self._rows - n < self.batch_rows <= self._rows
                ):
                    # Wake the worker only when it waits for rows and this offer is news to
                    # it: the first rows (its timer starts), or a group's worth reached.
                    # Waking it on every offer cost users ~15% of the serving thread: each
                    # wake-up takes the GIL from the event loop.
                    self.signals += 1
                    self._cond.notify_all()
                return True
        self._shed(reason, rows)
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
            self._stopping.set()
            self._cond.notify_all()
            thread = self._thread
        if self.process is not None:  # a group it evaluates is lost, and the worker freed
            self.process.stop()
        if thread is not None:
            thread.join(timeout)
        with self._cond:
            left = list(self._pending)
            self._pending.clear()
            self._rows = 0
            self._cond.notify_all()
        for chunk in left:
            self._shed(ShedReason.STOPPED, chunk)

    def _shed(self, reason: ShedReason, chunk: ShadowRows) -> None:
        with self._cond:
            self.shed_rows += len(chunk)
        self._metrics.shadow_shed.labels(reason.value, chunk.model.version).inc(len(chunk))

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
            self._child_cpu = 0.0
            compared = 0
            try:
                compared = self._flush(group)
            finally:
                cost = time.thread_time() - started + self._child_cpu
                with self._cond:
                    self._busy = False
                    self.compared_rows += compared
                    self.cpu_seconds += cost
                    self._cond.notify_all()
            pause = cost * (1.0 / self.cpu_share - 1.0)
            if pause > 0:
                with self._cond:
                    self._pausing = True
                self._stopping.wait(pause)  # offers do not wake it: only stop() does
                with self._cond:
                    self._pausing = False

    def _flush(self, pending: list[ShadowRows]) -> int:
        """Evaluate and count ``pending``; how many rows were compared."""
        groups: dict[tuple[Source, int], list[ShadowRows]] = {}
        for chunk in pending:
            groups.setdefault((chunk.role, id(chunk.model)), []).append(chunk)
        if self.process is not None:
            return self._flush_in_process(self.process, list(groups.values()))
        compared = 0
        for (role, _), chunks in groups.items():
            try:
                compared += self._compare(role, chunks)
            except Exception:  # a shadow never fails a request
                rows = sum(len(c) for c in chunks)
                log.exception("shadow comparison failed; %d rows of %s dropped", rows, role.value)
        return compared

    def _flush_in_process(self, process: ShadowProcess, groups: list[list[ShadowRows]]) -> int:
        """Have the child evaluate and compare ``groups``, and count what it found here."""
        from service.shadow_process import ShadowProcessLostError, Work  # noqa: PLC0415 - a cycle

        works = [Work.of(chunks) for chunks in groups]
        self.evaluations += len(works)
        m = self._metrics
        wall = time.perf_counter()
        try:
            outcomes, self._child_cpu = process.run(works)
        except ShadowProcessLostError as exc:
            if self._stopped:  # killed by stop(): its rows are shed like those still queued
                for chunks in groups:
                    for chunk in chunks:
                        self._shed(ShedReason.STOPPED, chunk)
                return 0
            # The child's CPU is unknown: charge the wall time, so a child that keeps
            # dying is restarted no faster than the budget allows.
            self._child_cpu = time.perf_counter() - wall
            for work in works:
                m.model_errors.labels(work.role, work.version).inc()
            rows = sum(len(chunk) for chunks in groups for chunk in chunks)
            log.error("%s; %d shadow rows of %s dropped", exc, rows,
                      sorted({w.version for w in works}))  # fmt: skip
            return 0
        compared = 0
        for work, outcome in zip(works, outcomes, strict=True):
            m.inference_seconds.labels(
                work.role, work.version, EvaluationPath.SHADOW.value
            ).observe(outcome.seconds)
            if outcome.model_error is not None:
                m.model_errors.labels(work.role, work.version).inc()
                log.warning("shadow model %s raised: %s", work.version, outcome.model_error)
            elif outcome.compare_error is not None or outcome.compared is None:
                log.error("shadow comparison of %s failed: %s", work.version, outcome.compare_error)
            else:
                self._count(outcome.compared)
                compared += outcome.compared.compared
        return compared

    def _compare(self, role: Source, chunks: list[ShadowRows]) -> int:
        model = chunks[0].model
        x = FeatureBatch.concat([c.features for c in chunks])
        self.evaluations += 1
        proba = self._evaluate(role, model, x)
        if proba is None:
            return 0
        found = compare_rows(chunks, model, proba, self._rules)
        self._count(found)
        return found.compared

    def _count(self, found: Compared) -> None:
        m = self._metrics
        if found.rules_seconds:
            m.inference_seconds.labels(
                Source.RULES.value, NO_VERSION, EvaluationPath.SHADOW.value
            ).observe(found.rules_seconds)
        for labels, count in found.comparisons.items():
            m.shadow_comparisons.labels(*labels).inc(count)


@dataclass(slots=True)
class Compared:
    """What comparing one group's rows found: counts keyed by the labels of
    ``modelrollout_shadow_comparisons_total`` (baseline, baseline version, shadow version,
    category, agree), and the time the rules took for rows the shadow was not sure of."""

    compared: int = 0
    comparisons: Counter[tuple[str, str, str, str, str]] = field(default_factory=Counter)
    rules_seconds: float = 0.0


def compare_rows(
    chunks: Sequence[ShadowRows],
    model: LoadedModel,
    proba: npt.NDArray[np.float64],
    rules: RuleEngine,
) -> Compared:
    """Compare the shadow's answers (``proba``, one row per row of ``chunks``, in order) with
    what was served; counts nothing (the caller does, on the worker thread or in the
    parent of the shadow's process)."""
    best_index = proba.argmax(axis=1)
    best_p = proba[np.arange(len(best_index)), best_index].tolist()
    best = best_index.tolist()
    classes = model.classes
    version = model.version
    found = Compared()
    comparisons = found.comparisons
    i = 0
    for chunk in chunks:
        for j in range(len(chunk)):
            if best_p[i] >= chunk.min_confidence:
                shadow_top1 = classes[best[i]]
            else:  # not confident: the user would have seen the rules' answer
                known = chunk.rules_top1[j]
                if known is None:
                    started = time.perf_counter()
                    known = rules.suggest(
                        chunk.merchants[j],
                        chunk.memos[j],
                        float(chunk.amounts[j]),
                        1,
                        chunk.mccs[j] if chunk.mccs else None,
                    ).top
                    found.rules_seconds += time.perf_counter() - started
                shadow_top1 = known
            top1 = chunk.served_top1[j]
            agree = "true" if shadow_top1 == top1 else "false"
            baseline = chunk.baselines[j]
            category = reference(baseline, top1, shadow_top1)
            comparisons[(baseline, chunk.baseline_versions[j], version, category, agree)] += 1
            i += 1
    found.compared = i
    return found
