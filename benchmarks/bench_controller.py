"""One controller against many ModelRollouts on the local test bed; prints figures.

What it measures (DESIGN.md targets: 200 rollouts at a 10 s analysis interval within one
core and 300 MB; a spec change reaches every pod with p95 <= 2 s):

1. CPU (process CPU seconds / wall seconds) and RSS of ``python -m controller`` while it
   runs N rollouts (each its own target, analysing every 10 s against a real Prometheus,
   held in shadow so that every tick and every analysis keeps happening);
2. the time from ``kubectl apply`` of a spec change (shadow percent) to every pod's report
   Lease saying it serves the new generation. The pods are stand-ins that do what a
   suggestion pod does with the configuration: watch the ConfigMap through the API server
   and renew their Lease with the generation at once.

    .venv/bin/python benchmarks/bench_controller.py [--rollouts 200] [--measure 60]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, watch

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
from testbed.process import wait_until
from testbed.prometheus import Prometheus

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "crds" / "modelrollout.io_modelrollouts.yaml"
NS = "bench"


def rollout(name: str, target: str, prometheus_url: str, shadow: float = 100) -> dict[str, Any]:
    return {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "target": target,
            "model": {"version": "v2"},
            "shadow": {"percent": shadow, "passes": 1000},
            "analysis": {"prometheusURL": prometheus_url, "interval": "10s", "window": "1m"},
        },
    }


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class FakePod(threading.Thread):
    """Watch the target's ConfigMap; on each new document renew the Lease with its generation."""

    def __init__(self, api: client.ApiClient, target: str, pod: str) -> None:
        super().__init__(daemon=True)
        self.core = client.CoreV1Api(api)
        self.coord = client.CoordinationV1Api(api)
        self.target = target
        self.pod = pod
        self.generation = 0
        self.error: str | None = None

    def run(self) -> None:
        name = configmap_name(self.target)
        while True:
            try:
                stream = watch.Watch().stream(
                    self.core.list_namespaced_config_map,
                    NS,
                    field_selector=f"metadata.name={name}",
                    timeout_seconds=300,
                )
                for event in stream:
                    data = event["object"].data or {}
                    if CONFIGMAP_KEY in data:
                        doc = ServingConfig.from_json(data[CONFIGMAP_KEY])
                        if doc.generation != self.generation:
                            self.generation = doc.generation
                            self.report()
            except Exception:
                time.sleep(0.2)

    def report(self) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": lease_name(self.target, self.pod),
                "labels": {TARGET_LABEL: self.target},
                "annotations": {
                    REPORT_ANNOTATION: json.dumps({"pod": self.pod, "generation": self.generation})
                },
            },
            "spec": {
                "holderIdentity": self.pod,
                "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                "renewTime": now,
            },
        }
        try:
            self.coord.patch_namespaced_lease(lease_name(self.target, self.pod), NS, body)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            self.coord.create_namespaced_lease(NS, body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rollouts", type=int, default=200)
    parser.add_argument("--measure", type=float, default=60.0, help="seconds of CPU sampling")
    parser.add_argument("--changes", type=int, default=20, help="spec changes timed")
    parser.add_argument("--pods", type=int, default=3)
    args = parser.parse_args()

    with ControlPlane() as cp, Prometheus() as prom:
        cp.kubectl("apply", "-f", str(CRD))
        cp.wait_established("crd/modelrollouts.modelrollout.io")
        cp.kubectl("create", "namespace", NS)
        api = cp.api_client()
        log = open(cp.workdir / "controller.log", "wb")  # noqa: SIM115 - lives with the run
        metrics_port = free_port()
        ctl = subprocess.Popen(
            [sys.executable, "-m", "controller", "--standalone", f"--namespace={NS}",
             f"--kubeconfig={cp.admin_kubeconfig}", f"--metrics-port={metrics_port}",
             "--webhook-port=0", "--bind=127.0.0.1"],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
        try:
            # -------------------------------------------------------------- load
            docs = [rollout(f"r{i:03d}", f"t{i:03d}", prom.url) for i in range(1, args.rollouts)]
            docs.append(rollout("timed", "timed", prom.url))
            start = time.monotonic()
            cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs), timeout=300)

            def all_in_shadow() -> bool:
                out = cp.kubectl(
                    "get", "mro", "-n", NS, "-o", "jsonpath={.items[*].status.phase}"
                ).stdout.split()
                return len(out) == args.rollouts and set(out) == {"Shadow"}

            wait_until(all_in_shadow, timeout=300, interval=1, what="every rollout in Shadow")
            print(
                f"rollouts: {args.rollouts}, all in Shadow after {time.monotonic() - start:.1f} s"
            )

            pods = [FakePod(api, "timed", f"pod-{i}") for i in range(args.pods)]
            for p in pods:
                p.start()

            time.sleep(20)  # warm-up: every rollout has ticked and analysed at least once
            cpu0, t0 = proc_cpu_seconds(ctl.pid), time.monotonic()
            rss = []
            while time.monotonic() - t0 < args.measure:
                time.sleep(2)
                rss.append(proc_rss_mib(ctl.pid))
            cpu = (proc_cpu_seconds(ctl.pid) - cpu0) / (time.monotonic() - t0)
            print(
                f"controller CPU: {cpu:.3f} cores (CPU seconds / wall seconds over "
                f"{args.measure:.0f} s, {args.rollouts} rollouts, tick 2 s, analysis 10 s)"
            )
            print(f"controller RSS: max {max(rss):.0f} MiB, mean {statistics.mean(rss):.0f} MiB")

            # -------------------------------------------------------------- propagation
            def served_generation() -> int:
                raw = cp.kubectl(
                    "get", "configmap", configmap_name("timed"), "-n", NS, "-o",
                    "jsonpath={.data.serving\\.json}",
                ).stdout  # fmt: skip
                return ServingConfig.from_json(raw).generation

            times = []
            for i in range(args.changes):
                before = served_generation()
                shadow = 50 if i % 2 == 0 else 100
                t_apply = time.monotonic()
                cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(
                    rollout("timed", "timed", prom.url, shadow=shadow)))  # fmt: skip
                wait_until(
                    lambda b=before: all(p.generation > b for p in pods),
                    timeout=30, interval=0.005, what="every pod serving the change",
                    on_timeout=lambda: f"pod errors: {[p.error for p in pods]}",
                )  # fmt: skip
                times.append(time.monotonic() - t_apply)
            times.sort()
            p95 = times[max(0, round(0.95 * len(times)) - 1)]
            print(f"spec change -> every pod ({args.pods}) serving it, {len(times)} changes "
                  f"(includes kubectl start-up): p50 {statistics.median(times):.2f} s, "
                  f"p95 {p95:.2f} s, max {times[-1]:.2f} s")  # fmt: skip
            tick = _metric(metrics_port, "modelrollout_controller_tick_seconds")
            if tick:
                print(f"mean reconciliation: {1000 * tick[0] / tick[1]:.2f} ms over {tick[1]:.0f}")
        finally:
            ctl.terminate()
            ctl.wait(30)
            log.close()
    return 0


def _metric(port: int, name: str) -> tuple[float, float] | None:
    import httpx  # noqa: PLC0415 - only for this figure

    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    values = {}
    for line in text.splitlines():
        if line.startswith((f"{name}_sum ", f"{name}_count ")):
            key, value = line.split()
            values[key] = float(value)
    if f"{name}_count" not in values:
        return None
    return values[f"{name}_sum"], values[f"{name}_count"]


if __name__ == "__main__":
    sys.exit(main())
