"""The pod report: a Lease through which the controller sees what each pod serves.

In cluster mode each process keeps a ``coordination.k8s.io/v1`` Lease
``lease_name(target, pod)``, labelled ``TARGET_LABEL=<target>``, whose annotation
``REPORT_ANNOTATION`` holds a :class:`~service.serving_config.PodReport` (generation
applied, loaded versions, load errors). It is renewed every
``LEASE_DURATION_SECONDS / 3`` and written at once after each new state is swapped in
(:meth:`LeaseReporter.notify` is a :class:`~service.state.ServingStateStore` listener), so
the controller sees convergence and load failures within one API round trip. On a clean
shutdown the Lease is deleted, so the controller does not wait for it to expire.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, cast

from service.serving_config import (
    LEASE_DURATION_SECONDS,
    REPORT_ANNOTATION,
    TARGET_LABEL,
    lease_name,
)
from service.state import ServingState

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)

RENEW_SECONDS: Final = LEASE_DURATION_SECONDS / 3
RETRY_SECONDS: Final = 1.0


def micro_time(moment: datetime) -> str:
    """A ``MicroTime`` as the API server parses it (always six fractional digits).

    >>> micro_time(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    '2026-01-02T03:04:05.000000Z'
    """
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseReporter:
    """Keeps this pod's report Lease current."""

    def __init__(
        self,
        api: ApiClient,
        namespace: str,
        target: str,
        pod: str,
        current: Any,
    ) -> None:
        from kubernetes import client  # noqa: PLC0415

        self._api = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.target = target
        self.pod = pod
        self.name = lease_name(target, pod)
        self._current = current  # () -> ServingState
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._acquired = micro_time(datetime.now(UTC))
        self.last_error: str | None = None
        self.last_written_generation: int | None = None
        self.writes = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pod-report", daemon=True)
        self._thread.start()

    def notify(self, state: ServingState) -> None:
        """Write soon (the state store calls this after each swap)."""
        self._wake.set()

    def stop(self, *, delete: bool = True) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if delete:
            try:
                self._api.delete_namespaced_lease(self.name, self.namespace, _request_timeout=5)
            except Exception as exc:
                log.info("could not delete Lease %s/%s: %s", self.namespace, self.name, exc)

    def status(self) -> dict[str, Any]:
        return {
            "lease": f"{self.namespace}/{self.name}",
            "last_error": self.last_error,
            "last_written_generation": self.last_written_generation,
        }

    def _run(self) -> None:
        while not self._stopping.is_set():
            state: ServingState = self._current()
            ok = True
            if state.applied:  # nothing to report before the first configuration
                ok = self.write(state)
            self._wake.wait(RENEW_SECONDS if ok else RETRY_SECONDS)
            self._wake.clear()

    def _body(self, state: ServingState) -> dict[str, Any]:
        report = state.report(self.pod)
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {TARGET_LABEL: self.target},
                "annotations": {REPORT_ANNOTATION: report.model_dump_json()},
            },
            "spec": {
                "holderIdentity": self.pod,
                "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                "acquireTime": self._acquired,
                "renewTime": micro_time(datetime.now(UTC)),
            },
        }

    def write(self, state: ServingState) -> bool:
        """Create or update the Lease with ``state``'s report; False when the API refused."""
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        body = self._body(state)
        try:
            try:
                self._api.patch_namespaced_lease(
                    self.name,
                    self.namespace,
                    body,
                    _request_timeout=5,
                    _content_type="application/merge-patch+json",
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise
                self._api.create_namespaced_lease(
                    self.namespace, cast(Any, body), _request_timeout=5
                )
        except Exception as exc:
            message = f"writing Lease {self.namespace}/{self.name}: {exc}"
            if message != self.last_error:
                log.warning("%s", message)
            self.last_error = message
            return False
        self.last_error = None
        self.last_written_generation = state.config.generation
        self.writes += 1
        return True
