"""Loaded model versions and their inference fast path.

:func:`load_model` verifies a version (:func:`service.artifact.verify_version`: manifest,
sha256 of every file, feature list), loads the LightGBM booster and its
:class:`~service.artifact.Calibration`, checks that they agree with the manifest (classes,
features), and runs one prediction before the version may serve.

:meth:`LoadedModel.predict_proba` is the hot path. Its probabilities are exactly
``calibration.apply(booster.predict(X, raw_score=True))`` (a unit test holds it to that;
``booster.predict(X)`` when ``Calibration.input`` is ``"probability"``),
without the per-call overhead of ``Booster.predict`` (a predictor object built per call,
a deep copy of parameters, a size query): raw scores come from LightGBM's C API into a
preallocated buffer, with ``num_threads`` fixed at load (1 by default, so a single row pays
no OpenMP start-up and two pods on two cores do not fight). A single row goes through
LightGBM's ``SingleRowFast`` API, whose prediction configuration is prepared once at load.
"""

from __future__ import annotations

import ctypes
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import lightgbm
import numpy as np
import numpy.typing as npt
from lightgbm import basic as _lgb_basic

from service.artifact import (
    MODEL_FILE,
    ArtifactError,
    Calibration,
    Manifest,
    read_calibration,
    verify_version,
)
from service.features import FEATURE_NAMES

Matrix = npt.NDArray[np.float64]

_C_API_DTYPE_FLOAT64: Final = 1  # LightGBM c_api.h
_C_API_PREDICT_NORMAL: Final = 0
_C_API_PREDICT_RAW_SCORE: Final = 1
_ROW_MAJOR: Final = 1
_N_FEATURES: Final = len(FEATURE_NAMES)


class _Scorer:
    """Raw scores (or LightGBM's probabilities) through its C API, parameters fixed once."""

    def __init__(self, booster: lightgbm.Booster, num_threads: int, *, raw: bool = True) -> None:
        self._lib: Any = _lgb_basic._LIB  # type: ignore[attr-defined]
        self._booster = booster  # keeps the handle alive as long as this scorer
        self._handle = booster._handle
        self._n_classes = int(booster.num_model_per_iteration())
        self._num_iteration = int(booster.best_iteration)
        self._params = _lgb_basic._c_str(f"num_threads={num_threads}")
        self._predict_type = _C_API_PREDICT_RAW_SCORE if raw else _C_API_PREDICT_NORMAL
        self._lock = threading.Lock()  # the single-row buffers and config are shared
        self._row_out = np.empty(self._n_classes, dtype=np.float64)
        self._row_out_ptr = self._row_out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._row_len = ctypes.c_int64(0)
        self._fast = ctypes.c_void_p()
        self._check(
            self._lib.LGBM_BoosterPredictForMatSingleRowFastInit(
                self._handle,
                ctypes.c_int(self._predict_type),
                ctypes.c_int(0),
                ctypes.c_int(self._num_iteration),
                ctypes.c_int(_C_API_DTYPE_FLOAT64),
                ctypes.c_int32(_N_FEATURES),
                _lgb_basic._c_str("num_threads=1"),
                ctypes.byref(self._fast),
            )
        )

    def _check(self, ret: int) -> None:
        if ret != 0:
            raise lightgbm.basic.LightGBMError(self._lib.LGBM_GetLastError().decode("utf-8"))

    def close(self) -> None:
        if self._fast:
            self._lib.LGBM_FastConfigFree(self._fast)
            self._fast = ctypes.c_void_p()

    def __del__(self) -> None:
        self.close()

    def __call__(self, features: Matrix) -> Matrix:
        """Scores, shape ``(n, classes)``, of a float64 ``(n, features)`` matrix."""
        n = features.shape[0]
        if features.shape[1] != _N_FEATURES:
            raise ValueError(f"expected {_N_FEATURES} features, got {features.shape[1]}")
        data = np.ascontiguousarray(features, dtype=np.float64)
        if n == 1:
            with self._lock:
                self._check(
                    self._lib.LGBM_BoosterPredictForMatSingleRowFast(
                        self._fast,
                        data.ctypes.data_as(ctypes.c_void_p),
                        ctypes.byref(self._row_len),
                        self._row_out_ptr,
                    )
                )
                return self._row_out.reshape(1, -1).copy()
        out = np.empty((n, self._n_classes), dtype=np.float64)
        out_len = ctypes.c_int64(0)
        self._check(
            self._lib.LGBM_BoosterPredictForMat(
                self._handle,
                data.ctypes.data_as(ctypes.c_void_p),
                ctypes.c_int(_C_API_DTYPE_FLOAT64),
                ctypes.c_int32(n),
                ctypes.c_int32(_N_FEATURES),
                ctypes.c_int(_ROW_MAJOR),
                ctypes.c_int(self._predict_type),
                ctypes.c_int(0),
                ctypes.c_int(self._num_iteration),
                self._params,
                ctypes.byref(out_len),
                out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
            )
        )
        if out_len.value != out.size:
            raise ValueError(f"LightGBM returned {out_len.value} scores, expected {out.size}")
        return out


class _CalibrationKernel:
    """:meth:`Calibration.apply` with its parameters as arrays made once (the same
    arithmetic in the same order, so the same bits; a row whose sigmoids sum to 0 takes
    ``Calibration.apply`` itself)."""

    def __init__(self, calibration: Calibration) -> None:
        self._calibration = calibration
        self._a = np.asarray(calibration.a, dtype=np.float64)
        self._b = np.asarray(calibration.b, dtype=np.float64)

    def __call__(self, scores: Matrix) -> Matrix:
        proba: Matrix = 1.0 / (1.0 + np.exp(scores * self._a + self._b))
        total = proba.sum(axis=1, keepdims=True)
        if not total.all():
            return self._calibration.apply(scores)
        out: Matrix = proba / total
        return out


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """One verified, loaded version. Immutable; safe to use from several threads."""

    version: str
    manifest: Manifest
    classes: tuple[str, ...]
    calibration: Calibration
    booster: lightgbm.Booster
    load_seconds: float
    _scorer: _Scorer
    _calibrate: _CalibrationKernel

    def calibration_input(self, features: Matrix) -> Matrix:
        """What the sigmoids were fitted on: ``booster.predict(features, raw_score=True)``
        (or, for ``Calibration.input == "probability"``, ``booster.predict(features)``)."""
        return self._scorer(features)

    def predict_proba(self, features: Matrix) -> Matrix:
        """Calibrated probabilities, shape ``(n, classes)``, columns in :attr:`classes` order."""
        return self._calibrate(self._scorer(features))

    def close(self) -> None:
        self._scorer.close()


def load_model(models_root: Path, version: str, *, num_threads: int = 1) -> LoadedModel:
    """Verify and load one version, or raise :class:`ArtifactError` saying why it must not serve."""
    started = time.perf_counter()
    manifest = verify_version(models_root, version)
    version_dir = models_root / version
    calibration = read_calibration(version_dir)
    try:
        booster = lightgbm.Booster(model_file=str(version_dir / MODEL_FILE))
    except lightgbm.basic.LightGBMError as exc:
        raise ArtifactError(version, f"LightGBM cannot load {MODEL_FILE}: {exc}") from exc
    n_classes = int(booster.num_model_per_iteration())
    if n_classes != len(manifest.classes):
        raise ArtifactError(
            version,
            f"the booster has {n_classes} classes, the manifest lists {len(manifest.classes)}",
        )
    if len(calibration.a) != n_classes:
        raise ArtifactError(
            version, f"calibration has {len(calibration.a)} classes, the booster {n_classes}"
        )
    if booster.num_feature() != len(FEATURE_NAMES):
        raise ArtifactError(
            version,
            f"the booster takes {booster.num_feature()} features, serving has {len(FEATURE_NAMES)}",
        )
    try:
        scorer = _Scorer(booster, num_threads=num_threads, raw=calibration.input == "raw_score")
        probe = calibration.apply(scorer(np.zeros((2, len(FEATURE_NAMES)))))
    except (lightgbm.basic.LightGBMError, ValueError) as exc:
        raise ArtifactError(version, f"a trial prediction failed: {exc}") from exc
    if not np.all(np.isfinite(probe)):
        raise ArtifactError(version, "a trial prediction is not finite")
    return LoadedModel(
        version=version,
        manifest=manifest,
        classes=tuple(manifest.classes),
        calibration=calibration,
        booster=booster,
        load_seconds=time.perf_counter() - started,
        _scorer=scorer,
        _calibrate=_CalibrationKernel(calibration),
    )
