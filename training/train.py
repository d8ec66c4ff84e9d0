"""LightGBM multiclass with one sigmoid calibration, exported for the fast serving path.

The recipe (why each step):

1. Features only from :func:`service.features.extract` (contract 1).
2. A stratified split of the canonical data into train, validation (early stopping),
   calibration and held-out test, so that no row that shaped the model also grades it.
3. ``LGBMClassifier`` with the original defaults (:class:`TrainParams`), early stopping
   on the validation split's multi-logloss: the booster keeps only the useful trees.
4. **One** ``CalibratedClassifierCV(FrozenEstimator(model), method="sigmoid")`` fitted on
   the calibration split. The original wrapped ``cv=3`` (three full models, 62 MB, 8 ms a
   row); a frozen estimator keeps one model.
5. Export: the booster's text (``model.txt``) and each class's sigmoid ``a_``, ``b_`` as a
   :class:`service.artifact.Calibration`. Serving computes
   ``Calibration.apply(booster.predict(X, raw_score=True))``, which equals
   ``calibrated.predict_proba(X)`` (a unit test holds it to 1e-9); ``Calibration.input``
   records which response scikit-learn fitted the sigmoids on (with LightGBM >= 4.7,
   ``decision_function``, i.e. raw scores; before it, ``predict_proba``).
"""

from __future__ import annotations

import inspect
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold, train_test_split

from service.artifact import Calibration
from service.features import FEATURE_NAMES, FeatureBatch, FeatureMatrix, extract
from training.data import DataError

_FIT_TAKES_EVAL_X: Final = "eval_X" in inspect.signature(lgb.LGBMClassifier.fit).parameters

MIN_ROWS_PER_CLASS: Final = 20
"""Fewer rows of a class cannot be split four ways with that class in every part."""


class TrainParams(BaseModel):
    """Hyper-parameters and split fractions; the defaults are the original system's model.

    ``subsample`` with ``subsample_freq`` is LightGBM's bagging (``bagging_fraction``,
    ``bagging_freq``). ``early_stopping_rounds=0`` trains all ``n_estimators`` trees.
    ``cv_folds >= 2`` adds a k-fold macro-F1 estimate (off by default: it costs k fits).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_estimators: int = Field(default=300, ge=1)
    learning_rate: float = Field(default=0.05, gt=0.0, le=1.0)
    num_leaves: int = Field(default=63, ge=2)
    subsample: float = Field(default=0.9, gt=0.0, le=1.0)
    subsample_freq: int = Field(default=1, ge=0)
    colsample_bytree: float = Field(default=1.0, gt=0.0, le=1.0)
    min_child_samples: int = Field(default=20, ge=1)
    early_stopping_rounds: int = Field(default=30, ge=0)
    test_fraction: float = Field(default=0.2, gt=0.0, lt=0.5)
    calibration_fraction: float = Field(default=0.15, gt=0.0, lt=0.5)
    validation_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    cv_folds: int = Field(default=0, ge=0, le=20)
    n_jobs: int | None = Field(
        default=None, ge=1, description="threads; None: the CPUs this process may use"
    )

    @model_validator(mode="after")
    def _fractions_leave_training_rows(self) -> TrainParams:
        held = self.test_fraction + self.calibration_fraction + self.validation_fraction
        if held >= 0.8:
            raise ValueError(
                f"test + calibration + validation fractions are {held:.2f}; keep < 0.8"
            )
        if self.cv_folds == 1:
            raise ValueError("cv_folds must be 0 (off) or >= 2")
        return self

    @classmethod
    def quick(cls, **overrides: Any) -> TrainParams:
        """Small and fast (well under a second on a few thousand rows): for tests and demos."""
        # One thread: on a few thousand rows it is as fast, and it does not collapse when
        # other processes (parallel tests) compete for the cores, as OpenMP spinning does.
        base: dict[str, Any] = {
            "n_estimators": 40,
            "num_leaves": 15,
            "learning_rate": 0.2,
            "n_jobs": 1,
        }
        return cls.model_validate(base | overrides)

    def manifest_params(self, seed: int) -> dict[str, float | int | str | bool | None]:
        out: dict[str, float | int | str | bool | None] = dict(self.model_dump())
        out["seed"] = seed
        out["lightgbm"] = lgb.__version__
        return out


@dataclass(frozen=True)
class DataSplit:
    """The canonical data in four disjoint, stratified parts."""

    train: pd.DataFrame
    validation: pd.DataFrame
    calibration: pd.DataFrame
    test: pd.DataFrame

    def sizes(self) -> dict[str, int]:
        return {
            "train": len(self.train),
            "validation": len(self.validation),
            "calibration": len(self.calibration),
            "test": len(self.test),
        }


@dataclass(frozen=True)
class CrossValidation:
    folds: int
    macro_f1_mean: float
    macro_f1_std: float


@dataclass(frozen=True)
class TrainedModel:
    """A trained, calibrated model and everything needed to grade and publish it."""

    classifier: Any  # lightgbm.LGBMClassifier (untyped library)
    calibrated: Any  # sklearn.calibration.CalibratedClassifierCV over FrozenEstimator
    calibration: Calibration
    classes: tuple[str, ...]
    split: DataSplit
    best_iteration: int
    seed: int
    params: TrainParams
    cross_validation: CrossValidation | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def booster(self) -> lgb.Booster:
        booster: lgb.Booster = self.classifier.booster_
        return booster

    def model_text(self) -> str:
        """The booster in LightGBM's text format, only the trees up to the best iteration."""
        text: str = self.booster.model_to_string(num_iteration=self.best_iteration or None)
        return text

    def scores(self, features: FeatureMatrix) -> npt.NDArray[np.float64]:
        """What the sigmoids take: raw scores, or probabilities (see ``Calibration.input``)."""
        raw = self.calibration.input == "raw_score"
        out: npt.NDArray[np.float64] = np.asarray(
            self.booster.predict(features, raw_score=raw), dtype=np.float64
        )
        return out

    def predict_proba(self, features: FeatureMatrix) -> npt.NDArray[np.float64]:
        """Calibrated probabilities by the serving path (booster + :class:`Calibration`)."""
        return self.calibration.apply(self.scores(features))


def encode_labels(labels: pd.Series, classes: tuple[str, ...]) -> npt.NDArray[np.int64]:
    """Labels as indices into ``classes`` (sorted), the columns of scores and probabilities."""
    index = {c: i for i, c in enumerate(classes)}
    return np.fromiter((index[str(v)] for v in labels), dtype=np.int64, count=len(labels))


def feature_frame(features: FeatureMatrix) -> pd.DataFrame:
    """Features with their names, as the scikit-learn API of a named model wants them.

    The booster carries :data:`FEATURE_NAMES` (``model.txt`` lists them, so serving can
    check them); scikit-learn then warns on unnamed input. Serving never pays for this:
    it calls ``Booster.predict`` on the bare matrix.
    """
    return pd.DataFrame(features, columns=list(FEATURE_NAMES), copy=False)


def feature_batch_of(frame: pd.DataFrame) -> FeatureBatch:
    """The features of a dataset, by the one feature extractor (what serving scores)."""
    mccs = frame["mcc"].tolist() if "mcc" in frame.columns else None
    return extract(
        frame["merchant"].tolist(), frame["memo"].tolist(), frame["amount"].to_numpy(), mccs
    )


def features_of(frame: pd.DataFrame) -> FeatureMatrix:
    """The dense feature matrix of a dataset (what LightGBM trains on)."""
    return feature_batch_of(frame).dense


def split_data(frame: pd.DataFrame, params: TrainParams, seed: int) -> DataSplit:
    """Stratified train / validation / calibration / test split of canonical data.

    Raises :class:`DataError` when a class has fewer than :data:`MIN_ROWS_PER_CLASS` rows.
    """
    counts = frame["label"].value_counts()
    rare = counts[counts < MIN_ROWS_PER_CLASS]
    if len(rare):
        listed = ", ".join(f"{k!r}: {int(v)}" for k, v in rare.sort_index().items())
        raise DataError(
            f"too few rows for class(es) {listed}; each class needs at least "
            f"{MIN_ROWS_PER_CLASS} (add data, or merge or drop those labels)"
        )
    n = len(frame)
    rest, test = train_test_split(
        frame, test_size=params.test_fraction, stratify=frame["label"], random_state=seed
    )
    rest, calibration = train_test_split(
        rest,
        test_size=round(n * params.calibration_fraction),
        stratify=rest["label"],
        random_state=seed + 1,
    )
    train, validation = train_test_split(
        rest,
        test_size=round(n * params.validation_fraction),
        stratify=rest["label"],
        random_state=seed + 2,
    )
    return DataSplit(
        train=train.reset_index(drop=True),
        validation=validation.reset_index(drop=True),
        calibration=calibration.reset_index(drop=True),
        test=test.reset_index(drop=True),
    )


def available_cpus() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota.

    OpenMP would otherwise start one thread per CPU of the node, and a pod limited to two
    CPUs on a 32-CPU node would spin 32 threads against its quota.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    count = cpus or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return count


def _classifier(params: TrainParams, seed: int, n_estimators: int | None = None) -> Any:
    return lgb.LGBMClassifier(
        objective="multiclass",
        n_estimators=n_estimators or params.n_estimators,
        learning_rate=params.learning_rate,
        num_leaves=params.num_leaves,
        subsample=params.subsample,
        subsample_freq=params.subsample_freq,
        colsample_bytree=params.colsample_bytree,
        min_child_samples=params.min_child_samples,
        random_state=seed,
        n_jobs=params.n_jobs or available_cpus(),
        verbose=-1,
    )


def _fit(
    params: TrainParams,
    *,
    seed: int,
    train_x: FeatureMatrix,
    train_y: npt.NDArray[Any],
    validation: tuple[FeatureMatrix, npt.NDArray[Any]] | None,
    n_estimators: int | None = None,
) -> Any:
    model = _classifier(params, seed, n_estimators)
    fit_args: dict[str, Any] = {}
    if validation is not None and params.early_stopping_rounds > 0:
        val_x, val_y = feature_frame(validation[0]), validation[1]
        if _FIT_TAKES_EVAL_X:  # LightGBM >= 4.7 deprecates eval_set
            fit_args["eval_X"], fit_args["eval_y"] = (val_x,), (val_y,)
        else:
            fit_args["eval_set"] = [(val_x, val_y)]
        fit_args["callbacks"] = [
            lgb.early_stopping(params.early_stopping_rounds, first_metric_only=True, verbose=False)
        ]
    model.fit(feature_frame(train_x), train_y, **fit_args)
    return model


def calibration_of(calibrated: Any, classes: tuple[str, ...], input_kind: str) -> Calibration:
    """The fitted per-class sigmoids of a one-estimator ``CalibratedClassifierCV``."""
    (fitted,) = calibrated.calibrated_classifiers_
    if list(calibrated.classes_) != list(range(len(classes))):
        raise RuntimeError(
            f"calibrated classes {calibrated.classes_} are not 0..{len(classes) - 1}"
        )
    a = [float(c.a_) for c in fitted.calibrators]
    b = [float(c.b_) for c in fitted.calibrators]
    return Calibration.model_validate({"input": input_kind, "a": a, "b": b})


def calibration_input(classifier: Any) -> str:
    """Which response ``CalibratedClassifierCV`` fits on: scikit-learn prefers
    ``decision_function`` (LightGBM >= 4.7: raw scores) and falls back to ``predict_proba``."""
    return "raw_score" if hasattr(classifier, "decision_function") else "probability"


def cross_validate(
    frame: pd.DataFrame, params: TrainParams, seed: int, n_estimators: int
) -> CrossValidation:
    """k-fold macro-F1 of the uncalibrated model with a fixed number of trees."""
    x = features_of(frame)
    y = encode_labels(frame["label"], tuple(sorted(str(c) for c in frame["label"].unique())))
    scores = []
    folds = StratifiedKFold(n_splits=params.cv_folds, shuffle=True, random_state=seed)
    for train_idx, test_idx in folds.split(x, y):
        model = _fit(
            params,
            seed=seed,
            train_x=x[train_idx],
            train_y=y[train_idx],
            validation=None,
            n_estimators=n_estimators,
        )
        predicted = model.predict(feature_frame(x[test_idx]))
        scores.append(float(f1_score(y[test_idx], predicted, average="macro")))
    return CrossValidation(
        folds=params.cv_folds,
        macro_f1_mean=float(np.mean(scores)),
        macro_f1_std=float(np.std(scores)),
    )


def train_model(
    frame: pd.DataFrame, params: TrainParams | None = None, seed: int = 0
) -> TrainedModel:
    """Train, early-stop and calibrate on canonical data (``validate_transactions``' output)."""
    params = params or TrainParams()
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    split = split_data(frame, params, seed)
    # Integer labels in sorted class order: LightGBM 4.7's eval_y does not encode strings.
    classes = tuple(sorted(str(c) for c in frame["label"].unique()))
    train_x, val_x, cal_x = (
        features_of(p) for p in (split.train, split.validation, split.calibration)
    )
    train_y, val_y, cal_y = (
        encode_labels(p["label"], classes)
        for p in (split.train, split.validation, split.calibration)
    )
    seconds["features"] = time.perf_counter() - started

    started = time.perf_counter()
    classifier = _fit(
        params, seed=seed, train_x=train_x, train_y=train_y, validation=(val_x, val_y)
    )
    best = int(classifier.best_iteration_ or 0) or int(classifier.n_estimators)
    seconds["fit"] = time.perf_counter() - started

    started = time.perf_counter()
    calibrated = CalibratedClassifierCV(FrozenEstimator(classifier), method="sigmoid")
    calibrated.fit(feature_frame(cal_x), cal_y)
    calibration = calibration_of(calibrated, classes, calibration_input(classifier))
    seconds["calibrate"] = time.perf_counter() - started

    cv = None
    if params.cv_folds >= 2:
        started = time.perf_counter()
        trainable = pd.concat([split.train, split.validation, split.calibration])
        cv = cross_validate(trainable.reset_index(drop=True), params, seed, best)
        seconds["cross_validate"] = time.perf_counter() - started

    return TrainedModel(
        classifier=classifier,
        calibrated=calibrated,
        calibration=calibration,
        classes=classes,
        split=split,
        best_iteration=best,
        seed=seed,
        params=params,
        cross_validation=cv,
        seconds=seconds,
    )
