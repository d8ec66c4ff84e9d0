"""train_and_publish: the API other components' tests use to make real model versions."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from service.artifact import (
    CALIBRATION_FILE,
    MODEL_FILE,
    TEXT_STAGE_FILE,
    list_versions,
    read_calibration,
    verify_version,
)
from service.features import FEATURE_NAMES, FEATURE_VERSION, model_feature_names
from training.data import generate_transactions
from training.gate import GateConfig, GateRejectedError, MetricValue
from training.pipeline import PublishResult, choose_published, train_and_publish
from training.publish import VERSION_PATTERN, VersionExistsError
from training.train import TrainParams, features_of

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> PublishResult:
    root = tmp_path_factory.mktemp("models")
    return train_and_publish(root, rows=8000, params=TrainParams.quick())


def test_a_published_version_verifies_and_records_what_it_was_trained_on(
    published: PublishResult,
) -> None:
    root = published.path.parent
    manifest = verify_version(root, published.version)
    assert VERSION_PATTERN.match(published.version)
    assert list_versions(root) == [published.version]
    assert manifest == published.manifest
    assert manifest.features == list(model_feature_names(manifest.classes))
    assert manifest.features[: len(FEATURE_NAMES)] == list(FEATURE_NAMES)
    assert manifest.feature_version == FEATURE_VERSION
    assert manifest.classes == sorted(manifest.classes)
    assert len(manifest.classes) == 10
    assert set(manifest.files) == {MODEL_FILE, CALIBRATION_FILE, TEXT_STAGE_FILE}
    assert len(manifest.data_fingerprint) == 64
    assert manifest.params["n_estimators"] == 40
    metrics = manifest.metrics
    assert isinstance(metrics["macro_f1"], float)
    assert metrics["macro_f1"] >= 0.75
    assert isinstance(metrics["f1"], dict)
    assert set(metrics["f1"]) == set(manifest.classes)
    assert isinstance(metrics["confusion_matrix"], list)
    assert "rules_macro_f1" in metrics
    assert metrics["split_by_group"] == 1.0  # graded on brands unseen in training
    assert "descriptor_only_accuracy" in metrics
    assert 0.0 < float(metrics["confident_share"]) <= 1.0  # type: ignore[arg-type]


def test_the_published_files_reproduce_the_trainers_probabilities(
    published: PublishResult,
) -> None:
    version_dir = published.path
    booster = lgb.Booster(model_file=str(version_dir / MODEL_FILE))
    calibration = read_calibration(version_dir)
    trained = published.published
    assert trained.refitted
    assert published.manifest.params["published"] == "refit"
    assert booster.feature_name() == list(model_feature_names(trained.classes))
    features = features_of(trained.split.test)
    x = trained.model_input(features)
    served = calibration.apply(booster.predict(x, raw_score=True))
    np.testing.assert_allclose(served, trained.predict_proba(features), rtol=0, atol=1e-12)


def test_the_published_model_is_fitted_again_on_the_test_brands_and_graded_as_before(
    published: PublishResult,
) -> None:
    """The figures are the graded model's; the published one has also learnt the brands of
    the validation and test parts (it fits their rows far better than the graded model,
    which never saw them) and is calibrated on the calibration part, which neither saw."""
    graded, refitted = published.trained, published.published
    assert not graded.refitted
    assert refitted.refitted
    assert refitted.best_iteration == graded.best_iteration
    test = graded.split.test
    y = test["label"].to_numpy()
    accuracy = {
        name: float(
            np.mean(np.asarray(m.classes)[m.predict_proba(m.features(test)).argmax(1)] == y)
        )
        for name, m in (("graded", graded), ("refit", refitted))
    }
    assert published.metrics["accuracy"] == pytest.approx(accuracy["graded"])
    assert accuracy["refit"] > accuracy["graded"] + 0.03
    known = {
        name: set(m.held_out_brands or {}) for name, m in (("graded", graded), ("r", refitted))
    }
    test_brands = set(test["group"])
    assert not test_brands & known["graded"]  # graded as brands nobody knows
    assert test_brands & known["r"]  # the published model's lexicon knows them again
    assert not set(graded.split.calibration["group"]) & known["r"]
    for name in ("graded", "refit"):
        assert isinstance(published.metrics[f"calibration_accuracy_{name}"], float)


def test_a_refit_worse_than_the_graded_model_is_not_published(published: PublishResult) -> None:
    graded = published.trained
    metrics: dict[str, MetricValue] = {}
    assert choose_published(graded, published.published, metrics)[1] == "refit"
    worse = train_and_publish(
        published.path.parent / "worse",
        rows=3000,
        params=TrainParams.quick(refit=False),
        corrupt="rotate_labels",
        gate=GateConfig(enforce=False),
    ).trained
    chosen, name = choose_published(
        graded,
        replace(
            graded,
            calibration=worse.calibration,
            classifier=worse.classifier,
            text_stage=worse.text_stage,
        ),
        metrics,
    )
    assert (chosen, name) == (graded, "graded")
    assert metrics["calibration_accuracy_refit"] < metrics["calibration_accuracy_graded"]


def test_the_same_inputs_train_the_same_model(tmp_path: Path) -> None:
    a = train_and_publish(tmp_path, rows=8000, params=TrainParams.quick(), version="a")
    b = train_and_publish(tmp_path, rows=8000, params=TrainParams.quick(), version="b")
    assert a.manifest.files == b.manifest.files
    assert a.manifest.data_fingerprint == b.manifest.data_fingerprint


def test_a_bad_model_needs_the_gate_turned_off_and_disagrees_with_a_good_one(
    tmp_path: Path, published: PublishResult
) -> None:
    with pytest.raises(GateRejectedError, match="macro-F1"):
        train_and_publish(tmp_path, rows=8000, params=TrainParams.quick(), corrupt="rotate_labels")
    assert list_versions(tmp_path) == []

    bad = train_and_publish(
        tmp_path,
        rows=3000,
        params=TrainParams.quick(),
        corrupt="rotate_labels",
        gate=GateConfig(enforce=False),
    )
    assert bad.manifest.params["corrupt"] == "rotate_labels"
    assert bad.manifest.params["gate_passed"] is False
    x = features_of(published.trained.split.test)
    agree = np.mean(
        bad.trained.predict_proba(x).argmax(axis=1)
        == published.trained.predict_proba(x).argmax(axis=1)
    )
    assert agree < 0.2
    assert isinstance(bad.metrics["accuracy"], float)
    assert bad.metrics["accuracy"] < 0.2


def test_shuffled_labels_make_a_model_no_better_than_chance(tmp_path: Path) -> None:
    bad = train_and_publish(
        tmp_path,
        rows=3000,
        params=TrainParams.quick(),
        corrupt="shuffle_labels",
        gate=GateConfig(enforce=False),
    )
    assert isinstance(bad.metrics["macro_f1"], float)
    assert bad.metrics["macro_f1"] < 0.3


def test_an_existing_version_is_refused_before_training(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    with pytest.raises(VersionExistsError, match="v1"):
        train_and_publish(tmp_path, rows=10, version="v1")


def test_given_data_is_used_instead_of_generated(tmp_path: Path) -> None:
    data = generate_transactions(2500, seed=7)
    result = train_and_publish(tmp_path, data=data, params=TrainParams.quick(), rules=None)
    assert "rules_macro_f1" not in result.metrics
    assert isinstance(result.metrics["rows_test"], float)
    assert result.metrics["rows_test"] == float(len(result.trained.split.test))
    assert 300 < result.metrics["rows_test"] < 700  # about 20% of the groups' rows
