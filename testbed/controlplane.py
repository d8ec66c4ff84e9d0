"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

What runs (all on 127.0.0.1, free ports, one temporary directory):

- **etcd**, plain HTTP on loopback, ``--unsafe-no-fsync`` (throwaway data; much faster);
- **kube-apiserver** with TLS from a generated CA, client-certificate authentication,
  ``--authorization-mode=RBAC``, service-account token signing keys;
- **kube-controller-manager**, when the binary is installed, with the controllers a
  controller under test relies on: garbage collection by ownerReferences, namespace
  deletion, ``default`` service accounts, ClusterRole aggregation (so ``edit``/``view``
  have rules), the ``kube-root-ca.crt`` ConfigMaps, legacy token Secrets. There is no
  scheduler and no kubelet: Pods are accepted but never run.

Identities: ``admin`` (client certificate, group ``system:masters``) and ``restricted``
(user ``restricted-user``, no group, so RBAC allows nothing beyond discovery until a test
binds a Role). :meth:`ControlPlane.add_identity` issues more;
:meth:`ControlPlane.service_account_kubeconfig` gives a ServiceAccount's view, which is
how a chart's RBAC is tested for real.

Run by hand (the demo does the same)::

    python -m testbed.controlplane          # prints `export KUBECONFIG=...`, Ctrl-C stops
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import yaml

from testbed.pki import CertificateAuthority, KeyPair, write_signing_key
from testbed.ports import LOOPBACK, free_port
from testbed.process import (
    ServerProcess,
    TestbedError,
    keep_workdirs,
    register_cleanup,
    remove_tree,
    unregister_cleanup,
    wait_until,
)
from testbed.tools import has_pinned_tool, pinned_tool

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

__all__ = ["ControlPlane", "Identity", "KubectlError"]

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
ADMIN_USER = "testbed-admin"
RESTRICTED_USER = "restricted-user"

#: The kube-controller-manager controllers the test bed runs (see the module docstring).
CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "clusterrole-aggregation-controller",
    "root-ca-certificate-publisher-controller",
)


@dataclass(frozen=True)
class Identity:
    """Who a client is: user name and groups carried by a client certificate, or a token."""

    name: str
    user: str
    groups: tuple[str, ...]
    kubeconfig: Path
    credentials: KeyPair | None = None
    token: str | None = None


class KubectlError(TestbedError):
    """kubectl or helm exited non-zero; ``result`` has its output."""

    def __init__(self, result: subprocess.CompletedProcess[str]) -> None:
        self.result = result
        super().__init__(
            f"`{' '.join(str(a) for a in result.args)}` exited with status {result.returncode}:\n"
            f"{result.stderr.strip() or result.stdout.strip()}"
        )


class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) on loopback, as a context manager.

    >>> with ControlPlane() as cp:                                   # doctest: +SKIP
    ...     cp.kubectl("create", "namespace", "ml")
    ...     with cp.api_client() as api: ...

    ``controller_manager=None`` starts kube-controller-manager when its binary is installed.
    ``workdir`` (default: a new temporary directory, removed by :meth:`stop`) holds the PKI,
    etcd's data, the kubeconfigs and each server's log; a given ``workdir`` is kept.
    """

    def __init__(
        self,
        *,
        workdir: Path | None = None,
        controller_manager: bool | None = None,
        start_timeout: float = 120.0,
        apiserver_args: Sequence[str] = (),
    ) -> None:
        self._given_workdir = workdir
        self._want_kcm = controller_manager
        self._start_timeout = start_timeout
        self._extra_apiserver_args = list(apiserver_args)
        self._lock = threading.RLock()
        self._processes: list[ServerProcess] = []
        self._workdir: Path | None = None
        self._identities: dict[str, Identity] = {}
        self._server: str | None = None
        self._ca: CertificateAuthority | None = None
        self.start_seconds: float | None = None
        """Wall time of the last :meth:`start`, for reporting."""
        self._etcd_url: str | None = None

    # -- lifecycle --------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Start everything and wait until the API serves; raise with log tails if not."""
        with self._lock:
            if self._processes:
                raise TestbedError("the control plane is already started")
            started = time.monotonic()
            register_cleanup(self, self.stop)
            try:
                for attempt in range(3):
                    try:
                        self._start_once()
                        break
                    except TestbedError as exc:
                        # A port picked as free can be taken before the server binds it.
                        if attempt == 2 or "address already in use" not in str(exc):
                            raise
                        self._stop_processes()
                        self._remove_workdir()
            except BaseException:
                self.stop()
                raise
            self.start_seconds = time.monotonic() - started
            return self

    def stop(self) -> None:
        """Stop every server (process groups; SIGKILL after a grace period) and, unless the
        work directory was given, remove it. Idempotent; safe from atexit and signals."""
        with self._lock:
            self._stop_processes()
            self._remove_workdir()
            unregister_cleanup(self)

    def _stop_processes(self) -> None:
        # API server first, so that it does not log a storm of etcd errors on its way out.
        for proc in reversed(self._processes):
            proc.stop()
        self._processes = []

    def _remove_workdir(self) -> None:
        if self._workdir is not None and self._given_workdir is None and not keep_workdirs():
            remove_tree(self._workdir)
        self._workdir = None

    def _start_once(self) -> None:
        workdir = self._given_workdir or Path(tempfile.mkdtemp(prefix="modelrollout-cp-"))
        workdir.mkdir(parents=True, exist_ok=True)
        self._workdir = workdir
        remove_tree(workdir / "etcd")  # always a fresh cluster, also in a reused workdir
        etcd_bin = pinned_tool("etcd")
        apiserver_bin = pinned_tool("kube-apiserver")
        pinned_tool("kubectl")
        run_kcm = self._want_kcm
        if run_kcm is None:
            run_kcm = has_pinned_tool("kube-controller-manager")
        kcm_bin = pinned_tool("kube-controller-manager") if run_kcm else None

        pki = workdir / "pki"
        ca = CertificateAuthority(pki)
        self._ca = ca
        serving = ca.issue(
            "apiserver", common_name="kube-apiserver", server_hosts=(LOOPBACK, "localhost")
        )
        sa_key, sa_pub = pki / "service-account.key", pki / "service-account.pub"
        write_signing_key(sa_key, sa_pub)

        etcd_port, etcd_peer_port, api_port = free_port(), free_port(), free_port()
        self._server = f"https://{LOOPBACK}:{api_port}"
        self._identities = {}
        self.add_identity("admin", ADMIN_USER, ("system:masters",))
        self.add_identity("restricted", RESTRICTED_USER)
        logs = workdir / "logs"

        etcd_url = f"http://{LOOPBACK}:{etcd_port}"
        self._etcd_url = etcd_url
        peer_url = f"http://{LOOPBACK}:{etcd_peer_port}"
        etcd = ServerProcess(
            "etcd",
            [
                str(etcd_bin),
                "--name=testbed",
                f"--data-dir={workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=testbed={peer_url}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            log_path=logs / "etcd.log",
        )
        self._launch(etcd)
        wait_until(
            lambda: _etcd_healthy(etcd, etcd_url),
            timeout=self._start_timeout,
            what="etcd /health",
            on_timeout=lambda: str(etcd.failure("did not become healthy")),
        )

        apiserver = ServerProcess(
            "kube-apiserver",
            [
                str(apiserver_bin),
                f"--bind-address={LOOPBACK}",
                f"--advertise-address={LOOPBACK}",
                f"--secure-port={api_port}",
                f"--etcd-servers={etcd_url}",
                f"--cert-dir={workdir / 'apiserver-certs'}",
                f"--tls-cert-file={serving.cert_file}",
                f"--tls-private-key-file={serving.key_file}",
                f"--client-ca-file={ca.cert_file}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={sa_pub}",
                f"--service-account-signing-key-file={sa_key}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                # No Service endpoints for the API server itself: 127.0.0.1 is not a valid
                # endpoint address, and nothing here routes to it through a Service.
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--profiling=false",
                *self._extra_apiserver_args,
            ],
            log_path=logs / "kube-apiserver.log",
        )
        self._launch(apiserver)
        wait_until(
            lambda: self._ready(apiserver),
            timeout=self._start_timeout,
            interval=0.2,
            what="kube-apiserver /readyz",
            on_timeout=lambda: str(apiserver.failure("did not become ready")),
        )

        if kcm_bin is not None:
            kcm_identity = self.add_identity(
                "kube-controller-manager", "system:kube-controller-manager"
            )
            kcm = ServerProcess(
                "kube-controller-manager",
                [
                    str(kcm_bin),
                    f"--kubeconfig={kcm_identity.kubeconfig}",
                    # No HTTPS endpoint (health, metrics): nothing here reads it, and
                    # without one no delegated authentication has to be configured.
                    "--secure-port=0",
                    "--leader-elect=false",
                    f"--controllers={','.join(CONTROLLERS)}",
                    # Each controller acts as its own ServiceAccount with its bootstrap
                    # role (system:controller:*), as on a kubeadm cluster.
                    "--use-service-account-credentials=true",
                    f"--service-account-private-key-file={sa_key}",
                    f"--root-ca-file={ca.cert_file}",
                ],
                log_path=logs / "kube-controller-manager.log",
            )
            self._launch(kcm)

        def default_namespace_ready() -> bool:
            for proc in self._processes:
                proc.check_running()
            if self._get("/api/v1/namespaces/default")[0] != 200:
                return False
            # Pods need their ServiceAccount; the serviceaccount controller creates it.
            return kcm_bin is None or (
                self._get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200
            )

        wait_until(
            default_namespace_ready,
            timeout=self._start_timeout,
            interval=0.2,
            what="the default namespace (and its ServiceAccount)",
            on_timeout=lambda: "\n\n".join(str(p.failure("state")) for p in self._processes),
        )

    # -- outages (tests of what survives the API server going away) -----------------------

    def _process(self, name: str) -> ServerProcess:
        for proc in self._processes:
            if proc.name == name:
                return proc
        raise TestbedError(f"no {name} in this control plane")

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver alone (SIGTERM); etcd and everything stored stay.

        Every client's connection and watch breaks, as in an API server upgrade or a
        control-plane node failure. :meth:`start_apiserver` brings it back on the same
        address with the same certificates."""
        with self._lock:
            self._process("kube-apiserver").stop()

    def start_apiserver(self) -> None:
        """Start kube-apiserver again after :meth:`stop_apiserver`; wait until it is ready."""
        with self._lock:
            apiserver = self._process("kube-apiserver")
            apiserver.reset()
            apiserver.start()
            wait_until(
                lambda: self._ready(apiserver),
                timeout=self._start_timeout,
                interval=0.2,
                what="kube-apiserver /readyz after a restart",
                on_timeout=lambda: str(apiserver.failure("did not become ready")),
            )

    def compact_etcd(self) -> int:
        """Compact etcd's history up to its current revision and return that revision.

        A watch resumed from an older resourceVersion then gets ``410 Gone`` ("too old
        resource version"), as it does on a busy cluster after the API server's periodic
        compaction: the client has to list again."""
        if self._etcd_url is None:
            raise TestbedError("the control plane is not started")
        import httpx  # noqa: PLC0415 - only outage tests need it

        # One write first, so that every resourceVersion a client holds is now older than
        # the compacted revision (a client that saw the very last write could resume).
        marker = {"key": base64.b64encode(b"/testbed/compaction").decode(),
                  "value": base64.b64encode(str(time.time()).encode()).decode()}  # fmt: skip
        got = httpx.post(f"{self._etcd_url}/v3/kv/put", json=marker, timeout=10)
        got.raise_for_status()
        revision = int(got.json()["header"]["revision"])
        done = httpx.post(
            f"{self._etcd_url}/v3/kv/compaction",
            json={"revision": str(revision), "physical": True},
            timeout=30,
        )
        done.raise_for_status()
        return revision

    def _launch(self, proc: ServerProcess) -> None:
        self._processes.append(proc)
        proc.start()

    def _ready(self, apiserver: ServerProcess) -> bool:
        apiserver.check_running()
        status, _ = self._get("/readyz")
        return status == 200

    def _get(self, path: str) -> tuple[int, bytes]:
        """GET ``path`` as admin; (0, error) when the server does not answer yet."""
        identity = self.identity("admin")
        assert identity.credentials is not None
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(identity.credentials.cert_file, identity.credentials.key_file)
        host, port = self.server.removeprefix("https://").split(":")
        conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=5)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        except OSError as exc:
            return 0, str(exc).encode()
        finally:
            conn.close()

    # -- what tests and the demo use -------------------------------------------------------

    @property
    def running(self) -> bool:
        return bool(self._processes) and all(p.running() for p in self._processes)

    def check(self) -> None:
        """Raise :class:`TestbedError` with the log tail if any server has exited."""
        for proc in self._processes:
            proc.check_running()

    @property
    def server(self) -> str:
        """The API server's URL, ``https://127.0.0.1:<port>``."""
        if self._server is None:
            raise TestbedError("the control plane is not started")
        return self._server

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise TestbedError("the control plane is not started")
        return self._workdir

    @property
    def ca_file(self) -> Path:
        """The CA certificate that signed the API server's serving certificate."""
        if self._ca is None:
            raise TestbedError("the control plane is not started")
        return self._ca.cert_file

    @property
    def admin_kubeconfig(self) -> Path:
        return self.identity("admin").kubeconfig

    @property
    def restricted_kubeconfig(self) -> Path:
        return self.identity("restricted").kubeconfig

    @property
    def pids(self) -> dict[str, int]:
        """Process id of each running server, by name."""
        return {p.name: p.pid for p in self._processes if p.pid is not None}

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    def identity(self, name: str) -> Identity:
        try:
            return self._identities[name]
        except KeyError:
            known = ", ".join(sorted(self._identities)) or "none (not started)"
            raise TestbedError(f"no identity {name!r}; known: {known}") from None

    def add_identity(self, name: str, user: str, groups: Sequence[str] = ()) -> Identity:
        """Issue a client certificate for ``user`` in ``groups`` and write its kubeconfig."""
        if self._ca is None:
            raise TestbedError("the control plane is not started")
        pair = self._ca.issue(f"user-{name}", common_name=user, organizations=groups)
        kubeconfig = self.workdir / "kubeconfigs" / f"{name}.yaml"
        self._write_kubeconfig(
            kubeconfig,
            name,
            {
                "client-certificate-data": _b64(pair.cert_file.read_bytes()),
                "client-key-data": _b64(pair.key_file.read_bytes()),
            },
        )
        identity = Identity(name, user, tuple(groups), kubeconfig, credentials=pair)
        self._identities[name] = identity
        return identity

    def service_account_kubeconfig(
        self, namespace: str, service_account: str, *, duration: str = "1h"
    ) -> Identity:
        """An identity holding a bound token of an existing ServiceAccount (TokenRequest).

        The token is what a pod with that ServiceAccount gets, so a controller or service
        started with this kubeconfig has exactly the permissions the chart grants it.
        """
        token = self.kubectl(
            "create", "token", service_account, "-n", namespace, f"--duration={duration}"
        ).stdout.strip()
        name = f"sa-{namespace}-{service_account}"
        kubeconfig = self.workdir / "kubeconfigs" / f"{name}.yaml"
        self._write_kubeconfig(kubeconfig, name, {"token": token})
        identity = Identity(
            name,
            f"system:serviceaccount:{namespace}:{service_account}",
            ("system:serviceaccounts", f"system:serviceaccounts:{namespace}"),
            kubeconfig,
            token=token,
        )
        self._identities[name] = identity
        return identity

    def _write_kubeconfig(self, path: Path, user: str, credentials: Mapping[str, str]) -> None:
        assert self._ca is not None
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "testbed",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": _b64(self._ca.cert_pem),
                    },
                }
            ],
            "users": [{"name": user, "user": dict(credentials)}],
            "contexts": [
                {
                    "name": f"testbed-{user}",
                    "context": {"cluster": "testbed", "user": user, "namespace": "default"},
                }
            ],
            "current-context": f"testbed-{user}",
            "preferences": {},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)

    def kubectl(
        self,
        *args: str,
        identity: str = "admin",
        input: str | None = None,
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl as ``identity``; raise :class:`KubectlError` on failure
        unless ``check=False``."""
        argv = [
            str(pinned_tool("kubectl")),
            f"--kubeconfig={self.identity(identity).kubeconfig}",
            f"--cache-dir={self.workdir / 'kubectl-cache'}",
            *args,
        ]
        return _run(argv, input=input, check=check, timeout=timeout, env=None)

    def wait_established(self, crd: str, timeout: float = 60.0) -> None:
        """Wait until the CRD ``crd`` (``name`` or ``crd/name``) serves its resource.

        Not ``kubectl wait --for=condition=Established``: run right after the CRD is
        created, before the apiserver has written any condition, it fails at once
        (".status.conditions accessor error: <nil>")."""
        name = crd.removeprefix("crd/")

        def established() -> bool:
            found = self.kubectl(
                "get", "crd", name, "-o",
                "jsonpath={.status.conditions[?(@.type=='Established')].status}", check=False,
            )  # fmt: skip
            return found.returncode == 0 and found.stdout.strip() == "True"

        wait_until(established, timeout=timeout, what=f"CRD {name} to be established")

    def helm(
        self,
        *args: str,
        identity: str = "admin",
        input: str | None = None,
        check: bool = True,
        timeout: float = 300.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned helm against this control plane as ``identity``, with its cache,
        config and data directories inside the work directory."""
        helm_home = self.workdir / "helm"
        env = {
            **os.environ,
            "KUBECONFIG": str(self.identity(identity).kubeconfig),
            "HELM_CACHE_HOME": str(helm_home / "cache"),
            "HELM_CONFIG_HOME": str(helm_home / "config"),
            "HELM_DATA_HOME": str(helm_home / "data"),
        }
        argv = [str(pinned_tool("helm")), *args]
        return _run(argv, input=input, check=check, timeout=timeout, env=env)

    def api_client(self, identity: str = "admin") -> ApiClient:
        """A kubernetes ApiClient for ``identity`` (certificate identities only).

        Use it as a context manager (``with cp.api_client() as api:``) so that its
        connection pool is closed; an unclosed one is a ResourceWarning.
        """
        from kubernetes import client  # noqa: PLC0415 - slow to import; only needed here

        ident = self.identity(identity)
        configuration = client.Configuration()
        configuration.host = self.server
        configuration.ssl_ca_cert = str(self.ca_file)
        if ident.credentials is not None:
            configuration.cert_file = str(ident.credentials.cert_file)
            configuration.key_file = str(ident.credentials.key_file)
        if ident.token is not None:
            configuration.api_key = {"authorization": f"Bearer {ident.token}"}
        return client.ApiClient(configuration)

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each server process, by name (read from /proc; Linux)."""
        return {name: _rss(pid) for name, pid in self.pids.items()}

    def total_rss_bytes(self) -> int:
        return sum(self.rss_bytes().values())

    def export_lines(self) -> list[str]:
        """Shell lines that point kubectl, helm and the project's code at this control plane."""
        return [
            f"export KUBECONFIG={self.admin_kubeconfig}",
            f"export MODELROLLOUT_RESTRICTED_KUBECONFIG={self.restricted_kubeconfig}",
            f"export PATH={pinned_tool('kubectl').parent}:$PATH",
        ]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _etcd_healthy(etcd: ServerProcess, url: str) -> bool:
    etcd.check_running()
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=2)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        body: Any = json.loads(response.read() or b"{}")
        return response.status == 200 and body.get("health") == "true"
    except (OSError, ValueError):
        return False
    finally:
        conn.close()


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _run(
    argv: list[str],
    *,
    input: str | None,
    check: bool,
    timeout: float,
    env: Mapping[str, str] | None,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        argv,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if check and result.returncode != 0:
        raise KubectlError(result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m testbed.controlplane``: start, print export lines, wait for Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m testbed.controlplane", description=main.__doc__
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep PKI, kubeconfigs and logs here (default: temporary)"
    )
    parser.add_argument(
        "--no-controller-manager",
        action="store_true",
        help="do not start kube-controller-manager (no garbage collection, no ServiceAccounts)",
    )
    args = parser.parse_args(argv)
    # SIGTERM must stop the servers too; make it behave like Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    cp = ControlPlane(
        workdir=args.workdir.resolve() if args.workdir else None,
        controller_manager=False if args.no_controller_manager else None,
    )
    try:
        with cp:
            rss = cp.total_rss_bytes() / 2**20
            print(f"# control plane ready in {cp.start_seconds:.1f} s, {rss:.0f} MiB RSS")
            print(f"# server {cp.server}; logs in {cp.log_dir}")
            print(f"# pids {' '.join(str(p) for p in cp.pids.values())}")
            for line in cp.export_lines():
                print(line)
            print("# Ctrl-C stops it", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while cp.running:
                    time.sleep(0.5)
                cp.check()
    except TestbedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
