"""Where a suggestion process's memory goes (prints figures; not a test).

Trains two versions with the default parameters, then, in a fresh process, reads the RSS
(``VmRSS``) after each step of what a serving process does: the interpreter, the
service's imports, the first and the second model loaded (``service.models.load_model``),
a batch of 1,000 scored by both; then, for comparison, what importing the
``lightgbm`` Python package would add (scikit-learn, pandas, scipy through its
``compat`` module) and, with ``--compile``, what loading the same two versions as compiled
trees (lleaves) adds (minutes of compiling on a loaded machine). Last, the RSS of a real
``python -m service`` process with both models loaded.

    .venv/bin/python benchmarks/bench_memory.py [--compile]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from bench_peers import running
from bench_service import free_port, rss_mib, train

ROOT = Path(__file__).resolve().parents[1]

STEPS = r"""
import gc, json, os, sys, time
from pathlib import Path

def rss():
    for line in open(f"/proc/{os.getpid()}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

models, cache = Path(sys.argv[1]), Path(sys.argv[2])
out = [("interpreter", rss(), len(gc.get_objects()))]
import numpy
out.append(("numpy", rss(), len(gc.get_objects())))
import service.app
from service.models import load_model
out.append(("the service's imports (no lightgbm package)", rss(), len(gc.get_objects())))
v1 = load_model(models, "v1")
out.append(("v1 loaded (LightGBM C API)", rss(), len(gc.get_objects())))
v2 = load_model(models, "v2")
out.append(("v2 loaded", rss(), len(gc.get_objects())))
from service.features import extract
batch = extract(["WHOLEFDS MKT #10233"] * 1000, ["weekly grocery run"] * 1000, [-54.2] * 1000)
v1.predict_proba(batch); v2.predict_proba(batch)
out.append(("a batch of 1,000 scored by both", rss(), len(gc.get_objects())))
import lightgbm
out.append(("+ import lightgbm (sklearn, pandas, scipy)", rss(), len(gc.get_objects())))
if sys.argv[3] == "compile":
    v1.accelerate(cache); v2.accelerate(cache)
    out.append(("+ both as compiled trees (lleaves, llvmlite)", rss(), len(gc.get_objects())))
print(json.dumps(out))
"""


def main() -> int:
    compile_trees = "--compile" in sys.argv[1:]
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        models = work / "models"
        trees = train(models, quick=False)
        sizes = {v: (models / v / "model.txt").stat().st_size / 2**20 for v in trees}
        print(
            "models: "
            + ", ".join(
                f"{v} {t} iterations x 10 classes ({sizes[v]:.1f} MiB)" for v, t in trees.items()
            )
        )
        script = work / "steps.py"
        script.write_text(STEPS)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        started = time.monotonic()
        out = subprocess.run(
            [sys.executable, str(script), str(models), str(work / "compiled"),
             "compile" if compile_trees else "no"],
            capture_output=True, text=True, check=True, env=env, cwd=ROOT,
        ).stdout  # fmt: skip
        print(f"(steps and compiling took {time.monotonic() - started:.0f} s)\n")
        prev = 0.0
        print(f"{'step':<48}{'RSS MiB':>9}{'added':>8}{'gc objects':>12}")
        for name, rss, objects in json.loads(out.splitlines()[-1]):
            print(f"{name:<48}{rss:>9.1f}{rss - prev:>+8.1f}{objects:>12,}")
            prev = rss
        config = work / "serving.json"
        config.write_text(
            json.dumps({"generation": 1, "stable": "v1", "candidate": "v2", "shadow_percent": 100})
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env |= {
            "MODELROLLOUT_MODELS_ROOT": str(models),
            "MODELROLLOUT_CONFIG_FILE": str(config),
            "POD_NAME": "bench",
        }
        args = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
                "--log-level", "warning"]  # fmt: skip
        with running(args, env, f"{url}/readyz", work / "service.log", ROOT) as pid:
            txn = {"merchant": "UBER *TRIP", "memo": "", "amount": -21.5}
            body = {
                "transactions": [txn | {"id": f"t{i}", "user_id": f"u{i}"} for i in range(1000)]
            }
            for _ in range(20):
                assert httpx.post(f"{url}/v1/suggestions", json=body, timeout=30).status_code == 200
            print(f"\npython -m service, stable v1 + candidate v2 in 100% shadow, after 20 "
                  f"batches of 1,000: RSS {rss_mib(pid):.0f} MiB")  # fmt: skip
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
