"""The product's own processes on the test bed: the controller, suggestion processes, load.

The integration tests and the demo (``python -m testbed.demo``) run the controller
(``python -m controller``) and suggestion processes (``python -m service``) exactly as a
user would, against the test bed's API server and Prometheus; these classes start them on
free loopback ports, wait until they answer, and stop them (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from service.serving_config import (
    CONFIGMAP_KEY,
    LEASE_DURATION_SECONDS,
    REPORT_ANNOTATION,
    TARGET_LABEL,
    ServingConfig,
    configmap_name,
    lease_name,
)
from testbed.controlplane import ControlPlane
from testbed.ports import free_port
from testbed.process import ServerProcess, TestbedError, wait_until

__all__ = ["ROOT", "Cluster", "ControllerProcess", "Load", "ServiceProcess", "rollout_body"]

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "crds" / "modelrollout.io_modelrollouts.yaml"


def _restartable(
    server: ServerProcess | None, name: str, argv: list[str], **kw: Any
) -> ServerProcess:
    """A :class:`ServerProcess` for ``argv``: registered for cleanup at exit and on signals,
    in its own process group, killed by the kernel with its parent where that can be
    arranged; a stopped or killed one is reused so that it can start again."""
    if server is not None:
        server.reset()
    return ServerProcess(name, argv, **kw)


class ControllerProcess:
    """``python -m controller --standalone`` watching one namespace.

    ``standalone=False``: no ``--standalone``; give the leader-election arguments in
    ``extra_args`` and the pod's identity in ``env`` (``POD_NAME``, ``POD_NAMESPACE``), as
    the chart does."""

    def __init__(
        self,
        control_plane: ControlPlane,
        namespace: str,
        workdir: Path,
        prometheus_url: str,
        *,
        tick: float = 0.5,
        extra_args: Sequence[str] = (),
        standalone: bool = True,
        env: dict[str, str] | None = None,
    ) -> None:
        self.kubeconfig = control_plane.admin_kubeconfig
        self.namespace = namespace
        self.prometheus_url = prometheus_url
        self.token = secrets.token_hex(16)
        self.token_file = workdir / "webhook-token"
        self.token_file.write_text(self.token + "\n")
        self.log = workdir / "controller.log"
        self.metrics_port = free_port()
        self.webhook_port = free_port()
        self.tick = tick
        self.extra_args = list(extra_args)
        self.standalone = standalone
        self.env = {**os.environ, **(env or {})}
        self.server: ServerProcess | None = None

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.webhook_port}/alertmanager/webhook"

    def start(self) -> None:
        argv = [
            sys.executable, "-m", "controller", *(["--standalone"] if self.standalone else []),
            f"--namespace={self.namespace}",
            f"--kubeconfig={self.kubeconfig}",
            f"--prometheus-url={self.prometheus_url}",
            f"--metrics-port={self.metrics_port}",
            f"--webhook-port={self.webhook_port}",
            f"--webhook-token-file={self.token_file}",
            "--bind=127.0.0.1", f"--tick={self.tick}", "--configmap-resync=2",
            "--log-level=info", *self.extra_args,
        ]  # fmt: skip
        server = _restartable(self.server, "controller", argv, log_path=self.log, cwd=ROOT,
                              env=self.env)  # fmt: skip
        self.server = server
        server.start()

        def healthy() -> bool:
            if not server.running():
                raise TestbedError(f"controller exited {server.returncode()}:\n{self.tail()}")
            try:
                return httpx.get(f"http://127.0.0.1:{self.metrics_port}/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout=30, what="controller /healthz", on_timeout=self.tail)

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as when a node dies."""
        if self.server is not None:
            self.server.kill()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(timeout=20)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics").text


class ServiceProcess:
    """One suggestion process (``python -m service``): a pod of target ``target``."""

    def __init__(
        self,
        pod: str,
        namespace: str,
        kubeconfig: Path,
        models: Path,
        log: Path,
        *,
        target: str = "suggest",
        env: dict[str, str] | None = None,
    ) -> None:
        self.pod = pod
        self.port = free_port()
        self.log = log
        self.env = {
            **os.environ,
            "MODELROLLOUT_NAMESPACE": namespace,
            "MODELROLLOUT_TARGET": target,
            "MODELROLLOUT_MODELS_ROOT": str(models),
            "POD_NAME": pod,
            "KUBECONFIG": str(kubeconfig),
            **(env or {}),
        }
        self.server: ServerProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        argv = [sys.executable, "-m", "service", "--host=127.0.0.1", f"--port={self.port}"]
        server = _restartable(self.server, self.pod, argv, log_path=self.log, env=self.env,
                              cwd=ROOT)  # fmt: skip
        self.server = server
        server.start()

        def ready() -> bool:
            if not server.running():
                raise TestbedError(f"{self.pod} exited:\n{self.tail()}")
            try:
                return httpx.get(f"{self.url}/readyz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=timeout, what=f"{self.pod} ready", on_timeout=self.tail)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(timeout=20)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def models(self) -> dict[str, Any]:
        described: dict[str, Any] = httpx.get(f"{self.url}/v1/models", timeout=5).json()
        return described

    def serving_generation(self) -> int:
        described = self.models()
        return int(described.get("generation") or described.get("config", {}).get("generation", -1))


class Load(threading.Thread):
    """Bounded loopback load: batches of ``batch`` generated transactions from varied users,
    one request every ``period`` seconds, round-robin over the processes, at most
    ``max_requests`` requests. Answers, errors and every served answer are counted;
    ``on_response(service, transactions_sent, answer_body)`` sees every 200 exchange."""

    def __init__(
        self,
        services: Sequence[ServiceProcess],
        *,
        batch: int = 10,
        period: float = 0.025,
        users: int = 500,
        max_requests: int = 200_000,
        seed: int = 7,
        on_response: Callable[[ServiceProcess, list[dict[str, Any]], dict[str, Any]], None]
        | None = None,
    ) -> None:
        super().__init__(daemon=True)
        from training.data import generate_transactions  # noqa: PLC0415 - heavy, only here

        frame = generate_transactions(2000, seed=seed)
        self.rows = [
            {"merchant": r.merchant, "memo": r.memo, "amount": float(r.amount)}
            | ({"mcc": r.mcc} if isinstance(r.mcc, str) else {})  # card rows carry one
            for r in frame.itertuples()
        ]
        self.services = list(services)
        self.batch = batch
        self.period = period
        self.users = users
        self.max_requests = max_requests
        self.seed = seed
        self.on_response = on_response
        self.stopped = threading.Event()
        self.requests = 0
        self.answers = 0
        self.errors = 0
        self.error_samples: list[str] = []
        self.served_by: dict[str, int] = {}

    def run(self) -> None:
        rng = random.Random(self.seed)
        with httpx.Client(timeout=5) as client:
            while self.requests < self.max_requests and not self.stopped.wait(self.period):
                svc = self.services[self.requests % len(self.services)]
                n = self.requests
                self.requests += 1
                batch = [
                    {**rng.choice(self.rows), "id": f"t{n}-{i}",
                     "user_id": f"u{rng.randrange(self.users)}"}
                    for i in range(self.batch)
                ]  # fmt: skip
                try:
                    resp = client.post(f"{svc.url}/v1/suggestions", json={"transactions": batch})
                except httpx.HTTPError as exc:
                    self._error(f"{svc.pod}: {exc!r}")
                    continue
                if resp.status_code != 200:
                    self._error(f"{svc.pod}: {resp.status_code} {resp.text[:200]}")
                    continue
                self.answers += 1
                body: dict[str, Any] = resp.json()
                for item in body.get("results", body.get("suggestions", [])):
                    who = str(item.get("served_by"))
                    self.served_by[who] = self.served_by.get(who, 0) + 1
                if self.on_response is not None:
                    self.on_response(svc, batch, body)

    def _error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(text)

    def stop(self) -> None:
        self.stopped.set()
        self.join(10)


class Cluster:
    """kubectl for one namespace, with the reads that tests and the demo make."""

    def __init__(
        self, control_plane: ControlPlane, namespace: str, target: str = "suggest"
    ) -> None:
        self.cp = control_plane
        self.ns = namespace
        self.target = target

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return self.cp.kubectl("-n", self.ns, *args, input=input).stdout

    def apply(self, body: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))

    def rollout(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.kubectl("get", "mro", name, "-o", "json"))
        return result

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.rollout(name).get("status") or {})

    def serving(self) -> ServingConfig | None:
        got = self.cp.kubectl(
            "-n", self.ns, "get", "configmap", configmap_name(self.target), "-o", "json",
            check=False,
        )  # fmt: skip
        if got.returncode != 0:
            return None
        return ServingConfig.from_json(json.loads(got.stdout)["data"][CONFIGMAP_KEY])

    def write_serving(self, config: ServingConfig) -> None:
        self.apply({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": configmap_name(self.target)},
            "data": {CONFIGMAP_KEY: config.to_json()},
        })  # fmt: skip

    def events(self, name: str) -> list[dict[str, Any]]:
        out = json.loads(
            self.kubectl("get", "events", "--field-selector", f"involvedObject.name={name}",
                         "-o", "json")
        )  # fmt: skip
        items: list[dict[str, Any]] = out["items"]
        return items

    def report(self, pod: str, generation: int, **load_errors: str) -> None:
        """What a suggestion pod writes: its Lease with the generation it serves."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        report = {"pod": pod, "generation": generation, "load_errors": load_errors}
        self.apply({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": lease_name(self.target, pod),
                "labels": {TARGET_LABEL: self.target},
                "annotations": {REPORT_ANNOTATION: json.dumps(report)},
            },
            "spec": {"holderIdentity": pod, "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                     "renewTime": now, "acquireTime": now},
        })  # fmt: skip

    def wait_status(
        self,
        name: str,
        predicate: Callable[[dict[str, Any]], bool],
        what: str,
        controller: ControllerProcess,
        timeout: float = 60,
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            st = self.status(name)
            return st if predicate(st) else None

        def explain() -> str:
            return f"status: {json.dumps(self.status(name), indent=1)[-3000:]}\n{controller.tail()}"

        return wait_until(probe, timeout=timeout, interval=0.2, what=what, on_timeout=explain)


def rollout_body(
    name: str, version: str, prometheus_url: str, target: str = "suggest", **spec: Any
) -> dict[str, Any]:
    """A ModelRollout with test-bed timings: analysis every 1 s over 5 s, short steps."""
    analysis = {
        "prometheusURL": prometheus_url,
        "interval": "1s",
        "window": "5s",
        "minSamples": 30,
        "inconclusiveLimit": 3,
        **spec.pop("analysis", {}),
    }
    return {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": name},
        "spec": {
            "target": target,
            "model": {"version": version},
            "shadow": {"percent": 100, "passes": 2},
            "canary": {"percent": 100, "steps": [10, 50], "stepInterval": "1s"},
            "analysis": analysis,
            **spec,
        },
    }
