"""What training reads from and proposes to the cluster: ModelRollouts.

- Retention must never remove a version a ModelRollout names: :func:`referenced_versions`
  (pure) collects them from the objects at :data:`PROTECTED_FIELD_PATHS`.
- A new model may be proposed to a ModelRollout by patching :data:`PROPOSE_FIELD_PATH`
  (the spec's model version; the controller then starts a rollout of it), when it beats
  the rollout's stable version (:data:`STABLE_FIELD_PATH`) by a margin.

The field paths are constants so that a change of the CRD is a one-line change here. The
Kubernetes adapters (:class:`ClusterRollouts`) are thin: in-cluster configuration when
running in a pod, else the kubeconfig.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any, Final

GROUP: Final = "modelrollout.io"
VERSION: Final = "v1alpha1"
PLURAL: Final = "modelrollouts"

FieldPath = tuple[str, ...]

PROPOSE_FIELD_PATH: Final[FieldPath] = ("spec", "model", "version")
STABLE_FIELD_PATH: Final[FieldPath] = ("status", "stableVersion")
PROTECTED_FIELD_PATHS: Final[tuple[FieldPath, ...]] = (
    PROPOSE_FIELD_PATH,
    STABLE_FIELD_PATH,
    ("status", "candidateVersion"),
    ("status", "serving", "stable"),
    ("status", "serving", "candidate"),
)

NAMESPACE_ENV: Final = "MODELROLLOUT_NAMESPACE"


class ClusterError(Exception):
    """The cluster could not be read or written (no configuration, API error, not found)."""


def field_at(obj: Mapping[str, Any], path: FieldPath) -> Any:
    """The value at ``path`` in a nested mapping, or ``None`` when any step is missing.

    >>> field_at({"spec": {"model": {"version": "v1"}}}, ("spec", "model", "version"))
    'v1'
    >>> field_at({"spec": {}}, ("spec", "model", "version")) is None
    True
    """
    node: Any = obj
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def referenced_versions(
    rollouts: Iterable[Mapping[str, Any]],
    paths: Iterable[FieldPath] = PROTECTED_FIELD_PATHS,
) -> set[str]:
    """Every model version named at ``paths`` by any of ``rollouts``.

    >>> sorted(referenced_versions([
    ...     {"spec": {"model": {"version": "v3"}}, "status": {"stableVersion": "v1"}},
    ...     {"spec": {"model": {"version": "v2"}}},
    ... ]))
    ['v1', 'v2', 'v3']
    """
    wanted = tuple(paths)
    found: set[str] = set()
    for obj in rollouts:
        for path in wanted:
            value = field_at(obj, path)
            if isinstance(value, str) and value:
                found.add(value)
    return found


def propose_patch(version: str, path: FieldPath = PROPOSE_FIELD_PATH) -> dict[str, Any]:
    """The merge patch that sets ``path`` to ``version``.

    >>> propose_patch("v2")
    {'spec': {'model': {'version': 'v2'}}}
    """
    patch: dict[str, Any] = {path[-1]: version}
    for key in reversed(path[:-1]):
        patch = {key: patch}
    return patch


def parse_rollout_ref(text: str) -> tuple[str, str]:
    """``"namespace/name"`` as a pair; raises ``ValueError`` on anything else.

    >>> parse_rollout_ref("ml/suggest")
    ('ml', 'suggest')
    """
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ValueError(f"expected NAMESPACE/NAME, got {text!r}")
    return namespace, name


class ClusterRollouts:
    """ModelRollout objects through the Kubernetes API (the only adapter here)."""

    def __init__(self) -> None:
        try:
            from kubernetes import client, config  # noqa: PLC0415  (only the CLI needs it)
        except ImportError as exc:  # pragma: no cover - a dependency of the package
            raise ClusterError(f"the kubernetes client is not installed: {exc}") from exc
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            try:
                # KUBECONFIG read now: the client reads it once, when first imported.
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=os.environ.get("KUBECONFIG") or None
                )
            except (config.ConfigException, OSError) as exc:
                raise ClusterError(
                    f"no in-cluster configuration and no usable kubeconfig: {exc}"
                ) from exc
        self._api = client.CustomObjectsApi()
        self._api_error: type[Exception] = client.ApiException

    def list(self, namespace: str | None) -> list[dict[str, Any]]:
        """ModelRollouts of ``namespace``, or of every namespace when ``None``."""
        body: Any
        try:
            if namespace is None:
                body = self._api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
            else:
                body = self._api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        except self._api_error as exc:
            raise ClusterError(f"cannot list {PLURAL}.{GROUP}: {_reason(exc)}") from exc
        items: list[dict[str, Any]] = list(body.get("items", []))
        return items

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        obj: Any
        try:
            obj = self._api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except self._api_error as exc:
            raise ClusterError(
                f"cannot get {PLURAL}/{name} in {namespace}: {_reason(exc)}"
            ) from exc
        if not isinstance(obj, dict):
            raise ClusterError(f"{PLURAL}/{name} in {namespace}: unexpected answer {obj!r:.80}")
        return obj

    def propose(self, namespace: str, name: str, version: str) -> None:
        """Set the rollout's model version (a merge patch of :data:`PROPOSE_FIELD_PATH`)."""
        try:
            self._api.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, propose_patch(version)
            )
        except self._api_error as exc:
            raise ClusterError(
                f"cannot patch {PLURAL}/{name} in {namespace}: {_reason(exc)}"
            ) from exc


def _reason(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    return f"{status} {reason}" if status is not None else str(exc)
