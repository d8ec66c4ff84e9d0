"""Training meets its readers: the service's loader, and ModelRollouts on a real API server.

- A version published by training, loaded by the service's own loader
  (``service.models.load_model``: verify, booster, calibration), answers with exactly the
  probabilities the trainer computed.
- The training Job (``python -m training train``, as the chart runs it) never removes a
  version that a ModelRollout names, with the chart's permissions (get, list), and
  proposes a better model to a rollout when it may patch it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.artifact import list_versions, read_manifest
from service.models import load_model
from testbed.controlplane import ControlPlane
from training.data import generate_transactions, validate_transactions
from training.gate import GateConfig
from training.pipeline import train_and_publish
from training.train import TrainParams, feature_frame, features_of

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "modelrollout.io_modelrollouts.yaml"
QUICK = ["--n-estimators", "40", "--num-leaves", "15", "--learning-rate", "0.2", "--threads", "1"]


def test_a_published_version_serves_the_trainers_probabilities(tmp_path: Path) -> None:
    result = train_and_publish(tmp_path, rows=8000, seed=5, params=TrainParams.quick())
    loaded = load_model(tmp_path, result.version)
    try:
        rows = validate_transactions(generate_transactions(5000, seed=77))
        x = features_of(rows)
        published = result.published
        trainer = published.calibration.sharpen(
            published.calibrated.predict_proba(
                feature_frame(published.model_input(x), published.classes)
            )
        )
        served = loaded.predict_proba(x)
        assert loaded.classes == published.classes
        np.testing.assert_allclose(served, trainer, rtol=0, atol=1e-9)
        for i in range(0, 5000, 250):  # the single-row path as well
            one = loaded.predict_proba(x.take([i]))
            np.testing.assert_allclose(one, trainer[i : i + 1], rtol=0, atol=1e-9)
    finally:
        loaded.close()


def test_a_bad_version_loads_and_disagrees_with_a_good_one(tmp_path: Path) -> None:
    good = train_and_publish(tmp_path, rows=8000, params=TrainParams.quick())
    bad = train_and_publish(
        tmp_path,
        rows=3000,
        params=TrainParams.quick(),
        corrupt="rotate_labels",
        gate=GateConfig(enforce=False),
    )
    x = features_of(good.trained.split.test)
    a, b = load_model(tmp_path, good.version), load_model(tmp_path, bad.version)
    try:
        agreement = np.mean(a.predict_proba(x).argmax(axis=1) == b.predict_proba(x).argmax(axis=1))
    finally:
        a.close()
        b.close()
    assert agreement < 0.2


@pytest.fixture
def crd(control_plane: ControlPlane) -> None:
    control_plane.kubectl("apply", "-f", str(CRD))
    control_plane.wait_established("modelrollouts.modelrollout.io")


def _train(
    models: Path, kubeconfig: Path, namespace: str, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "MODELROLLOUT_NAMESPACE": namespace,
        "MODELROLLOUT_MODELS_ROOT": str(models),
    }
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return subprocess.run(
        [sys.executable, "-m", "training", "train", "--generate", "8000", *QUICK, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=False,
        timeout=300,
    )


def _rollout(control_plane: ControlPlane, namespace: str, name: str, version: str) -> None:
    body = {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"target": name, "model": {"version": version}},
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(body))


def test_the_training_job_protects_named_versions_and_proposes_better_models(
    crd: None, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    admin = control_plane.admin_kubeconfig
    for version in ("v1", "v2", "v3"):
        proc = _train(models, admin, namespace, "--version", version)
        assert proc.returncode == 0, proc.stderr
    # v1 is the stable of one rollout, v2 the spec of another.
    _rollout(control_plane, namespace, "suggest", "v1")
    control_plane.kubectl(
        "patch", "-n", namespace, "mro", "suggest", "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"stableVersion": "v1"}}),
    )  # fmt: skip
    _rollout(control_plane, namespace, "other", "v2")

    # The chart's permissions for training: get and list ModelRollouts.
    control_plane.kubectl("create", "serviceaccount", "training", "-n", namespace)
    control_plane.kubectl(
        "create", "role", "training", "-n", namespace,
        "--verb=get,list", "--resource=modelrollouts.modelrollout.io",
    )  # fmt: skip
    control_plane.kubectl(
        "create", "rolebinding", "training", "-n", namespace,
        "--role=training", f"--serviceaccount={namespace}:training",
    )  # fmt: skip
    job = control_plane.service_account_kubeconfig(namespace, "training").kubeconfig

    proc = _train(
        models, job, namespace, "--version", "v4", "--keep", "1", "--protect-from-cluster"
    )
    assert proc.returncode == 0, proc.stderr
    assert "['v1', 'v2']: never removed" in proc.stderr
    assert list_versions(models) == ["v1", "v2", "v4"]  # v3 was named by nobody

    # Proposing patches the spec: with get/list only, it says so and keeps the version.
    # (A negative margin proposes whatever was trained.)
    proc = _train(
        models, job, namespace, "--version", "v5",
        "--propose-to", f"{namespace}/suggest", "--propose-margin", "-1",
    )  # fmt: skip
    assert proc.returncode == 1
    assert "published, but cannot patch modelrollouts/suggest" in proc.stderr
    assert "403" in proc.stderr
    assert "v5" in list_versions(models)

    # With patch rights, a model that beats the stable by the margin is proposed.
    v1_f1 = read_manifest(models / "v1").metrics["macro_f1"]
    assert isinstance(v1_f1, float)
    proc = _train(
        models, admin, namespace, "--version", "v6", "--seed", "1",
        "--propose-to", f"{namespace}/suggest", "--propose-margin", "-1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    got = json.loads(
        control_plane.kubectl("get", "-n", namespace, "mro", "suggest", "-o", "json").stdout
    )
    assert got["spec"]["model"]["version"] == "v6"
    assert "proposed" in proc.stdout
