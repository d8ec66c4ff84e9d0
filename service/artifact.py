"""The model artifact format (DESIGN.md contract 2): training writes it, serving reads it.

A version is a directory ``<models-root>/<version>/`` holding:

- ``model.txt``: the LightGBM booster in its text format (``Booster.save_model``);
- ``calibration.json``: a :class:`Calibration` mapping the booster's raw scores to
  calibrated probabilities;
- ``text_stage.npz``: the :class:`TextStage`, the linear model over the hashed text
  block whose class scores the booster reads beside the dense features;
- ``trees.so`` (optional): the same trees compiled to machine code by the training Job
  (:class:`CompiledTrees` in the manifest says for which machine and how); serving loads
  it instead of LightGBM's predictor once it has checked that it gives the same scores;
- ``manifest.json``: a :class:`Manifest`, with the sha256 of each file above.

Training publishes a version atomically (temporary directory, fsync, rename; see
``training/publish.py``); once published it never changes. Serving calls
:func:`verify_version` before it loads a version: the manifest must parse, every file's
sha256 must match, the feature list must equal :data:`service.features.FEATURE_NAMES` and
the feature-code version :data:`service.features.FEATURE_VERSION`.

Names beginning with ``.`` under the models root are unfinished publishes and never versions.

This module is pure (numpy and pydantic only).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.features import (
    FEATURE_VERSION,
    TEXT_DIMENSIONS,
    FeatureBatch,
    lexicon_digest,
    model_feature_names,
)
from service.serving_config import ModelVersion

MANIFEST_FILE: Final = "manifest.json"
MODEL_FILE: Final = "model.txt"
CALIBRATION_FILE: Final = "calibration.json"
TEXT_STAGE_FILE: Final = "text_stage.npz"
TREES_FILE: Final = "trees.so"
FORMAT_VERSION: Final = 1


class ArtifactError(Exception):
    """A model version that must not serve: missing, corrupt, or trained on other features."""

    def __init__(self, version: str, reason: str) -> None:
        super().__init__(f"model version {version!r}: {reason}")
        self.version = version
        self.reason = reason


def sharpen(proba: npt.NDArray[np.float64], power: float) -> npt.NDArray[np.float64]:
    """``proba ** power``, normalised per row: :meth:`Calibration.sharpen`, and what
    training fits ``power`` by (``training.train.fit_power``)."""
    powered = proba**power
    out: npt.NDArray[np.float64] = powered / powered.sum(axis=1, keepdims=True)
    return out


class Calibration(BaseModel):
    """One-vs-rest sigmoid calibration of raw scores, normalised across classes.

    It reproduces scikit-learn's ``CalibratedClassifierCV(method="sigmoid")`` over one
    frozen estimator: for class ``k`` with raw score ``f_k``,
    ``p_k = 1 / (1 + exp(a_k * f_k + b_k))``, then ``p /= p.sum()`` per row (a row whose
    sum is 0 becomes uniform). ``input`` says which response the sigmoids were fitted on.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["sigmoid"] = "sigmoid"
    input: Literal["raw_score", "probability"] = "raw_score"
    a: list[float]
    b: list[float]
    power: float = Field(default=1.0, gt=0.0, le=100.0)

    @model_validator(mode="after")
    def _same_length(self) -> Calibration:
        if len(self.a) != len(self.b) or not self.a:
            raise ValueError(
                f"a and b must be non-empty and equal in length: {len(self.a)}, {len(self.b)}"
            )
        return self

    def apply(self, scores: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Calibrated probabilities, shape ``(n, classes)``, from scores of the same shape."""
        a = np.asarray(self.a)
        b = np.asarray(self.b)
        with np.errstate(over="ignore"):  # exp -> inf is the sigmoid's limit: p = 0
            proba = 1.0 / (1.0 + np.exp(scores * a + b))
        total = proba.sum(axis=1, keepdims=True)
        n_classes = proba.shape[1]
        uniform = np.full_like(proba, 1.0 / n_classes)
        safe_total = np.where(total == 0.0, 1.0, total)
        out: npt.NDArray[np.float64] = np.where(total == 0.0, uniform, proba / safe_total)
        return self.sharpen(out)

    def sharpen(self, proba: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """``proba ** power`` normalised per row (``proba`` as the sigmoids give it)."""
        if self.power == 1.0:
            return proba
        return sharpen(proba, self.power)


class CompiledTrees(BaseModel):
    """What ``trees.so`` is: ``model.txt``'s trees compiled by lleaves (LLVM) in the
    training Job and linked into a shared library. Its entry point scores rows the way
    ``forest_root(const double *rows, double *out, int start, int end)`` of lleaves does:
    ``out[i * classes + k]`` for row ``i`` of a row-major float64 ``(n, features)`` array.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: Literal["trees.so"] = "trees.so"
    machine: str = Field(description="platform.machine() the code runs on, e.g. x86_64")
    system: str = Field(default="Linux", description="platform.system() it links for")
    target_cpu: str = Field(description="LLVM CPU the code was compiled for (x86-64: any)")
    output: Literal["raw_score", "probability"]
    entry: str = Field(default="forest_root", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    compiler: str = Field(description="its versions, e.g. lleaves 1.3.0, llvmlite 0.44.0")
    max_difference: float = Field(
        ge=0.0,
        description="largest relative difference from LightGBM's scores on probe rows, "
        "measured by training before it published",
    )


class Manifest(BaseModel):
    """``manifest.json`` of one version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format_version: int = FORMAT_VERSION
    version: ModelVersion
    created: datetime
    files: dict[str, str] = Field(description="file name -> sha256 hex digest")
    features: list[str]
    feature_version: int = Field(
        description="service.features.FEATURE_VERSION of the code that computed the features"
    )
    lexicon_sha256: str | None = Field(
        default=None,
        description="sha256 of the brand lexicon (service/brands.json) the brand features "
        "read in training; serving refuses a version trained on another lexicon",
    )
    classes: list[str] = Field(min_length=2)
    metrics: dict[str, float | dict[str, float] | list[list[int]]] = Field(default_factory=dict)
    data_fingerprint: str = Field(
        description="sha256 of the training data, as training computed it"
    )
    params: dict[str, float | int | str | bool | None] = Field(default_factory=dict)
    compiled_trees: CompiledTrees | None = Field(
        default=None, description="the trees compiled to machine code, when training did so"
    )

    @model_validator(mode="after")
    def _required_files(self) -> Manifest:
        missing = {MODEL_FILE, CALIBRATION_FILE} - self.files.keys()
        if missing:
            raise ValueError(f"manifest lists no sha256 for {sorted(missing)}")
        if (self.compiled_trees is None) != (TREES_FILE not in self.files):
            raise ValueError(
                f"{TREES_FILE} must be listed in files exactly when compiled_trees describes it"
            )
        return self


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_version_dir(path: Path) -> bool:
    """A published version: a directory not hidden (unfinished publishes start with '.')."""
    return path.is_dir() and not path.name.startswith(".")


def list_versions(models_root: Path) -> list[str]:
    """Published version names under ``models_root``, oldest first (names sort by time)."""
    if not models_root.is_dir():
        return []
    return sorted(p.name for p in models_root.iterdir() if is_version_dir(p))


def read_manifest(version_dir: Path) -> Manifest:
    version = version_dir.name
    path = version_dir / MANIFEST_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(version, f"no {MANIFEST_FILE} in {version_dir}") from None
    except OSError as exc:
        raise ArtifactError(version, f"cannot read {path}: {exc}") from exc
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValidationError as exc:
        raise ArtifactError(version, f"invalid {MANIFEST_FILE}: {exc}") from exc
    if manifest.version != version:
        raise ArtifactError(
            version, f"{MANIFEST_FILE} names version {manifest.version!r}, directory is {version!r}"
        )
    return manifest


def verify_version(models_root: Path, version: str) -> Manifest:
    """Check one version before it may serve, and return its manifest.

    Raises :class:`ArtifactError` with a reason a person can act on when the version is
    missing, its manifest is invalid, a file is missing or its sha256 differs, or its
    feature list differs from the serving code's.
    """
    version_dir = models_root / version
    if not is_version_dir(version_dir):
        raise ArtifactError(version, f"not found under {models_root}")
    manifest = read_manifest(version_dir)
    if TEXT_STAGE_FILE not in manifest.files:
        raise ArtifactError(
            version,
            f"manifest lists no sha256 for {TEXT_STAGE_FILE} (an artifact of older feature code)",
        )
    for name, expected in sorted(manifest.files.items()):
        path = version_dir / name
        if not path.is_file():
            raise ArtifactError(version, f"file {name} listed in the manifest is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ArtifactError(
                version, f"sha256 of {name} is {actual[:12]}…, the manifest says {expected[:12]}…"
            )
    expected_features = model_feature_names(manifest.classes)
    if list(manifest.features) != list(expected_features):
        theirs, ours = set(manifest.features), set(expected_features)
        detail = (
            f"missing {sorted(ours - theirs)}, extra {sorted(theirs - ours)}"
            if theirs != ours
            else "same names in another order"
        )
        raise ArtifactError(version, f"trained on another feature list ({detail})")
    if manifest.feature_version != FEATURE_VERSION:
        raise ArtifactError(
            version,
            f"trained with feature code version {manifest.feature_version}, serving has "
            f"{FEATURE_VERSION} (same names, other values: retrain with this code)",
        )
    if manifest.lexicon_sha256 != lexicon_digest():
        trained = (manifest.lexicon_sha256 or "")[:12] or "none recorded"
        raise ArtifactError(
            version,
            f"trained with brand lexicon {trained}, serving has {lexicon_digest()[:12]} "
            "(service/brands.json changed: retrain with this code)",
        )
    return manifest


def read_calibration(version_dir: Path) -> Calibration:
    try:
        return Calibration.model_validate(json.loads((version_dir / CALIBRATION_FILE).read_text()))
    except (OSError, ValueError, ValidationError) as exc:
        raise ArtifactError(version_dir.name, f"invalid {CALIBRATION_FILE}: {exc}") from exc


class TextStage:
    """A linear model over the hashed text block: one score per class,
    ``scores = text @ coef + intercept``.

    ``coef`` is float32 ``(TEXT_DIMENSIONS, classes)``; the products and each row's sum
    are computed in float32 in one fixed order, so a row scores the same bits alone or in
    any batch, in training and in serving. Stored, in the file and in memory, as the rows of
    ``coef`` that are not zero (hashed tokens never seen in training have no weight): an
    index from each column to its row (0: the zero row) and those rows, ~4 MiB instead of
    the dense 10 MiB for the benchmark's model (a serving pod holds one per loaded version
    and process).
    """

    def __init__(self, coef: npt.NDArray[np.float32], intercept: npt.NDArray[np.float64]) -> None:
        if coef.ndim != 2 or coef.shape[0] != TEXT_DIMENSIONS or coef.dtype != np.float32:
            raise ValueError(f"coef must be float32 ({TEXT_DIMENSIONS}, k), got {coef.shape}")
        rows = np.flatnonzero(np.any(coef != 0, axis=1)).astype(np.int32)
        self._set(rows, coef[rows], intercept)

    @classmethod
    def from_rows(
        cls,
        rows: npt.NDArray[np.integer],
        weights: npt.NDArray[np.float32],
        intercept: npt.NDArray[np.float64],
    ) -> TextStage:
        """The stage whose ``coef`` is ``weights`` at ``rows`` (ascending, unique) and 0
        elsewhere."""
        if weights.ndim != 2 or len(rows) != len(weights) or weights.dtype != np.float32:
            raise ValueError("rows and weights do not fit")
        if len(rows) and (rows.min() < 0 or rows.max() >= TEXT_DIMENSIONS):
            raise ValueError("a weight row lies outside the hashed text space")
        if len(rows) > 1 and not np.all(np.diff(rows) > 0):
            raise ValueError("weight rows must be unique and ascending")
        stage = cls.__new__(cls)
        stage._set(rows.astype(np.int32), weights, intercept)
        return stage

    def _set(
        self,
        rows: npt.NDArray[np.int32],
        weights: npt.NDArray[np.float32],
        intercept: npt.NDArray[np.float64],
    ) -> None:
        if intercept.shape != (weights.shape[1],):
            raise ValueError(f"intercept must be ({weights.shape[1]},), got {intercept.shape}")
        self._rows = rows
        self._weights = np.vstack([np.zeros((1, weights.shape[1]), np.float32), weights])
        self._row_of = np.zeros(TEXT_DIMENSIONS, dtype=np.int32)
        self._row_of[rows] = np.arange(1, len(rows) + 1, dtype=np.int32)
        self.intercept = intercept.astype(np.float64)
        for array in (self._rows, self._weights, self._row_of, self.intercept):
            array.setflags(write=False)

    @property
    def n_classes(self) -> int:
        return int(self._weights.shape[1])

    @property
    def coef(self) -> npt.NDArray[np.float32]:
        """The dense ``(TEXT_DIMENSIONS, classes)`` weights (a new array)."""
        coef = np.zeros((TEXT_DIMENSIONS, self.n_classes), dtype=np.float32)
        coef[self._rows] = self._weights[1:]
        return coef

    def scores(self, features: FeatureBatch) -> npt.NDArray[np.float64]:
        """``(n, classes)`` float64 scores of a batch."""
        n = len(features)
        indptr = features.indptr
        out = np.zeros((n, self.n_classes), dtype=np.float64)
        nnz = int(indptr[-1])
        if nnz:
            weights = self._weights.take(self._row_of.take(features.indices), axis=0)
            contrib = weights * features.data[:, None]
            starts = np.minimum(indptr[:-1], nnz - 1)
            summed = np.add.reduceat(contrib, starts, axis=0)
            nonempty = indptr[1:] > indptr[:-1]
            out[nonempty] = summed[nonempty]
        out += self.intercept
        return out

    def to_bytes(self) -> bytes:
        import io  # noqa: PLC0415

        buffer = io.BytesIO()
        np.savez_compressed(
            buffer, rows=self._rows, weights=self._weights[1:], intercept=self.intercept
        )
        return buffer.getvalue()

    @classmethod
    def from_file(cls, path: Path) -> TextStage:
        with np.load(path, allow_pickle=False) as npz:
            rows, weights, intercept = npz["rows"], npz["weights"], npz["intercept"]
        if rows.ndim != 1 or rows.dtype.kind not in "iu":
            raise ValueError(f"rows must be a vector of integers, got {rows.dtype} {rows.shape}")
        return cls.from_rows(rows, weights, np.asarray(intercept, np.float64))


def read_text_stage(version_dir: Path) -> TextStage:
    try:
        return TextStage.from_file(version_dir / TEXT_STAGE_FILE)
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError(version_dir.name, f"invalid {TEXT_STAGE_FILE}: {exc}") from exc
