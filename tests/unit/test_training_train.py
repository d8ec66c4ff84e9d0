"""Training: the split, the parameters, and the fast serving path's equality to sklearn's."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from service.artifact import Calibration
from service.features import FEATURE_NAMES
from training.data import DataError, generate_transactions, validate_transactions
from training.train import (
    MIN_ROWS_PER_CLASS,
    TrainedModel,
    TrainParams,
    feature_frame,
    features_of,
    fit_power,
    split_data,
    train_model,
)

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return validate_transactions(generate_transactions(6000, seed=11))


@pytest.fixture(scope="module")
def trained(data: pd.DataFrame) -> TrainedModel:
    return train_model(data, TrainParams.quick(), seed=11)


def test_defaults_are_the_original_models() -> None:
    params = TrainParams()
    assert (params.n_estimators, params.learning_rate, params.num_leaves) == (300, 0.05, 63)
    assert (params.subsample, params.subsample_freq) == (0.9, 1)
    assert params.cv_folds == 0


@pytest.mark.parametrize(
    "fields",
    [
        {"n_estimators": 0},
        {"learning_rate": 0.0},
        {"subsample": 1.5},
        {"test_fraction": 0.4, "calibration_fraction": 0.3, "validation_fraction": 0.2},
        {"cv_folds": 1},
        {"unknown": 1},
    ],
)
def test_invalid_parameters_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TrainParams.model_validate(fields)


def test_the_row_split_is_disjoint_stratified_and_complete(data: pd.DataFrame) -> None:
    split = split_data(data, TrainParams(split="row"), seed=0)
    parts = [split.train, split.validation, split.calibration, split.test]
    ids = [set(p["id"]) for p in parts]
    assert sum(len(i) for i in ids) == len(data)
    assert set().union(*ids) == set(data["id"])
    share = data["label"].value_counts(normalize=True)
    for part in parts:
        assert set(part["label"]) == set(data["label"])
        part_share = part["label"].value_counts(normalize=True)
        assert (part_share - share).abs().max() < 0.01
    assert split.sizes() == {"train": 3300, "validation": 600, "calibration": 900, "test": 1200}


def test_the_group_split_puts_no_brand_on_two_sides(data: pd.DataFrame) -> None:
    split = split_data(data, TrainParams(), seed=0)
    parts = [split.train, split.validation, split.calibration, split.test]
    ids = [set(p["id"]) for p in parts]
    assert sum(len(i) for i in ids) == len(data)
    assert set().union(*ids) == set(data["id"])
    groups = [set(p["group"]) for p in parts]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not groups[i] & groups[j], (i, j)
        assert set(parts[i]["label"]) == set(data["label"])
    # Roughly the fractions of the groups (not of the rows: a brand's rows go together).
    n_groups = data["group"].nunique()
    assert abs(len(groups[0]) / n_groups - 0.55) < 0.05  # train
    assert abs(len(groups[3]) / n_groups - 0.2) < 0.05  # test


def test_a_class_with_too_few_groups_to_split_is_a_data_error(data: pd.DataFrame) -> None:
    few = data.copy()
    mask = few["label"] == "Rent"
    few.loc[mask, "group"] = "one-landlord"
    with pytest.raises(DataError, match=r"\['Rent'\] have no rows in the .* part"):
        split_data(few, TrainParams(), seed=0)


def test_a_class_too_rare_to_split_is_a_data_error(data: pd.DataFrame) -> None:
    rare = data.copy()
    rare.loc[rare.index[:3], "label"] = "Pets"
    with pytest.raises(
        DataError, match=f"'Pets': 3; each class needs at least {MIN_ROWS_PER_CLASS}"
    ):
        split_data(rare, TrainParams(), seed=0)


def test_sigmoids_are_fitted_on_raw_scores(trained: TrainedModel) -> None:
    # LightGBM >= 4.7 has decision_function, which scikit-learn prefers.
    assert trained.calibration.input == "raw_score"
    assert len(trained.calibration.a) == len(trained.classes) == 10
    assert trained.classes == tuple(sorted(trained.classes))


def test_the_serving_path_equals_calibrated_predict_proba_on_many_rows(
    trained: TrainedModel,
) -> None:
    """Calibration.apply(booster raw scores) is the calibrated classifier, to 1e-9."""
    rows = validate_transactions(generate_transactions(20_000, seed=99))
    x = trained.model_input(features_of(rows))
    # Also rows no statement holds: huge, tiny and zero amounts, every flag at once,
    # text scores far outside what the stage gives.
    rng = np.random.default_rng(0)
    width = len(trained.feature_names)
    odd = rng.integers(0, 2, size=(500, width)).astype(np.float64)
    odd[:, 0] = rng.normal(0, 1e5, size=500)
    odd[:, 1] = np.abs(odd[:, 0])
    odd[:, 4:6] = rng.integers(0, 300, size=(500, 2))
    odd[:, len(FEATURE_NAMES) :] = rng.normal(0, 20, size=(500, width - len(FEATURE_NAMES)))
    x = np.vstack([x, odd])

    expected = trained.calibration.sharpen(
        trained.calibrated.predict_proba(feature_frame(x, trained.classes))
    )
    booster = lgb.Booster(model_str=trained.model_text())  # as serving loads model.txt
    served = trained.calibration.apply(booster.predict(x, raw_score=True))
    assert served.shape == expected.shape == (len(x), 10)
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(served.sum(axis=1), 1.0, atol=1e-12)


def test_early_stopping_keeps_only_the_useful_trees(data: pd.DataFrame) -> None:
    # At learning rate 0.2 the validation loss stops improving long before 400 rounds.
    stopped = train_model(data, TrainParams.quick(n_estimators=400), seed=11)
    booster = lgb.Booster(model_str=stopped.model_text())
    assert 1 <= stopped.best_iteration < 400
    assert booster.num_trees() == stopped.best_iteration * len(stopped.classes)


def test_cross_validation_is_reported_when_asked(data: pd.DataFrame) -> None:
    small = data.iloc[:3000]
    result = train_model(small, TrainParams.quick(cv_folds=3), seed=0)
    assert result.cross_validation is not None
    assert result.cross_validation.folds == 3
    assert 0.5 < result.cross_validation.macro_f1_mean <= 1.0
    assert 0.0 <= result.cross_validation.macro_f1_std < 0.1
    assert train_model(small, TrainParams.quick(), seed=0).cross_validation is None


def test_the_power_sharpens_an_under_confident_model_and_softens_an_over_confident_one() -> None:
    rows = np.tile([0.6, 0.2, 0.2], (200, 1))
    always_right = np.zeros(200, dtype=np.int64)
    half_right = np.where(np.arange(200) % 2 == 0, 0, 1).astype(np.int64)
    assert fit_power(rows, always_right) > 2.0
    confident = np.tile([0.9, 0.05, 0.05], (200, 1))
    assert fit_power(confident, half_right) < 1.0
    calibration = Calibration(a=[-1.0, -1.0, -1.0], b=[0.0, 0.0, 0.0], power=3.0)
    sharpened = calibration.sharpen(rows)
    np.testing.assert_allclose(sharpened.sum(axis=1), 1.0)
    assert (sharpened[:, 0] > rows[:, 0]).all()
    assert (sharpened.argmax(axis=1) == rows.argmax(axis=1)).all()
    assert Calibration(a=[1.0], b=[0.0]).sharpen(rows) is rows  # power 1: unchanged
