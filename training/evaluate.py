"""Grading on the held-out test split: the model, and the rule engine on the same rows.

:func:`classification_metrics` is pure arithmetic over labels and probabilities;
:func:`evaluate_model` applies it to a :class:`training.train.TrainedModel` by the serving
path (booster raw scores + calibration), and scores a rule engine beside it.
:meth:`Evaluation.manifest_metrics` flattens everything into the manifest's
``metrics`` map (numbers, per-class maps, the confusion matrix).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt
from sklearn.metrics import confusion_matrix, log_loss, precision_recall_fscore_support

from training.gate import MetricValue
from training.train import CrossValidation, TrainedModel

ECE_BINS: Final = 15


class RuleSuggester(Protocol):
    """What evaluation needs of a rule engine: its best label for a transaction, or None.

    A label the model does not know, or None, counts as a wrong answer.
    """

    def top_label(
        self, merchant: str, memo: str, amount: float, mcc: str | None = None
    ) -> str | None: ...


@dataclass(frozen=True)
class ClassificationMetrics:
    accuracy: float
    macro_f1: float
    precision: dict[str, float]
    recall: dict[str, float]
    f1: dict[str, float]
    support: dict[str, float]
    confusion: list[list[int]]
    """Rows: true class, columns: predicted class, both in ``classes`` order."""


@dataclass(frozen=True)
class Evaluation:
    classes: tuple[str, ...]
    model: ClassificationMetrics
    log_loss: float
    expected_calibration_error: float
    rules: ClassificationMetrics | None
    rules_coverage: float | None
    """Share of test rows for which the rules named one of the model's classes."""
    cross_validation: CrossValidation | None
    rows: dict[str, int]
    best_iteration: int
    split: str = "group"
    descriptor_only: ClassificationMetrics | None = None
    """The model on the same rows with every MCC removed: what the descriptor alone gives."""
    confident_share: float = 1.0
    confident_accuracy: float = 0.0
    confidence_threshold: float = 0.0

    def manifest_metrics(self) -> dict[str, MetricValue]:
        """The ``metrics`` of the manifest. The gate and ``list`` read these keys."""
        out: dict[str, MetricValue] = {
            "accuracy": self.model.accuracy,
            "macro_f1": self.model.macro_f1,
            "log_loss": self.log_loss,
            "ece": self.expected_calibration_error,
            "precision": self.model.precision,
            "recall": self.model.recall,
            "f1": self.model.f1,
            "support": self.model.support,
            "confusion_matrix": self.model.confusion,
            "best_iteration": float(self.best_iteration),
            "split_by_group": 1.0 if self.split == "group" else 0.0,
            "confidence_threshold": self.confidence_threshold,
            "confident_share": self.confident_share,
            "confident_accuracy": self.confident_accuracy,
        }
        if self.descriptor_only is not None:
            out["descriptor_only_accuracy"] = self.descriptor_only.accuracy
            out["descriptor_only_macro_f1"] = self.descriptor_only.macro_f1
        for part, n in self.rows.items():
            out[f"rows_{part}"] = float(n)
        if self.rules is not None:
            out["rules_accuracy"] = self.rules.accuracy
            out["rules_macro_f1"] = self.rules.macro_f1
            out["rules_f1"] = self.rules.f1
        if self.rules_coverage is not None:
            out["rules_coverage"] = self.rules_coverage
        if self.cross_validation is not None:
            out["cv_folds"] = float(self.cross_validation.folds)
            out["cv_macro_f1_mean"] = self.cross_validation.macro_f1_mean
            out["cv_macro_f1_std"] = self.cross_validation.macro_f1_std
        return out


def classification_metrics(
    y_true: Sequence[str], y_pred: Sequence[str | None], classes: Sequence[str]
) -> ClassificationMetrics:
    """Accuracy, macro-F1 and per-class figures; a prediction outside ``classes`` is wrong.

    Macro-F1 averages over ``classes`` (all of them, also those never predicted).

    >>> m = classification_metrics(["a", "a", "b", "b"], ["a", "b", "b", None], ["a", "b"])
    >>> m.accuracy, m.recall["b"], m.precision["b"], m.confusion
    (0.5, 0.5, 0.5, [[1, 1], [0, 1]])
    """
    labels = list(classes)
    true = np.asarray(list(y_true), dtype=object)
    pred = np.asarray(["\x00none" if p is None else p for p in y_pred], dtype=object)
    if len(true) == 0 or len(true) != len(pred):
        raise ValueError(f"need equal, non-zero numbers of labels: {len(true)}, {len(pred)}")
    precision, recall, f1, support = precision_recall_fscore_support(
        true, pred, labels=labels, zero_division=0.0
    )
    return ClassificationMetrics(
        accuracy=float(np.mean(true == pred)),
        macro_f1=float(np.mean(f1)),
        precision={c: float(v) for c, v in zip(labels, precision, strict=True)},
        recall={c: float(v) for c, v in zip(labels, recall, strict=True)},
        f1={c: float(v) for c, v in zip(labels, f1, strict=True)},
        support={c: float(v) for c, v in zip(labels, support, strict=True)},
        confusion=confusion_matrix(true, pred, labels=labels).astype(int).tolist(),
    )


def expected_calibration_error(
    y_true: npt.NDArray[np.int64], proba: npt.NDArray[np.float64], bins: int = ECE_BINS
) -> float:
    """Top-label ECE: the row-weighted mean gap between confidence and accuracy per bin.

    Bins split (0, 1] equally by the top probability.

    >>> import numpy as np
    >>> expected_calibration_error(np.array([0, 1]), np.array([[0.9, 0.1], [0.7, 0.3]]), bins=10)
    0.4
    """
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y_true).astype(np.float64)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            gap = abs(float(confidence[in_bin].mean()) - float(correct[in_bin].mean()))
            total += gap * int(in_bin.sum())
    return round(total / len(y_true), 12)


CONFIDENCE_THRESHOLD: Final = 0.6
"""Where ``confident_share`` and ``confident_accuracy`` are read (a typical serving
``min_confidence``: below it the rules answer)."""


def confident(
    y_idx: npt.NDArray[np.int64], proba: npt.NDArray[np.float64], threshold: float
) -> tuple[float, float]:
    """Share of rows whose top-1 confidence is >= ``threshold``, and their accuracy.

    >>> import numpy as np
    >>> confident(np.array([0, 1, 1]), np.array([[0.9, 0.1], [0.8, 0.2], [0.5, 0.5]]), 0.6)
    (0.6666666666666666, 0.5)
    """
    top = proba.max(axis=1)
    mask = top >= threshold
    if not mask.any():
        return 0.0, 0.0
    return float(mask.mean()), float(np.mean(proba[mask].argmax(axis=1) == y_idx[mask]))


def evaluate_model(
    trained: TrainedModel,
    rules: RuleSuggester | None = None,
    *,
    threshold: float = CONFIDENCE_THRESHOLD,
) -> Evaluation:
    """Grade the model on its held-out test split (merchants unseen in training when the
    split is by group), by the serving path, and the rules beside it."""
    test = trained.split.test
    classes = trained.classes
    proba = trained.predict_proba(trained.features(test))
    index = {c: i for i, c in enumerate(classes)}
    y_idx = np.fromiter((index[v] for v in test["label"]), dtype=np.int64, count=len(test))
    y_true = test["label"].tolist()
    predicted = [classes[i] for i in proba.argmax(axis=1)]
    model = classification_metrics(y_true, predicted, classes)
    share, share_accuracy = confident(y_idx, proba, threshold)
    descriptor_only = None
    if "mcc" in test.columns and test["mcc"].map(lambda m: isinstance(m, str)).any():
        bare = test.assign(mcc=None)
        bare_proba = trained.predict_proba(trained.features(bare))
        descriptor_only = classification_metrics(
            y_true, [classes[i] for i in bare_proba.argmax(axis=1)], classes
        )

    rules_metrics = None
    coverage = None
    if rules is not None:
        mccs = test["mcc"] if "mcc" in test.columns else [None] * len(test)
        answers = [
            rules.top_label(m, d, float(a), c if isinstance(c, str) else None)
            for m, d, a, c in zip(test["merchant"], test["memo"], test["amount"], mccs, strict=True)
        ]
        rules_metrics = classification_metrics(y_true, answers, classes)
        known = set(classes)
        coverage = float(np.mean([a in known for a in answers]))

    return Evaluation(
        classes=classes,
        model=model,
        log_loss=float(log_loss(y_idx, proba, labels=list(range(len(classes))))),
        expected_calibration_error=expected_calibration_error(y_idx, proba),
        rules=rules_metrics,
        rules_coverage=coverage,
        cross_validation=trained.cross_validation,
        rows=trained.split.sizes(),
        best_iteration=trained.best_iteration,
        split=trained.params.split,
        descriptor_only=descriptor_only,
        confident_share=share,
        confident_accuracy=share_accuracy,
        confidence_threshold=threshold,
    )
