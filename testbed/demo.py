"""``python -m testbed.demo`` (``make demo``): a whole model rollout, locally, with real parts.

What it does, in one to two minutes, everything on 127.0.0.1 and nothing left behind:

1. trains three small but real model versions into a temporary models root: ``v1`` (the
   stable), ``v2`` (a good candidate) and ``bad`` (trained on rotated labels: as confident
   as a good model, and almost always disagreeing with it);
2. starts the local control plane (etcd + kube-apiserver, :mod:`testbed.controlplane`),
   installs the ModelRollout CRD and writes the serving configuration that an earlier
   promotion would have left behind (stable ``v1``);
3. starts two suggestion processes (``python -m service``: the "pods"), a real Prometheus
   scraping them, the controller (``python -m controller``) and bounded loopback traffic;
4. ``kubectl apply``-s a ModelRollout of ``v2`` and follows it through Shadow, the Canary
   steps, Promoting and Succeeded, with one line per change of phase or step;
5. changes the ModelRollout to ``bad`` and shows the automatic rollback: the reason (from
   status and Events), how long it took, and the pods back on ``v2``;
6. prints ``kubectl get mro`` and the decision history, then tears everything down.

The exit status is 0 only when ``v2`` was promoted and ``bad`` was rolled back. Every stage
waits within one overall deadline (``--deadline``); a stage that does not happen in time
ends the demo with status 1, what was expected, and the controller's log tail. Ctrl-C,
SIGTERM and the deadline tear everything down as well. ``--keep`` keeps it all running
afterwards, until Ctrl-C, to look around with ``kubectl``; ``MODELROLLOUT_KEEP_TESTBED=1``
keeps the temporary directories (logs, models) for a post-mortem.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Self

import httpx
import yaml

from service.serving_config import API_GROUP, ServingConfig
from testbed.controlplane import ControlPlane
from testbed.process import TestbedError, keep_workdirs, remove_tree, wait_until
from testbed.prometheus import Prometheus, ScrapeTarget
from testbed.stack import CRD, ROOT, Cluster, ControllerProcess, Load, ServiceProcess, rollout_body
from testbed.tools import tools_bin

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

__all__ = ["LocalStack", "PodView", "hard_deadline", "main", "pod_views", "train_models"]

NAMESPACE = "demo"
TARGET = "suggest"
ROLLOUT = "suggest"
STABLE, GOOD, BAD = "v1", "v2", "bad"
FINAL = ("Succeeded", "RolledBack", "Failed")
PLUGIN = ROOT / "bin" / "kubectl-modelrollout"


class DeadlineExceeded(BaseException):
    """The overall deadline passed (SIGALRM): raised wherever the demo was, to tear down."""


# --------------------------------------------------------------------------- output


class Clock:
    """Elapsed time since the demo started, and lines printed with it."""

    def __init__(self, deadline: float) -> None:
        self.started = time.monotonic()
        self.deadline = deadline
        self.doing = ""
        """What the demo is doing now, for a deadline message."""

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        return self.deadline - self.elapsed()

    def budget(self, wanted: float) -> float:
        """``wanted`` seconds for one stage, but never past the overall deadline."""
        return max(1.0, min(wanted, self.left()))

    def say(self, text: str = "") -> None:
        prefix = f"[{self.elapsed():6.1f}s] "
        for i, line in enumerate(text.splitlines() or [""]):
            print((prefix if i == 0 else " " * len(prefix)) + line, flush=True)


def _percent(value: object) -> str:
    return f"{value:g}%" if isinstance(value, int | float) else "-"


# --------------------------------------------------------------------------- models


def train_models(root: Path, *, quick: bool, say: Callable[[str], None]) -> None:
    """Train ``v1``, ``v2`` and ``bad`` into ``root`` (real LightGBM, calibrated, published)."""
    from training.gate import GateConfig  # noqa: PLC0415 - heavy imports, only here
    from training.pipeline import train_and_publish  # noqa: PLC0415
    from training.train import TrainParams  # noqa: PLC0415

    rows = 8000
    # One thread: as fast on a few thousand rows, and no collapse when other processes
    # compete for the cores (OpenMP spinning).
    params = TrainParams.quick() if quick else TrainParams(n_jobs=1)
    plan: list[tuple[str, int, dict[str, Any]]] = [
        (STABLE, 1, {}),
        (GOOD, 2, {}),
        (BAD, 3, {"corrupt": "rotate_labels", "gate": GateConfig(enforce=False)}),
    ]
    from training.data import generate_transactions, validate_transactions  # noqa: PLC0415

    # v1 and v2: the same data, another seed (split and trees), as a retrain would be.
    data = validate_transactions(generate_transactions(rows, seed=1))
    for version, seed, extra in plan:
        started = time.monotonic()
        source: dict[str, Any] = {"data": data} if "corrupt" not in extra else {"rows": rows}
        result = train_and_publish(
            root, seed=seed, version=version, params=params, **source, **extra
        )
        f1 = result.metrics.get("macro_f1")
        quality = f"macro-F1 {f1:.3f}" if isinstance(f1, float) else ""
        note = " (labels rotated on purpose)" if "corrupt" in extra else ""
        say(
            f"  trained {version:<4} on {rows} rows in {time.monotonic() - started:.1f} s, "
            f"{quality}{note}"
        )


# --------------------------------------------------------------------------- the stack


class LocalStack:
    """Everything a rollout needs, on loopback: control plane with the CRD, a namespace
    whose serving configuration names ``stable``, ``pods`` suggestion processes, Prometheus
    scraping them every ``scrape_interval``, the controller (reconciling every ``tick``
    seconds), and loopback load.

    :meth:`close` stops everything started so far, newest first; it is idempotent and is
    what a failure, Ctrl-C or the deadline end in. Also used by ``benchmarks/``.
    """

    def __init__(
        self,
        models_root: Path,
        workdir: Path,
        *,
        pods: int = 2,
        stable: str | None = STABLE,
        scrape_interval: str = "1s",
        tick: float = 0.5,
        namespace: str = NAMESPACE,
        say: Callable[[str], None] = print,
    ) -> None:
        self.models_root = models_root
        self.workdir = workdir
        self.pods = pods
        self.stable = stable
        self.scrape_interval = scrape_interval
        self.tick = tick
        self.namespace = namespace
        self.say = say
        self._exit = contextlib.ExitStack()
        self.cp = ControlPlane(controller_manager=False)
        self.services: list[ServiceProcess] = []
        self.prometheus: Prometheus | None = None
        self.controller: ControllerProcess | None = None
        self.load: Load | None = None
        self.cluster = Cluster(self.cp, namespace, TARGET)
        self._api: ApiClient | None = None
        self._starting: list[Future[None]] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._exit.close()

    def start(self) -> None:
        """Start everything. The suggestion processes start while Prometheus and the
        controller do: each takes seconds to import its libraries and load its models."""
        self._start_control_plane()
        self._add_services()
        pool = ThreadPoolExecutor(max_workers=self.pods, thread_name_prefix="start")
        try:
            self._starting.extend(pool.submit(svc.start) for svc in self.services)
            self._start_prometheus()
            self._start_controller()
            for starting in self._starting:
                starting.result()
        finally:
            # Never wait here for a start that an error, Ctrl-C or the deadline interrupted:
            # close() stops the processes, and then reaps the threads (_reap_starts).
            pool.shutdown(wait=False)
        self.say(
            f"{self.pods} suggestion processes ready: "
            + ", ".join(f"{s.pod} {s.url}" for s in self.services)
        )
        self._start_load()

    def _start_control_plane(self) -> None:
        self._exit.callback(self.cp.stop)
        self.cp.start()
        self.cp.kubectl("apply", "-f", str(CRD))
        self.cp.wait_established("modelrollouts.modelrollout.io")
        self.cp.kubectl("create", "namespace", self.namespace)
        self._api = self.cp.api_client()
        self._exit.callback(self._api.close)
        if self.stable is not None:
            self.cluster.write_serving(ServingConfig(generation=1, stable=self.stable))
        self.say(
            f"control plane ready in {self.cp.start_seconds:.1f} s ({self.cp.server}); "
            f"CRD installed; namespace {self.namespace}; "
            f"ConfigMap {TARGET}-serving: stable {self.stable or 'rules'}"
        )

    def _add_services(self) -> None:
        self._exit.callback(self._reap_starts)  # runs after the services' stop (LIFO)
        for i in range(self.pods):
            svc = ServiceProcess(
                f"{TARGET}-{i}",
                self.namespace,
                self.cp.admin_kubeconfig,
                self.models_root,
                self.workdir / f"{TARGET}-{i}.log",
                target=TARGET,
            )
            self.services.append(svc)
            self._exit.callback(svc.stop)

    def _reap_starts(self) -> None:
        """After the services were stopped: wait for their start threads (a stopped process
        ends its readiness wait at once), then stop again any that a thread started late."""
        wait(self._starting, timeout=70)
        for svc in self.services:
            svc.stop()

    def _start_prometheus(self) -> None:
        targets = [
            ScrapeTarget(s.address, job="suggest", labels={"pod": s.pod}) for s in self.services
        ]
        self.prometheus = Prometheus(
            targets, scrape_interval=self.scrape_interval, evaluation_interval=self.scrape_interval
        )
        self._exit.callback(self.prometheus.close)
        self.prometheus.start()
        self.say(f"Prometheus {self.prometheus.url} scraping them every {self.scrape_interval}")

    def _start_controller(self) -> None:
        assert self.prometheus is not None
        self.controller = ControllerProcess(
            self.cp, self.namespace, self.workdir, self.prometheus.url, tick=self.tick
        )
        self._exit.callback(self.controller.stop)
        self.controller.start()
        self.say(
            f"controller running (python -m controller, metrics "
            f"http://127.0.0.1:{self.controller.metrics_port}/metrics)"
        )

    def _start_load(self) -> None:
        self.load = Load(self.services)
        self._exit.callback(self.load.stop)
        self.load.start()
        per_second = self.load.batch / self.load.period
        self.say(
            f"loopback traffic: ~{per_second:.0f} transactions/s from "
            f"{self.load.users} users, round-robin over the pods"
        )

    def status(self, name: str = ROLLOUT) -> dict[str, Any]:
        """A rollout's status, read through the API (cheaper than a kubectl per poll)."""
        from kubernetes import client  # noqa: PLC0415 - slow to import; only needed here

        assert self._api is not None
        found = client.CustomObjectsApi(self._api).get_namespaced_custom_object(
            API_GROUP, "v1alpha1", self.namespace, "modelrollouts", name
        )
        if not isinstance(found, dict):
            raise TestbedError(f"unexpected answer for ModelRollout {name}: {found!r}")
        return dict(found.get("status") or {})

    def controller_tail(self) -> str:
        return self.controller.tail() if self.controller is not None else "(no controller)"

    def kubectl(self, *args: str) -> str:
        return self.cluster.kubectl(*args)


# --------------------------------------------------------------------------- observing


@dataclass(frozen=True)
class PodView:
    """What one suggestion process says it serves (``GET /v1/models``)."""

    pod: str
    generation: int
    stable: str | None
    candidate: str | None
    shadow: float
    canary: float
    applied_at: datetime | None

    @classmethod
    def of(cls, svc: ServiceProcess) -> PodView | None:
        """The process's view, or None when it does not answer (yet)."""
        try:
            described = svc.models()
        except (httpx.HTTPError, ValueError):
            return None
        config = described.get("config") or {}
        applied = described.get("applied_at")
        return cls(
            pod=svc.pod,
            generation=int(described.get("generation") or 0),
            stable=config.get("stable"),
            candidate=config.get("candidate"),
            shadow=float(config.get("shadow_percent") or 0),
            canary=float(config.get("canary_percent") or 0),
            applied_at=datetime.fromisoformat(applied) if applied else None,
        )

    def serving(self) -> str:
        text = f"stable {self.stable or 'rules'}"
        if self.candidate:
            text += (
                f", candidate {self.candidate} (shadow {self.shadow:g}%, canary {self.canary:g}%)"
            )
        return text

    def stable_only(self, stable: str | None, generation: int = 0) -> bool:
        """Serving ``stable`` alone (no candidate), at ``generation`` or later."""
        return self.candidate is None and self.stable == stable and self.generation >= generation


def pod_views(services: Sequence[ServiceProcess]) -> list[PodView | None]:
    return [PodView.of(s) for s in services]


def describe_pods(views: Sequence[PodView | None]) -> str:
    """``2/2 pods on generation 4: stable v1, candidate v2 (...)``, or one part per pod."""
    known = [v for v in views if v is not None]
    if len(known) == len(views) and len({(v.generation, v.serving()) for v in known}) == 1:
        v = known[0]
        return f"{len(known)}/{len(views)} pods on generation {v.generation}: {v.serving()}"
    return "; ".join(
        f"{v.pod} g{v.generation}: {v.serving()}" if v else "(no answer)" for v in views
    )


def status_line(st: dict[str, Any]) -> str:
    """One line for a rollout's status: phase, versions, percents, the last analysis."""
    analysis = st.get("lastAnalysis") or {}
    # Only the analysis of this candidate (after a promotion: of the new stable).
    if analysis.get("candidate") != (st.get("candidateVersion") or st.get("stableVersion")):
        analysis = {}
    figures = analysis.get("figures") or {}
    agreement, samples = figures.get("agreement"), figures.get("samples")
    figure = f"{agreement:.3f}" if isinstance(agreement, int | float) else "-"
    if analysis:
        counted = f", {samples:.0f} samples" if isinstance(samples, int | float) else ""
        figure += f" ({analysis.get('outcome')}{counted})"
    step = st.get("stepIndex")
    phase = str(st.get("phase", "Pending")) + (f" {step + 1}" if isinstance(step, int) else "")
    return (
        f"{phase:<11} stable {st.get('stableVersion') or 'rules':<5} "
        f"candidate {st.get('candidateVersion') or '-':<5} "
        f"shadow {_percent(st.get('shadowPercent')):>4} "
        f"canary {_percent(st.get('canaryPercent')):>4}  agreement {figure}"
    )


@dataclass
class Follow:
    """Follows one rollout until a final phase, printing a line per phase or step change,
    and remembers when each pod first applied a configuration naming ``candidate``."""

    stack: LocalStack
    clock: Clock
    candidate: str
    first_candidate: dict[str, datetime] = field(default_factory=dict)
    _last: tuple[Any, ...] | None = None

    def probe(self) -> dict[str, Any] | None:
        st = self.stack.status(ROLLOUT)
        views = pod_views(self.stack.services)
        for v in views:
            if (
                v
                and v.candidate == self.candidate
                and v.applied_at
                and v.pod not in self.first_candidate
            ):
                self.first_candidate[v.pod] = v.applied_at
        key = (
            st.get("phase"),
            st.get("stepIndex"),
            st.get("candidateVersion"),
            st.get("stableVersion"),
            st.get("canaryPercent"),
            st.get("shadowPercent"),
        )
        mine = self.candidate in (st.get("candidateVersion"), st.get("stableVersion"))
        if key != self._last and mine:
            self._last = key
            self.clock.say(f"{status_line(st)}\n  pods: {describe_pods(views)}")
        # Final for this candidate: promoted (it is the stable now), rolled back or failed.
        return st if st.get("phase") in FINAL and mine else None

    def until_final(self, what: str, timeout: float) -> dict[str, Any]:
        def explain() -> str:
            return (
                f"last status: {status_line(self.stack.status(ROLLOUT))}\n"
                f"--- controller log (tail) ---\n{self.stack.controller_tail()}"
            )

        result: dict[str, Any] = wait_until(
            self.probe,
            timeout=self.clock.budget(timeout),
            interval=0.25,
            what=what,
            on_timeout=explain,
        )
        return result


def wait_pods_stable(
    stack: LocalStack, clock: Clock, stable: str, generation: int
) -> list[PodView]:
    """Wait until every pod serves ``stable`` alone at ``generation`` or later."""

    def probe() -> list[PodView] | None:
        views = pod_views(stack.services)
        done = [v for v in views if v is not None and v.stable_only(stable, generation)]
        return done if len(done) == len(views) else None

    return wait_until(
        probe,
        timeout=clock.budget(30),
        interval=0.1,
        what=f"every pod serving {stable} alone (generation {generation})",
        on_timeout=lambda: describe_pods(pod_views(stack.services)),
    )


def history_time(st: dict[str, Any], to: str) -> datetime | None:
    """When the rollout last moved to phase ``to`` (from status.history)."""
    times = [h["time"] for h in st.get("history") or [] if h.get("to") == to]
    return datetime.fromisoformat(times[-1]) if times else None


# --------------------------------------------------------------------------- the rollouts


def demo_rollout(version: str, prometheus_url: str, *, quick: bool) -> dict[str, Any]:
    """The ModelRollout the demo applies: shadow 100 % for 2 passing analyses, canary steps
    10 -> 50 -> 100 %, one analysis a second over 5 s, at least 50 comparisons and 90 %
    agreement. Short timings, so the whole story fits in a minute."""
    return rollout_body(
        ROLLOUT,
        version,
        prometheus_url,
        TARGET,
        canary={"percent": 100, "steps": [10, 50], "stepInterval": "1s" if quick else "3s"},
        # Honest models disagree on some merchants they never saw (v1 and v2 agree on
        # about 88-90% of the load's rows); the rotated-labels model on almost none.
        analysis={"minSamples": 50, "thresholds": {"minAgreement": 0.8}},
    )


def promote_good(stack: LocalStack, clock: Clock, *, quick: bool) -> bool:
    """Roll out ``v2``; True when it was promoted and every pod serves it."""
    assert stack.prometheus is not None
    body = demo_rollout(GOOD, stack.prometheus.url, quick=quick)
    clock.say(
        f"\n=== 1. roll out the good model {GOOD} (stable: {STABLE})\n"
        f"$ kubectl apply -n {NAMESPACE} -f - <<EOF\n{yaml.safe_dump(body, sort_keys=False)}EOF"
    )
    stack.cluster.apply(body)
    follow = Follow(stack, clock, GOOD)
    st = follow.until_final(f"the rollout of {GOOD} to finish", 150)
    if st.get("phase") != "Succeeded":
        clock.say(f"{GOOD} was NOT promoted: {st.get('phase')}: {st.get('message')}")
        return False
    views = wait_pods_stable(stack, clock, GOOD, int(st.get("servingGeneration") or 0))
    clock.say(f"PROMOTED: {GOOD} is the stable model; {describe_pods(views)}")
    return True


def roll_back_bad(stack: LocalStack, clock: Clock, *, quick: bool) -> bool:
    """Change the rollout to ``bad``; True when it was rolled back and every pod serves the
    stable model alone again. Prints the reason and how long the rollback took."""
    assert stack.prometheus is not None
    clock.say(
        f"\n=== 2. roll out the bad model {BAD} (trained on rotated labels)\n"
        f"$ kubectl apply ... (the same ModelRollout, spec.model.version: {BAD})"
    )
    stack.cluster.apply(demo_rollout(BAD, stack.prometheus.url, quick=quick))
    follow = Follow(stack, clock, BAD)
    st = follow.until_final(f"the rollout of {BAD} to end", 90)
    if st.get("phase") != "RolledBack":
        clock.say(f"{BAD} was NOT rolled back: {st.get('phase')}: {st.get('message')}")
        return False
    stable = st.get("stableVersion")
    views = wait_pods_stable(stack, clock, str(stable), int(st.get("servingGeneration") or 0))
    last = (st.get("history") or [{}])[-1]
    clock.say(
        f"ROLLED BACK: {BAD} -> all traffic on {stable}\n"
        f"  reason: {last.get('reason')}: {st.get('message')}\n"
        f"  {describe_pods(views)}"
    )
    for event in events_since(stack, history_time(st, "Shadow")):
        clock.say(f"  event {event.get('type')} {event.get('reason')}: {event.get('message')}")
    _print_rollback_times(clock, st, follow.first_candidate, views)
    return True


def events_since(stack: LocalStack, since: datetime | None) -> list[dict[str, Any]]:
    """The rollout's Events from ``since`` (to the second) on, oldest first."""

    def when(event: dict[str, Any]) -> str:
        meta = event.get("metadata") or {}
        return str(
            event.get("lastTimestamp") or event.get("eventTime") or meta.get("creationTimestamp")
        )

    start = since.strftime("%Y-%m-%dT%H:%M:%S") if since else ""
    return sorted((e for e in stack.cluster.events(ROLLOUT) if when(e) >= start), key=when)


def _print_rollback_times(
    clock: Clock, st: dict[str, Any], first: dict[str, datetime], views: Sequence[PodView]
) -> None:
    """How long the bad model was around: from the pods' own clocks (when each applied a
    configuration), and from the decisions in status.history."""
    started, decided = history_time(st, "Shadow"), history_time(st, "RolledBack")
    if started and decided:
        clock.say(
            f"  decided: {(decided - started).total_seconds():.1f} s from the start of "
            f"the shadow of {BAD} to the rollback decision (status.history)"
        )
    back = [v.applied_at for v in views if v.applied_at is not None]
    if first and back:
        seconds = (max(back) - min(first.values())).total_seconds()
        clock.say(
            f"  served: {seconds:.1f} s from the first pod computing {BAD} to every pod "
            "back on the stable model (the pods' applied_at)"
        )


def print_summary(stack: LocalStack, clock: Clock) -> None:
    """``kubectl get mro``, the decision history (the kubectl plugin), and the traffic."""
    clock.say(f"\n=== summary\n$ kubectl get mro -n {NAMESPACE} -o wide")
    print(stack.kubectl("get", "mro", "-o", "wide"), end="", flush=True)
    clock.say(f"$ kubectl modelrollout history {ROLLOUT} -n {NAMESPACE}")
    print(run_plugin(stack, "history", ROLLOUT), end="", flush=True)
    if stack.load is not None:
        load = stack.load
        served = ", ".join(f"{k} {v}" for k, v in sorted(load.served_by.items()))
        clock.say(
            f"traffic: {load.answers} requests answered, {sum(load.served_by.values())} "
            f"transactions served by: {served}; {load.errors} errors"
        )


def run_plugin(stack: LocalStack, *args: str) -> str:
    """``kubectl modelrollout ARGS -n demo`` (bin/kubectl-modelrollout, as kubectl runs it)."""
    env = {
        **os.environ,
        "KUBECONFIG": str(stack.cp.admin_kubeconfig),
        "PATH": f"{tools_bin()}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    done = subprocess.run(
        [sys.executable, str(PLUGIN), *args, "-n", stack.namespace],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    return done.stdout if done.returncode == 0 else f"(plugin failed: {done.stderr.strip()})\n"


# --------------------------------------------------------------------------- main


def keep_running(stack: LocalStack) -> None:
    """``--keep``: say how to look around at whatever runs, then wait for Ctrl-C."""
    if not stack.cp.running:
        print("\n# --keep: nothing is running (the control plane did not start)")
        return
    print("\n# --keep: everything keeps running; Ctrl-C stops it and removes the files")
    for line in stack.cp.export_lines():
        print(line)
    print(f"export PATH={ROOT / 'bin'}:$PATH   # for `kubectl modelrollout ...`")
    print(f"kubectl get mro -n {NAMESPACE} -w")
    if stack.prometheus is not None:
        print(
            f"# Prometheus: {stack.prometheus.url}  e.g. "
            "sum by (served_by) (rate(modelrollout_predictions_total[1m]))"
        )
    for svc in stack.services:
        print(f"# {svc.pod}: {svc.url}/v1/models")
    if stack.controller is not None:
        print(f"# controller: http://127.0.0.1:{stack.controller.metrics_port}/metrics")
    print("# Ctrl-C stops it", flush=True)
    try:
        while True:
            time.sleep(1)
            stack.cp.check()
    except KeyboardInterrupt:
        pass
    except TestbedError as exc:
        print(f"# the control plane stopped: {exc}", flush=True)


@contextlib.contextmanager
def hard_deadline(seconds: float, doing: Callable[[], str] = lambda: "") -> Iterator[None]:
    """Raise :class:`DeadlineExceeded` in the main thread after ``seconds``, wherever it is:
    the stages wait within the deadline themselves; this is the backstop for anything that
    blocks (a hung kubectl, a slow start). ``doing()`` names the stage for the message."""

    def expired(signum: int, frame: FrameType | None) -> None:
        stage = doing()
        raise DeadlineExceeded(
            f"the deadline ({seconds:.0f} s) passed" + (f" while {stage}" if stage else "")
        )

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run(args: argparse.Namespace, workdir: Path, clock: Clock) -> int:
    """The demo proper, within the deadline; returns the exit status. A stage that does not
    happen ends it with the reason and the controller's log tail; teardown always runs."""
    models = workdir / "models"
    models.mkdir()
    stack = LocalStack(models, workdir, pods=args.pods, say=clock.say)
    ok = False
    try:
        try:
            with hard_deadline(clock.left(), lambda: clock.doing):
                clock.say(f"=== 0. set-up (work directory {workdir})")
                clock.doing = "training the models"
                train_models(models, quick=args.quick, say=clock.say)
                clock.doing = "starting the control plane, Prometheus, pods and controller"
                stack.start()
                clock.doing = f"rolling out {GOOD}"
                promoted = promote_good(stack, clock, quick=args.quick)
                clock.doing = f"rolling out {BAD}"
                rolled_back = promoted and roll_back_bad(stack, clock, quick=args.quick)
                clock.doing = "printing the summary"
                print_summary(stack, clock)
                ok = promoted and rolled_back
        except (Exception, DeadlineExceeded) as exc:  # any failure: say it, then tear down
            what = (
                ""
                if isinstance(exc, TestbedError | DeadlineExceeded)
                else f"{type(exc).__name__}: "
            )
            clock.say(f"\nDEMO FAILED: {what}{exc}")
        if not ok:
            clock.say(f"--- controller log (tail) ---\n{stack.controller_tail()[-3000:]}")
        verdict = f"OK: {GOOD} promoted, {BAD} rolled back" if ok else "FAILED"
        clock.say(f"\ndemo {verdict} in {clock.elapsed():.1f} s")
        if args.keep:
            keep_running(stack)
    finally:
        clock.say("tearing down")
        stack.close()
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m testbed.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--keep", action="store_true", help="keep everything running until Ctrl-C")
    parser.add_argument("--quick", action="store_true", help="smaller models, shorter canary steps")
    parser.add_argument(
        "--deadline", type=float, default=300.0, help="overall seconds (default 300)"
    )
    parser.add_argument("--pods", type=int, default=2, help="suggestion processes (default 2)")
    args = parser.parse_args(argv)

    # SIGTERM (a CI timeout, `kill`) tears down like Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    clock = Clock(args.deadline)
    workdir = Path(tempfile.mkdtemp(prefix="modelrollout-demo-"))
    try:
        return run(args, workdir, clock)
    except KeyboardInterrupt:
        print("\ninterrupted; everything was stopped", file=sys.stderr)
        return 130
    finally:
        if keep_workdirs():
            print(f"kept {workdir} (MODELROLLOUT_KEEP_TESTBED=1)", file=sys.stderr)
        else:
            remove_tree(workdir)


if __name__ == "__main__":
    sys.exit(main())
