"""A real Prometheus (the Debian package) scraping loopback targets, for tests and the demo.

    >>> with MetricsExporter() as exporter:                              # doctest: +SKIP
    ...     with Prometheus([ScrapeTarget(exporter.address, labels={"pod": "p1"})]) as prom:
    ...         exporter.set("suggest_agreement_ratio", 0.9)
    ...         prom.wait_for('suggest_agreement_ratio{pod="p1"}', lambda v: v == 0.9)

Scrape and rule evaluation every second by default (production uses 5 s or more; the
controller must not depend on either). Targets, rule files and the Alertmanager can be
changed while it runs (:meth:`Prometheus.set_targets` etc. reload it through
``--web.enable-lifecycle``). :meth:`Prometheus.stop` and :meth:`Prometheus.start` keep the
same port and data, which is how a test makes Prometheus unreachable for a while.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from testbed.process import TestbedError, wait_until
from testbed.reloadable import ReloadableServer, ServerUnavailableError
from testbed.tools import PROMETHEUS_NAMES, system_tool

__all__ = [
    "Prometheus",
    "PrometheusUnavailableError",
    "Sample",
    "ScrapeTarget",
]

PrometheusUnavailableError = ServerUnavailableError
"""Raised by queries while Prometheus is stopped or does not answer."""


@dataclass(frozen=True)
class ScrapeTarget:
    """One loopback endpoint to scrape; ``labels`` are added to every series (e.g. ``pod``)."""

    address: str
    job: str = "testbed"
    labels: Mapping[str, str] = field(default_factory=dict)
    metrics_path: str = "/metrics"


@dataclass(frozen=True)
class Sample:
    """One series of an instant query's result."""

    labels: dict[str, str]
    value: float
    timestamp: float


class Prometheus(ReloadableServer):
    """Prometheus on ``127.0.0.1:<port>`` with a configuration generated from arguments.

    ``targets``: :class:`ScrapeTarget` or plain ``host:port`` strings. ``rule_files``:
    Prometheus rule files (YAML) to load; ``rules``: rule file texts by name, written into
    the work directory. ``alertmanager``: ``host:port`` or URL of an Alertmanager to send
    alerts to. Intervals are Prometheus durations (``"1s"``).

    Prometheus applies service discovery in batches every 5 s, so :meth:`start` and every
    reload (:meth:`set_targets`, :meth:`write_rules`, ...) wait up to ~6 s until the targets
    and the Alertmanager are in effect. Pass everything to the constructor to pay it once.
    """

    name = "prometheus"

    def __init__(
        self,
        targets: Iterable[ScrapeTarget | str] = (),
        *,
        rule_files: Iterable[Path] = (),
        rules: Mapping[str, str] | None = None,
        alertmanager: str | None = None,
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
        workdir: Path | None = None,
        port: int | None = None,
        start_timeout: float = 60.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(workdir=workdir, port=port, start_timeout=start_timeout)
        self.binary = system_tool(*PROMETHEUS_NAMES)
        self.targets: list[ScrapeTarget] = [_target(t) for t in targets]
        self.rule_files: list[Path] = list(rule_files)
        self._rule_texts = dict(rules or {})
        self.alertmanager = alertmanager
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self._extra_args = list(extra_args)

    # -- configuration ---------------------------------------------------------------------

    def start(self) -> Self:
        for name, text in self._rule_texts.items():
            path = self._rule_path(name)
            path.write_text(text)
            if path not in self.rule_files:
                self.rule_files.append(path)
        return super().start()

    def _rule_path(self, name: str) -> Path:
        path = self.workdir / "rules" / f"{name}.yml"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _argv(self) -> list[str]:
        return [
            str(self.binary),
            f"--config.file={self.config_file}",
            f"--web.listen-address={self.address}",
            "--web.enable-lifecycle",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            "--storage.tsdb.retention.time=1d",
            # Resend firing alerts every second instead of every minute: Prometheus only
            # learns its Alertmanager after a discovery batch (~5 s after a (re)load), and
            # an alert fired before that would otherwise wait a minute for its resend.
            "--rules.alert.resend-delay=1s",
            *self._extra_args,
        ]

    def _config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.evaluation_interval,
            },
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {
                    # One scrape config per target, so each may have its own path; the job
                    # label comes from the target's labels, not from this unique name.
                    "job_name": f"target-{i}",
                    "metrics_path": t.metrics_path,
                    "static_configs": [
                        {"targets": [t.address], "labels": {"job": t.job, **t.labels}}
                    ],
                }
                for i, t in enumerate(self.targets)
            ],
        }
        if self.alertmanager:
            config["alerting"] = {
                "alertmanagers": [
                    {
                        "api_version": "v2",
                        "static_configs": [{"targets": [_host_port(self.alertmanager)]}],
                    }
                ]
            }
        return config

    def _settled(self) -> None:
        """Wait until the configured targets and Alertmanager are discovered.

        Prometheus batches service-discovery updates every 5 s, so a (re)load takes effect
        up to ~6 s later; waiting here makes "started" and "reloaded" mean "in effect".
        """
        wanted_targets = {f"http://{t.address}{t.metrics_path}" for t in self.targets}
        wanted_am = _host_port(self.alertmanager) if self.alertmanager else None

        def in_effect() -> bool:
            active = {t["scrapeUrl"] for t in self.active_targets()}
            if active != wanted_targets:
                return False
            if wanted_am is None:
                return True
            found = self._get_json("/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
            return any(wanted_am in am["url"] for am in found)

        wait_until(
            in_effect,
            timeout=self.start_timeout,
            interval=0.1,
            what=f"Prometheus to discover targets {sorted(wanted_targets)} "
            f"and Alertmanager {wanted_am}",
            on_timeout=self.log_tail,
        )

    def set_targets(self, targets: Iterable[ScrapeTarget | str]) -> None:
        """Replace the scrape targets (reloads a running Prometheus)."""
        self.targets = [_target(t) for t in targets]
        self.reload()

    def add_target(self, target: ScrapeTarget | str) -> None:
        self.set_targets([*self.targets, _target(target)])

    def set_rule_files(self, rule_files: Iterable[Path]) -> None:
        """Replace the rule files (reloads; raises with Prometheus' message if invalid)."""
        self.rule_files = list(rule_files)
        self.reload()

    def write_rules(self, name: str, text: str) -> Path:
        """Write a rule file ``<workdir>/rules/<name>.yml`` and load it with the others."""
        path = self._rule_path(name)
        path.write_text(text)
        if path not in self.rule_files:
            self.rule_files.append(path)
        self.reload()
        return path

    def set_alertmanager(self, alertmanager: str | None) -> None:
        self.alertmanager = alertmanager
        self.reload()

    # -- queries ---------------------------------------------------------------------------

    def query(self, promql: str) -> list[Sample]:
        """Evaluate ``promql`` now; one :class:`Sample` per series (a scalar is one sample).

        Raises :class:`PrometheusUnavailableError` when Prometheus does not answer and
        :class:`TestbedError` for a bad query.
        """
        body = self._get_json("/api/v1/query", {"query": promql})
        data = body["data"]
        kind, result = data["resultType"], data["result"]
        if kind == "vector":
            return [
                Sample(dict(s["metric"]), _number(s["value"][1]), float(s["value"][0]))
                for s in result
            ]
        if kind == "scalar":
            return [Sample({}, _number(result[1]), float(result[0]))]
        raise TestbedError(f"{promql!r} is a {kind}; query() takes instant vectors and scalars")

    def query_scalar(self, promql: str) -> float | None:
        """The single value of ``promql``; None when it has no series (no data yet).

        Raises :class:`TestbedError` if the result has more than one series: aggregate
        (``sum(...)``) or select until one is left.
        """
        samples = self.query(promql)
        if not samples:
            return None
        if len(samples) > 1:
            raise TestbedError(f"{promql!r} has {len(samples)} series: {samples!r}")
        return samples[0].value

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[float | None], bool] = lambda v: v is not None,
        *,
        timeout: float = 30.0,
        interval: float = 0.25,
    ) -> float | None:
        """Poll :meth:`query_scalar` until ``predicate(value)`` holds; return that value.

        Raises :class:`TestbedError` with the last value seen when ``timeout`` s pass.
        """
        deadline = time.monotonic() + timeout
        last: float | None = None
        while True:
            last = self.query_scalar(promql)
            if predicate(last):
                return last
            if time.monotonic() >= deadline:
                raise TestbedError(
                    f"{promql!r} did not satisfy the condition within {timeout:g} s; "
                    f"last value {last!r}"
                )
            time.sleep(interval)

    def active_targets(self) -> list[dict[str, Any]]:
        """``/api/v1/targets`` active targets (``labels``, ``health``, ``lastError``, ...)."""
        targets: list[dict[str, Any]] = self._get_json("/api/v1/targets")["data"]["activeTargets"]
        return targets

    def wait_for_targets_up(self, timeout: float = 30.0) -> None:
        """Wait until every configured target has been scraped successfully."""
        deadline = time.monotonic() + timeout
        while True:
            targets = self.active_targets()
            if len(targets) == len(self.targets) and all(t["health"] == "up" for t in targets):
                return
            if time.monotonic() >= deadline:
                states = [(t["scrapeUrl"], t["health"], t.get("lastError")) for t in targets]
                raise TestbedError(f"targets not all up within {timeout:g} s: {states}")
            time.sleep(0.25)

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts that rules have raised (``/api/v1/alerts``), pending or firing."""
        alerts: list[dict[str, Any]] = self._get_json("/api/v1/alerts")["data"]["alerts"]
        return alerts

    def rule_groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self._get_json("/api/v1/rules")["data"]["groups"]
        return groups


def _target(target: ScrapeTarget | str) -> ScrapeTarget:
    return target if isinstance(target, ScrapeTarget) else ScrapeTarget(target)


def _host_port(address: str) -> str:
    return address.removeprefix("http://").removeprefix("https://").rstrip("/")


def _number(text: str) -> float:
    return float(text)  # Prometheus writes "NaN", "+Inf", "-Inf", which float() accepts
