"""End to end on a kind cluster: what a user runs first.

Builds the three images, loads them into kind, installs the chart with helm, trains two
model versions with the chart's training Job, and rolls the second out with a ModelRollout
while a load Job sends suggestions: shadow, canary and promotion, all inside the cluster.

Needs a Docker engine and the `kind` binary; tests/e2e/conftest.py skips this directory
with the reason when either is missing. Set MODELROLLOUT_E2E_KEEP=1 to keep the cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.process import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = os.environ.get("MODELROLLOUT_E2E_CLUSTER", "modelrollout-e2e")
NS = "modelrollout"
RELEASE = "mr"
TARGET = f"{RELEASE}-modelrollout-suggest"
TAG = "e2e"
IMAGES = ("controller", "suggest", "training")


def run(*args: str, input_text: str | None = None, timeout: float = 600) -> str:
    proc = subprocess.run(
        args, input=input_text, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout


def tool(name: str) -> str:
    bin_dir = run(str(ROOT / "hack" / "tools.sh"), "--print").strip()
    pinned = Path(bin_dir) / name
    return str(pinned) if pinned.exists() else (shutil.which(name) or name)


def kubectl(*args: str, input_text: str | None = None) -> str:
    return run(tool("kubectl"), "--context", f"kind-{CLUSTER}", *args, input_text=input_text)


def wait_for(what: str, check: Any, timeout: float) -> Any:
    # Any falsy result (an empty list of versions, say) means "not yet".
    return wait_until(lambda: check() or None, timeout=timeout, interval=2.0, what=what)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    existing = run("kind", "get", "clusters").split()
    created = CLUSTER not in existing
    if created:
        run("kind", "create", "cluster", "--name", CLUSTER, "--wait", "180s", timeout=900)
    try:
        for image in IMAGES:
            ref = f"modelrollout-{image}:{TAG}"
            run("docker", "build", "--target", image, "-t", ref, str(ROOT), timeout=1800)
            run("kind", "load", "docker-image", ref, "--name", CLUSTER)
        yield CLUSTER
    finally:
        if created and not os.environ.get("MODELROLLOUT_E2E_KEEP"):
            run("kind", "delete", "cluster", "--name", CLUSTER)


@pytest.fixture(scope="module")
def installed(cluster: str) -> str:
    kubectl(
        "apply",
        "-f",
        "-",
        input_text=kubectl("create", "namespace", NS, "--dry-run=client", "-o", "yaml"),
    )
    kubectl("apply", "-f", str(ROOT / "tests" / "e2e" / "manifests" / "prometheus.yaml"))
    sets = [f"{c}.image.tag={TAG}" for c in IMAGES] + [
        "training.initialJob.rows=20000",
        "training.schedule=0 0 1 1 *",  # a CronJob to start the second training run from
        "suggest.replicas=2",
    ]
    args = [tool("helm"), "--kube-context", f"kind-{cluster}", "upgrade", "--install", RELEASE]
    args += [str(ROOT / "charts" / "modelrollout"), "-n", NS, "--wait", "--wait-for-jobs"]
    args += ["--timeout", "10m"]
    for s in sets:
        args += ["--set", s]
    run(*args, timeout=900)
    kubectl("-n", NS, "rollout", "status", "deploy/prometheus", "--timeout=300s")
    return RELEASE


def model_versions() -> list[str]:
    out = kubectl(
        "-n",
        NS,
        "exec",
        f"deploy/{TARGET}",
        "--",
        "python",
        "-c",
        "import json; from pathlib import Path; from service.artifact import list_versions;"
        " print(json.dumps(list_versions(Path('/models'))))",
    )
    versions: list[str] = json.loads(out)
    return versions


def rollout_status(name: str) -> dict[str, Any]:
    body = json.loads(kubectl("-n", NS, "get", "modelrollout", name, "-o", "json"))
    status: dict[str, Any] = body.get("status") or {}
    return status


def start_load() -> None:
    kubectl(
        "-n",
        NS,
        "create",
        "configmap",
        "load",
        f"--from-file={Path(__file__).parent / 'load_job.py'}",
    )
    job = f"""
apiVersion: batch/v1
kind: Job
metadata: {{name: load, namespace: {NS}}}
spec:
  backoffLimit: 0
  activeDeadlineSeconds: 900
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: load
          image: modelrollout-suggest:{TAG}
          command: [python, /load/load_job.py]
          env: [{{name: SUGGEST_URL, value: "http://{TARGET}.{NS}.svc/v1/suggestions"}}]
          volumeMounts: [{{name: load, mountPath: /load}}]
      volumes: [{{name: load, configMap: {{name: load}}}}]
"""
    kubectl("apply", "-f", "-", input_text=job)


def test_a_second_model_is_rolled_out_to_promotion(installed: str) -> None:
    first = wait_for("the initial training Job's version", model_versions, timeout=300)[-1]
    kubectl("-n", NS, "create", "job", "train-2", f"--from=cronjob/{RELEASE}-modelrollout-train")
    kubectl("-n", NS, "wait", "--for=condition=complete", "job/train-2", "--timeout=600s")
    second = model_versions()[-1]
    assert second != first

    start_load()
    manifest = f"""
apiVersion: modelrollout.io/v1alpha1
kind: ModelRollout
metadata: {{name: suggest, namespace: {NS}}}
spec:
  target: {TARGET}
  model: {{version: {first}}}
  shadow: {{percent: 100, passes: 2}}
  canary: {{percent: 100, steps: [10, 50], stepInterval: 10s}}
  analysis:
    prometheusURL: http://prometheus.{NS}.svc:9090
    interval: 5s
    window: 30s
    minSamples: 20
    thresholds: {{minAgreement: 0.5}}
"""
    kubectl("apply", "-f", "-", input_text=manifest)
    wait_for(
        f"{first} promoted",
        lambda: (
            rollout_status("suggest").get("stableVersion") == first
            and rollout_status("suggest").get("phase") == "Succeeded"
        ),
        timeout=600,
    )
    kubectl("apply", "-f", "-", input_text=manifest.replace(first, second))
    wait_for(
        f"{second} promoted",
        lambda: (
            rollout_status("suggest").get("stableVersion") == second
            and rollout_status("suggest").get("phase") == "Succeeded"
        ),
        timeout=600,
    )
    events = kubectl("-n", NS, "get", "events", "--field-selector", "involvedObject.name=suggest")
    assert "Canary" in events or "canary" in events
