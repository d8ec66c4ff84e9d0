"""A real Alertmanager (the Debian package) delivering webhooks to a loopback URL.

    >>> with WebhookReceiver() as hook, Alertmanager(hook.url) as am:       # doctest: +SKIP
    ...     am.fire({"alertname": "SuggestAgreementDrop", "rollout": "ml/fraud"})
    ...     hook.wait_for_alert("SuggestAgreementDrop")

Clustering is off (``--cluster.listen-address=``). Grouping is by every label (``...``), so
each distinct alert is its own notification, after ``group_wait`` (1 s by default) instead
of production's tens of seconds. ``bearer_token`` makes every webhook carry
``Authorization: Bearer <token>``, as the controller's authenticated webhook requires.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from testbed.process import TestbedError
from testbed.reloadable import ReloadableServer, ServerUnavailableError
from testbed.tools import ALERTMANAGER_NAMES, system_tool
from testbed.webhook import Delivery, WebhookReceiver

__all__ = [
    "Alertmanager",
    "AlertmanagerUnavailableError",
    "Delivery",
    "WebhookReceiver",
]

AlertmanagerUnavailableError = ServerUnavailableError


class Alertmanager(ReloadableServer):
    """Alertmanager on ``127.0.0.1:<port>`` routing every alert to ``webhook_url``.

    Without ``webhook_url`` alerts are accepted and routed nowhere until
    :meth:`set_webhook` names one.
    """

    name = "alertmanager"

    def __init__(
        self,
        webhook_url: str | None = None,
        *,
        bearer_token: str | None = None,
        send_resolved: bool = True,
        group_wait: str = "1s",
        group_interval: str = "1s",
        repeat_interval: str = "1h",
        group_by: Sequence[str] = ("...",),
        workdir: Path | None = None,
        port: int | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        super().__init__(workdir=workdir, port=port, start_timeout=start_timeout)
        self.binary = system_tool(*ALERTMANAGER_NAMES)
        self.webhook_url = webhook_url
        self.bearer_token = bearer_token
        self.send_resolved = send_resolved
        self.group_wait = group_wait
        self.group_interval = group_interval
        self.repeat_interval = repeat_interval
        self.group_by = list(group_by)

    def _argv(self) -> list[str]:
        return [
            str(self.binary),
            f"--config.file={self.config_file}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address={self.address}",
            "--cluster.listen-address=",
        ]

    def _config(self) -> dict[str, Any]:
        receiver: dict[str, Any] = {"name": "webhook"}
        if self.webhook_url:
            webhook: dict[str, Any] = {
                "url": self.webhook_url,
                "send_resolved": self.send_resolved,
            }
            if self.bearer_token:
                webhook["http_config"] = {
                    "authorization": {"type": "Bearer", "credentials": self.bearer_token}
                }
            receiver["webhook_configs"] = [webhook]
        return {
            "route": {
                "receiver": "webhook",
                "group_by": self.group_by,
                "group_wait": self.group_wait,
                "group_interval": self.group_interval,
                "repeat_interval": self.repeat_interval,
            },
            "receivers": [receiver],
        }

    def set_webhook(self, webhook_url: str | None, *, bearer_token: str | None = None) -> None:
        """Deliver to another URL from now on (reloads a running Alertmanager)."""
        self.webhook_url = webhook_url
        self.bearer_token = bearer_token
        self.reload()

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """POST alerts to ``/api/v2/alerts`` as Prometheus would.

        Each alert is ``{"labels": {...}, "annotations": {...}, "startsAt": ..., "endsAt":
        ...}`` (RFC 3339 times; only ``labels`` is required).
        """
        response = self._request("POST", "/api/v2/alerts", json=list(alerts))
        if response.status_code != 200:
            raise TestbedError(
                f"alertmanager refused the alerts ({response.status_code}): {response.text}"
            )

    def fire(
        self,
        labels: Mapping[str, str],
        annotations: Mapping[str, str] | None = None,
        *,
        duration: dt.timedelta = dt.timedelta(hours=1),
    ) -> None:
        """Post one firing alert that stays active for ``duration`` unless resolved."""
        now = dt.datetime.now(dt.UTC)
        self.post_alerts(
            [
                {
                    "labels": dict(labels),
                    "annotations": dict(annotations or {}),
                    "startsAt": _rfc3339(now),
                    "endsAt": _rfc3339(now + duration),
                }
            ]
        )

    def resolve(self, labels: Mapping[str, str]) -> None:
        """Resolve the alert with exactly these ``labels`` (``endsAt`` = now)."""
        now = dt.datetime.now(dt.UTC)
        self.post_alerts(
            [{"labels": dict(labels), "startsAt": _rfc3339(now), "endsAt": _rfc3339(now)}]
        )

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts Alertmanager holds now (``GET /api/v2/alerts``)."""
        alerts: list[dict[str, Any]] = self._get_json("/api/v2/alerts")
        return alerts


def _rfc3339(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
