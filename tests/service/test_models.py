"""Loading a version: verified before it serves; its fast path equals the trained model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from service.artifact import CALIBRATION_FILE, MANIFEST_FILE, MODEL_FILE, ArtifactError, sha256_file
from service.features import FEATURE_VERSION, FeatureBatch, extract
from service.models import load_model
from tests.service.conftest import STABLE_VERSION, corrupt_version
from training.data import generate_transactions


@pytest.fixture(scope="module")
def sample() -> FeatureBatch:
    frame = generate_transactions(500, seed=99)
    return extract(frame["merchant"].tolist(), frame["memo"].tolist(), frame["amount"].tolist())


def test_fast_path_probabilities_equal_the_booster_and_calibration_exactly(
    models_root: Path, sample: FeatureBatch
) -> None:
    model = load_model(models_root, STABLE_VERSION)
    booster = lgb.Booster(model_file=str(models_root / STABLE_VERSION / MODEL_FILE))
    raw = booster.predict(model.model_input(sample), raw_score=True)
    expected = model.calibration.apply(raw)
    np.testing.assert_array_equal(model.calibration_input(sample), raw)
    np.testing.assert_array_equal(model.predict_proba(sample), expected)
    # One row at a time takes the single-row API: the same bits.
    for i in range(0, len(sample), 50):
        np.testing.assert_array_equal(model.predict_proba(sample.take([i])), expected[i : i + 1])
    np.testing.assert_allclose(expected.sum(axis=1), 1.0)


def test_a_calibration_fitted_on_probabilities_is_applied_to_probabilities(
    models_copy: Path, sample: FeatureBatch
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
        model.predict_proba(sample),
        model.calibration.apply(booster.predict(model.model_input(sample))),
    )


def test_a_loaded_model_knows_its_manifest(models_root: Path) -> None:
    model = load_model(models_root, STABLE_VERSION)
    assert model.version == STABLE_VERSION
    assert model.classes == tuple(model.manifest.classes)
    proba = model.predict_proba(extract(["NETFLIX.COM"], [""], [-15.49], ["5815"]))
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
    elif how == "feature-version":
        manifest["feature_version"] = FEATURE_VERSION - 1
    elif how == "lexicon":
        manifest["lexicon_sha256"] = "0" * 64
    elif how == "no-lexicon":
        del manifest["lexicon_sha256"]
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
        ("feature-version", f"feature code version {FEATURE_VERSION - 1}, serving has"),
        ("lexicon", "trained with brand lexicon 000000000000, serving has"),
        ("no-lexicon", "trained with brand lexicon none recorded, serving has"),
        ("classes", "another feature list"),  # the text stage's features name the classes
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


# -- compiled trees (lleaves) -----------------------------------------------------------


def test_compiled_trees_give_lightgbms_probabilities_and_are_cached(
    models_root: Path, sample: FeatureBatch, tmp_path: Path
) -> None:
    model = load_model(models_root, STABLE_VERSION)
    before = model.predict_proba(sample)
    assert model.scorer == "lightgbm"
    detail = model.accelerate(tmp_path / "cache")
    assert model.scorer == "compiled"
    assert "max relative difference" in detail
    after = model.predict_proba(sample)
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(after.argmax(axis=1), before.argmax(axis=1))
    one = model.predict_proba(sample.take([0]))
    np.testing.assert_allclose(one, before[:1], rtol=0, atol=1e-12)
    (cached,) = (tmp_path / "cache").iterdir()  # one entry, no scratch files left
    assert cached.suffix == ".o"
    assert not cached.name.startswith(".")

    again = load_model(models_root, STABLE_VERSION)
    again.accelerate(tmp_path / "cache")  # from the cache: nothing new written
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [cached.name]
    np.testing.assert_allclose(again.predict_proba(sample), before, rtol=0, atol=1e-12)


def test_compiled_trees_that_disagree_never_serve(
    models_root: Path, sample: FeatureBatch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import service.models as models  # noqa: PLC0415

    real = models.compile_trees

    class Skewed:
        def __init__(self, inner: object) -> None:
            self.inner = inner

        def predict(self, data: np.ndarray, n_jobs: int = 1) -> np.ndarray:
            out: np.ndarray = self.inner.predict(data, n_jobs=n_jobs)  # type: ignore[attr-defined]
            out[:, 0] += 1e-6  # a tiny, systematic error: still refused
            return out

    monkeypatch.setattr(models, "compile_trees", lambda *a, **k: Skewed(real(*a, **k)))
    model = load_model(models_root, STABLE_VERSION)
    before = model.predict_proba(sample)
    with pytest.raises(ValueError, match="compiled trees differ from LightGBM"):
        model.accelerate(tmp_path / "cache")
    assert model.scorer == "lightgbm"
    np.testing.assert_array_equal(model.predict_proba(sample), before)


def test_a_compiler_failure_is_reported_and_leaves_nothing_in_the_cache(tmp_path: Path) -> None:
    from service.models import compile_trees  # noqa: PLC0415

    broken = tmp_path / "model.txt"
    broken.write_text("tree\nnot a LightGBM model\n")
    with pytest.raises(RuntimeError, match="the compiler exited with 1"):
        compile_trees(broken, tmp_path / "cache", raw_score=True)
    assert list((tmp_path / "cache").iterdir()) == []


def test_the_compiler_child_refuses_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    from service.treecompile import main  # noqa: PLC0415

    assert main(["model.txt", "out.o", "logits"]) == 2
    assert "usage: python -m service.treecompile" in capsys.readouterr().err


def test_calibration_of_extreme_scores_is_finite_and_silent() -> None:
    """exp() overflows for very negative slopes times large scores: the sigmoid is 0 there,
    with no RuntimeWarning (warnings are errors in this suite)."""
    from service.artifact import Calibration  # noqa: PLC0415

    calibration = Calibration(a=[-1.0, -1.0], b=[0.0, 0.0])
    out = calibration.apply(np.array([[1000.0, -1000.0], [-1000.0, -1000.0]]))
    np.testing.assert_array_equal(out, [[1.0, 0.0], [0.5, 0.5]])
