"""``python -m controller`` / ``modelrollout-controller``: run the ModelRollout operator.

Examples::

    modelrollout-controller --all-namespaces --peering=modelrollout   # in a cluster
    python -m controller --standalone --namespace=default \\
        --kubeconfig=$KUBECONFIG --prometheus-url=http://127.0.0.1:9090 --metrics-port=0
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import kopf

from controller.handlers import Controller, Settings, register


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
    peering = p.add_mutually_exclusive_group()
    peering.add_argument(
        "--peering",
        default=env("MODELROLLOUT_PEERING"),
        help="kopf peering object name: only one replica acts at a time",
    )
    peering.add_argument(
        "--standalone", action="store_true", help="no peering (tests, single replica)"
    )
    p.add_argument("--priority", type=int, default=0, help="peering priority")
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
        )
    )
    registry = kopf.OperatorRegistry()
    register(registry, controller)
    namespaces = args.namespace
    asyncio.run(
        kopf.operator(
            registry=registry,
            standalone=args.standalone or not args.peering,
            peering_name=args.peering,
            priority=args.priority,
            clusterwide=not namespaces,
            namespaces=namespaces,
        )
    )


if __name__ == "__main__":
    main()
