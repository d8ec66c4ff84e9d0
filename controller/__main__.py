"""``python -m controller`` / ``modelrollout-controller``: run the ModelRollout operator.

Examples::

    modelrollout-controller --all-namespaces --leader-election-lease=modelrollout \\
        --leader-election-namespace=ml --leader-election-identity=$POD_NAME   # in a cluster
    python -m controller --standalone --namespace=default \\
        --kubeconfig=$KUBECONFIG --prometheus-url=http://127.0.0.1:9090 --metrics-port=0

With leader election every replica serves /metrics, /healthz and the webhook at once; only
the holder of the Lease runs the operator (kopf's watches, timers and handlers). A replica
that loses the Lease stops the operator and campaigns again (docs/decisions/0009).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from collections.abc import Sequence
from pathlib import Path

import kopf

from controller.handlers import Controller, Settings, register
from controller.leader import ElectionConfig, LeaderElector

log = logging.getLogger("controller")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="modelrollout-controller", description=__doc__.split("\n")[0])
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch this namespace (repeatable); default: all namespaces",
    )
    scope.add_argument("--all-namespaces", "-A", action="store_true")
    election = p.add_mutually_exclusive_group()
    election.add_argument(
        "--leader-election-lease",
        default=env("MODELROLLOUT_LEADER_ELECTION_LEASE"),
        help="name of the coordination.k8s.io Lease the replicas elect a leader on; "
        "only its holder acts",
    )
    election.add_argument(
        "--standalone", action="store_true", help="no leader election (one replica, tests)"
    )
    p.add_argument(
        "--leader-election-namespace",
        default=env("POD_NAMESPACE"),
        help="namespace of the Lease (default $POD_NAMESPACE)",
    )
    p.add_argument(
        "--leader-election-identity",
        default=env("POD_NAME"),
        help="this replica's holder identity (default $POD_NAME, else host name + random)",
    )
    p.add_argument(
        "--lease-duration",
        type=float,
        default=8.0,
        help="seconds a standby waits on an unrenewed Lease before taking it",
    )
    p.add_argument(
        "--renew-deadline",
        type=float,
        default=5.0,
        help="seconds the leader keeps acting without a successful renewal",
    )
    p.add_argument("--retry-period", type=float, default=1.0,
                   help="seconds between two acquire/renew attempts")  # fmt: skip
    p.add_argument(
        "--kubeconfig",
        default=env("KUBECONFIG"),
        help="kubeconfig file (default: in-cluster, then $KUBECONFIG, ~/.kube/config)",
    )
    p.add_argument(
        "--prometheus-url",
        default=env("MODELROLLOUT_PROMETHEUS_URL"),
        help="Prometheus for rollouts whose spec names none",
    )
    p.add_argument(
        "--tick",
        type=float,
        default=float(env("MODELROLLOUT_TICK", "2")),
        help="seconds between reconciliations of one rollout (default 2)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=int(env("MODELROLLOUT_METRICS_PORT", "8000")),
        help="port of /metrics and /healthz (0: off)",
    )
    p.add_argument(
        "--webhook-port",
        type=int,
        default=int(env("MODELROLLOUT_WEBHOOK_PORT", "8443")),
        help="port of the Alertmanager webhook (0: off)",
    )
    p.add_argument(
        "--webhook-token-file",
        type=Path,
        default=env("MODELROLLOUT_WEBHOOK_TOKEN_FILE"),
        help="file holding the webhook bearer token (else $MODELROLLOUT_WEBHOOK_TOKEN)",
    )
    p.add_argument(
        "--configmap-resync",
        type=float,
        default=30.0,
        help="seconds after which a serving ConfigMap is re-read to repair drift",
    )
    p.add_argument("--bind", default="0.0.0.0", help="address of the metrics and webhook ports")
    p.add_argument(
        "--log-level",
        default=env("MODELROLLOUT_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # kopf logs every handler run at INFO; its own chatter stays at WARNING unless debugging.
    if args.log_level != "debug":
        logging.getLogger("kopf").setLevel(logging.WARNING)
        logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # kopf's own login reads it too
    election = None
    if args.leader_election_lease and not args.standalone:
        if not args.leader_election_namespace:
            raise SystemExit("--leader-election-namespace (or $POD_NAMESPACE) is required")
        identity = args.leader_election_identity or (
            f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        )
        try:
            election = ElectionConfig(
                namespace=args.leader_election_namespace,
                name=args.leader_election_lease,
                identity=identity,
                lease_duration=args.lease_duration,
                renew_deadline=args.renew_deadline,
                retry_period=args.retry_period,
            )
        except ValueError as exc:
            raise SystemExit(str(exc)) from exc
    controller = Controller(
        Settings(
            tick=args.tick,
            prometheus_url=args.prometheus_url,
            kubeconfig=args.kubeconfig,
            metrics_port=args.metrics_port,
            webhook_port=args.webhook_port,
            webhook_token_file=args.webhook_token_file,
            bind=args.bind,
            configmap_ttl=args.configmap_resync,
            namespaces=tuple(args.namespace),
        )
    )
    registry = kopf.OperatorRegistry()
    register(registry, controller)
    asyncio.run(run(controller, registry, election))


async def run(
    controller: Controller, registry: kopf.OperatorRegistry, election: ElectionConfig | None
) -> None:
    """Serve the ports; run the operator always (standalone) or while holding the Lease."""
    namespaces = list(controller.settings.namespaces)
    await controller.start()
    main_task = asyncio.current_task()
    loop = asyncio.get_running_loop()

    def on_signals() -> None:
        # kopf installs its own handlers while it runs; a standby needs these.
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, lambda: main_task and main_task.cancel())

    on_signals()

    async def operate(stop: asyncio.Event) -> None:
        await kopf.operator(
            registry=registry,
            standalone=True,  # one replica acts by the Lease, not by kopf's peering
            clusterwide=not namespaces,
            namespaces=namespaces,
            stop_flag=stop,
        )

    elector = None
    try:
        if election is None:
            await operate(asyncio.Event())
            return
        assert controller.kube is not None
        elector = LeaderElector(controller.kube, election)
        controller.leader = elector
        campaign = asyncio.create_task(elector.run(), name="leader-election")
        while True:
            while not elector.is_leader():
                elector.changed.clear()
                await elector.changed.wait()
            stop = asyncio.Event()
            operator = asyncio.create_task(operate(stop), name="operator")
            while elector.is_leader() and not operator.done():
                elector.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(elector.changed.wait(), timeout=1.0)
            stop.set()
            await asyncio.wait([operator])
            on_signals()
            if campaign.done():
                campaign.result()  # re-raise what stopped the campaign
            if elector.is_leader():
                # The operator ended by itself (a signal, or a fatal error): exit.
                operator.result()
                return
            log.warning("operator stopped; standing by for the Lease")
    finally:
        if elector is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(elector.release())
        await controller.stop()


if __name__ == "__main__":
    main()
