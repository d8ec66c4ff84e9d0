"""What a heavy candidate in 100% shadow does to the stable model's users (prints figures).

Five suggestion processes run at once on loopback, one uvicorn worker each, all serving the
stable model ``v1`` (default training parameters):

- ``no shadow``: stable only;
- ``like-sized shadow``: ``v2`` (trained like ``v1``) in the shadow of 100% of requests;
- ``heavy shadow``: ``v3``, ten times ``v1``'s trees (no early stopping), in 100% shadow,
  with the defaults: evaluated in the shadow's own process at idle priority
  (``service/shadow_process.py``) within the shadow budget
  (``MODELROLLOUT_SHADOW_CPU_SHARE=0.25``);
- ``heavy shadow, on a thread``: the same evaluated on the serving process's worker thread
  (``MODELROLLOUT_SHADOW_PROCESS=false``), sharing the GIL with the event loop;
- ``heavy shadow, no CPU bound``: the default with ``MODELROLLOUT_SHADOW_CPU_SHARE=1``
  (the shadow may use a whole core; the queue bound still sheds).

Moderate load: 8 connections pausing at random (exponential pauses) so that together they
ask for about half of what ``no shadow`` answers at concurrency 8, the same offered load
for every process. Each round measures every process in turn; per run the server-side p99
(``modelrollout_suggestion_request_seconds``, interpolated as ``histogram_quantile``
does), the client's p99, the shadow rows compared and shed, and the share of CPU the
hypervisor stole. The ratio of each process's p99 to ``no shadow``'s in the same round is
printed per round (the machine is shared), and, last, the p99 of all of a process's
requests over every round pooled (the histogram's counts summed), the steadiest figure.

    .venv/bin/python benchmarks/bench_shadow_budget.py [--seconds 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
from bench_peers import running
from bench_service import (
    ONE_TXN_LUA,
    PACED_LUA,
    free_port,
    request_buckets,
    server_p99,
    steal_share,
    train,
    wrk,
)

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def train_heavy(models: Path, trees: int) -> int:
    """Publish ``v3``: ``trees`` iterations (x 10 classes), no early stopping."""
    from training.gate import GateConfig  # noqa: PLC0415 - heavy, only here
    from training.pipeline import train_and_publish  # noqa: PLC0415
    from training.train import TrainParams  # noqa: PLC0415

    result = train_and_publish(
        models,
        rows=20_000,
        seed=3,
        version="v3",
        params=TrainParams(n_jobs=1, n_estimators=trees, early_stopping_rounds=0),
        gate=GateConfig(enforce=False),
        rules=None,
    )
    return int(result.trained.best_iteration or trees)


def counted(metrics: str, name: str) -> dict[str, float]:
    """``name``'s samples summed by their ``reason`` label (or ``""``)."""
    out: dict[str, float] = {}
    for m in re.finditer(rf"^{name}(?:\{{([^}}]*)\}})? (\S+)$", metrics, re.MULTILINE):
        reason = re.search(r'reason="([^"]+)"', m.group(1) or "")
        key = reason.group(1) if reason else ""
        out[key] = out.get(key, 0.0) + float(m.group(2))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--load", type=float, default=0.5, help="share of c8 capacity offered")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-shadow-budget-"))
    try:
        models = work / "models"
        started = time.monotonic()
        trees = train(models, quick=False)
        heavy = train_heavy(models, 10 * trees["v1"])
        sizes = {v: (models / v / "model.txt").stat().st_size / 2**20 for v in ("v1", "v2", "v3")}
        print(
            f"models: v1 {trees['v1']}, v2 {trees['v2']}, v3 {heavy} iterations x 10 classes "
            f"({sizes['v1']:.1f} / {sizes['v2']:.1f} / {sizes['v3']:.1f} MiB; trained in "
            f"{time.monotonic() - started:.0f} s)",
            flush=True,
        )
        one = work / "one.lua"
        one.write_text(ONE_TXN_LUA)
        stable = {"generation": 1, "stable": "v1"}
        setups = {
            "no shadow": (stable, {}),
            "like-sized shadow": (stable | {"candidate": "v2", "shadow_percent": 100}, {}),
            "heavy shadow": (stable | {"candidate": "v3", "shadow_percent": 100}, {}),
            "heavy shadow, on a thread": (
                stable | {"candidate": "v3", "shadow_percent": 100},
                {"MODELROLLOUT_SHADOW_PROCESS": "false"},
            ),
            "heavy shadow, no CPU bound": (
                stable | {"candidate": "v3", "shadow_percent": 100},
                {"MODELROLLOUT_SHADOW_CPU_SHARE": "1"},
            ),
        }
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("MODELROLLOUT_")}
        urls: dict[str, str] = {}
        with ExitStack() as stack:
            for name, (config, extra) in setups.items():
                slug = name.replace(" ", "-").replace(",", "")
                cfg = work / f"{slug}.json"
                cfg.write_text(json.dumps(config))
                port = free_port()
                env = (
                    base_env
                    | extra
                    | {
                        "MODELROLLOUT_MODELS_ROOT": str(models),
                        "MODELROLLOUT_CONFIG_FILE": str(cfg),
                        "POD_NAME": "bench",
                        "PYTHONPATH": str(ROOT),
                        "OMP_NUM_THREADS": "1",
                    }
                )
                url = f"http://127.0.0.1:{port}"
                stack.enter_context(
                    running(
                        [PYTHON, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
                         "--log-level", "warning"],
                        env, f"{url}/readyz", work / f"{slug}.log", ROOT,
                    )
                )  # fmt: skip
                urls[name] = url
            for url in urls.values():
                wrk(url, one, connections=4, seconds=2)  # warm-up
            capacity = wrk(urls["no shadow"], one, connections=8, seconds=args.seconds)["rps"]
            c1 = wrk(urls["no shadow"], one, connections=1, seconds=args.seconds)
            period_ms = 8 / (capacity * args.load) * 1000
            pause = max(1, round(period_ms - c1.get("p50", 0)))
            paced = work / "paced.lua"
            paced.write_text(PACED_LUA.replace("{pause_ms}", str(pause)))
            print(
                f"no shadow: {capacity:.0f} req/s at concurrency 8; moderate load: 8 "
                f"connections pausing ~{pause} ms (~{args.load:.0%} of that)",
                flush=True,
            )
            rows: dict[str, list[dict[str, float]]] = {name: [] for name in urls}
            first: dict[str, dict[float, float]] = {}  # each histogram before its first run
            last: dict[str, dict[float, float]] = {}  # and after its last
            for _ in range(args.rounds):
                for name, url in urls.items():
                    before = httpx.get(f"{url}/metrics").text
                    stolen = steal_share()
                    got = wrk(url, paced, connections=8, seconds=args.seconds)
                    stolen = steal_share(stolen)
                    time.sleep(0.3)  # the shadow's last group
                    after = httpx.get(f"{url}/metrics").text
                    p99, within = server_p99(request_buckets(before), request_buckets(after))
                    first.setdefault(name, request_buckets(before))
                    last[name] = request_buckets(after)
                    shed_b = counted(before, "modelrollout_shadow_shed_total")
                    shed_a = counted(after, "modelrollout_shadow_shed_total")
                    cmp_b = counted(before, "modelrollout_shadow_comparisons_total")
                    cmp_a = counted(after, "modelrollout_shadow_comparisons_total")
                    rows[name].append(
                        {
                            "rps": got["rps"],
                            "p99": p99,
                            "client_p99": got.get("p99", 0.0),
                            "within": within,
                            "stolen": stolen,
                            "compared": sum(cmp_a.values()) - sum(cmp_b.values()),
                            "shed": sum(shed_a.values()) - sum(shed_b.values()),
                            **{
                                f"shed {r}": shed_a.get(r, 0.0) - shed_b.get(r, 0.0)
                                for r in ("cpu_budget", "queue_full")
                            },
                        }
                    )
        print()
        print(f"{'process':<28}{'round':>6}{'req/s':>8}{'p99 srv':>9}{'p99 cli':>9}"
              f"{'<=5ms':>8}{'compared':>10}{'shed':>8}{'(budget/queue)':>16}{'stolen':>8}"
              f"{'p99 / no shadow':>17}")  # fmt: skip
        for name, runs in rows.items():
            for r, row in enumerate(runs):
                base = rows["no shadow"][r]["p99"]
                shed = f"{row['shed cpu_budget']:.0f}/{row['shed queue_full']:.0f}"
                print(
                    f"{name:<28}{r + 1:>6}{row['rps']:>8.0f}{row['p99']:>8.2f}m"
                    f"{row['client_p99']:>8.2f}m{row['within']:>8.1%}{row['compared']:>10.0f}"
                    f"{row['shed']:>8.0f}{shed:>16}{row['stolen']:>8.1%}{row['p99'] / base:>16.2f}x"
                )
        print()
        for name, runs in rows.items():
            ratios = [row["p99"] / rows["no shadow"][r]["p99"] for r, row in enumerate(runs)]
            p99s = [row["p99"] for row in runs]
            print(
                f"{name:<28} server p99 median {statistics.median(p99s):.2f} ms; vs no shadow "
                f"in the same round: median {statistics.median(ratios):.2f}x "
                f"({', '.join(f'{x:.2f}x' for x in ratios)})"
            )
        print()
        pooled = {name: server_p99(first[name], last[name])[0] for name in rows}
        for name, p99 in pooled.items():
            print(
                f"{name:<28} server p99 of all its rounds' requests pooled {p99:.2f} ms: "
                f"{p99 / pooled['no shadow']:.2f}x no shadow's"
            )
        print(f"\n(wrk -t1, {args.seconds:.0f} s per run, loopback, LightGBM's predictor)")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
