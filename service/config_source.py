"""Where the serving configuration comes from: the cluster, a file, or the environment.

Each source runs its own daemon thread and hands every *new* configuration (one that
differs from the last it delivered) to a callback, normally
:meth:`service.state.ServingStateStore.submit`. Until a file or ConfigMap exists, a source
delivers the ``fallback`` configuration (the one the ``SUGGEST_*`` variables describe), so
a pod always becomes ready.

- :class:`ConfigMapSource`: list then watch the ConfigMap ``configmap_name(target)``
  (key ``serving.json``) with a field selector on its name (so a Role limited to that
  resource name suffices), resuming from the last ``resourceVersion``; ``410 Gone`` starts
  over with a list; any other failure (the API server restarting, a broken connection)
  reconnects with capped exponential backoff and jitter and resumes the watch from the
  last ``resourceVersion`` (no event is missed: the server either replays from there or
  answers 410), as client-go's reflector does, rather than listing again. A deleted
  ConfigMap leaves the last configuration in force (the controller
  deletes it only with its ModelRollout; a pod keeps serving what it served).
- :class:`FileConfigSource`: a JSON or YAML document, re-read when its content changes
  (polled; a ConfigMap mounted as a volume works too, only slower to update).
- :class:`StaticConfigSource`: the environment only.

A document that does not parse or validate is not applied; the error is kept in
:attr:`last_error` (shown by ``GET /v1/models``) until a valid one arrives.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import yaml
from pydantic import ValidationError

from service.serving_config import CONFIGMAP_KEY, ServingConfig, configmap_name

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)

Deliver = Callable[[ServingConfig], None]

WATCH_TIMEOUT_SECONDS: Final = 240
"""Server-side watch timeout; the watch is re-established from the last resourceVersion."""
BACKOFF_INITIAL: Final = 0.2
BACKOFF_MAX: Final = 10.0


class ConfigSource(Protocol):
    kind: str

    def start(self, deliver: Deliver) -> None: ...

    def stop(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


def parse_document(raw: bytes | str, *, where: str) -> ServingConfig:
    """A ServingConfig from JSON or YAML text; ``ValueError`` saying what is wrong."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"{where}: neither JSON nor YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
    try:
        return ServingConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(document)'}: {e['msg']}"
            for e in exc.errors()
        )
        raise ValueError(f"{where}: invalid serving configuration: {problems}") from None


class _SourceBase:
    kind = "base"

    def __init__(self, fallback: ServingConfig) -> None:
        self._fallback = fallback
        self._deliver: Deliver | None = None
        self._last: ServingConfig | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.last_change: datetime | None = None

    def _emit(self, config: ServingConfig) -> None:
        if config == self._last:
            return
        self._last = config
        self.last_change = datetime.now(UTC)
        assert self._deliver is not None
        self._deliver(config)

    def _fail(self, message: str) -> None:
        if message != self.last_error:
            log.error("serving configuration not applied: %s", message)
        self.last_error = message

    def _start_thread(self, deliver: Deliver, target: Callable[[], None], name: str) -> None:
        self._deliver = deliver
        self._stopping.clear()
        self._thread = threading.Thread(target=target, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def status(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "last_error": self.last_error,
            "last_change": self.last_change.isoformat() if self.last_change else None,
        }


class StaticConfigSource(_SourceBase):
    """The environment's configuration, delivered once."""

    kind = "env"

    def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._emit(self._fallback)


class FileConfigSource(_SourceBase):
    """A JSON or YAML file, polled every ``poll_seconds`` for a change of content."""

    kind = "file"

    def __init__(self, path: Path, fallback: ServingConfig, *, poll_seconds: float = 0.25) -> None:
        super().__init__(fallback)
        self.path = path
        self._poll = poll_seconds
        self._content: bytes | None = None

    def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self.poll_once()  # the first configuration before the app serves
        self._start_thread(deliver, self._run, "config-file")

    def _run(self) -> None:
        while not self._stopping.wait(self._poll):
            try:
                self.poll_once()
            except Exception:
                log.exception("polling %s failed", self.path)

    def poll_once(self) -> None:
        try:
            content = self.path.read_bytes()
        except FileNotFoundError:
            if self._last is None:
                self._emit(self._fallback)
            return
        except OSError as exc:
            self._fail(f"cannot read {self.path}: {exc}")
            return
        if content == self._content:
            return
        self._content = content
        try:
            config = parse_document(content, where=str(self.path))
        except (ValueError, UnicodeDecodeError) as exc:
            self._fail(str(exc))
            return
        self.last_error = None
        self._emit(config)

    def status(self) -> dict[str, Any]:
        return {**super().status(), "path": str(self.path)}


def kube_api_client(kubeconfig: Path | None) -> ApiClient:
    """An API client from the in-cluster service account, else the kubeconfig."""
    from kubernetes import client  # noqa: PLC0415 (only cluster mode needs it)
    from kubernetes import config as kube_config  # noqa: PLC0415

    config: Any = kube_config

    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        pass
    configuration = client.Configuration()
    config.load_kube_config(
        config_file=str(kubeconfig) if kubeconfig else None,
        client_configuration=configuration,
    )
    return client.ApiClient(configuration)


class ConfigMapSource(_SourceBase):
    """Lists, then watches, the serving ConfigMap of one target."""

    kind = "kube"

    def __init__(
        self, api: ApiClient, namespace: str, target: str, fallback: ServingConfig
    ) -> None:
        super().__init__(fallback)
        from kubernetes import client  # noqa: PLC0415

        self._core = client.CoreV1Api(api)
        self.namespace = namespace
        self.name = configmap_name(target)
        self.resource_version: str | None = None
        self.synced = threading.Event()
        self._watch: Any = None

    def start(self, deliver: Deliver) -> None:
        self._start_thread(deliver, self._run, "config-watch")

    def stop(self) -> None:
        self._stopping.set()
        watch = self._watch
        if watch is not None:
            watch.stop()
            resp = getattr(watch, "_resp", None)
            if resp is not None:  # unblock a read waiting for the next event
                try:
                    resp.close()
                except Exception:
                    log.debug("closing the watch response failed", exc_info=True)
        super().stop()

    def status(self) -> dict[str, Any]:
        return {
            **super().status(),
            "namespace": self.namespace,
            "configmap": self.name,
            "resource_version": self.resource_version,
            "synced": self.synced.is_set(),
        }

    def _run(self) -> None:
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        backoff = BACKOFF_INITIAL
        need_list = True
        while not self._stopping.is_set():
            try:
                if need_list:
                    self._list()
                    need_list = False
                self._watch_once()
                backoff = BACKOFF_INITIAL
                continue  # the server ended the watch: resume at once from resourceVersion
            except ApiException as exc:
                if exc.status == 410:
                    log.info("watch of %s expired (410 Gone); listing again", self.name)
                    need_list = True
                    continue
                self._fail(
                    f"ConfigMap {self.namespace}/{self.name}: API error {exc.status} {exc.reason}"
                )
                need_list = True
            except Exception as exc:
                if self._stopping.is_set():
                    return
                self._fail(f"ConfigMap {self.namespace}/{self.name}: {type(exc).__name__}: {exc}")
                # A network failure loses nothing: resume from the last resourceVersion.
                need_list = need_list or self.resource_version is None
            if self._stopping.wait(backoff * (0.5 + random.random())):
                return
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _list(self) -> None:
        result = self._core.list_namespaced_config_map(
            self.namespace,
            field_selector=f"metadata.name={self.name}",
            _request_timeout=(5, 15),
        )
        self.resource_version = result.metadata.resource_version if result.metadata else None
        if result.items:
            item = result.items[0]
            rv = item.metadata.resource_version if item.metadata else None
            self._apply_data(item.data or {}, rv)
        else:
            log.info("ConfigMap %s/%s does not exist yet", self.namespace, self.name)
            if self._last is None:
                self._emit(self._fallback)
        self.synced.set()

    def _watch_once(self) -> None:
        from kubernetes import watch  # noqa: PLC0415

        watch_module: Any = watch
        self._watch = watch_module.Watch()
        stream = self._watch.stream(
            self._core.list_namespaced_config_map,
            self.namespace,
            field_selector=f"metadata.name={self.name}",
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_TIMEOUT_SECONDS,
            _request_timeout=(5, WATCH_TIMEOUT_SECONDS + 15),
            # Not deserialize=False: with it, kubernetes-client's stream fails on the ERROR
            # event of an expired watch with KeyError('raw_object') instead of raising
            # ApiException(410), so "410 Gone" was never recognised. The dict is in
            # ``raw_object`` either way.
        )
        for event in stream:
            if self._stopping.is_set():
                return
            kind = event.get("type")
            obj = event.get("raw_object") or {}
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if kind == "ERROR":
                from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

                raise ApiException(status=obj.get("code"), reason=obj.get("message"))
            if rv:
                self.resource_version = rv
            if kind in ("ADDED", "MODIFIED"):
                self._apply_data(obj.get("data") or {}, rv)
            elif kind == "DELETED":
                log.warning(
                    "ConfigMap %s/%s was deleted; keeping the last configuration",
                    self.namespace,
                    self.name,
                )

    def _apply_data(self, data: dict[str, str], rv: str | None) -> None:
        where = f"ConfigMap {self.namespace}/{self.name} (resourceVersion {rv}) key {CONFIGMAP_KEY}"
        raw = data.get(CONFIGMAP_KEY)
        if raw is None:
            self._fail(f"{where} is missing")
            if self._last is None:
                self._emit(self._fallback)
            return
        try:
            config = parse_document(raw, where=where)
        except ValueError as exc:
            self._fail(str(exc))
            if self._last is None:
                self._emit(self._fallback)
            return
        self.last_error = None
        self._emit(config)
