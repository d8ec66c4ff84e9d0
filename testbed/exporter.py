"""A loopback Prometheus exporter whose values a test sets directly.

It serves the text exposition format at ``/metrics``, so a test can make Prometheus (and
through it the controller) see any figure: an agreement ratio below the threshold, a burst
of errors, no traffic at all. :meth:`MetricsExporter.fail_with` makes the scrape fail, as a
broken pod would.

    >>> with MetricsExporter() as exporter:                      # doctest: +SKIP
    ...     exporter.set("suggest_up", 1, {"model": "v2"})
    ...     exporter.inc("suggest_requests_total", 5)
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping

from testbed.httpserver import LoopbackHTTPServer, Request, Response

__all__ = ["MetricsExporter"]

_LabelKey = tuple[tuple[str, str], ...]
_Update = Callable[[float], float]


def _key(labels: Mapping[str, str] | None) -> _LabelKey:
    return tuple(sorted((labels or {}).items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class MetricsExporter(LoopbackHTTPServer):
    """Gauges and counters by name and labels, served at ``http://<address>/metrics``."""

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self._lock = threading.Lock()
        self._types: dict[str, str] = {}
        self._values: dict[str, dict[_LabelKey, float]] = {}
        self._failure: int | None = None
        self.scrapes = 0
        """How many times ``/metrics`` was served (successfully or not)."""

    @property
    def url(self) -> str:
        return f"http://{self.address}/metrics"

    def set(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Set gauge ``name{labels}`` to ``value``."""
        self._put(name, "gauge", labels, lambda _old: value)

    def inc(self, name: str, amount: float = 1.0, labels: Mapping[str, str] | None = None) -> None:
        """Add ``amount`` to counter ``name{labels}`` (created at 0)."""
        if amount < 0:
            raise ValueError(f"a counter only goes up; got {amount}")
        self._put(name, "counter", labels, lambda old: old + amount)

    def remove(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        """Stop exporting one series (all of ``name`` when ``labels`` is None)."""
        with self._lock:
            if labels is None:
                self._values.pop(name, None)
                self._types.pop(name, None)
            else:
                self._values.get(name, {}).pop(_key(labels), None)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._types.clear()

    def fail_with(self, status: int | None) -> None:
        """Answer scrapes with HTTP ``status`` (``None``: serve metrics again)."""
        self._failure = status

    def _put(
        self,
        name: str,
        kind: str,
        labels: Mapping[str, str] | None,
        update: _Update,
    ) -> None:
        with self._lock:
            known = self._types.setdefault(name, kind)
            if known != kind:
                raise ValueError(f"{name} is a {known}, not a {kind}")
            series = self._values.setdefault(name, {})
            key = _key(labels)
            series[key] = update(series.get(key, 0.0))

    def exposition(self) -> str:
        """The text exposition format of everything set so far."""
        lines: list[str] = []
        with self._lock:
            for name in sorted(self._values):
                lines.append(f"# TYPE {name} {self._types[name]}")
                for key, value in sorted(self._values[name].items()):
                    label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in key)
                    selector = f"{name}{{{label_text}}}" if label_text else name
                    lines.append(f"{selector} {_format_value(value)}")
        return "\n".join(lines) + "\n"

    def respond(self, request: Request) -> Response:
        if request.path.split("?")[0] != "/metrics":
            return Response(404, b"not found\n")
        self.scrapes += 1
        if self._failure is not None:
            return Response(self._failure, b"failing on purpose\n")
        return Response(200, self.exposition().encode(), content_type="text/plain; version=0.0.4")
