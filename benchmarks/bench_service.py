"""Benchmark of the suggestion service on loopback (prints figures; not a test).

What it measures, with real uvicorn processes (one worker each, ``python -m service``):

1. one suggestion per request: rules only (``rules``), the stable model serving
   (``model``), the stable model serving and the candidate computed in the shadow of 100%
   of requests (``model+shadow``), and rules serving with the model in shadow
   (``rules+shadow``, the original shadow mode): p50/p99 latency at concurrency 1 and
   throughput at concurrency 8, and for the first three p50/p99 under moderate load (8
   connections pausing at random between requests so that together they ask for about
   half of that throughput); then model+shadow with each request's shadow evaluated
   with it (``service/shadow.py`` off), and model and model+shadow with each request
   evaluated alone (``service/coalesce.py`` off), to show what each of those brings;
2. the same for a trivial FastAPI endpoint served the same way, measured right after each
   of them (the ratio compares figures taken side by side); throughput at concurrency 8
   alternates ``--rounds`` times between the two and the median ratio is printed, with
   its range (one pair of runs swings by 15% or more on a shared machine);
3. transactions/s in batches of 1,000 (rules, model, model + 100% shadow), two
   connections (two requests in flight: LightGBM runs on a worker thread without the GIL);
4. RSS of the service process with two models loaded.

Load comes from ``wrk`` (Debian package ``wrk``: ``apt-get install wrk``), a C load
generator, so the client does not starve the server of the machine's two cores. Each run
is bounded (``--seconds``); everything listens on 127.0.0.1 only.

The models are trained here by ``training.pipeline.train_and_publish`` with its default
parameters (the ones a user gets), unless ``--quick``.

    .venv/bin/python benchmarks/bench_service.py [--seconds 10] [--rounds 3] [--quick]
        [--only model --only model+shadow] [--no-compile]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import httpx

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

TRIVIAL_APP = """
from fastapi import FastAPI

app = FastAPI()


@app.get("/ping")
async def ping() -> dict[str, bool]:
    return {"ok": True}
"""

# wrk request generator: one transaction per request, distinct ids and users.
ONE_TXN_LUA = """
local n = 0
local merchants = {"WHOLEFDS MKT #10233", "UBER *TRIP", "NETFLIX.COM", "SQ *BLUE BOTTLE",
                   "AMZN MKTP US*2K4", "ZELLE TO JOHN SMITH", "SHELL OIL 5521", "ACME PAYROLL"}
local memos = {"weekly grocery run", "", "", "coffee", "order 9931", "march rent", "gas", "salary"}
local amounts = {-54.2, -21.5, -15.49, -5.75, -23.0, -2300.0, -48.1, 3200.0}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  local i = (n % 8) + 1
  local body = string.format(
    '{"transactions":[{"id":"t%d","merchant":"%s","memo":"%s","amount":%s,"user_id":"u%d"}]}',
    n, merchants[i], memos[i], amounts[i], n % 5000)
  return wrk.format(nil, "/v1/suggestions", nil, body)
end
"""

# The same requests with a pause before each one on every connection: moderate load. The
# pauses are drawn from an exponential distribution (whole milliseconds, mean {pause_ms})
# so the connections do not fall into step and arrive in bursts of eight.
PACED_LUA = (
    ONE_TXN_LUA
    + """
math.randomseed(os.time())
delay = function()
  return math.floor(-math.log(1 - math.random()) * {pause_ms} + 0.5)
end
"""
)

BATCH_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("{body}"):read("*a")
wrk.path = "/v1/suggestions"
"""

GET_LUA = 'wrk.method = "GET"\n'

BATCHED = ("rules", "model", "model+shadow")
"""The configurations also measured in batches of 1,000 transactions."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready within {timeout}s")


@contextmanager
def process(args: list[str], env: dict[str, str], ready_url: str, log: Path) -> Iterator[int]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_ready(ready_url)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wrk(url: str, script: Path, *, connections: int, seconds: float) -> dict[str, float]:
    """Run wrk; requests/s and latency percentiles (ms)."""
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{int(seconds)}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    figures: dict[str, float] = {}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    figures["rps"] = float(rps.group(1)) if rps else 0.0
    for pct in ("50", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if m:
            value = float(m.group(1))
            figures[f"p{pct}"] = value * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    figures["non2xx"] = float(errors.group(1)) if errors else 0.0
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if socket_errors:
        print(f"    wrk socket errors: {socket_errors.group(1)}")
    return figures


def wait_compiled(url: str, timeout: float = 600.0) -> dict[str, object]:
    """GET /v1/models once every loaded model serves from compiled trees (first run: the
    compilation; later runs load the cache)."""
    started = time.monotonic()
    while True:
        served: dict[str, object] = httpx.get(f"{url}/v1/models").json()
        models = served["models"]
        assert isinstance(models, list)
        if all(m["scorer"] == "compiled" for m in models):
            if models:
                print(f"  compiled in {time.monotonic() - started:.0f} s", flush=True)
            return served
        if time.monotonic() - started > timeout:
            raise SystemExit(f"models not compiled after {timeout:.0f} s: {models}")
        time.sleep(0.5)


def _sample(metrics: str) -> float:
    """Transactions served by the stable model per evaluation of it (all runs so far)."""
    served = evaluations = 0.0
    for line in metrics.splitlines():
        if line.startswith("modelrollout_predictions_total{") and 'served_by="stable"' in line:
            served += float(line.rsplit(" ", 1)[1])
        if line.startswith("modelrollout_inference_seconds_count{") and 'role="stable"' in line:
            evaluations += float(line.rsplit(" ", 1)[1])
    return served / evaluations if evaluations else float("nan")


def request_buckets(metrics: str) -> dict[float, float]:
    """``modelrollout_suggestion_request_seconds`` cumulative bucket counts by upper bound."""
    buckets = {}
    for m in re.finditer(
        r'^modelrollout_suggestion_request_seconds_bucket\{(?:[^}]*,)?le="([^"]+)"[^}]*\} (\S+)$',
        metrics,
        re.MULTILINE,
    ):
        buckets[float(m.group(1))] = float(m.group(2))
    return buckets


def server_p99(before: dict[float, float], after: dict[float, float]) -> tuple[float, float]:
    """The p99 (ms) of the requests answered between two reads of the histogram,
    interpolated within its bucket as PromQL's histogram_quantile does, and the share
    answered within 5 ms."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1]
    if not total:
        return float("nan"), float("nan")
    rank, lower, below = 0.99 * total, 0.0, 0.0
    p99 = float("inf")
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            p99 = (lower + (bound - lower) * (rank - below) / max(count - below, 1e-9)) * 1e3
            break
        lower, below = bound, count
    within = (after.get(0.005, 0.0) - before.get(0.005, 0.0)) / total
    return p99, within


def steal_share(since: tuple[int, int] | None = None) -> Any:
    """CPU time the hypervisor gave to others (``steal`` in /proc/stat): the counters now,
    or, given earlier counters, the share of all CPU time stolen since then. A virtual
    machine's noisy neighbours show here; a run with a few percent stolen is suspect."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    now = (fields[7] if len(fields) > 7 else 0, sum(fields))
    if since is None:
        return now
    total = now[1] - since[1]
    return (now[0] - since[0]) / total if total else 0.0


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (children of any of its threads: the shadow's process
    is started by a worker thread)."""
    out = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            out += tree_pids(int(child))
    return out


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def train(
    models: Path, quick: bool, compile_trees: Literal["auto", "on", "off"] = "off"
) -> dict[str, int]:
    from training.gate import GateConfig  # noqa: PLC0415 - heavy, only here
    from training.pipeline import train_and_publish  # noqa: PLC0415
    from training.train import TrainParams  # noqa: PLC0415

    params = TrainParams.quick(n_jobs=1) if quick else TrainParams(n_jobs=1)
    trees = {}
    for version, seed in (("v1", 1), ("v2", 2)):
        result = train_and_publish(
            models,
            rows=20_000,
            seed=seed,
            version=version,
            params=params,
            gate=GateConfig(enforce=False),
            rules=None,
            compile_trees=compile_trees,
        )
        trees[version] = result.trained.best_iteration
    return trees


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument("--quick", action="store_true", help="small models (TrainParams.quick)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="throughput at concurrency 8 is measured this many times, alternating with the "
        "trivial endpoint; the ratio printed is the median of the rounds' ratios",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=None,
        metavar="NAME",
        help="run this configuration (repeat for several; default: all)",
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train with --compile-trees on and serve from the compiled trees training "
        "published, as the chart does (default: on; --no-compile: LightGBM's predictor)",
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="bench-service-"))
    try:
        models = work / "models"
        started = time.monotonic()
        trees = train(models, args.quick, "on" if args.compile else "off")
        sizes = {v: (models / v / "model.txt").stat().st_size / 2**20 for v in trees}
        shapes = ", ".join(
            f"{v}: {t} iterations x 10 classes, {sizes[v]:.1f} MiB" for v, t in trees.items()
        )
        print(f"models: {shapes} (trained in {time.monotonic() - started:.0f}s)", flush=True)
        (work / "trivial_app.py").write_text(TRIVIAL_APP)
        (work / "one.lua").write_text(ONE_TXN_LUA)
        (work / "get.lua").write_text(GET_LUA)
        batch = [
            {
                "id": f"b{i}",
                "merchant": m,
                "memo": d,
                "amount": a,
                "user_id": f"u{i % 97}",
            }
            for i, (m, d, a) in enumerate(
                [
                    ("WHOLEFDS MKT #10233", "weekly grocery run", -54.2),
                    ("UBER *TRIP", "", -21.5),
                    ("NETFLIX.COM", "", -15.49),
                    ("SQ *BLUE BOTTLE", "coffee", -5.75),
                    ("ZELLE TO JOHN SMITH", "march rent", -2300.0),
                ]
                * 200
            )
        ]
        (work / "batch.json").write_text(json.dumps({"transactions": batch}))
        (work / "batch.lua").write_text(BATCH_LUA.replace("{body}", str(work / "batch.json")))

        def service_env(
            name: str, config: dict[str, object], extra: dict[str, str] | None = None
        ) -> dict[str, str]:
            path = work / f"serving-{name}.json"
            path.write_text(json.dumps(config))
            env = {k: v for k, v in os.environ.items() if not k.startswith("SUGGEST_")}
            env |= {
                "MODELROLLOUT_MODELS_ROOT": str(models),
                "MODELROLLOUT_CONFIG_FILE": str(path),
                "POD_NAME": "bench",
                "PYTHONPATH": str(ROOT),
                "OMP_NUM_THREADS": "1",
                "MODELROLLOUT_COMPILE_MODELS": "0",
                "MODELROLLOUT_PUBLISHED_TREES": "1" if args.compile else "0",
            }
            return env | (extra or {})

        ratios: dict[str, tuple[float, float]] = {}
        configs: dict[str, dict[str, object]] = {
            "rules": {"generation": 1},
            "model": {"generation": 1, "stable": "v1"},
            "model+shadow": {
                "generation": 1, "stable": "v1", "candidate": "v2", "shadow_percent": 100
            },
            "rules+shadow": {
                "generation": 1, "mode": "heuristic", "stable": "v1", "shadow_percent": 100
            },
            # Each request's shadow evaluated with it (service/shadow.py off).
            "model+shadow, shadow inline": {
                "generation": 1, "stable": "v1", "candidate": "v2", "shadow_percent": 100
            },
            # The same two, each request evaluated alone (service/coalesce.py off).
            "model, alone": {"generation": 1, "stable": "v1"},
            "model+shadow, alone": {
                "generation": 1, "stable": "v1", "candidate": "v2", "shadow_percent": 100
            },
        }  # fmt: skip
        extra_env = {
            "model+shadow, shadow inline": {"MODELROLLOUT_SHADOW_BATCH_ROWS": "1"},
            "model, alone": {"MODELROLLOUT_COALESCE": "0"},
            "model+shadow, alone": {"MODELROLLOUT_COALESCE": "0"},
        }
        if args.only:
            wanted = args.only
            unknown = sorted(set(wanted) - set(configs))
            if unknown:
                parser.error(f"unknown configurations {unknown}; known: {sorted(configs)}")
            configs = {n: c for n, c in configs.items() if n in wanted}
        results: dict[str, dict[str, float]] = {}
        coalesced: dict[str, float] = {}
        moderate: dict[str, list[tuple[float, float, float, dict[str, float], float]]] = {}
        rss: tuple[float, int, int] = (float("nan"), 0, 0)
        metrics = ""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        serve = [PYTHON, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
        seconds = args.seconds
        one = work / "one.lua"

        # The trivial endpoint runs the whole time and is measured right after each
        # service run, so each ratio compares figures taken side by side (a shared
        # machine's speed drifts between runs minutes apart).
        trivial_port = free_port()
        trivial_env = {**os.environ, "PYTHONPATH": str(work)}
        trivial = [
            PYTHON, "-m", "uvicorn", "trivial_app:app", "--host", "127.0.0.1",
            "--port", str(trivial_port), "--workers", "1", "--no-access-log",
            "--log-level", "warning",
        ]  # fmt: skip
        ping, get = f"http://127.0.0.1:{trivial_port}/ping", work / "get.lua"
        with process(trivial, trivial_env, ping, work / "trivial.log"):
            wrk(ping, get, connections=4, seconds=2)  # warm-up
            for name, config in configs.items():
                env = service_env(name, config, extra_env.get(name))
                with process(serve, env, f"{url}/readyz", work / f"{name}.log") as pid:
                    served = (
                        wait_compiled(url) if args.compile else httpx.get(f"{url}/v1/models").json()
                    )
                    loaded = [m["version"] for m in served["models"]]
                    scorers = {m["version"]: m["scorer"] for m in served["models"]}
                    print(f"{name}: serving {served['config']}, scorers {scorers}", flush=True)
                    wrk(url, one, connections=4, seconds=2)  # warm-up
                    results[f"{name} c1"] = wrk(url, one, connections=1, seconds=seconds)
                    results["  trivial c1"] = wrk(ping, get, connections=1, seconds=seconds)
                    round_ratios = []
                    for r in range(args.rounds):
                        ours = wrk(url, one, connections=8, seconds=seconds)
                        theirs = wrk(ping, get, connections=8, seconds=seconds)
                        round_ratios.append(ours["rps"] / theirs["rps"])
                        results[f"{name} c8" + (f" #{r + 1}" if r else "")] = ours
                        results["  trivial c8" + (f" #{r + 1}" if r else "")] = theirs
                    if name in BATCHED:
                        # Moderate load: 8 connections, each pausing so that together
                        # they ask for about half of what concurrency 8 reached.
                        capacity = statistics.median(
                            results[f"{name} c8" + (f" #{r + 1}" if r else "")]["rps"]
                            for r in range(args.rounds)
                        )
                        period_ms = 8 / (capacity / 2) * 1000
                        pause = max(1, round(period_ms - results[f"{name} c1"].get("p50", 0)))
                        paced = work / f"paced-{pause}.lua"
                        paced.write_text(PACED_LUA.replace("{pause_ms}", str(pause)))
                        runs = []
                        for r in range(args.rounds):
                            before = request_buckets(httpx.get(f"{url}/metrics").text)
                            stolen = steal_share()
                            got = wrk(url, paced, connections=8, seconds=seconds)
                            stolen = steal_share(stolen)
                            after = request_buckets(httpx.get(f"{url}/metrics").text)
                            key = f"{name} c8 paced ~{pause} ms" + (f" #{r + 1}" if r else "")
                            results[key] = got
                            p99, within = server_p99(before, after)
                            runs.append((p99, within, got["rps"] / capacity, got, stolen))
                        moderate[name] = runs
                    if name in ("model", "model+shadow"):
                        # one-transaction requests per evaluation of the stable model
                        coalesced[name] = _sample(httpx.get(f"{url}/metrics").text)
                    if name in BATCHED:
                        batch_lua = work / "batch.lua"
                        results[f"{name} batch1000 c2"] = wrk(
                            url, batch_lua, connections=2, seconds=seconds
                        )
                    if name == "model+shadow":
                        tree = tree_pids(pid)
                        rss = (sum(rss_mib(p) for p in tree), len(loaded), len(tree))
                        metrics = httpx.get(f"{url}/metrics").text
                    ratios[name] = (
                        statistics.median(round_ratios),
                        min(round_ratios),
                        max(round_ratios),
                        results["  trivial c1"].get("p99", 0.0),
                    )
                # Keep the trivial figures of every round in the table.
                for key in [k for k in results if k.startswith("  trivial c") and "(" not in k]:
                    results[f"{key} ({name})"] = results.pop(key)

        print()
        print(f"{'run':<32}{'req/s':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'non-2xx':>9}")
        for name, r in results.items():
            print(
                f"{name:<32}{r['rps']:>10.0f}{r.get('p50', 0):>9.2f}{r.get('p90', 0):>9.2f}"
                f"{r.get('p99', 0):>9.2f}{r['non2xx']:>9.0f}"
            )
        print()
        for name, (ratio, low, high, trivial_p99) in ratios.items():
            c1 = results[f"{name} c1"]
            print(
                f"{name:<13} p50 {c1.get('p50', 0):.2f} ms, p99 {c1.get('p99', 0):.2f} ms at "
                f"concurrency 1 (client side; trivial p99 {trivial_p99:.2f} ms beside it); "
                f"{ratio:.0%} of the trivial endpoint's throughput at concurrency 8 (median of "
                f"{args.rounds} rounds, {low:.0%}-{high:.0%})"
            )
        for name, runs in moderate.items():
            p99s = [p99 for p99, *_ in runs]
            print(
                f"{name:<13} moderate load (~{statistics.median(r[2] for r in runs):.0%} of its "
                f"throughput at concurrency 8): server side p99 {statistics.median(p99s):.2f} "
                f"ms, median of {len(runs)} runs ({min(p99s):.2f}-{max(p99s):.2f}; "
                "modelrollout_suggestion_request_seconds); per run p99 server / client, "
                "within 5 ms, CPU stolen by the host: "
                + "; ".join(
                    f"{p99:.2f} / {got.get('p99', 0):.2f} ms, {within:.1%}, {stolen:.1%}"
                    for p99, within, _, got, stolen in runs
                )
            )
        for name in [n for n in BATCHED if f"{n} batch1000 c2" in results]:
            tx_per_s = results[f"{name} batch1000 c2"]["rps"] * 1000
            print(f"{name:<13} batches of 1,000: {tx_per_s:,.0f} transactions/s")
        for name, per_call in coalesced.items():
            print(f"{name:<13} transactions per evaluation of the stable model: {per_call:.2f}")
        print(
            f"RSS of one service with {rss[1]} models loaded: {rss[0]:.0f} MiB "
            f"({rss[2]} processes: the server and the shadow's)"
        )
        for line in metrics.splitlines():
            if line.startswith(
                ("modelrollout_inference_seconds_count", "modelrollout_inference_seconds_sum")
            ):
                print("  " + line)
        print(
            "\ntargets: p99 <= 5 ms; >= 50% of trivial throughput; >= 20,000 transactions/s"
            f" batched\n(wrk -t1; {seconds:.0f} s per run; loopback; one uvicorn worker per"
            " process)"
        )
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
