"""What the web framework costs one suggestion request, measured in-process (prints figures).

``bench_service.py`` measures whole HTTP requests; on a shared machine its ratios swing by
15% or more. This benchmark calls the ASGI apps directly (no sockets, no HTTP parsing:
the part both endpoints share), one request at a time, in alternating rounds:

- ``trivial GET``: the trivial FastAPI endpoint ``bench_service.py`` compares with;
- ``POST``: ``POST /v1/suggestions`` (one transaction) through the app, its one path
  (``service/api/suggestions.py``: FastAPI's route and handler, the body parsed once);
- ``Starlette route``: the same work in a plain Starlette ``Route`` (no FastAPI request
  handler: no dependency solving, no content-type parsing), the next cheaper step of
  docs/decisions/0011-shadow-budget-and-one-path.md;
- ``core``: what any path must do: validate the body, answer (``SuggestionService.answer``)
  and serialise the response.

Requests go one at a time, so the coalescer answers each alone: the absolute figures are
higher than under concurrent load, where requests share model evaluations.

    .venv/bin/python benchmarks/bench_asgi.py [--requests 3000] [--rounds 5]
        [--compile-cache DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_service import train  # noqa: E402
from bench_shadow import TRANSACTIONS, start  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

from service.api.schemas import SuggestionsRequest  # noqa: E402
from service.api.suggestions import answer_bytes  # noqa: E402
from service.app import create_app  # noqa: E402
from service.runtime import SuggestionService  # noqa: E402


def trivial_app() -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    return app


def starlette_app(service: SuggestionService) -> Starlette:
    async def suggestions(request: Request) -> Response:
        body = SuggestionsRequest.model_validate_json(await request.body())
        return Response(await answer_bytes(service, body), media_type="application/json")

    return Starlette(routes=[Route("/v1/suggestions", suggestions, methods=["POST"])])


def bodies(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        merchant, memo, amount = TRANSACTIONS[i % len(TRANSACTIONS)]
        txn = {"id": f"t{i}", "merchant": merchant, "memo": memo, "amount": amount}
        out.append(json.dumps({"transactions": [txn | {"user_id": f"u{i % 5000}"}]}).encode())
    return out


async def call(app: Any, method: str, path: str, body: bytes) -> None:
    """One request through ``app``; raises unless it is answered 200."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    received = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received:
            return {"type": "http.disconnect"}
        received = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    if status != 200:
        raise SystemExit(f"{method} {path} answered {status}")


def core(service: SuggestionService) -> Callable[[bytes], Awaitable[bytes]]:
    async def answer(body: bytes) -> bytes:
        return await answer_bytes(service, SuggestionsRequest.model_validate_json(body))

    return answer


async def measure(
    runs: dict[str, Callable[[bytes], Awaitable[object]]], work: list[bytes], rounds: int
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            t = time.perf_counter()
            for body in work:
                await run(body)
            times[name].append((time.perf_counter() - t) / len(work) * 1e6)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--compile-cache", type=Path, default=None)
    args = parser.parse_args()
    if args.requests < 1 or args.rounds < 1:
        parser.error("--requests and --rounds must be at least 1")
    work_dir = Path(tempfile.mkdtemp(prefix="bench-asgi-"))
    try:
        models = work_dir / "models"
        train(models, quick=False)
        cache = args.compile_cache or work_dir / "compiled"
        results = {}
        for shadow in (False, True):
            label = "model + 100% shadow" if shadow else "model"
            service = start(work_dir, models, cache, f"asgi-{shadow}", shadow, 32)
            app = create_app(service=service)
            trivial = trivial_app()
            plain = starlette_app(service)
            gc.freeze()  # as the service's lifespan does
            runs: dict[str, Callable[[bytes], Awaitable[object]]] = {
                "trivial GET": lambda b, a=trivial: call(a, "GET", "/ping", b""),
                "POST": lambda b, a=app: call(a, "POST", "/v1/suggestions", b),
                "Starlette route": lambda b, a=plain: call(a, "POST", "/v1/suggestions", b),
                "core": core(service),
            }
            times = asyncio.run(measure(runs, bodies(args.requests), args.rounds))
            results[label] = {name: statistics.median(ts) for name, ts in times.items()}
            ranges = {name: (min(ts), max(ts)) for name, ts in times.items()}
            service.suggester.shadow.drain()
            service.stop()
            gc.unfreeze()
            print(f"\n{label}: microseconds per request, median of {args.rounds} rounds")
            for name, median in results[label].items():
                low, high = ranges[name]
                print(f"  {name:<16}{median:>8.0f}   ({low:.0f}-{high:.0f})")
            r = results[label]
            print(
                f"  the framework adds {r['POST'] - r['core']:.0f} us to the core's "
                f"{r['core']:.0f} us; the trivial endpoint's whole request takes "
                f"{r['trivial GET']:.0f} us"
            )
        return 0
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
