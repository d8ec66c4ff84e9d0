"""A minimal threaded HTTP server on loopback, for the test bed's exporter and webhook receiver.

Subclasses implement :meth:`LoopbackHTTPServer.respond`; the server runs in a daemon thread,
and :meth:`LoopbackHTTPServer.stop` shuts it down and closes its socket (no ResourceWarning).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

from testbed.ports import LOOPBACK


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


class LoopbackHTTPServer:
    """Serves :meth:`respond` on ``127.0.0.1:<port>`` (port 0: the kernel picks one)."""

    def __init__(self, port: int = 0) -> None:
        self._requested_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def respond(self, request: Request) -> Response:
        raise NotImplementedError

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return int(self._server.server_address[1])

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``, as a Prometheus target or a listen address."""
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> Self:
        if self._server is not None:
            return self
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Request(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                try:
                    response = outer.respond(request)
                except Exception as exc:  # a bug in a test double must be visible, not a hang
                    response = Response(500, f"{type(exc).__name__}: {exc}".encode())
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(response.body)))
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(response.body)

            do_GET = _serve  # noqa: N815 - http.server's naming
            do_POST = _serve  # noqa: N815
            do_PUT = _serve  # noqa: N815
            do_DELETE = _serve  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output clean

        server = ThreadingHTTPServer((LOOPBACK, self._requested_port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"{type(self).__name__}:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket; :meth:`start` serves again on the
        same port. Idempotent."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            # A restart serves on the same port, as a restarted pod keeps its address.
            self._requested_port = int(server.server_address[1])
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
