"""kopf adapters: observe, call :func:`controller.decide.decide`, execute. No decisions here.

One reconciliation of one ModelRollout (:meth:`Controller.reconcile`), under a per-object
lock, runs

1. parse spec and status into the typed models (an invalid spec: status message, and
   ``kopf.PermanentError``);
2. observe: live pod reports from the Lease index (kopf keeps it from a watch, so a tick
   makes no API call for them), the target's ConfigMap (cached; re-read every
   ``configmap_ttl`` seconds and after each write), and Prometheus when an analysis is due;
3. ``decide``;
4. execute: status in ONE merge patch carrying the resourceVersion the decision read (a
   stale decision gets 409 and is dropped), then Events, metrics, then the ConfigMap.

Triggers: a kopf timer every ``tick`` seconds per rollout (level-based: time-driven steps,
analyses, repairs), and the watch itself (``on.event``) when a change needs an answer now:
a new generation of the spec, a new alert from the webhook, a promote or abort request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import kopf
from aiohttp import web

from controller import metrics
from controller.decide import Observed, Plan, analysis_due, converged, decide
from controller.kube import Kube, KubeError, kopf_error, merge_patch, owner_reference
from controller.leader import LeaderElector
from controller.model import (
    ABORT_ANNOTATION,
    GROUP,
    KIND,
    PLURAL,
    PROMOTE_ANNOTATION,
    VERSION,
    AnalysisResult,
    ReceivedAlert,
    RolloutSpec,
    RolloutStatus,
    SpecError,
    parse_spec,
    parse_status,
    utcnow,
)
from controller.prometheus import Prometheus, run_analysis
from controller.webhook import RolloutRef, TokenSource, record_alert, webhook_app
from service.serving_config import (
    CONFIGMAP_KEY,
    REPORT_ANNOTATION,
    ROLLOUT_LABEL,
    TARGET_LABEL,
    PodReport,
    ServingConfig,
    configmap_name,
)

log = logging.getLogger(__name__)

EVENT_MESSAGE_LIMIT = 1000


@dataclass(frozen=True)
class LeaseReport:
    """One pod's report, as the Lease index keeps it."""

    expires: float
    """Unix time after which the Lease belongs to a gone pod."""
    report: PodReport


@dataclass
class _ServingState:
    doc: ServingConfig | None
    owner_uid: str | None
    owner_name: str | None
    exists: bool
    fetched: float


@dataclass
class Settings:
    tick: float = 2.0
    prometheus_url: str | None = None
    configmap_ttl: float = 30.0
    kubeconfig: str | None = None
    metrics_port: int = 8000
    webhook_port: int = 8443
    webhook_token_file: Path | None = None
    bind: str = "0.0.0.0"
    namespaces: tuple[str, ...] = ()
    """Watched namespaces; empty: all. The webhook lists rollouts in these."""


@dataclass
class Controller:
    """State shared by the handlers of one operator process."""

    settings: Settings
    kube: Kube | None = None
    prometheus: Prometheus | None = None
    http: httpx.AsyncClient | None = None
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    written: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    """uid -> (resourceVersion our last status patch was made on, the object it returned)."""
    serving: dict[tuple[str, str], _ServingState] = field(default_factory=dict)
    rollouts: dict[str, RolloutRef] = field(default_factory=dict)
    phases: dict[str, tuple[str, float, float]] = field(default_factory=dict)
    runners: list[web.AppRunner] = field(default_factory=list)
    leader: LeaderElector | None = None
    """None: standalone (one replica); else only the Lease holder may write."""
    analysing: set[str] = field(default_factory=set)
    """uids whose Prometheus query is running (outside the per-rollout lock)."""

    def may_act(self) -> bool:
        """Whether this replica may write decisions now (standalone, or holding the Lease)."""
        return self.leader is None or self.leader.is_leader()

    async def start(self) -> None:
        self.kube = Kube.connect(self.settings.kubeconfig)
        self.http = httpx.AsyncClient(limits=httpx.Limits(max_connections=50))
        self.prometheus = Prometheus(self.http)
        s = self.settings
        if s.metrics_port:
            await self._serve(metrics.metrics_app(), s.metrics_port)
        if s.webhook_port:
            tokens = TokenSource(s.webhook_token_file)
            if tokens.current() is None:
                log.warning("no webhook token configured: every webhook request gets 401")
            await self._serve(
                webhook_app(tokens, self.list_rollouts, self.record_alert), s.webhook_port
            )

    async def _serve(self, app: web.Application, port: int) -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.settings.bind, port).start()
        self.runners.append(runner)
        log.info(
            "serving %s on %s:%d",
            sorted(r.canonical for r in app.router.resources()),
            self.settings.bind,
            port,
        )

    async def stop(self) -> None:
        for runner in self.runners:
            await runner.cleanup()
        if self.kube is not None:
            await self.kube.aclose()
        if self.http is not None:
            await self.http.aclose()

    # ------------------------------------------------------------------ bookkeeping

    def remember(self, body: Mapping[str, Any]) -> None:
        """Keep the rollouts kopf has shown us (bookkeeping for ``forget``)."""
        self.rollouts[body["metadata"]["uid"]] = rollout_ref(body)

    def forget(self, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        uid = meta["uid"]
        for store in (self.rollouts, self.written, self.phases, self.locks):
            store.pop(uid, None)
        metrics.forget(meta["namespace"], meta["name"])

    async def list_rollouts(self) -> list[RolloutRef]:
        """Every ModelRollout in the watched namespaces, read from the API server now.

        The webhook matches against this live list, not against what a watch has shown
        this replica: a standby (which runs no watch) and a replica that just started match
        exactly as the leader does. A failed list raises :class:`KubeError` (the webhook
        answers 503 and Alertmanager retries).
        """
        assert self.kube is not None
        return [rollout_ref(b) for b in await self.kube.list_rollouts(self.settings.namespaces)]

    async def record_alert(self, ref: RolloutRef, alert: ReceivedAlert) -> bool:
        assert self.kube is not None
        return await record_alert(self.kube, ref, alert)

    def _freshest(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The object as we last wrote it, when the watch has not shown our write yet."""
        uid = body["metadata"]["uid"]
        seen = self.written.get(uid)
        if seen is not None:
            if body["metadata"].get("resourceVersion") == seen[0]:
                return seen[1]
            del self.written[uid]
        return dict(body)

    # ------------------------------------------------------------------ observing

    @staticmethod
    def live_reports(
        index: Mapping[tuple[str, str], Iterable[LeaseReport]],
        namespace: str,
        target: str,
        now: float,
    ) -> list[PodReport]:
        found = index.get((namespace, target), ())
        return [r.report for r in found if r.expires > now]

    async def _serving_state(self, namespace: str, target: str) -> _ServingState:
        key = (namespace, target)
        state = self.serving.get(key)
        if state is not None and time.monotonic() - state.fetched < self.settings.configmap_ttl:
            return state
        assert self.kube is not None
        cm = await self.kube.get_configmap(namespace, configmap_name(target))
        state = _ServingState(None, None, None, cm is not None, time.monotonic())
        if cm is not None:
            raw = (cm.get("data") or {}).get(CONFIGMAP_KEY)
            if raw:
                try:
                    state.doc = ServingConfig.from_json(raw)
                except ValueError:
                    log.warning("ConfigMap %s/%s holds an invalid document", namespace, target)
            for ref in cm["metadata"].get("ownerReferences") or []:
                if ref.get("kind") == KIND and ref.get("apiVersion", "").startswith(GROUP):
                    state.owner_uid, state.owner_name = ref.get("uid"), ref.get("name")
        self.serving[key] = state
        return state

    async def _analyse(
        self, spec: RolloutSpec, status: RolloutStatus, now: datetime
    ) -> AnalysisResult | None:
        assert self.prometheus is not None
        if status.candidate_version is None:
            return None
        return await run_analysis(
            self.prometheus,
            spec.analysis.prometheus_url or self.settings.prometheus_url,
            spec.analysis,
            candidate=status.candidate_version,
            stable=status.stable_version,
            candidate_since=status.candidate_since,
            now=now,
        )

    # ------------------------------------------------------------------ reconciling

    def needs_attention(self, body: Mapping[str, Any]) -> bool:
        """Whether a watch event must be answered now rather than at the next tick."""
        meta = body["metadata"]
        raw_status = body.get("status") or {}
        if meta.get("generation") != raw_status.get("observedGeneration"):
            return True
        handled = set(raw_status.get("handledAlerts") or [])
        for alert in raw_status.get("alerts") or []:
            if f"{alert.get('fingerprint')}@{alert.get('startsAt', '')}" not in handled:
                return True
        annotations = meta.get("annotations") or {}
        for key, done in (
            (PROMOTE_ANNOTATION, "handledPromote"),
            (ABORT_ANNOTATION, "handledAbort"),
        ):
            token = annotations.get(key)
            if token and token != raw_status.get(done):
                return True
        return False

    async def reconcile(
        self,
        body: Mapping[str, Any],
        index: Mapping[tuple[str, str], Iterable[LeaseReport]],
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> None:
        if not self.may_act():
            return
        uid = body["metadata"]["uid"]
        # The Prometheus query runs OUTSIDE the per-rollout lock: an alert, an abort or a
        # spec change handled on the watch never waits behind a slow Prometheus. A result
        # is counted once, by its time (decide), so one computed on an older status is safe.
        result = None
        if uid not in self.analysing:
            self.analysing.add(uid)
            try:
                result = await self._analysis_if_due(self._freshest(body), index)
            finally:
                self.analysing.discard(uid)
        lock = self.locks.setdefault(uid, asyncio.Lock())
        async with lock:
            started = time.perf_counter()
            try:
                await self._reconcile(body, index, logger, result)
            finally:
                metrics.TICK_SECONDS.observe(time.perf_counter() - started)

    async def _analysis_if_due(
        self, body: Mapping[str, Any], index: Mapping[tuple[str, str], Iterable[LeaseReport]]
    ) -> AnalysisResult | None:
        try:
            spec = parse_spec(dict(body.get("spec") or {}))
        except SpecError:
            return None
        status = parse_status(dict(body.get("status") or {}))
        now = utcnow()
        reports = self.live_reports(index, body["metadata"]["namespace"], spec.target,
                                    now.timestamp())  # fmt: skip
        if not analysis_due(spec, status, now, converged(reports, status.serving_generation)):
            return None
        return await self._analyse(spec, status, now)

    async def _reconcile(
        self,
        kopf_body: Mapping[str, Any],
        index: Mapping[tuple[str, str], Iterable[LeaseReport]],
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
        result: AnalysisResult | None = None,
    ) -> None:
        assert self.kube is not None
        body = self._freshest(kopf_body)
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        raw_status: dict[str, Any] = dict(body.get("status") or {})
        status = parse_status(raw_status)
        try:
            spec = parse_spec(dict(body.get("spec") or {}))
        except SpecError as exc:
            await self._report_invalid_spec(body, raw_status, str(exc))
            raise kopf.PermanentError(f"invalid spec: {exc}") from exc

        now = utcnow()
        reports = self.live_reports(index, ns, spec.target, now.timestamp())
        try:
            state = await self._serving_state(ns, spec.target)
        except KubeError as exc:
            raise kopf_error(exc, "reading the serving ConfigMap") from exc
        conflict = None
        if state.owner_uid is not None and state.owner_uid != meta["uid"]:
            conflict = f"{ns}/{state.owner_name}"

        if conflict is not None:
            result = None
        annotations = meta.get("annotations") or {}
        observed = Observed(
            generation=meta.get("generation"),
            reports=reports,
            analysis=result,
            alerts=status.alerts,
            promote_token=annotations.get(PROMOTE_ANNOTATION),
            abort_token=annotations.get(ABORT_ANNOTATION),
            in_cluster=state.doc,
            conflict=conflict,
        )
        plan = decide(spec, status, observed, utcnow(), rollout=f"{ns}/{name}")

        if not self.may_act():
            return  # leadership lapsed while deciding: the new leader decides again
        if not await self._write_status(body, raw_status, status, plan, logger):
            return
        self._publish(kopf_body, plan, ns, name, uid=meta["uid"])
        if plan.serving is not None and self.may_act():
            try:
                await self._ensure_configmap(ns, spec.target, plan.serving, body)
            except KubeError as exc:
                raise kopf_error(exc, "writing the serving ConfigMap") from exc

    async def _write_status(
        self,
        body: dict[str, Any],
        raw_status: dict[str, Any],
        status: RolloutStatus,
        plan: Plan,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> bool:
        """Patch status if it changed; False when the object moved under the decision."""
        assert self.kube is not None
        new = plan.status.dump()
        if new == status.dump():
            return True
        meta = body["metadata"]
        old = {k: v for k, v in raw_status.items() if k != "alerts"}
        new.pop("alerts", None)
        patch = merge_patch(old, new)
        try:
            written = await self.kube.patch_rollout_status(
                meta["namespace"], meta["name"], patch, meta.get("resourceVersion")
            )
        except KubeError as exc:
            if exc.conflict:
                logger.debug("status moved under the decision; the next tick decides again")
                return False
            raise kopf_error(exc, "writing status") from exc
        self.written[meta["uid"]] = (meta.get("resourceVersion", ""), written)
        return True

    async def _report_invalid_spec(
        self, body: dict[str, Any], raw_status: dict[str, Any], message: str
    ) -> None:
        assert self.kube is not None
        text = f"invalid spec: {message}"[:EVENT_MESSAGE_LIMIT]
        if raw_status.get("message") == text:
            return
        meta = body["metadata"]
        try:
            await self.kube.patch_rollout_status(
                meta["namespace"], meta["name"], {"message": text}, None
            )
        except KubeError as exc:
            log.warning("could not report an invalid spec: %s", exc)

    def _publish(
        self, kopf_body: Mapping[str, Any], plan: Plan, ns: str, name: str, *, uid: str
    ) -> None:
        """Events and metrics of a plan that was written."""
        for ev in plan.events:
            kopf.event(
                kopf_body,  # type: ignore[arg-type]
                type=ev.type,
                reason=ev.reason,
                message=ev.message[:EVENT_MESSAGE_LIMIT],
            )
        for d in plan.decisions:
            metrics.TRANSITIONS.labels(d.to_phase, d.reason).inc()
        if plan.analysis_counted is not None:
            metrics.ANALYSES.labels(plan.analysis_counted.value).inc()
        if plan.rollback_reason is not None:
            metrics.ROLLBACKS.labels(plan.rollback_reason).inc()
        st = plan.status
        shown = (st.phase.value, st.canary_percent, st.shadow_percent)
        if self.phases.get(uid) != shown:
            self.phases[uid] = shown
            metrics.set_phase(ns, name, st.phase, st.canary_percent, st.shadow_percent)

    async def _ensure_configmap(
        self, ns: str, target: str, serving: ServingConfig, body: dict[str, Any]
    ) -> None:
        """Write the serving document unless the ConfigMap already holds exactly it."""
        assert self.kube is not None
        state = await self._serving_state(ns, target)
        uid = body["metadata"]["uid"]
        if state.doc == serving and state.owner_uid == uid:
            return
        written = await self.kube.put_configmap(
            ns,
            configmap_name(target),
            data={CONFIGMAP_KEY: serving.to_json()},
            labels={ROLLOUT_LABEL: body["metadata"]["name"], TARGET_LABEL: target},
            owner=owner_reference(body),
            exists=state.exists,
        )
        self.serving[(ns, target)] = _ServingState(
            doc=ServingConfig.from_json(written["data"][CONFIGMAP_KEY]),
            owner_uid=uid,
            owner_name=body["metadata"]["name"],
            exists=True,
            fetched=time.monotonic(),
        )

    async def finalize(self, body: Mapping[str, Any]) -> str | None:
        """A deleted rollout hands its target back to the stable version (or rules).

        Without this the ConfigMap would be garbage-collected with its owner and the pods,
        which keep the last configuration when it disappears, would go on serving the
        candidate. Instead the ConfigMap is rewritten with the stable version only and
        released (no ownerReference), so it survives as the target's known-good serving
        configuration; the next rollout of the target adopts it. Returns what it did.
        """
        if not self.may_act():
            raise kopf.TemporaryError("not the leader; the leader finalizes", delay=2)
        assert self.kube is not None
        meta = body["metadata"]
        ns, uid = meta["namespace"], meta["uid"]
        target = (body.get("spec") or {}).get("target")
        if not isinstance(target, str) or not target:
            return None
        self.serving.pop((ns, target), None)
        try:
            state = await self._serving_state(ns, target)
        except KubeError as exc:
            raise kopf_error(exc, "reading the serving ConfigMap") from exc
        if state.owner_uid != uid:
            return None  # not ours (a conflicting rollout, or already released)
        status = parse_status(dict(body.get("status") or {}))
        previous = state.doc.generation if state.doc is not None else 0
        served = status.serving
        doc = ServingConfig(
            rollout=None,
            generation=max(previous, status.serving_generation) + 1,
            stable=status.stable_version,
            candidate=None,
            shadow_percent=0.0,
            canary_percent=0.0,
            min_confidence=served.min_confidence if served else 0.0,
            top_k=served.top_k if served else 3,
        )
        try:
            await self.kube.release_configmap(
                ns, configmap_name(target), data={CONFIGMAP_KEY: doc.to_json()}
            )
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise kopf_error(exc, "releasing the serving ConfigMap") from exc
        self.serving.pop((ns, target), None)
        message = (
            f"rollout deleted: target {target!r} serves {doc.stable or 'rules'} only "
            f"(generation {doc.generation}); its ConfigMap is kept without an owner"
        )
        kopf.event(body, type="Normal", reason="Deleted", message=message)  # type: ignore[arg-type]
        return message


def rollout_ref(body: Mapping[str, Any]) -> RolloutRef:
    """What the webhook needs to match alerts to one ModelRollout (from its raw object)."""
    meta, spec = body["metadata"], body.get("spec") or {}
    alerts = spec.get("alerts") or {}
    return RolloutRef(
        namespace=meta["namespace"],
        name=meta["name"],
        enabled=bool(alerts.get("enabled", True)),
        match_labels=dict(alerts.get("matchLabels") or {}),
    )


def lease_report(
    namespace: str, labels: Mapping[str, str], annotations: Mapping[str, str], spec: Any
) -> dict[tuple[str, str], LeaseReport]:
    """The Lease index entry: (namespace, target) -> the pod's report and its expiry."""
    target = labels.get(TARGET_LABEL)
    raw = annotations.get(REPORT_ANNOTATION)
    if not target or not raw:
        return {}
    try:
        report = PodReport.model_validate(json.loads(raw))
    except ValueError:
        return {}
    renew = spec.get("renewTime") or spec.get("acquireTime")
    duration = float(spec.get("leaseDurationSeconds") or 0)
    if not renew:
        return {}
    try:
        renewed = datetime.fromisoformat(str(renew).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return {}
    return {(namespace, target): LeaseReport(expires=renewed + duration, report=report)}


def register(registry: kopf.OperatorRegistry, controller: Controller) -> None:
    """Register every handler of the operator on ``registry``."""
    tick = controller.settings.tick

    @kopf.on.startup(registry=registry)
    async def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix="kopf.modelrollout.io"
        )
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="kopf.modelrollout.io", key="last-handled-configuration"
        )
        settings.persistence.finalizer = "modelrollout.io/kopf-finalizer"
        # Our Events are explicit (kopf.event); kopf's log lines are not Events.
        settings.posting.loggers = False
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.networking.request_timeout = 30

    @kopf.on.login(registry=registry)
    def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # In a pod: the ServiceAccount; elsewhere: $KUBECONFIG (set from --kubeconfig).
        info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
        return info or kopf.login_with_kubeconfig(**kwargs)

    @kopf.index(
        "coordination.k8s.io",
        "v1",
        "leases",
        labels={TARGET_LABEL: kopf.PRESENT},
        registry=registry,
        id="pod_reports",
    )
    def _pod_reports(
        *,
        namespace: str | None,
        labels: Mapping[str, str],
        annotations: Mapping[str, str],
        spec: kopf.Spec,
        **_: Any,
    ) -> dict[tuple[str, str], LeaseReport]:
        return lease_report(namespace or "", labels, annotations, spec)

    def spread(**_: Any) -> float:
        # Start 200 timers over one tick, not all at once.
        return random.uniform(0, tick)

    @kopf.timer(
        GROUP, VERSION, PLURAL, interval=tick, initial_delay=spread, id="tick", registry=registry
    )
    async def _tick(*, body: kopf.Body, logger: Any, **kwargs: Any) -> None:
        await controller.reconcile(body, kwargs["pod_reports"], logger)

    @kopf.on.event(GROUP, VERSION, PLURAL, id="watch", registry=registry)
    async def _watch(*, event: kopf.RawEvent, body: kopf.Body, logger: Any, **kwargs: Any) -> None:
        pod_reports = kwargs["pod_reports"]
        if event["type"] == "DELETED":
            controller.forget(body)
            return
        if not body.get("metadata", {}).get("uid"):
            return
        controller.remember(body)
        if body["metadata"].get("deletionTimestamp"):
            return
        # event None: the initial listing (a start, or a new leader): act at once rather
        # than after the first timer interval.
        if event["type"] is None or controller.needs_attention(body):
            await controller.reconcile(body, pod_reports, logger)

    @kopf.on.delete(GROUP, VERSION, PLURAL, id="release", registry=registry)
    async def _release(*, body: kopf.Body, logger: Any, **_: Any) -> None:
        done = await controller.finalize(body)
        if done:
            logger.info(done)
