"""Compiled trees published by training (trees.so): proven before they serve, never trusted
blindly, and never loaded when the setting is off (training/trees.py, service/models.py)."""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service import metric_names as names
from service.artifact import (
    MANIFEST_FILE,
    TREES_FILE,
    ArtifactError,
    Manifest,
    read_manifest,
    sha256_file,
)
from service.features import FeatureBatch, extract
from service.metric_names import Source
from service.models import load_model
from tests.service.conftest import CANDIDATE_VERSION, STABLE_VERSION, ServeFactory, publish_pair
from tests.service.test_shadow import FULL_SHADOW, varied
from tests.service.test_shadow_process import child_of
from training.data import generate_transactions
from training.gate import GateConfig
from training.pipeline import train_and_publish
from training.train import TrainParams
from training.trees import TreesCompileError, compiler_problem

pytestmark = pytest.mark.skipif(
    compiler_problem() is not None, reason=f"cannot compile trees here: {compiler_problem()}"
)


@pytest.fixture(scope="module")
def compiled_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two versions published with their compiled trees (read-only: copy it)."""
    return publish_pair(tmp_path_factory.mktemp("compiled-models"), compile_trees="on")


@pytest.fixture
def compiled_copy(compiled_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "models"
    shutil.copytree(compiled_root, root)
    return root


@pytest.fixture(scope="module")
def sample() -> FeatureBatch:
    frame = generate_transactions(400, seed=7)
    return extract(frame["merchant"].tolist(), frame["memo"].tolist(), frame["amount"].tolist())


def _rewrite_manifest(version_dir: Path, **changes: Any) -> None:
    manifest = json.loads((version_dir / MANIFEST_FILE).read_text())
    for key, value in changes.items():
        manifest["compiled_trees"][key] = value
    manifest["files"][TREES_FILE] = sha256_file(version_dir / TREES_FILE)
    (version_dir / MANIFEST_FILE).write_text(json.dumps(manifest))


def _mapped(path: Path) -> bool:
    """Whether this process has ``path`` mapped (a loaded shared library is)."""
    return str(path.resolve()) in Path("/proc/self/maps").read_text()


def test_training_publishes_checksummed_trees_that_serve_lightgbms_probabilities(
    compiled_root: Path, sample: FeatureBatch
) -> None:
    manifest = read_manifest(compiled_root / STABLE_VERSION)
    trees = manifest.compiled_trees
    assert trees is not None
    assert manifest.files[TREES_FILE] == sha256_file(compiled_root / STABLE_VERSION / TREES_FILE)
    assert trees.output == "raw_score"
    assert trees.max_difference <= 1e-9

    compiled = load_model(compiled_root, STABLE_VERSION)
    reference = load_model(compiled_root, STABLE_VERSION, published_trees=False)
    assert compiled.scorer == "compiled"
    assert "published by training" in compiled.scorer_detail
    assert reference.scorer == "lightgbm"
    expected = reference.predict_proba(sample)
    got = compiled.predict_proba(sample)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))
    for i in (0, 17, 399):  # one row at a time too
        np.testing.assert_allclose(
            compiled.predict_proba(sample.take([i])), expected[i : i + 1], rtol=0, atol=1e-12
        )


def test_with_the_setting_off_no_library_from_the_models_volume_is_loaded(
    compiled_copy: Path,
) -> None:
    library = compiled_copy / STABLE_VERSION / TREES_FILE
    model = load_model(compiled_copy, STABLE_VERSION, published_trees=False)
    assert model.scorer == "lightgbm"
    assert not _mapped(library)
    load_model(compiled_copy, STABLE_VERSION)
    assert _mapped(library)  # the check above can see a loaded library


def test_trees_of_another_model_are_refused_and_the_version_serves_from_lightgbm(
    compiled_copy: Path, sample: FeatureBatch
) -> None:
    stable = compiled_copy / STABLE_VERSION
    shutil.copy(compiled_copy / CANDIDATE_VERSION / TREES_FILE, stable / TREES_FILE)
    _rewrite_manifest(stable)  # checksummed: only the comparison can tell
    model = load_model(compiled_copy, STABLE_VERSION)
    assert model.scorer == "lightgbm"
    assert "published trees not used" in model.scorer_detail
    assert "differs from LightGBM" in model.scorer_detail
    reference = load_model(compiled_copy, STABLE_VERSION, published_trees=False)
    np.testing.assert_array_equal(model.predict_proba(sample), reference.predict_proba(sample))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"machine": "riscv64"}, "compiled for riscv64/Linux"),
        ({"system": "Darwin"}, f"compiled for {platform.machine()}/Darwin"),
        ({"output": "probability"}, "they output probability, the calibration reads raw_score"),
        ({"entry": "no_such_function"}, "does not load here"),
    ],
)
def test_trees_that_cannot_serve_here_leave_the_version_on_lightgbm_saying_why(
    compiled_copy: Path, changes: dict[str, str], reason: str
) -> None:
    _rewrite_manifest(compiled_copy / STABLE_VERSION, **changes)
    model = load_model(compiled_copy, STABLE_VERSION)
    assert model.scorer == "lightgbm"
    assert reason in model.scorer_detail


def test_a_changed_library_fails_the_checksum_and_the_version_does_not_serve(
    compiled_copy: Path,
) -> None:
    with (compiled_copy / STABLE_VERSION / TREES_FILE).open("r+b") as f:
        f.seek(4096)
        f.write(b"\x90" * 16)
    with pytest.raises(ArtifactError, match=f"sha256 of {TREES_FILE}"):
        load_model(compiled_copy, STABLE_VERSION)
    assert not _mapped(compiled_copy / STABLE_VERSION / TREES_FILE)


def test_a_manifest_must_list_the_library_exactly_when_it_describes_it(
    compiled_root: Path,
) -> None:
    raw = json.loads((compiled_root / STABLE_VERSION / MANIFEST_FILE).read_text())
    del raw["files"][TREES_FILE]
    with pytest.raises(ValueError, match=r"trees\.so must be listed in files exactly when"):
        Manifest.model_validate(raw)
    raw = json.loads((compiled_root / STABLE_VERSION / MANIFEST_FILE).read_text())
    del raw["compiled_trees"]
    with pytest.raises(ValueError, match=r"trees\.so must be listed in files exactly when"):
        Manifest.model_validate(raw)


def test_the_service_counts_published_trees_and_its_shadow_child_scores_with_them(
    serve: ServeFactory, compiled_root: Path
) -> None:
    served = serve(FULL_SHADOW, models=compiled_root, shadow_process=True, shadow_batch_rows=1,
                   coalesce=False)  # fmt: skip
    assert {m.scorer for m in served.state.models.values()} == {"compiled"}
    assert served.metric(names.MODEL_COMPILATIONS_TOTAL, settle=False, result="published") == 2
    served.suggest(*varied(3))
    served.settle()
    assert child_of(served.service.suggester.shadow).scorers == {CANDIDATE_VERSION: "compiled"}
    models = served.client.get("/v1/models").json()["models"]
    assert {m["scorer"] for m in models} == {"compiled"}
    assert served.state.models[Source.CANDIDATE].version == CANDIDATE_VERSION


def test_the_service_setting_off_serves_from_lightgbm_in_both_processes(
    serve: ServeFactory, compiled_root: Path
) -> None:
    served = serve(FULL_SHADOW, models=compiled_root, shadow_process=True, shadow_batch_rows=1,
                   coalesce=False, published_trees=False)  # fmt: skip
    assert {m.scorer for m in served.state.models.values()} == {"lightgbm"}
    served.suggest(*varied(3))
    served.settle()
    assert child_of(served.service.suggester.shadow).scorers == {CANDIDATE_VERSION: "lightgbm"}
    assert served.metric(names.MODEL_COMPILATIONS_TOTAL, result="published") == 0


def test_compile_on_without_a_linker_fails_before_training_and_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    calls: list[str] = []
    with pytest.raises(TreesCompileError, match="no linker: ld"):
        train_and_publish(tmp_path / "models", rows=3000, version="v1", rules=None,
                          params=TrainParams.quick(n_jobs=1), gate=GateConfig(enforce=False),
                          compile_trees="on", progress=calls.append)  # fmt: skip
    assert not any(c.startswith("training") for c in calls)
    assert not (tmp_path / "models" / "v1").exists()


def test_compile_auto_without_a_linker_publishes_without_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    calls: list[str] = []
    result = train_and_publish(tmp_path / "models", rows=3000, version="v1", rules=None,
                               params=TrainParams.quick(n_jobs=1), gate=GateConfig(enforce=False),
                               compile_trees="auto", progress=calls.append)  # fmt: skip
    assert result.manifest.compiled_trees is None
    assert TREES_FILE not in result.manifest.files
    assert not (tmp_path / "models" / "v1" / TREES_FILE).exists()
    assert any("publishing without compiled trees: no linker" in c for c in calls)
    assert load_model(tmp_path / "models", "v1").scorer == "lightgbm"
