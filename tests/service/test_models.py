"""Loading a version: verified before it serves; its fast path equals the trained model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from service.artifact import CALIBRATION_FILE, MANIFEST_FILE, MODEL_FILE, ArtifactError, sha256_file
from service.features import extract_batch, extract_one
from service.models import load_model
from tests.service.conftest import STABLE_VERSION, corrupt_version
from training.data import generate_transactions


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    frame = generate_transactions(500, seed=99)
    return extract_batch(
        frame["merchant"].tolist(), frame["memo"].tolist(), frame["amount"].tolist()
    )


def test_fast_path_probabilities_equal_the_booster_and_calibration_exactly(
    models_root: Path, sample: np.ndarray
) -> None:
    model = load_model(models_root, STABLE_VERSION)
    booster = lgb.Booster(model_file=str(models_root / STABLE_VERSION / MODEL_FILE))
    raw = booster.predict(sample, raw_score=True)
    expected = model.calibration.apply(raw)
    np.testing.assert_array_equal(model.calibration_input(sample), raw)
    np.testing.assert_array_equal(model.predict_proba(sample), expected)
    # One row at a time takes the single-row API: the same bits.
    for i in range(0, len(sample), 50):
        np.testing.assert_array_equal(model.predict_proba(sample[i : i + 1]), expected[i : i + 1])
    np.testing.assert_allclose(expected.sum(axis=1), 1.0)


def test_a_calibration_fitted_on_probabilities_is_applied_to_probabilities(
    models_copy: Path, sample: np.ndarray
) -> None:
    version_dir = models_copy / STABLE_VERSION
    calibration = json.loads((version_dir / CALIBRATION_FILE).read_text())
    calibration["input"] = "probability"
    (version_dir / CALIBRATION_FILE).write_text(json.dumps(calibration))
    manifest = json.loads((version_dir / MANIFEST_FILE).read_text())
    manifest["files"][CALIBRATION_FILE] = sha256_file(version_dir / CALIBRATION_FILE)
    (version_dir / MANIFEST_FILE).write_text(json.dumps(manifest))

    model = load_model(models_copy, STABLE_VERSION)
    booster = lgb.Booster(model_file=str(version_dir / MODEL_FILE))
    np.testing.assert_array_equal(
        model.predict_proba(sample), model.calibration.apply(booster.predict(sample))
    )


def test_a_loaded_model_knows_its_manifest(models_root: Path) -> None:
    model = load_model(models_root, STABLE_VERSION)
    assert model.version == STABLE_VERSION
    assert model.classes == tuple(model.manifest.classes)
    proba = model.predict_proba(np.array([extract_one("NETFLIX.COM", "", -15.49)]))
    assert model.classes[int(proba.argmax())] == "Entertainment"


def _damage(root: Path, how: str) -> str:
    version_dir = root / STABLE_VERSION
    if how == "missing":
        return "v-absent"
    if how == "sha256":
        corrupt_version(root, STABLE_VERSION, "v-bad")
        return "v-bad"
    manifest = json.loads((version_dir / MANIFEST_FILE).read_text())
    if how == "features":
        manifest["features"] = list(reversed(manifest["features"]))
    elif how == "classes":
        manifest["classes"] = manifest["classes"][:-1]
    elif how == "manifest":
        manifest = {"version": STABLE_VERSION}
    elif how == "model-file":
        (version_dir / MODEL_FILE).write_text("not a model")
        manifest["files"][MODEL_FILE] = sha256_file(version_dir / MODEL_FILE)
    elif how == "calibration":
        (version_dir / CALIBRATION_FILE).write_text('{"a": [1.0], "b": [0.0]}')
        manifest["files"][CALIBRATION_FILE] = sha256_file(version_dir / CALIBRATION_FILE)
    (version_dir / MANIFEST_FILE).write_text(json.dumps(manifest))
    return STABLE_VERSION


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("missing", "not found"),
        ("sha256", "sha256 of model.txt"),
        ("features", "another feature list"),
        ("classes", "classes"),
        ("manifest", "invalid manifest.json"),
        ("model-file", "LightGBM cannot load"),
        ("calibration", "calibration has 1 classes"),
    ],
)
def test_a_version_that_must_not_serve_is_refused_with_a_reason(
    models_copy: Path, how: str, reason: str
) -> None:
    version = _damage(models_copy, how)
    with pytest.raises(ArtifactError, match=reason) as info:
        load_model(models_copy, version)
    assert info.value.version == version


def test_hidden_directories_are_unfinished_publishes_not_versions(models_copy: Path) -> None:
    shutil.copytree(models_copy / STABLE_VERSION, models_copy / ".v-tmp")
    with pytest.raises(ArtifactError, match="not found"):
        load_model(models_copy, ".v-tmp")
