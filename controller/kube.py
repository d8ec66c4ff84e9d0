"""The controller's few Kubernetes API calls (async httpx), and the one error mapping.

kopf watches ModelRollouts and Leases and posts Events; everything the controller writes
itself goes through :class:`Kube`:

- the ModelRollout status, as a JSON merge patch **with the resourceVersion the decision
  was made on** (optimistic concurrency: a decision taken on a stale status is refused by
  the API server with 409 and simply retried on the next tick, so nothing advances twice);
- the serving ConfigMap of a target (create, or merge-patch data, labels, owner).

:func:`kopf_error` is the one place that maps API errors to kopf's retry semantics:
conflicts, throttling, server errors and network errors heal (``TemporaryError``); a
request the server rejects as invalid or forbidden will not (``PermanentError``).
"""

from __future__ import annotations

import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import kopf
from kubernetes import client, config

from controller.model import API_VERSION, GROUP, KIND, PLURAL, VERSION
from service.serving_config import ROLLOUT_LABEL

SA_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_MERGE: Final = {"Content-Type": "application/merge-patch+json"}


class KubeError(Exception):
    """The API server refused a request, or could not be reached (status 0)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def conflict(self) -> bool:
        return self.status == 409


def kopf_error(exc: KubeError, what: str) -> kopf.TemporaryError | kopf.PermanentError:
    """The kopf exception for an API error: retry what may heal, give up on what will not."""
    if exc.status in (0, 409, 429) or exc.status >= 500:
        delay = 1.0 if exc.status == 409 else 5.0
        return kopf.TemporaryError(f"{what}: {exc}", delay=delay)
    return kopf.PermanentError(f"{what}: {exc}")


@dataclass
class _Credentials:
    server: str
    ssl_context: ssl.SSLContext | bool
    token: str | None
    token_file: Path | None


def _load_credentials(kubeconfig: str | None) -> _Credentials:
    """In-cluster ServiceAccount, else the kubeconfig (``--kubeconfig``, $KUBECONFIG, ~/.kube)."""
    cfg = client.Configuration()
    in_cluster = kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ
    if in_cluster:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)  # type: ignore[no-untyped-call]
    ctx: ssl.SSLContext | bool = False
    if cfg.verify_ssl:
        ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
        if cfg.cert_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    token = None
    auth = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
    if auth:
        prefix = (cfg.api_key_prefix or {}).get("authorization", "")
        token = auth.removeprefix("Bearer ").strip() if not prefix else auth
    return _Credentials(
        server=str(cfg.host).rstrip("/"),
        ssl_context=ctx,
        token=token,
        token_file=SA_DIR / "token" if in_cluster else None,
    )


class Kube:
    """A thin async client for the handful of calls the controller makes."""

    def __init__(self, client: httpx.AsyncClient, token_file: Path | None = None) -> None:
        self._client = client
        self._token_file = token_file
        self._token_read = 0.0

    @classmethod
    def connect(cls, kubeconfig: str | None = None, *, timeout: float = 10.0) -> Kube:
        creds = _load_credentials(kubeconfig)
        headers = {"Accept": "application/json"}
        if creds.token:
            headers["Authorization"] = f"Bearer {creds.token}"
        client = httpx.AsyncClient(
            base_url=creds.server,
            verify=creds.ssl_context,
            headers=headers,
            timeout=timeout,
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
        )
        return cls(client, creds.token_file)

    async def aclose(self) -> None:
        await self._client.aclose()

    def _refresh_token(self) -> None:
        # Projected ServiceAccount tokens rotate: re-read the file every minute.
        if self._token_file is None or time.monotonic() - self._token_read < 60:
            return
        self._client.headers["Authorization"] = f"Bearer {self._token_file.read_text().strip()}"
        self._token_read = time.monotonic()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        self._refresh_token()
        try:
            resp = await self._client.request(
                method, path, json=body, params=params, headers=headers
            )
        except httpx.HTTPError as exc:
            raise KubeError(0, "Unreachable", repr(exc)) from exc
        if resp.status_code >= 400:
            try:
                detail = resp.json()
                reason, message = detail.get("reason", ""), detail.get("message", resp.text)
            except ValueError:
                reason, message = "", resp.text[:300]
            raise KubeError(resp.status_code, reason, message)
        result: dict[str, Any] = resp.json()
        return result

    # ------------------------------------------------------------------ ModelRollouts

    @staticmethod
    def rollout_path(namespace: str, name: str = "") -> str:
        base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
        return f"{base}/{name}" if name else base

    async def get_rollout(self, namespace: str, name: str) -> dict[str, Any]:
        return await self.request("GET", self.rollout_path(namespace, name))

    async def list_rollouts(self, namespaces: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Every ModelRollout in ``namespaces`` (empty: all namespaces)."""
        paths = [self.rollout_path(ns) for ns in namespaces] or [
            f"/apis/{GROUP}/{VERSION}/{PLURAL}"
        ]
        items: list[dict[str, Any]] = []
        for path in paths:
            items.extend((await self.request("GET", path)).get("items") or [])
        return items

    async def patch_rollout_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        """Merge-patch status; with ``resource_version`` it fails (409) if the object moved."""
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return await self.request(
            "PATCH", self.rollout_path(namespace, name) + "/status", body=body, headers=_MERGE
        )

    # ------------------------------------------------------------------ ConfigMaps

    async def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}")
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def put_configmap(
        self,
        namespace: str,
        name: str,
        *,
        data: dict[str, str],
        labels: dict[str, str],
        owner: dict[str, Any] | None,
        exists: bool,
    ) -> dict[str, Any]:
        """Create the ConfigMap, or merge data, labels and the owner into the existing one."""
        meta: dict[str, Any] = {"name": name, "labels": labels}
        if owner is not None:
            meta["ownerReferences"] = [owner]
        if not exists:
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}
            try:
                return await self.request(
                    "POST", f"/api/v1/namespaces/{namespace}/configmaps", body=body
                )
            except KubeError as exc:
                if exc.status != 409:
                    raise
        return await self.request(
            "PATCH",
            f"/api/v1/namespaces/{namespace}/configmaps/{name}",
            body={"metadata": meta, "data": data},
            headers=_MERGE,
        )

    async def release_configmap(
        self, namespace: str, name: str, *, data: dict[str, str]
    ) -> dict[str, Any]:
        """Write ``data`` and drop the ownerReference and rollout label (deletion)."""
        meta = {"ownerReferences": None, "labels": {ROLLOUT_LABEL: None}}
        return await self.request(
            "PATCH",
            f"/api/v1/namespaces/{namespace}/configmaps/{name}",
            body={"metadata": meta, "data": data},
            headers=_MERGE,
        )


def owner_reference(body: dict[str, Any]) -> dict[str, Any]:
    """An ownerReference to a ModelRollout: deleting the rollout collects its ConfigMap."""
    meta = body["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": False,
    }


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The RFC 7386 merge patch that turns ``old`` into ``new`` (lists are replaced whole).

    >>> merge_patch({"a": 1, "b": {"c": 2, "d": 3}}, {"a": 1, "b": {"c": 2}, "e": [1]})
    {'b': {'d': None}, 'e': [1]}
    """
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            sub = merge_patch(before, value)
            if sub:
                patch[key] = sub
        elif value != before or key not in old:
            patch[key] = value
    return dict(sorted(patch.items()))
