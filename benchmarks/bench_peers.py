"""Our suggestion service beside the servers a user would run instead (prints figures; not a test).

The peers serve the same LightGBM booster (the stable version's ``model.txt``), one
process each, on loopback:

- **MLServer** with its LightGBM runtime (``mlserver-lightgbm``: ``Booster.predict`` on
  the decoded V2 tensor), ``parallel_workers: 0`` so inference runs in the one process;
- **KServe**'s Python model server (``kserve.ModelServer``) with a ``kserve.Model`` whose
  ``predict`` is ``Booster.predict`` on the V1 ``instances`` (what KServe's own
  LightGBM server does), gRPC and per-request latency logging off.

Both are given a ready feature vector and do only the booster call. Ours is given the
transaction (merchant, memo, amount, user) and does everything a suggestion is: validation,
features, routing, rules, the stable model, calibration, top-K, metrics, and (in
``ours+shadow``) the candidate in the shadow of 100% of requests.

Each peer is installed once into its own virtual environment outside the repository,
``~/.cache/modelrollout/peers/<name>-<version>`` (pinned versions, from PyPI, by ``uv``;
a marker file makes it idempotent), and started from there.

All servers run at once; each round measures every one of them in turn (concurrency 1,
then 8, with ``wrk``), so the figures of one round are taken minutes apart at most, and
the ratio ours / the faster peer is printed per round: the machine is shared and its
speed drifts. RSS is read after the rounds (the whole process tree of each server).

    .venv/bin/python benchmarks/bench_peers.py [--seconds 8] [--rounds 3] [--quick]
        [--no-compile] [--only ours+shadow --only mlserver ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from bench_service import (
    ONE_TXN_LUA,
    free_port,
    rss_mib,
    train,
    tree_pids,
    wait_compiled,
    wrk,
)

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
PEERS_HOME = Path.home() / ".cache" / "modelrollout" / "peers"
UV = Path.home() / ".cache" / "modelrollout" / "uv" / "bin" / "uv"
LIGHTGBM = "lightgbm==4.7.0"  # the version uv.lock gives ours: the same predictor code


@dataclass(frozen=True)
class Peer:
    name: str
    version: str
    packages: tuple[str, ...]

    @property
    def home(self) -> Path:
        return PEERS_HOME / f"{self.name}-{self.version}"

    @property
    def python(self) -> Path:
        return self.home / "bin" / "python"


PEERS = (
    Peer("mlserver", "1.7.1", ("mlserver==1.7.1", "mlserver-lightgbm==1.7.1", LIGHTGBM)),
    Peer("kserve", "0.21.0", ("kserve==0.21.0", LIGHTGBM)),
)


def install(peer: Peer) -> None:
    """Create ``peer``'s virtual environment unless the same packages are installed there."""
    stamp = peer.home / ".installed"
    want = hashlib.sha256("\n".join(peer.packages).encode()).hexdigest()
    if stamp.is_file() and stamp.read_text() == want and peer.python.exists():
        return
    uv = str(UV) if UV.exists() else shutil.which("uv")
    if uv is None:
        raise SystemExit("uv not found (hack/setup.sh installs it)")
    print(f"installing {' '.join(peer.packages)} into {peer.home}", flush=True)
    shutil.rmtree(peer.home, ignore_errors=True)
    subprocess.run([uv, "venv", "-q", "--python", "3.11", str(peer.home)], check=True)
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "-q",
            "--python",
            str(peer.python),
            "--index-url",
            "https://pypi.org/simple",
            *peer.packages,
        ],
        check=True,
    )
    stamp.write_text(want)


# KServe's REST server binds 0.0.0.0 (kserve/protocol/rest/server.py); benchmarks listen on
# loopback only, so its uvicorn.Config is given host 127.0.0.1 before kserve is imported.
KSERVE_SERVER = """
import sys

import uvicorn

_Config = uvicorn.Config


class _Loopback(_Config):
    def __init__(self, *args, **kwargs):
        kwargs["host"] = "127.0.0.1"
        super().__init__(*args, **kwargs)


uvicorn.Config = _Loopback

import kserve  # noqa: E402
import lightgbm  # noqa: E402
import numpy as np  # noqa: E402


class BoosterModel(kserve.Model):
    def __init__(self, name, model_file):
        super().__init__(name)
        self.booster = lightgbm.Booster(model_file=model_file)
        self.ready = True

    def predict(self, payload, headers=None):
        x = np.asarray(payload["instances"], dtype=np.float64)
        return {"predictions": self.booster.predict(x).tolist()}


if __name__ == "__main__":
    kserve.ModelServer(
        http_port=int(sys.argv[2]), enable_grpc=False, workers=1, enable_latency_logging=False
    ).start([BoosterModel("booster", sys.argv[1])])
"""

STATIC_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("{body}"):read("*a")
wrk.path = "{path}"
"""


def feature_row(models: Path, version: str) -> list[float]:
    """The stable model's feature vector of one transaction, dense, as a peer receives it."""
    import lightgbm  # noqa: PLC0415

    from service.features import extract  # noqa: PLC0415
    from service.models import load_model  # noqa: PLC0415

    model = load_model(models, version)  # the trees read the dense block and the text scores
    batch = extract(["WHOLEFDS MKT #10233"], ["weekly grocery run"], [-54.2], ["5411"])
    row = [float(v) for v in model.model_input(batch)[0]]
    model.close()
    n = lightgbm.Booster(model_file=str(models / version / "model.txt")).num_feature()
    assert len(row) == n, (len(row), n)
    return row


@contextmanager
def running(
    args: list[str], env: dict[str, str], ready: str, log: Path, cwd: Path
) -> Iterator[int]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise SystemExit(
                    f"{args[0]} exited with {proc.returncode}; see {log}:\n"
                    + log.read_text()[-2000:]
                )
            try:
                if httpx.get(ready, timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{ready} not ready in 300 s; see {log}")
            time.sleep(0.2)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Target:
    name: str
    url: str
    script: Path
    pid: int = 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--quick", action="store_true", help="small models (TrainParams.quick)")
    parser.add_argument(
        "--published-trees",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train with --compile-trees on, as the chart's training Job does where it can, so "
        "ours serves from the published compiled trees (the 'lightgbm' targets turn them "
        "off); --no-published-trees: models without them, minutes faster to train",
    )
    parser.add_argument(
        "--models",
        type=Path,
        help="a models root holding v1 and v2 already (as this benchmark trains them); "
        "default: train them here",
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="ours compiles the trees itself at run time (MODELROLLOUT_COMPILE_MODELS)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=None,
        metavar="NAME",
        help="ours, ours+shadow, ours lightgbm, ours+shadow lightgbm, ours+shadow thread, "
        "ours+shadow h11, mlserver, kserve (repeat; default: ours, ours+shadow, mlserver, "
        "kserve)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    for peer in PEERS:
        install(peer)

    work = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    try:
        models = work / "models"
        if args.models:
            shutil.copytree(args.models, models)
            print(f"models from {args.models}")
        else:
            started = time.monotonic()
            trees = train(models, args.quick, "on" if args.published_trees else "off")
            print(f"models {trees} (iterations; trained in {time.monotonic() - started:.0f} s)")
        booster_file = models / "v1" / "model.txt"
        row = feature_row(models, "v1")
        print(f"the booster: {booster_file.stat().st_size / 2**20:.1f} MiB, {len(row)} features")

        (work / "one.lua").write_text(ONE_TXN_LUA)
        v2 = {
            "inputs": [{"name": "input-0", "shape": [1, len(row)], "datatype": "FP64", "data": row}]
        }
        (work / "v2.json").write_text(json.dumps(v2))
        (work / "v1.json").write_text(json.dumps({"instances": [row]}))
        base_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("MODELROLLOUT_", "SUGGEST_", "MLSERVER"))
        }
        base_env["OMP_NUM_THREADS"] = "1"  # one process each, on two shared cores

        wanted = set(args.only or ("ours", "ours+shadow", "mlserver", "kserve"))
        targets: list[Target] = []
        with ExitStack() as stack:
            shadow = {"generation": 1, "stable": "v1", "candidate": "v2", "shadow_percent": 100}
            lightgbm = {"MODELROLLOUT_PUBLISHED_TREES": "false"}
            for name, config, server_args, extra in (
                ("ours", {"generation": 1, "stable": "v1"}, [], {}),
                ("ours+shadow", shadow, [], {}),
                # LightGBM's predictor, not the compiled trees training published
                ("ours lightgbm", {"generation": 1, "stable": "v1"}, [], lightgbm),
                ("ours+shadow lightgbm", shadow, [], lightgbm),
                # the shadow on the serving process's worker thread, not in its own process
                ("ours+shadow thread", shadow, [], {"MODELROLLOUT_SHADOW_PROCESS": "false"}),
                # uvicorn's pure-Python parts, to show what uvloop and httptools bring
                ("ours+shadow h11", shadow, ["--loop", "asyncio", "--http", "h11"], {}),
            ):
                if name not in wanted:
                    continue
                cfg = work / f"serving-{name.replace(' ', '-')}.json"
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
                        "MODELROLLOUT_COMPILE_MODELS": "1" if args.compile else "0",
                        "MODELROLLOUT_COMPILE_CACHE": str(work / "compiled"),
                    }
                )
                url = f"http://127.0.0.1:{port}"
                pid = stack.enter_context(
                    running(
                        [
                            PYTHON,
                            "-m",
                            "service",
                            "--host",
                            "127.0.0.1",
                            "--port",
                            str(port),
                            "--log-level",
                            "warning",
                            *server_args,
                        ],
                        env,
                        f"{url}/readyz",
                        work / f"{name.replace(' ', '-')}.log",
                        ROOT,
                    )
                )
                if args.compile:
                    wait_compiled(url)
                targets.append(Target(name, url, work / "one.lua", pid))

            if "mlserver" in wanted:
                peer = PEERS[0]
                repo = work / "mlserver"
                (repo / "booster").mkdir(parents=True)
                shutil.copy(booster_file, repo / "booster" / "model.txt")
                port, grpc, metrics = free_port(), free_port(), free_port()
                (repo / "settings.json").write_text(
                    json.dumps(
                        {
                            "host": "127.0.0.1",
                            "http_port": port,
                            "grpc_port": grpc,
                            "metrics_port": metrics,
                            "parallel_workers": 0,
                        }
                    )
                )
                (repo / "booster" / "model-settings.json").write_text(
                    json.dumps(
                        {
                            "name": "booster",
                            "implementation": "mlserver_lightgbm.LightGBMModel",
                            "parameters": {"uri": "./model.txt", "version": "v1"},
                        }
                    )
                )
                url = f"http://127.0.0.1:{port}"
                pid = stack.enter_context(
                    running(
                        [str(peer.home / "bin" / "mlserver"), "start", str(repo)],
                        base_env,
                        f"{url}/v2/models/booster/ready",
                        work / "mlserver.log",
                        repo,
                    )
                )
                script = work / "mlserver.lua"
                script.write_text(
                    STATIC_LUA.replace("{body}", str(work / "v2.json")).replace(
                        "{path}", "/v2/models/booster/infer"
                    )
                )
                targets.append(Target(f"mlserver {peer.version}", url, script, pid))

            if "kserve" in wanted:
                peer = PEERS[1]
                server = work / "kserve_server.py"
                server.write_text(KSERVE_SERVER)
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                pid = stack.enter_context(
                    running(
                        [str(peer.python), str(server), str(booster_file), str(port)],
                        base_env,
                        f"{url}/v1/models/booster",
                        work / "kserve.log",
                        work,
                    )
                )
                script = work / "kserve.lua"
                script.write_text(
                    STATIC_LUA.replace("{body}", str(work / "v1.json")).replace(
                        "{path}", "/v1/models/booster:predict"
                    )
                )
                targets.append(Target(f"kserve {peer.version}", url, script, pid))

            for t in targets:  # warm-up, and a check that every one answers 200
                got = wrk(t.url, t.script, connections=4, seconds=2)
                if got["non2xx"] or not got["rps"]:
                    raise SystemExit(f"{t.name} does not answer: {got}")

            table: dict[str, list[dict[str, float]]] = {
                f"{t.name} c{c}": [] for t in targets for c in (1, 8)
            }
            for r in range(args.rounds):
                for t in targets:
                    for c in (1, 8):
                        table[f"{t.name} c{c}"].append(
                            wrk(t.url, t.script, connections=c, seconds=args.seconds)
                        )
                print(
                    f"round {r + 1}: "
                    + ", ".join(f"{t.name} {table[f'{t.name} c8'][r]['rps']:.0f}" for t in targets)
                    + " req/s at c8",
                    flush=True,
                )
            rss = {t.name: sum(rss_mib(p) for p in tree_pids(t.pid)) for t in targets}
            procs = {t.name: len(tree_pids(t.pid)) for t in targets}

        print()
        print(
            f"{'server':<22}{'conc':>5}"
            + "".join(f"{'round ' + str(r + 1):>26}" for r in range(args.rounds))
        )
        print(f"{'':<27}" + "".join(f"{'req/s  p50/p99 ms':>26}" for _ in range(args.rounds)))
        for t in targets:
            for c in (1, 8):
                runs = table[f"{t.name} c{c}"]
                cells = "".join(
                    f"{g['rps']:>10.0f}  {g.get('p50', 0):>6.2f}/{g.get('p99', 0):<6.2f}"
                    for g in runs
                )
                print(f"{t.name:<22}{c:>5}{cells}")
        print()
        scorer = (
            "trees compiled at run time" if args.compile
            else "compiled trees published by training" if args.published_trees
            else "LightGBM's predictor"
        )  # fmt: skip
        peers = [t for t in targets if not t.name.startswith("ours")]
        for t in [t for t in targets if t.name.startswith("ours")]:
            for c in (1, 8):
                if not peers:
                    break
                ratios = []
                for r in range(args.rounds):
                    best = max(table[f"{p.name} c{c}"][r]["rps"] for p in peers)
                    ratios.append(table[f"{t.name} c{c}"][r]["rps"] / best)
                print(
                    f"{t.name:<20} c{c}: {statistics.median(ratios):.2f}x the faster peer "
                    f"(median of rounds; per round "
                    f"{', '.join(f'{x:.2f}x' for x in ratios)})"
                )
        print()
        for t in targets:
            print(f"RSS {t.name:<22}{rss[t.name]:>7.0f} MiB ({procs[t.name]} process(es))")
        print(
            f"\n(wrk -t1, {args.seconds:.0f} s per run, loopback, OMP_NUM_THREADS=1; ours "
            f"{scorer}; 'lightgbm': LightGBM's predictor)"
        )
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
