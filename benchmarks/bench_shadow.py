"""What a 100% shadow costs one suggestion process, measured in-process (prints figures).

``bench_service.py`` measures whole HTTP requests against a trivial endpoint; on a shared
machine those ratios swing by 15% or more between runs minutes apart, which hides a
difference of a tenth. This benchmark times only the suggester, in one process, for
small batches such as the coalescer hands it (1 to 3 rows): the stable model alone,
the stable model with the candidate evaluated with each batch
(``MODELROLLOUT_SHADOW_BATCH_ROWS=1``), and with the candidate's rows deferred and
evaluated together (``service/shadow.py``, default 32 rows). The three run in
alternating rounds over the same transactions; the figures are medians per call, and
the deferred queue's flushes are included in its time.

The models are the ones ``bench_service.py`` trains (default training parameters),
compiled by lleaves as the chart serves them.

    .venv/bin/python benchmarks/bench_shadow.py [--calls 3000] [--rounds 5]
        [--compile-cache DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_service import train  # noqa: E402

from service.runtime import SuggestionService  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.suggest import Batch  # noqa: E402

TRANSACTIONS = [
    ("WHOLEFDS MKT #10233", "weekly grocery run", -54.2),
    ("UBER *TRIP", "", -21.5),
    ("NETFLIX.COM", "", -15.49),
    ("SQ *BLUE BOTTLE", "coffee", -5.75),
    ("AMZN MKTP US*2K4", "order 9931", -23.0),
    ("ZELLE TO JOHN SMITH", "march rent", -2300.0),
    ("SHELL OIL 5521", "gas", -48.1),
    ("ACME PAYROLL", "salary", 3200.0),
]


def batches(calls: int, rows: int) -> list[Batch]:
    out = []
    for i in range(calls):
        picked = [TRANSACTIONS[(i * rows + j) % len(TRANSACTIONS)] for j in range(rows)]
        out.append(
            Batch(
                ids=[f"t{i}-{j}" for j in range(rows)],
                merchants=[m for m, _, _ in picked],
                memos=[d for _, d, _ in picked],
                amounts=[a for _, _, a in picked],
                user_ids=[f"u{i}-{j}" for j in range(rows)],
            )
        )
    return out


def start(
    work: Path, models: Path, cache: Path, name: str, shadow: bool, batch_rows: int
) -> SuggestionService:
    config: dict[str, object] = {"generation": 1, "stable": "v1"}
    if shadow:
        config |= {"candidate": "v2", "shadow_percent": 100}
    path = work / f"{name.replace(' ', '-')}.json"
    path.write_text(json.dumps(config))
    settings = Settings(
        models_root=models,
        config_file=path,
        pod_name="bench",
        compile_models=True,
        compile_cache=cache,
        shadow_batch_rows=batch_rows,
    )
    service = SuggestionService(settings)
    service.start()
    if not service.store.wait_for(lambda s: s.applied, 60):
        raise SystemExit(f"{name}: configuration not applied")
    deadline = time.monotonic() + 600
    while any(m.scorer != "compiled" for m in service.state.models.values()):
        if time.monotonic() > deadline:
            raise SystemExit(f"{name}: trees not compiled within 600 s")
        time.sleep(0.5)
    return service


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="suggester calls per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--compile-cache", type=Path, default=None)
    args = parser.parse_args()
    if args.calls < 1 or args.rounds < 1:
        parser.error("--calls and --rounds must be at least 1")
    work = Path(tempfile.mkdtemp(prefix="bench-shadow-"))
    try:
        models = work / "models"
        started = time.monotonic()
        trees = train(models, quick=False)
        print(f"models: {trees} iterations x 10 classes (trained in "
              f"{time.monotonic() - started:.0f} s)", flush=True)  # fmt: skip
        cache = args.compile_cache or work / "compiled"
        services = {
            "model alone": start(work, models, cache, "model", False, 32),
            "shadow with each call": start(work, models, cache, "inline", True, 1),
            "shadow deferred (32)": start(work, models, cache, "deferred", True, 32),
        }
        print(f"{'rows per call':<15}" + "".join(f"{n:>24}" for n in services))
        for rows in (1, 2, 3):
            work_items = batches(args.calls, rows)
            times: dict[str, list[float]] = {name: [] for name in services}
            for _ in range(args.rounds):
                for name, service in services.items():
                    t = time.perf_counter()
                    for batch in work_items:
                        service.suggest(batch)
                    service.suggester.shadow.flush()
                    times[name].append((time.perf_counter() - t) / args.calls * 1e6)
            medians = {name: statistics.median(ts) for name, ts in times.items()}
            base = medians["model alone"]
            cells = "".join(
                f"{m:>14.0f} us (+{m - base:>3.0f})" if name != "model alone" else f"{m:>21.0f} us"
                for name, m in medians.items()
            )
            print(f"{rows:<15}{cells}")
        print(
            f"\n(+N: microseconds the shadow adds per call; medians of {args.rounds} "
            f"alternating rounds of {args.calls} calls)"
        )
        for service in services.values():
            service.stop()
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
