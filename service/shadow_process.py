"""The shadow's evaluations in a process of their own (``MODELROLLOUT_SHADOW_PROCESS``).

On a worker thread (:mod:`service.shadow`) the candidate's trees run without the GIL, but
everything around them holds it (joining rows, the text stage, calibration, comparing),
and after each native call the worker asks for the GIL back, which the event loop hands
over within the interpreter's switch interval. A candidate ten times heavier than stable
in 100% shadow therefore still showed in the served p99 (decision 0011). Here the
worker thread of the serving process only sends each group of rows over a socket and waits
(without the GIL) for the counts; a child process, in Linux's idle scheduling class, loads
its own copy of the shadow's version and does the rest. Users' requests then share
nothing with the candidate but the machine's idle CPU.

- **What the child gets**: per group, the version's directory, name and model-file
  sha256 (it loads and verifies the version itself with :func:`service.models.load_model`,
  keeps the last :data:`MODELS_KEPT` it used, and loads compiled trees from the compile
  cache once the serving process serves that version from them), and the rows'
  transactions and served answers, joined per threshold (:meth:`ShadowRows.payloads`).
  It computes the features again, as serving computed them: joining and pickling the
  arrays cost the serving process more than the lists do. At start: the rules (for rows
  the shadow is not sure of), the drill's faults and the compile cache.
- **What comes back**: per group, the evaluation's time, the model's error if it raised,
  and the comparisons (:class:`service.shadow.Compared`), plus the CPU time the group
  took in the child. The serving process counts them in its own metrics, so
  ``/metrics`` is unchanged, and charges that CPU to the shadow's budget.
- **A child that dies** (killed, out of memory, a crash in native code while evaluating)
  loses its group: each version of it counts a model error (a candidate that kills its
  evaluator is a broken candidate, and the controller's error gate sees it), the loss is
  logged, and the next group starts a new child.
- The child is a fresh interpreter (forking a process that runs threads can copy a held
  lock), started when the first group needs it, talking over a socket pair; it exits when
  the socket closes, so a serving process that dies takes it with it.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

from service.artifact import MODEL_FILE
from service.faults import Fault
from service.features import CACHED_BATCH_ROWS, FeatureBatch, extract
from service.metric_names import Source
from service.models import LoadedModel, load_model
from service.rules import RuleEngine
from service.shadow import Compared, ShadowRows, checked_proba, compare_rows, lower_priority

log = logging.getLogger(__name__)

MODELS_KEPT: Final = 3
"""Versions the child keeps loaded (a canary's stable and candidate, and one more)."""
START_TIMEOUT_SECONDS: Final = 120.0


@dataclass(frozen=True, slots=True)
class EvaluatorSpec:
    """What the child needs from the serving process, once (pickled at start)."""

    rules: RuleEngine
    faults: dict[str, Fault] = field(default_factory=dict)
    compile_cache: Path | None = None
    published_trees: bool = True
    num_threads: int = 1
    idle_priority: bool = True


@dataclass(frozen=True, slots=True)
class Work:
    """One model's rows of one group."""

    role: str
    version: str
    sha256: str  # of the version's model file, from its verified manifest
    version_dir: str
    compiled: bool  # the serving process serves this version from compiled trees
    rows: list[dict[str, Any]]  # ShadowRows.payloads: the fields but role, model, features

    @classmethod
    def of(cls, chunks: list[ShadowRows]) -> Work:
        model = chunks[0].model
        return cls(
            role=chunks[0].role.value,
            version=model.version,
            sha256=model.manifest.files[MODEL_FILE],
            version_dir=str(model.model_file.parent),
            compiled=model.scorer == "compiled",
            rows=ShadowRows.payloads(chunks),
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """What evaluating one :class:`Work` found."""

    seconds: float  # the model's evaluation, faults included (what inference_seconds shows)
    model_error: str | None = None  # the model could not be loaded, raised or answered nonsense
    compare_error: str | None = None  # comparing failed (nothing counted, not the model's fault)
    compared: Compared | None = None
    scorer: str = ""  # what scored it in the child: "lightgbm" or "compiled" ("": not loaded)


class ShadowProcessLostError(RuntimeError):
    """The child died (or could not start, or was stopped) before answering."""


# -- the child ----------------------------------------------------------------------------


def child_main(conn: Connection, spec: EvaluatorSpec) -> None:
    """The child's loop: a list of :class:`Work` in, ``(outcomes, cpu_seconds)`` out, until
    the pipe closes."""
    scheduling = lower_priority() if spec.idle_priority else "normal"
    conn.send(("ready", os.getpid(), scheduling))
    child = _Child(spec)
    while True:
        try:
            works: list[Work] = conn.recv()
        except (EOFError, OSError):
            return
        started = time.thread_time()
        outcomes = [child.evaluate(work) for work in works]
        try:
            conn.send((outcomes, time.thread_time() - started))
        except (BrokenPipeError, OSError):
            return


class _Child:
    """The child's models and what it evaluates with them."""

    def __init__(self, spec: EvaluatorSpec) -> None:
        self.spec = spec
        self.models: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self.not_compiled: set[tuple[str, str]] = set()  # compiled code failed to load

    def evaluate(self, work: Work) -> Outcome:
        started = time.perf_counter()
        try:
            model = self.model(work)
            role = Source(work.role)
            chunks = [
                ShadowRows(role=role, model=model, features=payload_features(r), **r)
                for r in work.rows
            ]
            x = FeatureBatch.concat([c.features for c in chunks])
            proba = checked_proba(model, x, self.spec.faults)
        except Exception as exc:
            return Outcome(
                time.perf_counter() - started, model_error=f"{type(exc).__name__}: {exc}"
            )
        seconds = time.perf_counter() - started
        try:
            compared = compare_rows(chunks, model, proba, self.spec.rules)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            return Outcome(seconds, compare_error=error, scorer=model.scorer)
        return Outcome(seconds, compared=compared, scorer=model.scorer)

    def model(self, work: Work) -> LoadedModel:
        """The child's copy of the version ``work`` names, loaded and verified once."""
        key = (work.version, work.sha256)
        models = self.models
        model = models.get(key)
        if model is None:
            version_dir = Path(work.version_dir)
            model = load_model(
                version_dir.parent,
                work.version,
                num_threads=self.spec.num_threads,
                published_trees=self.spec.published_trees,
            )
            if model.manifest.files[MODEL_FILE] != work.sha256:
                model.close()
                raise ValueError(
                    f"version {work.version} changed on disk since the serving process loaded it"
                )
            models[key] = model
            while len(models) > MODELS_KEPT:
                _, old = models.popitem(last=False)
                old.close()
        else:
            models.move_to_end(key)
        cache = self.spec.compile_cache
        wanted = work.compiled and model.scorer != "compiled" and key not in self.not_compiled
        if wanted and cache is not None:
            try:  # compiled by the serving process already: this loads it from the cache
                model.accelerate(cache)
            except Exception as exc:
                self.not_compiled.add(key)
                log.warning("shadow process: %s stays on LightGBM: %s", work.version, exc)
        return model


def payload_features(rows: dict[str, Any]) -> FeatureBatch:
    """The features of the rows of a payload, computed as serving computed them, in slices
    that take each row's text block from the child's cache (descriptors repeat)."""
    step = CACHED_BATCH_ROWS
    merchants, memos, amounts, mccs = (rows[k] for k in ("merchants", "memos", "amounts", "mccs"))
    return FeatureBatch.concat(
        [
            extract(
                merchants[i : i + step],
                memos[i : i + step],
                amounts[i : i + step],
                mccs[i : i + step] if mccs else None,
            )
            for i in range(0, len(merchants), step)
        ]
    )


# -- the serving process's side -----------------------------------------------------------


class ShadowProcess:
    """The child as the shadow's worker thread sees it: :meth:`run` a group, :meth:`stop`.

    :meth:`run` is called from one thread (the worker); :meth:`stop` from any, and unblocks
    a :meth:`run` that waits (the child is killed)."""

    def __init__(self, spec: EvaluatorSpec) -> None:
        self.spec = spec
        self.pid: int | None = None
        self.scheduling = "not started"
        """How the child is scheduled (``idle``, ``nice 19`` or ``normal``)."""
        self.starts = 0
        self.lost = 0
        self.scorers: dict[str, str] = {}
        """Version -> what scored its last group in the child (``lightgbm``, ``compiled``)."""
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._stopped = False

    def run(self, works: list[Work]) -> tuple[list[Outcome], float]:
        """The outcome of each work, in order, and the child's CPU seconds for them; raises
        :class:`ShadowProcessLostError` when the child dies first (it is restarted next time)."""
        conn = self._connection()
        try:
            conn.send(works)
            outcomes, cpu = conn.recv()
        except (EOFError, OSError) as exc:
            self._lose()
            raise ShadowProcessLostError(f"the shadow's process ended: {exc!r}") from None
        for work, outcome in zip(works, outcomes, strict=True):
            if outcome.scorer:
                self.scorers[work.version] = outcome.scorer
        return outcomes, cpu

    @property
    def stopped(self) -> bool:
        return self._stopped

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stopped = True
            proc, conn = self._proc, self._conn
            self._proc = self._conn = None
        if proc is not None:
            _end(proc, timeout)
        if conn is not None:
            conn.close()

    def _connection(self) -> Connection:
        with self._lock:
            if self._stopped:
                raise ShadowProcessLostError("the shadow's process is stopped")
            if self._conn is not None and self._proc is not None and self._proc.poll() is None:
                return self._conn
        ours, theirs = socket.socketpair()
        with theirs:
            proc = subprocess.Popen(
                [sys.executable, "-c", f"import {__name__} as m; m.serve({theirs.fileno()})"],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=_child_environment(),
            )
        conn = Connection(ours.detach())
        try:
            conn.send(self.spec)
            if not conn.poll(START_TIMEOUT_SECONDS):
                raise EOFError(f"not ready within {START_TIMEOUT_SECONDS:.0f} s")
            _, pid, scheduling = conn.recv()
        except (EOFError, OSError) as exc:
            _end(proc, 1.0)
            conn.close()
            raise ShadowProcessLostError(f"the shadow's process did not start: {exc!r}") from None
        with self._lock:
            if self.stopped:  # stopped while it started
                _end(proc, 1.0)
                conn.close()
                raise ShadowProcessLostError("the shadow's process is stopped")
            self._proc, self._conn = proc, conn
            self.pid, self.scheduling = pid, scheduling
            self.starts += 1
        log.info("shadow evaluations run in process %d (%s priority)", pid, scheduling)
        return conn

    def _lose(self) -> None:
        with self._lock:
            proc, conn = self._proc, self._conn
            self._proc = self._conn = None
            if not self._stopped:
                self.lost += 1
        if proc is not None:
            _end(proc, 1.0)
        if conn is not None:
            conn.close()


def _end(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not refused
        log.error("the shadow's process %d did not end", proc.pid)


def _child_environment() -> dict[str, str]:
    """This environment, with the directory holding the ``service`` package first on the
    child's path (the serving process may have found it through its working directory)."""
    root = str(Path(__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root if not path else os.pathsep.join((root, path))}


def serve(fd: int) -> None:
    """The child's entry point: the spec, then :func:`child_main`, on the socket ``fd``."""
    conn = Connection(fd)
    try:
        spec: EvaluatorSpec = conn.recv()
    except (EOFError, OSError):
        return
    child_main(conn, spec)
