"""``python -m service`` / ``modelrollout-suggest``: one uvicorn worker serving the app.

One worker per process, by design: the service holds models in memory and scales by
processes (pods). uvicorn's multi-worker mode also adds about 44 ms to keep-alive
requests, because TCP_NODELAY is not set on that path (uvicorn issue 3149). uvloop and
httptools by default (``--loop asyncio --http h11``: uvicorn's pure-Python ones).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import uvicorn
from pydantic import ValidationError

from service.app import create_app
from service.settings import Settings, SettingsError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="modelrollout-suggest", description="The modelrollout suggestion service."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument(
        "--loop",
        default="uvloop",
        choices=["uvloop", "asyncio"],
        help="event loop (default uvloop)",
    )
    parser.add_argument(
        "--http",
        default="httptools",
        choices=["httptools", "h11"],
        help="HTTP/1.1 parser (default httptools)",
    )
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        app = create_app(Settings())
    except (SettingsError, ValidationError, ValueError) as exc:
        print(f"modelrollout-suggest: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        workers=1,
        loop=args.loop,
        http=args.http,
        log_level=args.log_level,
        access_log=args.access_log,
        timeout_graceful_shutdown=10,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
