"""Loaded model versions and their inference fast path.

:func:`load_model` verifies a version (:func:`service.artifact.verify_version`: manifest,
sha256 of every file, feature list), loads the LightGBM booster and its
:class:`~service.artifact.Calibration`, checks that they agree with the manifest (classes,
features), and runs one prediction before the version may serve.

:meth:`LoadedModel.predict_proba` is the hot path. Its probabilities are exactly
``calibration.apply(booster.predict(X, raw_score=True))`` (a unit test holds it to that;
``booster.predict(X)`` when ``Calibration.input`` is ``"probability"``),
without the per-call overhead of ``Booster.predict`` (a predictor object built per call,
a deep copy of parameters, a size query): raw scores come from LightGBM's documented C API
(``c_api.h``, through ctypes) into a preallocated buffer, with ``num_threads`` fixed at load
(1 by default, so a single row pays no OpenMP start-up and two pods on two cores do not
fight). A single row goes through LightGBM's ``SingleRowFast`` API, whose prediction
configuration is prepared once at load. The serving process loads ``lib_lightgbm`` from the
``lightgbm`` wheel without importing the Python package: its ``compat`` module imports
scikit-learn, pandas and scipy, ~150 MiB of RSS that serving never uses (decision 0011).

Faster: a version whose training Job published its trees compiled to machine code
(``trees.so``, :class:`~service.artifact.CompiledTrees`) serves from that library once
:func:`load_model` has checked that it gives LightGBM's own scores on probe rows (the same
check as below); a library for another machine, one that fails to load or disagrees leaves
the version on LightGBM's predictor, and says why in :attr:`LoadedModel.scorer_detail`.
The serving pod needs no compiler and no LLVM for it (decision 0013).

Also optional: :meth:`LoadedModel.accelerate` compiles the same trees to
machine code with lleaves (LLVM), checks that the compiled trees give LightGBM's own raw
scores on probe rows (to 1e-9; they agree to about 1e-14), and only then swaps the
compiled scorer in. The version serves from LightGBM's predictor while it compiles
(seconds to a minute of one core, off the request path), and keeps serving from it when
the compiler is missing or the check fails. Compiled code is cached by the sha256 of
``model.txt``, the host CPU and the compiler's versions, so a restart loads it in
milliseconds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import os
import platform
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from service.artifact import (
    MODEL_FILE,
    ArtifactError,
    Calibration,
    CompiledTrees,
    Manifest,
    TextStage,
    read_calibration,
    read_text_stage,
    sha256_file,
    verify_version,
)
from service.features import FEATURE_NAMES, N_ORIGINAL, FeatureBatch

Matrix = npt.NDArray[np.float64]

_C_API_DTYPE_FLOAT64: Final = 1  # LightGBM c_api.h
_C_API_PREDICT_NORMAL: Final = 0
_C_API_PREDICT_RAW_SCORE: Final = 1
_ROW_MAJOR: Final = 1
COMPILED_TOLERANCE: Final = 1e-9
COMPILE_TIMEOUT_SECONDS: Final = 900.0
_N_DENSE: Final = len(FEATURE_NAMES)


class LightGBMError(RuntimeError):
    """An error reported by LightGBM's C API (``LGBM_GetLastError``)."""


def _library_path() -> Path:
    """``lib_lightgbm`` as the ``lightgbm`` wheel installs it, found without importing the
    Python package (whose ``compat`` module imports scikit-learn, pandas and scipy:
    ~150 MiB of a serving process for code it never runs)."""
    spec = importlib.util.find_spec("lightgbm")
    if spec is None or not spec.submodule_search_locations:
        raise LightGBMError("the lightgbm package is not installed")
    package = Path(next(iter(spec.submodule_search_locations)))
    names = {"Darwin": "lib_lightgbm.dylib", "Windows": "lib_lightgbm.dll"}
    name = names.get(platform.system(), "lib_lightgbm.so")
    for candidate in (package / "lib" / name, package / "bin" / name, package.parent / name):
        if candidate.is_file():
            return candidate
    raise LightGBMError(f"{name} not found in {package}")


_LIBRARY: Any = None
_LIBRARY_LOCK = threading.Lock()


def _lib() -> Any:
    """LightGBM's shared library, loaded once; its documented C API (``c_api.h``)."""
    global _LIBRARY  # noqa: PLW0603 - one handle per process
    with _LIBRARY_LOCK:
        if _LIBRARY is None:
            lib = ctypes.cdll.LoadLibrary(str(_library_path()))
            lib.LGBM_GetLastError.restype = ctypes.c_char_p
            _LIBRARY = lib
        return _LIBRARY


class LightGBMScorer:
    """Raw scores (or LightGBM's probabilities) through its C API, parameters fixed once."""

    def __init__(self, model_file: Path, num_threads: int, *, raw: bool = True) -> None:
        self._lib: Any = _lib()
        self._handle = ctypes.c_void_p()
        self._fast = ctypes.c_void_p()
        iterations = ctypes.c_int(0)
        self._check(
            self._lib.LGBM_BoosterCreateFromModelfile(
                str(model_file).encode(), ctypes.byref(iterations), ctypes.byref(self._handle)
            )
        )
        n_classes = ctypes.c_int(0)
        self._check(self._lib.LGBM_BoosterGetNumClasses(self._handle, ctypes.byref(n_classes)))
        n_features = ctypes.c_int(0)
        self._check(self._lib.LGBM_BoosterGetNumFeature(self._handle, ctypes.byref(n_features)))
        self.n_classes = int(n_classes.value)
        self.n_features = int(n_features.value)
        self._n_classes = self.n_classes
        self._num_iteration = 0  # all: a published model file holds its best iterations
        self._params = f"num_threads={num_threads}".encode()
        self._predict_type = _C_API_PREDICT_RAW_SCORE if raw else _C_API_PREDICT_NORMAL
        self._lock = threading.Lock()  # the single-row buffers and config are shared
        self._row_out = np.empty(self._n_classes, dtype=np.float64)
        self._row_out_ptr = self._row_out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._row_len = ctypes.c_int64(0)
        self._check(
            self._lib.LGBM_BoosterPredictForMatSingleRowFastInit(
                self._handle,
                ctypes.c_int(self._predict_type),
                ctypes.c_int(0),
                ctypes.c_int(self._num_iteration),
                ctypes.c_int(_C_API_DTYPE_FLOAT64),
                ctypes.c_int32(self.n_features),
                b"num_threads=1",
                ctypes.byref(self._fast),
            )
        )

    def _check(self, ret: int) -> None:
        if ret != 0:
            raise LightGBMError(self._lib.LGBM_GetLastError().decode("utf-8", "replace"))

    def close(self) -> None:
        if self._fast:
            self._lib.LGBM_FastConfigFree(self._fast)
            self._fast = ctypes.c_void_p()
        if self._handle:
            self._lib.LGBM_BoosterFree(self._handle)
            self._handle = ctypes.c_void_p()

    def __del__(self) -> None:
        self.close()

    def __call__(self, features: Matrix) -> Matrix:
        """Scores, shape ``(n, classes)``, of a float64 ``(n, features)`` matrix."""
        n = features.shape[0]
        if features.shape[1] != self.n_features:
            raise ValueError(f"expected {self.n_features} features, got {features.shape[1]}")
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
                ctypes.c_int32(self.n_features),
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


class LibraryScorer:
    """Raw scores (or LightGBM's probabilities) from a version's published ``trees.so``:
    lleaves' ``forest_root(rows, out, start, end)`` called through ctypes (which releases
    the GIL for the call, as it does for LightGBM's)."""

    kind: Final = "compiled"

    def __init__(self, path: Path, entry: str, n_classes: int, n_features: int) -> None:
        """Raises ``OSError`` when the library does not load here, ``AttributeError`` when
        it has no ``entry``."""
        self._library = ctypes.CDLL(str(path))
        function = getattr(self._library, entry)
        function.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        function.restype = None
        self._function = function
        self._n_classes = n_classes
        self._n_features = n_features

    def __call__(self, features: Matrix) -> Matrix:
        n = features.shape[0]
        if features.shape[1] != self._n_features:
            raise ValueError(f"expected {self._n_features} features, got {features.shape[1]}")
        if n >= 2**31 - 1:  # the entry point counts rows in a C int
            raise ValueError(f"{n} rows are more than one call can score")
        data = np.ascontiguousarray(features, dtype=np.float64)
        out = np.zeros((n, self._n_classes), dtype=np.float64)
        self._function(data.ctypes.data, out.ctypes.data, 0, n)
        return out


class _RawScorer(Protocol):
    def __call__(self, features: Matrix) -> Matrix: ...


class _Reference(_RawScorer, Protocol):
    n_features: int


class CompiledScorer:
    """Raw scores (or LightGBM's probabilities) from the trees compiled by lleaves."""

    kind: Final = "compiled"

    def __init__(self, compiled: Any, n_classes: int, n_features: int) -> None:
        self._compiled = compiled
        self._n_classes = n_classes
        self._n_features = n_features

    def __call__(self, features: Matrix) -> Matrix:
        if features.shape[1] != self._n_features:
            raise ValueError(f"expected {self._n_features} features, got {features.shape[1]}")
        data = np.ascontiguousarray(features, dtype=np.float64)
        out: Matrix = self._compiled.predict(data, n_jobs=1)
        return out.reshape(features.shape[0], self._n_classes)


def compiler_available() -> str | None:
    """Why the trees cannot be compiled here, or None when they can."""
    try:
        import lleaves  # noqa: F401, PLC0415 - optional, and heavy
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        return f"lleaves is not installed ({exc})"
    return None


def run_compiler(
    model_file: Path, output_file: Path, *, raw_score: bool, target_cpu: str | None = None
) -> None:
    """Compile ``model_file``'s trees to the object file ``output_file`` in a child
    (``python -m service.treecompile``; for this host's CPU unless ``target_cpu``).
    Raises ``RuntimeError`` when the child fails, writes nothing or takes longer than
    :data:`COMPILE_TIMEOUT_SECONDS`."""
    kind = "raw" if raw_score else "proba"
    command = [sys.executable, "-m", "service.treecompile", str(model_file), str(output_file), kind]
    try:
        proc = subprocess.run(
            [*command, *([target_cpu] if target_cpu else [])],
            capture_output=True,
            text=True,
            timeout=COMPILE_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"compiling took longer than {COMPILE_TIMEOUT_SECONDS:.0f} s") from None
    if proc.returncode != 0 or not output_file.is_file():
        raise RuntimeError(
            f"the compiler exited with {proc.returncode}: {proc.stderr.strip()[-500:]}"
        )


def compile_trees(
    model_file: Path, cache_dir: Path, *, raw_score: bool, sha256: str | None = None
) -> Any:
    """The lleaves model of ``model_file``, loaded from its compiled code in ``cache_dir``
    (compiled first, in a child process, when it is not there yet).

    The cache key names everything the machine code depends on: the trees (sha256), what
    they output, the host CPU (code is compiled for it) and the compiler's versions. The
    child writes under a unique name that is renamed into place, so processes that share
    the directory never read a half-written file. Raises ``RuntimeError`` when the child
    fails or takes longer than :data:`COMPILE_TIMEOUT_SECONDS`.
    """
    import lleaves  # noqa: PLC0415
    from llvmlite import binding  # noqa: PLC0415

    versions = "-".join(importlib.metadata.version(d) for d in ("lleaves", "llvmlite"))
    cpu = f"{platform.machine()}-{binding.get_host_cpu_name()}"
    output = "raw" if raw_score else "proba"
    digest = sha256 or sha256_file(model_file)  # a loaded version's manifest has it, verified
    key = f"{digest[:32]}-{output}-inline-{cpu}-{versions}.o"
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / key
    if not final.exists():
        scratch = cache_dir / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        try:
            run_compiler(model_file, scratch, raw_score=raw_score)
            os.replace(scratch, final)
        finally:
            scratch.unlink(missing_ok=True)
    compiled = lleaves.Model(model_file=str(model_file))
    compiled.compile(cache=str(final), raw_score=raw_score, finline=True)  # loads the file
    return compiled


PROBE_ROWS: Final = 512


def max_difference(scorer: _RawScorer, reference: _Reference) -> float:
    """The largest difference between two scorers' outputs on :func:`probe_features`,
    relative to the reference's score where it is larger than 1 (NaN when one is NaN)."""
    probe = probe_features(reference.n_features)
    expected = reference(probe)
    got = scorer(probe)
    if got.shape != expected.shape:
        raise ValueError(f"scores of shape {got.shape}, expected {expected.shape}")
    return float(np.max(np.abs(got - expected) / np.maximum(1.0, np.abs(expected))))


def probe_features(n_features: int, rows: int = PROBE_ROWS, seed: int = 0) -> Matrix:
    """Model-input rows that reach many leaves: amounts of both signs and sizes, text
    lengths, keyword and MCC flags at realistic rates, text-stage scores of both signs and
    several sizes (and the all-zero row)."""
    rng = np.random.default_rng(seed)
    amounts = rng.normal(0.0, 1.0, rows) * rng.choice([5.0, 50.0, 500.0, 5000.0], rows)
    x = np.zeros((rows, n_features), dtype=np.float64)
    x[:, 0] = amounts
    x[:, 1] = np.abs(amounts)
    x[:, 2] = amounts < 0
    x[:, 3] = amounts > 0
    x[:, 4] = rng.integers(0, 40, rows)
    x[:, 5] = rng.integers(0, 60, rows)
    x[:, 6:N_ORIGINAL] = rng.random((rows, N_ORIGINAL - 6)) < 0.1
    x[:, N_ORIGINAL:_N_DENSE] = rng.random((rows, _N_DENSE - N_ORIGINAL)) < 0.1
    scores = n_features - _N_DENSE
    x[:, _N_DENSE:] = rng.normal(0.0, 1.0, (rows, scores)) * rng.choice([0.5, 2.0, 8.0], (rows, 1))
    x[0] = 0.0
    return x


@dataclass(slots=True)
class _ScorerSlot:
    """The scorer a version uses now; swapped once, atomically, when compiled code is ready."""

    scorer: _RawScorer
    kind: str = "lightgbm"
    detail: str = "LightGBM's predictor"


class _CalibrationKernel:
    """:meth:`Calibration.apply` with its parameters as arrays made once (the same
    arithmetic in the same order, so the same bits; a row whose sigmoids sum to 0 takes
    ``Calibration.apply`` itself)."""

    def __init__(self, calibration: Calibration) -> None:
        self._calibration = calibration
        self._a = np.asarray(calibration.a, dtype=np.float64)
        self._b = np.asarray(calibration.b, dtype=np.float64)

    def __call__(self, scores: Matrix) -> Matrix:
        with np.errstate(over="ignore"):  # exp -> inf is the sigmoid's limit: p = 0
            proba: Matrix = 1.0 / (1.0 + np.exp(scores * self._a + self._b))
        total = proba.sum(axis=1, keepdims=True)
        if not total.all():
            return self._calibration.apply(scores)
        out: Matrix = proba / total
        return self._calibration.sharpen(out)


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """One verified, loaded version. Immutable; safe to use from several threads."""

    version: str
    manifest: Manifest
    classes: tuple[str, ...]
    calibration: Calibration
    text_stage: TextStage
    load_seconds: float
    model_file: Path
    _scorer: LightGBMScorer
    _calibrate: _CalibrationKernel
    _slot: _ScorerSlot = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_slot", _ScorerSlot(self._scorer))

    @property
    def scorer(self) -> str:
        """``"lightgbm"`` or ``"compiled"``: which code computes this version's scores now."""
        return self._slot.kind

    @property
    def scorer_detail(self) -> str:
        return self._slot.detail

    def model_input(self, features: FeatureBatch) -> Matrix:
        """What the trees read: the dense features, then the text stage's class scores."""
        return np.hstack((features.dense, self.text_stage.scores(features)))

    def calibration_input(self, features: FeatureBatch) -> Matrix:
        """What the sigmoids were fitted on: ``booster.predict(model_input, raw_score=True)``
        (or, for ``Calibration.input == "probability"``, ``booster.predict(model_input)``)."""
        return self._slot.scorer(self.model_input(features))

    def predict_proba(self, features: FeatureBatch) -> Matrix:
        """Calibrated probabilities, shape ``(n, classes)``, columns in :attr:`classes` order.

        Safe to call from several threads at once (the single-row buffers are locked; the
        batch path and the compiled trees share nothing mutable)."""
        return self._calibrate(self._slot.scorer(self.model_input(features)))

    def accelerate(self, cache_dir: Path, *, tolerance: float = COMPILED_TOLERANCE) -> str:
        """Compile the trees and serve from the compiled code once it is proven equal.

        Equal means: on :func:`probe_features`, every raw score (or probability) of the
        compiled trees is within ``tolerance`` (relative to the score's size, at least 1)
        of LightGBM's. Returns what was done; raises (and changes nothing) when the trees
        cannot be compiled or the check fails.
        """
        if self._slot.kind == CompiledScorer.kind:
            return self._slot.detail
        started = time.perf_counter()
        raw = self.calibration.input == "raw_score"
        compiled = CompiledScorer(
            compile_trees(
                self.model_file,
                cache_dir,
                raw_score=raw,
                sha256=self.manifest.files[MODEL_FILE],
            ),
            len(self.classes),
            self._scorer.n_features,
        )
        diff = max_difference(compiled, self._scorer)
        if not diff <= tolerance:
            raise ValueError(
                f"compiled trees differ from LightGBM by {diff:.3g} (> {tolerance:g}) "
                f"on {PROBE_ROWS} probe rows; serving stays on LightGBM"
            )
        detail = (
            f"compiled by lleaves in {time.perf_counter() - started:.1f} s; max relative "
            f"difference from LightGBM {diff:.1e} on {PROBE_ROWS} probe rows"
        )
        self._use(compiled, detail)
        return detail

    def _use(self, scorer: _RawScorer, detail: str) -> None:
        self._slot.detail = detail
        self._slot.scorer = scorer
        self._slot.kind = CompiledScorer.kind

    def use_published_trees(self, *, tolerance: float = COMPILED_TOLERANCE) -> str | None:
        """Serve from the version's published ``trees.so`` when it is for this machine,
        loads, and gives LightGBM's scores on :func:`probe_features` (as
        :meth:`accelerate` checks). Returns None when it serves from it, else why not (the
        version then stays on LightGBM's predictor, and :attr:`scorer_detail` says why).
        """
        trees = self.manifest.compiled_trees
        if trees is None:
            return "the version has no published compiled trees"
        if self._slot.kind == CompiledScorer.kind:
            return None
        reason = self._published_scorer_problem(trees, tolerance)
        if reason is not None:
            self._slot.detail = f"LightGBM's predictor (published trees not used: {reason})"
        return reason

    def _published_scorer_problem(self, trees: CompiledTrees, tolerance: float) -> str | None:
        here = (platform.machine(), platform.system())
        if (trees.machine, trees.system) != here:
            return f"compiled for {trees.machine}/{trees.system}, this is {here[0]}/{here[1]}"
        if trees.output != self.calibration.input:
            return f"they output {trees.output}, the calibration reads {self.calibration.input}"
        path = self.model_file.parent / trees.file
        try:
            library = LibraryScorer(path, trees.entry, len(self.classes), self._scorer.n_features)
        except (OSError, AttributeError) as exc:
            return f"{trees.file} does not load here: {exc}"
        diff = max_difference(library, self._scorer)
        if not diff <= tolerance:
            return (
                f"{trees.file} differs from LightGBM by {diff:.3g} (> {tolerance:g}) on "
                f"{PROBE_ROWS} probe rows"
            )
        self._use(
            library,
            f"published by training ({trees.compiler}, for {trees.target_cpu}); max "
            f"relative difference from LightGBM {diff:.1e} on {PROBE_ROWS} probe rows",
        )
        return None

    def close(self) -> None:
        self._scorer.close()


def load_model(
    models_root: Path, version: str, *, num_threads: int = 1, published_trees: bool = True
) -> LoadedModel:
    """Verify and load one version, or raise :class:`ArtifactError` saying why it must not serve.

    ``published_trees``: serve from the version's published compiled trees when they pass
    :meth:`LoadedModel.use_published_trees` (a version without them, or whose library is
    unusable here, serves from LightGBM's predictor)."""
    started = time.perf_counter()
    manifest = verify_version(models_root, version)
    version_dir = models_root / version
    calibration = read_calibration(version_dir)
    text_stage = read_text_stage(version_dir)
    try:
        scorer = LightGBMScorer(
            version_dir / MODEL_FILE, num_threads=num_threads, raw=calibration.input == "raw_score"
        )
    except LightGBMError as exc:
        raise ArtifactError(version, f"LightGBM cannot load {MODEL_FILE}: {exc}") from exc
    n_classes = scorer.n_classes
    if n_classes != len(manifest.classes):
        scorer.close()
        raise ArtifactError(
            version,
            f"the booster has {n_classes} classes, the manifest lists {len(manifest.classes)}",
        )
    if len(calibration.a) != n_classes:
        scorer.close()
        raise ArtifactError(
            version, f"calibration has {len(calibration.a)} classes, the booster {n_classes}"
        )
    if scorer.n_features != len(manifest.features):
        scorer.close()
        raise ArtifactError(
            version,
            f"the booster takes {scorer.n_features} features, the manifest lists "
            f"{len(manifest.features)}",
        )
    if text_stage.n_classes != n_classes:
        scorer.close()
        raise ArtifactError(
            version,
            f"the text stage scores {text_stage.n_classes} classes, the booster {n_classes}",
        )
    try:
        probe = calibration.apply(scorer(np.zeros((2, scorer.n_features))))
    except (LightGBMError, ValueError) as exc:
        raise ArtifactError(version, f"a trial prediction failed: {exc}") from exc
    if not np.all(np.isfinite(probe)):
        raise ArtifactError(version, "a trial prediction is not finite")
    model = LoadedModel(
        version=version,
        manifest=manifest,
        classes=tuple(manifest.classes),
        calibration=calibration,
        text_stage=text_stage,
        load_seconds=0.0,
        model_file=version_dir / MODEL_FILE,
        _scorer=scorer,
        _calibrate=_CalibrationKernel(calibration),
    )
    if published_trees and manifest.compiled_trees is not None:
        model.use_published_trees()
    release_freed_memory()
    object.__setattr__(model, "load_seconds", time.perf_counter() - started)
    return model


def _malloc_trim() -> Any:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc
        return None
    if trim is not None:
        trim.argtypes = [ctypes.c_size_t]
        trim.restype = ctypes.c_int
    return trim


_TRIM: Final = _malloc_trim()


def release_freed_memory() -> None:
    """Give the heap's free pages back to the system (glibc's ``malloc_trim``; nothing
    elsewhere). Loading a version frees most of what parsing it took, but glibc keeps those
    pages: measured, 25 MiB of RSS for two 580-tree versions (decision 0013)."""
    if _TRIM is not None:
        _TRIM(0)
