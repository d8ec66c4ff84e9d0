"""Free TCP ports on the loopback interface."""

from __future__ import annotations

import socket
import threading

LOOPBACK = "127.0.0.1"

_handed_out: set[int] = set()
_lock = threading.Lock()


def free_port() -> int:
    """A loopback port that is free now and was not handed out before by this process.

    The kernel picks the port (bind to port 0); the socket is closed before the port is
    returned, so another process could take it in between. Remembering what was handed out
    removes the collisions between servers of one test run, which are the likely ones.
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port: int = sock.getsockname()[1]
        with _lock:
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise OSError("no free loopback port found in 100 attempts")


def address(port: int) -> str:
    """``127.0.0.1:<port>``, the form Prometheus targets and listen flags take."""
    return f"{LOOPBACK}:{port}"
