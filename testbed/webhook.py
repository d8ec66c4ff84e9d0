"""A loopback webhook receiver that records every delivery (Alertmanager's, or anyone's)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from testbed.httpserver import LoopbackHTTPServer, Request, Response
from testbed.process import TestbedError

__all__ = ["Delivery", "WebhookReceiver"]


@dataclass(frozen=True)
class Delivery:
    """One request the receiver got. ``payload`` is the parsed JSON body, or None."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    payload: Any
    received_at: float

    @property
    def alerts(self) -> list[dict[str, Any]]:
        """The alerts of an Alertmanager webhook payload (empty for anything else)."""
        if isinstance(self.payload, dict) and isinstance(self.payload.get("alerts"), list):
            return [a for a in self.payload["alerts"] if isinstance(a, dict)]
        return []


class WebhookReceiver(LoopbackHTTPServer):
    """Records requests to ``url`` and answers them with :attr:`status` (200 by default)."""

    def __init__(self, port: int = 0, *, path: str = "/webhook") -> None:
        super().__init__(port)
        self.path = path
        self.status = 200
        """The HTTP status every delivery gets; set 500 to make the sender retry."""
        self._deliveries: list[Delivery] = []
        self._cond = threading.Condition()

    @property
    def url(self) -> str:
        return f"http://{self.address}{self.path}"

    @property
    def deliveries(self) -> list[Delivery]:
        with self._cond:
            return list(self._deliveries)

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert of every delivery so far, in arrival order."""
        return [alert for d in self.deliveries for alert in d.alerts]

    def clear(self) -> None:
        with self._cond:
            self._deliveries.clear()

    def respond(self, request: Request) -> Response:
        try:
            payload = json.loads(request.body) if request.body else None
        except ValueError:
            payload = None
        delivery = Delivery(
            request.method, request.path, request.headers, request.body, payload, time.time()
        )
        with self._cond:
            self._deliveries.append(delivery)
            self._cond.notify_all()
        return Response(self.status, b"{}", content_type="application/json")

    def wait_for(
        self, predicate: Callable[[Delivery], bool] = lambda _d: True, *, timeout: float = 30.0
    ) -> Delivery:
        """The first delivery (received so far or within ``timeout`` s) matching ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for delivery in self._deliveries:
                    if predicate(delivery):
                        return delivery
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    got = [d.payload for d in self._deliveries]
                    raise TestbedError(
                        f"no matching delivery at {self.url} within {timeout:g} s; got {got!r}"
                    )
                self._cond.wait(remaining)

    def wait_for_alert(
        self,
        alertname: str,
        *,
        status: str = "firing",
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """The first delivered alert named ``alertname`` with ``status`` (firing/resolved)."""
        delivery = self.wait_for(
            lambda d: any(_is(a, alertname, status) for a in d.alerts), timeout=timeout
        )
        return next(a for a in delivery.alerts if _is(a, alertname, status))


def _is(alert: dict[str, Any], alertname: str, status: str) -> bool:
    labels = alert.get("labels") or {}
    return bool(labels.get("alertname") == alertname and alert.get("status") == status)
