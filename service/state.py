"""The serving state and how a new configuration becomes it, off the request path.

A request reads :attr:`ServingStateStore.current` once and uses that one immutable
:class:`ServingState` (configuration, loaded models, router) from start to end, so a
reconfiguration never shows it half a configuration. A new configuration is handed to
:meth:`ServingStateStore.submit`; a background thread loads the versions it names (reusing
those already loaded; a version never changes once published), builds the next state and
swaps it in with one attribute assignment. Configurations that arrive while a load runs
are coalesced: the newest wins.

A version that fails to load is recorded (``load_errors``, the
``modelrollout_model_load_errors_total`` counter, the pod report) and never serves; the
router sends its traffic to the next one down (candidate -> stable -> rules). While a
configured version is failing, it is retried every ``retry_seconds``.

The generation of a configuration is *applied* (reported, and what readiness waits for)
only once every version it names has loaded or failed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Final

from service.artifact import ArtifactError
from service.metric_names import Source
from service.metrics import ServiceMetrics
from service.models import LoadedModel, load_model
from service.routing import Router
from service.serving_config import PodReport, ServingConfig, SuggestMode

log = logging.getLogger(__name__)

KNOWN_VERSIONS_LIMIT: Final = 32
MODEL_ROLES: Final = (Source.STABLE, Source.CANDIDATE)


@dataclass(frozen=True)
class ServingState:
    """What one pod serves right now. Immutable: a change is a new state."""

    config: ServingConfig
    models: Mapping[Source, LoadedModel]
    load_errors: Mapping[str, str]
    router: Router
    applied: bool
    applied_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def initial(cls) -> ServingState:
        """Rules only, not yet configured (so not ready)."""
        config = ServingConfig()
        return cls(
            config=config,
            models=MappingProxyType({}),
            load_errors=MappingProxyType({}),
            router=Router.build(config, frozenset()),
            applied=False,
        )

    def configured(self, role: Source) -> str | None:
        return self.config.stable if role is Source.STABLE else self.config.candidate

    @property
    def loaded_versions(self) -> dict[Source, str]:
        return {role: model.version for role, model in self.models.items()}

    @property
    def ready(self) -> bool:
        """Configured, and (in ``model`` mode) the stable model loaded: the model is required."""
        if not self.applied:
            return False
        if self.config.mode is SuggestMode.MODEL and self.config.enabled and self.config.stable:
            return Source.STABLE in self.models
        return True

    def report(self, pod: str) -> PodReport:
        return PodReport(
            pod=pod,
            generation=self.config.generation,
            rollout=self.config.rollout,
            loaded={role.value: version for role, version in self.loaded_versions.items()},
            load_errors=dict(self.load_errors),
        )


Listener = Callable[[ServingState], None]


class ServingStateStore:
    """Holds the current :class:`ServingState` and applies new configurations in the background."""

    def __init__(
        self,
        models_root: Path,
        metrics: ServiceMetrics,
        *,
        num_threads: int = 1,
        retry_seconds: float = 30.0,
        compile_cache: Path | None = None,
        published_trees: bool = True,
    ) -> None:
        self.models_root = models_root
        self._published_trees = published_trees
        self._compile_cache = compile_cache
        self._compile_lock = threading.Lock()  # one compilation at a time: one core at most
        self.current: ServingState = ServingState.initial()
        self._metrics = metrics
        self._num_threads = num_threads
        self._retry_seconds = retry_seconds
        self._cond = threading.Condition()
        self._pending: ServingConfig | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._listeners: list[Listener] = []
        self._known: deque[str] = deque(maxlen=KNOWN_VERSIONS_LIMIT)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="model-loader", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def add_listener(self, listener: Listener) -> None:
        """Called (on the loader thread) after each state is swapped in."""
        self._listeners.append(listener)

    # -- configuration -----------------------------------------------------------------

    def submit(self, config: ServingConfig) -> None:
        """Apply ``config`` soon, off the caller's thread. The newest submission wins."""
        with self._cond:
            self._pending = config
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[ServingState], bool], timeout: float) -> bool:
        """Block until ``predicate(current)`` holds or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.current):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    @property
    def known_versions(self) -> frozenset[str]:
        """Versions this process has been configured with lately (bounds feedback labels)."""
        return frozenset(self._known)

    def apply(self, config: ServingConfig) -> ServingState:
        """Load what ``config`` names and swap the new state in (on the caller's thread)."""
        previous = self.current
        reusable = {model.version: model for model in previous.models.values()}
        models: dict[Source, LoadedModel] = {}
        errors: dict[str, str] = {}
        for role in MODEL_ROLES:
            version = config.stable if role is Source.STABLE else config.candidate
            if version is None:
                continue
            if version not in self._known:
                self._known.append(version)
            model = reusable.get(version)
            if model is None and version not in errors:
                model = self._load(version, errors)
                if model is not None:
                    reusable[version] = model
            if model is not None:
                models[role] = model
        state = ServingState(
            config=config,
            models=MappingProxyType(models),
            load_errors=MappingProxyType(errors),
            router=Router.build(config, frozenset(models)),
            applied=True,
        )
        self._metrics.prime_versions((role, m.version) for role, m in models.items())
        self._metrics.set_loaded(state.loaded_versions)
        self._metrics.set_generation(config.rollout, config.generation)
        with self._cond:
            self.current = state
            self._cond.notify_all()
        log.info(
            "applied generation %d of %s: loaded %s%s",
            config.generation,
            config.rollout or "(no rollout)",
            {r.value: v for r, v in state.loaded_versions.items()} or "nothing (rules only)",
            f", load errors {dict(errors)}" if errors else "",
        )
        for listener in self._listeners:
            try:
                listener(state)
            except Exception:
                log.exception("a state listener failed")
        return state

    def _load(self, version: str, errors: dict[str, str]) -> LoadedModel | None:
        try:
            model = load_model(
                self.models_root,
                version,
                num_threads=self._num_threads,
                published_trees=self._published_trees,
            )
            self._report_published(model)
            if self._compile_cache is not None:
                threading.Thread(
                    target=self._accelerate,
                    args=(model, self._compile_cache),
                    name=f"compile-{version}",
                    daemon=True,
                ).start()
            return model
        except ArtifactError as exc:
            reason = exc.reason
        except Exception as exc:  # any failure to load is a load error, never a crash
            reason = f"{type(exc).__name__}: {exc}"
        errors[version] = reason[:1000]
        self._metrics.model_load_errors.labels(version).inc()
        log.error("model version %s will not serve: %s", version, reason)
        return None

    def _report_published(self, model: LoadedModel) -> None:
        if model.manifest.compiled_trees is None or not self._published_trees:
            return
        if model.scorer == "compiled":
            self._metrics.compile_results.labels("published").inc()
            log.info("model version %s: %s", model.version, model.scorer_detail)
        else:
            self._metrics.compile_results.labels("failed").inc()
            log.warning("model version %s: %s", model.version, model.scorer_detail)

    def _accelerate(self, model: LoadedModel, cache: Path) -> None:
        """Compile one version's trees (off the request path); it serves meanwhile."""
        with self._compile_lock:
            if self._stopping:
                return
            try:
                detail = model.accelerate(cache)
            except Exception as exc:  # the version keeps serving from LightGBM
                log.warning(
                    "model version %s stays on LightGBM's predictor: %s", model.version, exc
                )
                self._metrics.compile_results.labels("failed").inc()
                return
        self._metrics.compile_results.labels("compiled").inc()
        log.info("model version %s: %s", model.version, detail)

    # -- the loader thread -------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                retry_at = (
                    time.monotonic() + self._retry_seconds if self.current.load_errors else None
                )
                while self._pending is None and not self._stopping:
                    timeout = None if retry_at is None else retry_at - time.monotonic()
                    if timeout is not None and timeout <= 0:
                        break
                    self._cond.wait(timeout)
                if self._stopping:
                    return
                config = self._pending if self._pending is not None else self.current.config
                self._pending = None
            try:
                self.apply(config)
            except Exception:
                log.exception("applying generation %d failed", config.generation)
