"""Generate or read data, train, evaluate, gate, publish: the whole training run as a call.

This is the API the CLI, the benchmarks and the other components' tests use::

    from training.pipeline import train_and_publish
    from training.train import TrainParams

    good = train_and_publish(models_root, rows=3000, params=TrainParams.quick())
    bad = train_and_publish(
        models_root, rows=3000, params=TrainParams.quick(),
        corrupt="rotate_labels", gate=GateConfig(enforce=False),
    )
    good.version, good.manifest.metrics["macro_f1"]

A deliberately bad model (``corrupt=...``) is trained on corrupted labels and graded on
the true ones, so it fails the gate unless the gate is explicitly not enforced: one cannot
be published by accident, and its manifest metrics show how bad it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

from service.artifact import (
    CALIBRATION_FILE,
    MODEL_FILE,
    TEXT_STAGE_FILE,
    TREES_FILE,
    Manifest,
    read_manifest,
)
from service.features import FEATURE_VERSION, lexicon_digest
from training.data import (
    data_fingerprint,
    generate_transactions,
    read_transactions,
    validate_transactions,
)
from training.evaluate import Evaluation, RuleSuggester, evaluate_model
from training.gate import GateConfig, GateDecision, GateRejectedError, MetricValue, evaluate_gate
from training.publish import (
    RetentionResult,
    VersionExistsError,
    apply_retention,
    build_files_digest,
    clean_stale,
    new_version_name,
    publish_version,
)
from training.rules_baseline import load_rule_engine
from training.train import TrainedModel, TrainParams, refit, train_model
from training.trees import CompileTrees, TreesCompileError, compile_library, compiler_problem

Corruption = Literal["shuffle_labels", "rotate_labels"]
"""Deliberately bad models, for rollback tests:

- ``"shuffle_labels"``: labels permuted at random; the model learns noise and answers
  with low confidence, close to the class prior.
- ``"rotate_labels"``: every label replaced by the next class (sorted order); the model
  is as confident as a good one and almost always disagrees with it.
"""

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PublishResult:
    """What one run published: the version's manifest and path, and how it was graded."""

    manifest: Manifest
    path: Path
    evaluation: Evaluation
    gate: GateDecision
    trained: TrainedModel
    """The graded model (held-out parts never trained on): what the figures are of."""
    published: TrainedModel
    """What was published: the graded model fitted again on train, validation and test
    (``TrainParams.refit``), or the graded model itself."""
    retention: RetentionResult | None = None

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def metrics(self) -> dict[str, MetricValue]:
        return dict(self.manifest.metrics)


def corrupt_labels(frame: pd.DataFrame, how: Corruption, seed: int) -> pd.DataFrame:
    """A copy of canonical data with its labels corrupted as :data:`Corruption` says."""
    out = frame.copy()
    if how == "shuffle_labels":
        rng = np.random.default_rng(seed + 7919)
        out["label"] = rng.permutation(out["label"].to_numpy())
    elif how == "rotate_labels":
        classes = sorted(out["label"].unique())
        following = {c: classes[(i + 1) % len(classes)] for i, c in enumerate(classes)}
        out["label"] = out["label"].map(following)
    else:
        raise ValueError(f"unknown corruption {how!r}; expected one of {Corruption}")
    return out


def _train_corrupted(
    frame: pd.DataFrame, how: Corruption, params: TrainParams, seed: int
) -> TrainedModel:
    """Train on corrupted labels, but grade on the true ones: the metrics show the damage."""
    truth = frame.set_index("id")["label"]
    trained = train_model(corrupt_labels(frame, how, seed), params, seed)
    test = trained.split.test.copy()
    test["label"] = test["id"].map(truth)
    return replace(trained, split=replace(trained.split, test=test))


def load_data(data: pd.DataFrame | Path | None, rows: int, seed: int) -> pd.DataFrame:
    """Canonical data: read (Path), validated (DataFrame) or generated (None)."""
    if data is None:
        return validate_transactions(generate_transactions(rows, seed), source="generated data")
    if isinstance(data, Path):
        return read_transactions(data)
    return validate_transactions(data)


def train_and_publish(
    models_root: Path,
    *,
    rows: int = 20_000,
    seed: int = 0,
    version: str | None = None,
    params: TrainParams | None = None,
    gate: GateConfig | None = None,
    data: pd.DataFrame | Path | None = None,
    corrupt: Corruption | None = None,
    baseline_version: str | None = None,
    keep: int | None = None,
    protected: Collection[str] = (),
    rules: RuleSuggester | Literal["default"] | None = "default",
    progress: Progress | None = None,
    compile_trees: CompileTrees = "off",
) -> PublishResult:
    """Train a model and publish it as a new version under ``models_root``.

    - ``data``: a dataset (DataFrame or CSV/Parquet path) or ``None`` to generate ``rows``
      rows with ``seed``. Bad data raises :class:`training.data.DataError`.
    - ``version``: the name to publish under (default :func:`new_version_name`); an
      existing name raises :class:`training.publish.VersionExistsError`.
    - ``gate``: :class:`GateConfig` (default: macro-F1 >= 0.80 and better than the rules).
      A failed, enforced gate raises :class:`GateRejectedError`; nothing is published.
      ``baseline_version`` names a published version whose manifest metrics the gate
      compares with (when ``gate.min_margin_over_baseline`` is set).
    - ``corrupt``: train a deliberately bad model (:data:`Corruption`).
    - ``keep``: afterwards keep only the newest ``keep`` versions, never removing
      ``protected`` ones; ``None`` removes nothing. Stale unfinished publishes are
      always cleaned.
    - ``rules``: the rule engine scored beside the model ("default": the service's).
    - ``compile_trees``: publish the trees compiled to machine code as well
      (:mod:`training.trees`): ``"on"`` raises :class:`training.trees.TreesCompileError`
      when they cannot be (before training, when this machine has no compiler), ``"auto"``
      publishes without them and says why.
    """
    say = progress or (lambda _msg: None)
    params = params or TrainParams()
    gate = gate or GateConfig()
    if version is None:
        version = new_version_name()
    elif (models_root / version).exists():
        # Fail before minutes of training, not after.
        raise VersionExistsError(f"version {version!r} already exists under {models_root}")
    if compile_trees == "on" and (problem := compiler_problem()) is not None:
        raise TreesCompileError(f"cannot compile the trees here: {problem}")

    say("loading data" if data is not None else f"generating {rows} rows (seed {seed})")
    frame = load_data(data, rows, seed)
    say(f"training on {len(frame)} rows, {frame['label'].nunique()} classes")
    if corrupt is None:
        trained = train_model(frame, params, seed)
    else:
        trained = _train_corrupted(frame, corrupt, params, seed)
    say(
        f"trained: {trained.best_iteration} trees per class, "
        + ", ".join(f"{k} {v:.1f}s" for k, v in trained.seconds.items())
    )

    engine: RuleSuggester | None
    if rules == "default":  # the rules must not know the test's brands either
        unseen = trained.split.test["group"] if trained.params.split == "group" else []
        engine = load_rule_engine(unseen)
    else:
        engine = rules
    evaluation = evaluate_model(trained, engine)
    metrics = evaluation.manifest_metrics()
    baseline = None
    if baseline_version is not None:
        baseline = dict(read_manifest(models_root / baseline_version).metrics)
    decision = evaluate_gate(metrics, gate, baseline, baseline_name=baseline_version or "baseline")
    say("gate:\n" + decision.summary())
    if not decision.publish:
        raise GateRejectedError(decision)

    published, chosen = trained, "graded"
    if params.refit and corrupt is None:
        say("fitting the published model again on train, validation and test")
        published, chosen = choose_published(trained, refit(trained), metrics)
        say(f"publishing the {chosen} model")
    files = {
        MODEL_FILE: published.model_text().encode(),
        CALIBRATION_FILE: published.calibration.model_dump_json(indent=2).encode(),
        TEXT_STAGE_FILE: published.text_stage.to_bytes(),
    }
    compiled = None
    if compile_trees != "off":
        say("compiling the trees to machine code (trees.so)")
        started = time.perf_counter()
        try:
            library = compile_library(published.model_text(), output=published.calibration.input)
        except TreesCompileError as exc:
            if compile_trees == "on":
                raise
            say(f"publishing without compiled trees: {exc}")
        else:
            files[TREES_FILE] = library.data
            compiled = library.description
            say(
                f"compiled in {time.perf_counter() - started:.0f} s "
                f"({len(library.data) >> 10} KiB, for {compiled.target_cpu}; max relative "
                "difference from LightGBM "
                f"{compiled.max_difference:.1e})"
            )
    manifest = Manifest(
        version=version,
        created=datetime.now(UTC),
        files=build_files_digest(files),
        features=list(trained.feature_names),
        feature_version=FEATURE_VERSION,
        lexicon_sha256=lexicon_digest(),
        classes=list(trained.classes),
        metrics=metrics,
        data_fingerprint=data_fingerprint(frame),
        params={
            **trained.params.manifest_params(seed),
            "corrupt": corrupt,
            "gate_enforced": gate.enforce,
            "gate_passed": decision.checks_passed,
            "published": chosen,
        },
        compiled_trees=compiled,
    )
    path = publish_version(models_root, files, manifest)
    say(f"published {version} at {path}")

    clean_stale(models_root)
    retention = None
    if keep is not None:
        retention = apply_retention(models_root, keep, protected)
        if retention.removed:
            say(f"retention removed {', '.join(retention.removed)}")
    return PublishResult(
        manifest=manifest,
        path=path,
        evaluation=evaluation,
        gate=decision,
        trained=trained,
        published=published,
        retention=retention,
    )


REFIT_TOLERANCE: Final = 0.02
"""How much lower the refitted model's calibration-part accuracy may be than the graded
model's before the graded one is published instead."""


def choose_published(
    graded: TrainedModel, refitted: TrainedModel, metrics: dict[str, MetricValue]
) -> tuple[TrainedModel, str]:
    """The refitted model, unless it does worse than the graded one on the calibration
    part (brands neither trained on; both calibrated there) by more than
    :data:`REFIT_TOLERANCE`: a refit that went wrong is not published on the graded
    model's figures. Both accuracies are added to ``metrics``."""
    part = graded.split.calibration
    y = part["label"].to_numpy()
    accuracy = {}
    for name, model in (("graded", graded), ("refit", refitted)):
        proba = model.predict_proba(model.features(part))
        accuracy[name] = float(np.mean(np.asarray(model.classes)[proba.argmax(axis=1)] == y))
        metrics[f"calibration_accuracy_{name}"] = accuracy[name]
    if accuracy["refit"] < accuracy["graded"] - REFIT_TOLERANCE:
        return graded, "graded"
    return refitted, "refit"
