"""Process settings (pydantic-settings) and the original system's ``SUGGEST_*`` variables.

Settings of the process (read once at start):

===============================  ========================================================
variable                         meaning
===============================  ========================================================
MODELROLLOUT_TARGET              name of the suggestion target (default ``suggest``); the
                                 ConfigMap ``<target>-serving`` and Leases derive from it
MODELROLLOUT_NAMESPACE           namespace of the ConfigMap and Leases; set -> cluster mode
MODELROLLOUT_MODELS_ROOT         directory holding the model versions (default ``/models``)
MODELROLLOUT_CONFIG_FILE         a JSON or YAML ServingConfig, re-read when it changes
MODELROLLOUT_CONFIG_SOURCE       ``auto`` (default), ``kube``, ``file`` or ``env``
POD_NAME                         this pod's name, for its Lease (default: the host name)
KUBECONFIG                       kubeconfig path when not running in a cluster
MODELROLLOUT_EVENT_KEY           shared secret signing event ids (the chart generates
                                 one into a Secret; unset: ids are trusted unsigned)
MODELROLLOUT_EVENT_TTL_SECONDS   feedback on an id older than this is refused (default
                                 3600; service/events.py)
MODELROLLOUT_PREDICT_THREADS     LightGBM threads per prediction (default 1)
MODELROLLOUT_INLINE_ROWS         requests up to this many rows are answered on the event
                                 loop; larger ones on a worker thread (default 64)
MODELROLLOUT_COALESCE            answer small requests ready together in one evaluation
                                 (default true; service/coalesce.py)
MODELROLLOUT_SHADOW_BATCH_ROWS   the shadow's worker thread evaluates a group once this
                                 many rows wait, or the oldest waited 50 ms (default 128;
                                 service/shadow.py)
MODELROLLOUT_SHADOW_CPU_SHARE    share of one core the shadow's worker may use (default
                                 0.25); what it cannot take is shed and counted
MODELROLLOUT_SHADOW_IDLE_PRIORITY the shadow's worker runs at the idle scheduling class
                                 (SCHED_IDLE, else nice 19): it gets a core only when
                                 serving does not want one (default true)
MODELROLLOUT_SHADOW_QUEUE_ROWS   shadow rows that may wait for the worker (default 4096)
MODELROLLOUT_SHADOW_PROCESS      evaluate the shadow's model in a child process (default
                                 true; service/shadow_process.py); false: on the worker
                                 thread of the serving process
MODELROLLOUT_REPORT              write the pod report Lease in cluster mode (default true)
MODELROLLOUT_OPENTELEMETRY       FastAPI's native OpenTelemetry spans, metrics and logs of
                                 requests, to the providers the process configures (default
                                 false: Prometheus ``/metrics`` is the service's telemetry,
                                 and FastAPI checks for providers on every request)
MODELROLLOUT_FAULTS              rollback drills: per model version, CPU burned in its
                                 scoring calls (``burn``, ``fraction``) and one category
                                 answered as another (``relabel``); JSON, service/faults.py
MODELROLLOUT_FAULT_DELAY         older drill knob: VERSION=SECONDS[,...], a ``burn`` of
                                 that many seconds on every call
===============================  ========================================================

``auto`` picks ``file`` when MODELROLLOUT_CONFIG_FILE is set, else ``kube`` when
MODELROLLOUT_NAMESPACE is set, else ``env``.

**The original variables** keep working. They describe the configuration used standalone
(source ``env``), and the one served in the other modes until the file or ConfigMap first
exists. :func:`legacy_serving_config` maps them onto a :class:`ServingConfig`:

=========================  ==================================================================
SUGGEST_ENABLED            ``enabled`` (0/1/true/false; default true). false: rules answer
SUGGEST_MODE               ``mode``: heuristic, model or auto (default auto)
SUGGEST_MODEL_PATH         the model version: a version directory (holding manifest.json)
                           -> models root = its parent, version = its name; or a models
                           root -> version = SUGGEST_MODEL_VERSION if set, else the newest
                           published version. Unset: MODELROLLOUT_MODELS_ROOT and
                           SUGGEST_MODEL_VERSION; neither: no model (rules only)
SUGGEST_SHADOW             0/1/true/false or ``"N%"``: ``shadow_percent`` 0, 100 or N
SUGGEST_USE_MODEL_CANARY   0/1/true/false or ``"N%"``. Off: the model is the ``stable``.
                           On: the model is the ``candidate`` with no stable, so it serves
                           the canary users and rules serve the others; the percent is N,
                           else SUGGEST_CANARY_PCT, else 10
SUGGEST_CANARY_PCT         ``canary_percent`` (``"10"`` or ``"10%"``) when the canary is on
SUGGEST_MIN_CONF           ``min_confidence`` (0..1)
SUGGEST_TOPK               ``top_k`` (1..20)
=========================  ==================================================================

With mode ``heuristic`` and SUGGEST_SHADOW=1, rules answer and the model runs in the
shadow of every request, compared with them (the original shadow mode).
"""

from __future__ import annotations

import socket
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Final

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.artifact import MANIFEST_FILE, list_versions
from service.faults import ENV_VAR as FAULTS_ENV
from service.faults import Fault, FaultError, merge_delays, parse_faults
from service.serving_config import ServingConfig, SuggestMode

DEFAULT_CANARY_PERCENT: Final = 10.0
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})


class SettingsError(ValueError):
    """A setting that cannot be used, naming the variable."""


class ConfigSourceKind(StrEnum):
    AUTO = "auto"
    KUBE = "kube"
    FILE = "file"
    ENV = "env"


def _default_compile_cache() -> Path:
    return Path(tempfile.gettempdir()) / "modelrollout-compiled"


class Settings(BaseSettings):
    """Everything the process reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="MODELROLLOUT_", extra="ignore", populate_by_name=True, frozen=True
    )

    target: str = Field(default="suggest", min_length=1, max_length=63)
    namespace: str | None = None
    models_root: Path = Path("/models")
    config_file: Path | None = None
    config_source: ConfigSourceKind = ConfigSourceKind.AUTO
    pod_name: str = Field(
        default_factory=socket.gethostname,
        validation_alias=AliasChoices("MODELROLLOUT_POD_NAME", "POD_NAME", "pod_name"),
    )
    kubeconfig: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("MODELROLLOUT_KUBECONFIG", "KUBECONFIG", "kubeconfig"),
    )
    event_key: SecretStr | None = None
    event_ttl_seconds: float = Field(
        default=3600.0,
        gt=0,
        le=30 * 86400,
        description="event ids expire this long after the answer (service/events.py)",
    )
    predict_threads: int = Field(default=1, ge=1, le=64)
    inline_rows: int = Field(default=64, ge=1)
    coalesce: bool = Field(
        default=True,
        description="answer small requests that are ready at the same time in one batch "
        "(service/coalesce.py); off: each request is evaluated alone",
    )
    shadow_batch_rows: int = Field(
        default=128,
        ge=1,
        le=1000,
        description="the shadow's worker evaluates a group once this many rows wait (or the "
        "oldest has waited 50 ms), off the request path (service/shadow.py)",
    )
    shadow_cpu_share: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="share of one core the shadow's worker may use (service/shadow.py); "
        "rows it cannot take are shed and counted",
    )
    shadow_idle_priority: bool = Field(
        default=True,
        description="run the shadow's worker thread at the idle scheduling class (Linux "
        "SCHED_IDLE, else nice 19): it gets a core only when serving does not want it",
    )
    shadow_process: bool = Field(
        default=True,
        description="evaluate the shadow's model in a child process of its own "
        "(service/shadow_process.py) rather than on a thread of the serving process: "
        "users' requests then share no GIL with the candidate",
    )
    shadow_queue_rows: int = Field(
        default=4096,
        ge=1,
        description="shadow rows that may wait for the worker; more are shed and counted",
    )
    report: bool = True
    opentelemetry: bool = Field(
        default=False,
        description="FastAPI's native OpenTelemetry instrumentation of requests (spans, "
        "metrics, logs to the configured providers); off, FastAPI skips its per-request check",
    )
    file_poll_seconds: float = Field(default=0.25, gt=0)
    load_retry_seconds: float = Field(default=30.0, gt=0)
    compile_models: bool = Field(
        default=False,
        description="compile each loaded version's trees to machine code (lleaves) in the "
        "background and serve from it once proven equal to LightGBM (the chart turns it on)",
    )
    compile_cache: Path | None = Field(
        default=None, description="where compiled trees are cached (default: a temp directory)"
    )
    published_trees: bool = Field(
        default=True,
        description="serve a version from the compiled trees its training Job published "
        "(trees.so, checked against LightGBM on probe rows at load); off: LightGBM's "
        "predictor always, and no library from the models volume is ever loaded",
    )
    fault_delay: str | None = Field(
        default=None,
        description="rollback drills (older form): VERSION=SECONDS[,VERSION=SECONDS...] burns "
        "that much CPU in every scoring call of that model version (service/faults.py)",
    )
    faults: str | None = Field(
        default=None,
        description='rollback drills: JSON {"<version>": {"burn": s, "fraction": f, '
        '"relabel": {"<category>": "<category>"}}} (service/faults.py)',
    )

    # The original system's variables, parsed by legacy_serving_config().
    suggest_enabled: str | None = Field(
        default=None, validation_alias=AliasChoices("SUGGEST_ENABLED", "suggest_enabled")
    )
    suggest_mode: str | None = Field(
        default=None, validation_alias=AliasChoices("SUGGEST_MODE", "suggest_mode")
    )
    suggest_model_path: Path | None = Field(
        default=None, validation_alias=AliasChoices("SUGGEST_MODEL_PATH", "suggest_model_path")
    )
    suggest_model_version: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SUGGEST_MODEL_VERSION", "suggest_model_version"),
    )
    suggest_shadow: str | None = Field(
        default=None, validation_alias=AliasChoices("SUGGEST_SHADOW", "suggest_shadow")
    )
    suggest_canary_pct: str | None = Field(
        default=None, validation_alias=AliasChoices("SUGGEST_CANARY_PCT", "suggest_canary_pct")
    )
    suggest_use_model_canary: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SUGGEST_USE_MODEL_CANARY", "suggest_use_model_canary"),
    )
    suggest_min_conf: str | None = Field(
        default=None, validation_alias=AliasChoices("SUGGEST_MIN_CONF", "suggest_min_conf")
    )
    suggest_topk: str | None = Field(
        default=None, validation_alias=AliasChoices("SUGGEST_TOPK", "suggest_topk")
    )

    def source_kind(self) -> ConfigSourceKind:
        """The configuration source, ``auto`` resolved."""
        if self.config_source is not ConfigSourceKind.AUTO:
            return self.config_source
        if self.config_file is not None:
            return ConfigSourceKind.FILE
        if self.namespace:
            return ConfigSourceKind.KUBE
        return ConfigSourceKind.ENV

    def fault_delays(self) -> dict[str, float]:
        """MODELROLLOUT_FAULT_DELAY parsed: version -> seconds (0 < seconds <= 10)."""
        name = "MODELROLLOUT_FAULT_DELAY"
        delays: dict[str, float] = {}
        for item in (self.fault_delay or "").split(","):
            if not item.strip():
                continue
            version, sep, seconds = item.partition("=")
            try:
                delay = float(seconds) if sep and version.strip() else float("nan")
            except ValueError:
                delay = float("nan")
            if not 0.0 < delay <= 10.0:
                raise SettingsError(
                    f"{name}={self.fault_delay!r}: expected VERSION=SECONDS[,...] with "
                    f"0 < SECONDS <= 10, got {item.strip()!r}"
                )
            delays[version.strip()] = delay
        return delays

    def fault_plan(self) -> dict[str, Fault]:
        """MODELROLLOUT_FAULTS and MODELROLLOUT_FAULT_DELAY together: version -> fault (an
        entry of MODELROLLOUT_FAULTS wins over a delay for the same version)."""
        try:
            faults = parse_faults(self.faults)
        except FaultError as exc:
            raise SettingsError(f"{FAULTS_ENV}={self.faults!r}: {exc}") from None
        return merge_delays(faults, self.fault_delays())

    def effective_compile_cache(self) -> Path | None:
        """Where compiled trees go, or None when compiling is off."""
        if not self.compile_models:
            return None
        return self.compile_cache or _default_compile_cache()

    def effective_models_root(self) -> Path:
        """MODELROLLOUT_MODELS_ROOT, unless SUGGEST_MODEL_PATH names a version or a root."""
        return _model_location(self)[0]


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name}={raw!r}: expected 0, 1, true or false")


def _percent(name: str, raw: str) -> float:
    try:
        value = float(raw.strip().removesuffix("%"))
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a percent such as 10 or 10%") from None
    if not 0.0 <= value <= 100.0:
        raise SettingsError(f"{name}={raw!r}: a percent must be within 0..100")
    return value


def _flag_or_percent(name: str, raw: str) -> tuple[bool, float | None]:
    """``"1"`` -> (True, None); ``"0"`` -> (False, None); ``"25%"`` -> (True, 25.0)."""
    if raw.strip().endswith("%"):
        pct = _percent(name, raw)
        return pct > 0, pct
    try:
        return _flag(name, raw), None
    except SettingsError:
        raise SettingsError(
            f"{name}={raw!r}: expected 0, 1, true, false or a percent like 10%"
        ) from None


def _model_location(settings: Settings) -> tuple[Path, str | None]:
    """(models root, version or None) from SUGGEST_MODEL_PATH / SUGGEST_MODEL_VERSION."""
    path = settings.suggest_model_path
    version = settings.suggest_model_version or None
    if path is None:
        return settings.models_root, version
    if (path / MANIFEST_FILE).is_file():
        return path.parent, path.name
    if version is not None:
        return path, version
    published = list_versions(path)
    if published:
        return path, published[-1]
    # Not there (yet): read it as a version directory, so the load error names it.
    return path.parent, path.name


def legacy_serving_config(settings: Settings) -> ServingConfig:
    """The :class:`ServingConfig` that the ``SUGGEST_*`` variables describe (generation 0).

    >>> s = Settings(suggest_mode="heuristic", suggest_shadow="1", suggest_model_version="v1")
    >>> c = legacy_serving_config(s)
    >>> c.mode.value, c.stable, c.shadow_percent
    ('heuristic', 'v1', 100.0)
    """
    fields: dict[str, object] = {}
    if settings.suggest_enabled is not None:
        fields["enabled"] = _flag("SUGGEST_ENABLED", settings.suggest_enabled)
    if settings.suggest_mode is not None:
        raw = settings.suggest_mode.strip().lower()
        try:
            fields["mode"] = SuggestMode(raw)
        except ValueError:
            allowed = ", ".join(m.value for m in SuggestMode)
            raise SettingsError(
                f"SUGGEST_MODE={settings.suggest_mode!r}: expected one of {allowed}"
            ) from None
    if settings.suggest_shadow is not None:
        on, pct = _flag_or_percent("SUGGEST_SHADOW", settings.suggest_shadow)
        fields["shadow_percent"] = pct if pct is not None else (100.0 if on else 0.0)
    if settings.suggest_min_conf is not None:
        try:
            fields["min_confidence"] = float(settings.suggest_min_conf)
        except ValueError:
            raise SettingsError(
                f"SUGGEST_MIN_CONF={settings.suggest_min_conf!r}: expected a number in 0..1"
            ) from None
    if settings.suggest_topk is not None:
        try:
            fields["top_k"] = int(settings.suggest_topk)
        except ValueError:
            raise SettingsError(
                f"SUGGEST_TOPK={settings.suggest_topk!r}: expected an integer in 1..20"
            ) from None

    _, version = _model_location(settings)
    canary_on, canary_pct = False, None
    if settings.suggest_use_model_canary is not None:
        canary_on, canary_pct = _flag_or_percent(
            "SUGGEST_USE_MODEL_CANARY", settings.suggest_use_model_canary
        )
    if canary_on:
        if version is None:
            raise SettingsError(
                "SUGGEST_USE_MODEL_CANARY is on but no model is named "
                "(set SUGGEST_MODEL_PATH or SUGGEST_MODEL_VERSION)"
            )
        if canary_pct is None:
            canary_pct = (
                _percent("SUGGEST_CANARY_PCT", settings.suggest_canary_pct)
                if settings.suggest_canary_pct is not None
                else DEFAULT_CANARY_PERCENT
            )
        fields["candidate"] = version
        fields["canary_percent"] = canary_pct
    elif version is not None:
        fields["stable"] = version
    try:
        return ServingConfig.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise SettingsError(
            f"the SUGGEST_* variables describe an invalid configuration: {problems}"
        ) from None
