"""How fast a breach puts all traffic back on the known-good model, on real parts; prints figures.

DESIGN.md: "breach onset to all traffic back on the known-good model <= 30 s with a 5 s
scrape interval", and "a spec change reaches every running pod (no restarts), p95 <= 2 s".
The stack is the demo's (:class:`testbed.demo.LocalStack`): the local control plane, two
suggestion processes (``python -m service``) watching their ConfigMap, a real Prometheus
scraping them every 5 s, ``python -m controller`` with its default 2 s tick, and loopback
traffic (~400 transactions/s). The stable model is ``v1``.

Two kinds of breach, each repeated ``--runs`` times with a fresh candidate version:

- **drift** (a breach of a version that was healthy): the candidate was trained with one
  category's labels rotated (``--drift-category``), so it agrees with the stable model on
  the usual traffic and passes shadow and the first canary step (10 %, held there). Then,
  at a known instant, the traffic shifts to that category only, where the candidate
  disagrees on nearly every answer. **Onset = the instant the traffic shifts** (at a random
  point of the analysis interval after a passing canary analysis).
- **bad** (a bad model from the start): the candidate was trained on rotated labels.
  **Onset = the first instant a pod computes the candidate** (the earliest ``applied_at``
  of the pods' configurations that name it, from ``GET /v1/models``).

In both, **back = the instant the last pod applied the configuration with the stable model
alone** (its ``applied_at``; each pod's ``GET /v1/models`` is polled every 50 ms as a
cross-check). Printed per run: onset -> rollback decided (status.history), onset -> all
pods back; then median and max.

Then the spec change propagation on the same real processes: a rollout held in shadow, its
``shadow.percent`` toggled ``--changes`` times by ``kubectl apply``; timed from the start of
``kubectl apply`` (its start-up included) until every process's ``GET /v1/models`` reports
the new generation. (benchmarks/bench_controller.py times the same path with stand-in pods
under 200 rollouts; this one includes the real service's watch and swap.)

    .venv/bin/python benchmarks/bench_rollback.py [--runs 5] [--changes 20] [--scenario both]
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from testbed.demo import STABLE, LocalStack, PodView, hard_deadline, pod_views
from testbed.process import keep_workdirs, remove_tree, wait_until

ROLLOUT = "suggest"
SCRAPE = "5s"
TICK = 2.0  # the controller's default
INTERVAL = 5.0
ANALYSIS = {
    "interval": f"{INTERVAL:g}s",
    "window": "30s",
    "minSamples": 100,
    "failureLimit": 1,
    "inconclusiveLimit": 20,
    "thresholds": {"minAgreement": 0.75},  # the original SuggestAgreementDrop level
}
SHADOW = {"percent": 100, "passes": 1}
CANARY_HELD = {"percent": 50, "steps": [10, 50], "stepInterval": "10m"}


@dataclass(frozen=True)
class Run:
    """One measured breach, times in seconds from its onset."""

    scenario: str
    version: str
    decided: float
    back: float
    polled: float
    reason: str


# --------------------------------------------------------------------------- models


def train_candidates(root: Path, runs: int, scenarios: list[str], category: str) -> None:
    """``v1`` (stable), ``v2`` (good), ``drift-i`` and ``bad-i`` candidates, small and fast."""
    from training.data import CATEGORIES, generate_transactions  # noqa: PLC0415
    from training.gate import GateConfig  # noqa: PLC0415
    from training.pipeline import train_and_publish  # noqa: PLC0415
    from training.train import TrainParams  # noqa: PLC0415

    params, rows = TrainParams.quick(), 8000
    no_gate = GateConfig(enforce=False)
    train_and_publish(root, rows=rows, seed=1, version=STABLE, params=params)
    train_and_publish(root, rows=rows, seed=2, version="v2", params=params)
    following = dict(zip(CATEGORIES, (*CATEGORIES[1:], CATEGORIES[0]), strict=True))
    for i in range(1, runs + 1):
        if "drift" in scenarios:
            frame = generate_transactions(rows, seed=10 + i)
            weak = frame["label"] == category
            frame.loc[weak, "label"] = following[category]
            train_and_publish(
                root, data=frame, seed=10 + i, version=f"drift-{i}", params=params, gate=no_gate
            )
        if "bad" in scenarios:
            train_and_publish(
                root,
                rows=rows,
                seed=20 + i,
                version=f"bad-{i}",
                params=params,
                corrupt="rotate_labels",
                gate=no_gate,
            )


def category_rows(category: str) -> list[dict[str, Any]]:
    """Load rows (as :class:`testbed.stack.Load` sends them) of one category only."""
    from training.data import generate_transactions  # noqa: PLC0415

    frame = generate_transactions(4000, seed=99)
    frame = frame[frame["label"] == category]
    return [
        {"merchant": r.merchant, "memo": r.memo, "amount": float(r.amount)}
        for r in frame.itertuples()
    ]


# --------------------------------------------------------------------------- one run


def rollout(version: str, prometheus_url: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": ROLLOUT},
        "spec": {
            "target": "suggest",
            "model": {"version": version},
            "shadow": SHADOW,
            "canary": CANARY_HELD,
            "analysis": {"prometheusURL": prometheus_url, **ANALYSIS},
            **spec,
        },
    }


def _ts(when: str | datetime) -> float:
    return (datetime.fromisoformat(when) if isinstance(when, str) else when).timestamp()


def canary_healthy(stack: LocalStack, version: str) -> bool:
    """In Canary with ``version``, every pod serving the canary, a pass analysed there."""
    st = stack.status(ROLLOUT)
    last = st.get("lastAnalysis") or {}
    if st.get("phase") == "RolledBack" and st.get("candidateVersion") == version:
        raise RuntimeError(f"{version} was rolled back before the breach: {st.get('message')}")
    if st.get("phase") != "Canary" or st.get("candidateVersion") != version:
        return False
    if last.get("outcome") != "Pass" or _ts(last["time"]) < _ts(st["phaseSince"]):
        return False
    views = pod_views(stack.services)
    return all(v is not None and v.candidate == version and v.canary > 0 for v in views)


@dataclass(frozen=True)
class Back:
    """When the pods were seen back on the stable model, and when they first had ``version``."""

    polled: float
    """When polling first saw every pod serving the stable model alone."""
    applied: float
    """When the last pod applied that configuration (its own ``applied_at``)."""
    first_candidate: float | None
    """When the first pod applied a configuration naming the candidate (if seen)."""


def wait_all_back(stack: LocalStack, version: str, timeout: float) -> Back:
    """Poll every pod (every 50 ms) until all serve the stable model alone."""
    first: dict[str, float] = {}

    def probe() -> list[PodView] | None:
        views = pod_views(stack.services)
        for v in views:
            if v is not None and v.candidate == version and v.applied_at is not None:
                first.setdefault(v.pod, v.applied_at.timestamp())
        back = [v for v in views if v is not None and v.stable_only(STABLE) and v.applied_at]
        return back if len(back) == len(views) and first else None

    views = wait_until(
        probe,
        timeout=timeout,
        interval=0.05,
        what=f"every pod back on {STABLE}",
        on_timeout=stack.controller_tail,
    )
    polled = time.time()
    applied = max(v.applied_at.timestamp() for v in views if v.applied_at is not None)
    return Back(polled, applied, min(first.values()) if first else None)


def measure(
    stack: LocalStack,
    scenario: str,
    version: str,
    drifted: list[dict[str, Any]],
    rng: random.Random,
) -> Run:
    """Roll ``version`` out, cause (drift) or await (bad) the breach, time the way back."""
    assert stack.prometheus is not None
    assert stack.load is not None
    stack.cluster.apply(rollout(version, stack.prometheus.url))
    normal = stack.load.rows
    onset: float | None = None
    try:
        if scenario == "drift":
            wait_until(
                lambda: canary_healthy(stack, version),
                timeout=180,
                interval=0.5,
                what=f"{version} healthy in Canary",
                on_timeout=stack.controller_tail,
            )
            # The shift lands at a random point of the analysis and scrape cycles; right
            # after the pass above it would always wait almost one whole interval.
            time.sleep(rng.uniform(0, INTERVAL))
            onset = time.time()
            stack.load.rows = drifted
        back = wait_all_back(stack, version, timeout=180)
    finally:
        stack.load.rows = normal
    if onset is None:
        assert back.first_candidate is not None  # wait_all_back saw the candidate first
        onset = back.first_candidate
    st = stack.status(ROLLOUT)
    decisions = [h for h in st.get("history") or [] if h.get("to") == "RolledBack"]
    decided = _ts(decisions[-1]["time"]) if decisions else back.polled
    return Run(
        scenario,
        version,
        decided - onset,
        back.applied - onset,
        back.polled - onset,
        str(st.get("message", "")),
    )


# --------------------------------------------------------------------------- propagation


def propagation(stack: LocalStack, changes: int) -> list[float]:
    """Seconds from ``kubectl apply`` of a spec change to every pod serving it."""
    assert stack.prometheus is not None
    url = stack.prometheus.url
    held = {"shadow": {"percent": 100, "passes": 1000}}
    stack.cluster.apply(rollout("v2", url, **held))
    wait_until(
        lambda: stack.status(ROLLOUT).get("phase") == "Shadow",
        timeout=60,
        what="v2 in Shadow",
        on_timeout=stack.controller_tail,
    )
    times = []
    for i in range(changes):
        before = _converged_generation(stack)
        percent = 50 if i % 2 == 0 else 100
        started = time.monotonic()
        stack.cluster.apply(rollout("v2", url, shadow={"percent": percent, "passes": 1000}))
        wait_until(
            functools.partial(_served_after, stack, before),
            timeout=30,
            interval=0.005,
            what="every pod serving the change",
            on_timeout=stack.controller_tail,
        )
        times.append(time.monotonic() - started)
    return times


def _converged_generation(stack: LocalStack) -> int:
    """The generation that every pod serves (the lowest one reported)."""
    views = pod_views(stack.services)
    return min(v.generation if v is not None else -1 for v in views)


def _served_after(stack: LocalStack, generation: int) -> bool:
    return _converged_generation(stack) > generation


# --------------------------------------------------------------------------- main


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(q * len(ordered)) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="breaches per scenario")
    parser.add_argument("--changes", type=int, default=20, help="spec changes timed")
    parser.add_argument("--scenario", choices=["drift", "bad", "both"], default="both")
    parser.add_argument(
        "--drift-category", default="Rent", help="the category the drift candidate gets wrong"
    )
    parser.add_argument("--deadline", type=float, default=1200, help="overall seconds")
    args = parser.parse_args()
    scenarios = ["drift", "bad"] if args.scenario == "both" else [args.scenario]
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # tear down as on Ctrl-C

    say = functools.partial(print, flush=True)
    say(
        f"settings: Prometheus scrape and evaluation every {SCRAPE}; controller tick {TICK:g} s;"
        f" 2 suggestion processes; analysis {json.dumps(ANALYSIS)}; shadow {json.dumps(SHADOW)};"
        f" canary {json.dumps(CANARY_HELD)} (held at the first step)"
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-rollback-"))
    models = workdir / "models"
    models.mkdir()
    stack = LocalStack(
        models, workdir, scrape_interval=SCRAPE, tick=TICK, namespace="bench", say=say
    )
    try:
        # The deadline ends before the stack closes: teardown is never interrupted.
        with stack, hard_deadline(args.deadline):
            started = time.monotonic()
            train_candidates(models, args.runs, scenarios, args.drift_category)
            versions = len(list(models.iterdir()))
            say(f"trained {versions} versions in {time.monotonic() - started:.0f} s")
            stack.start()
            measure_all(stack, args, scenarios)
    finally:
        if not keep_workdirs():
            remove_tree(workdir)
    return 0


def measure_all(stack: LocalStack, args: argparse.Namespace, scenarios: list[str]) -> None:
    """The breaches of each scenario, then the propagation; prints as it goes."""
    drifted = category_rows(args.drift_category)
    rng = random.Random(1)
    runs: list[Run] = []
    for scenario in scenarios:
        for i in range(1, args.runs + 1):
            run = measure(stack, scenario, f"{scenario}-{i}", drifted, rng)
            runs.append(run)
            print(
                f"{run.scenario:<5} {run.version:<8} onset -> rollback decided {run.decided:5.1f} s"
                f" -> all pods back on {STABLE} {run.back:5.1f} s (polled {run.polled:5.1f} s)"
                f"  [{run.reason[:90]}]",
                flush=True,
            )
    for scenario in scenarios:
        back = [r.back for r in runs if r.scenario == scenario]
        decided = [r.decided for r in runs if r.scenario == scenario]
        print(
            f"{scenario}: onset -> all traffic back on {STABLE}: median"
            f" {statistics.median(back):.1f} s, max {max(back):.1f} s (decided: median"
            f" {statistics.median(decided):.1f} s, max {max(decided):.1f} s), {len(back)} runs;"
            " target <= 30 s"
        )
    if args.changes > 0:
        times = propagation(stack, args.changes)
        print(
            f"spec change -> every real pod ({len(stack.services)}) serving it, {len(times)}"
            f" changes (kubectl start-up included): p50 {statistics.median(times):.2f} s,"
            f" p95 {percentile(times, 0.95):.2f} s, max {max(times):.2f} s; target p95 <= 2 s"
        )


if __name__ == "__main__":
    sys.exit(main())
