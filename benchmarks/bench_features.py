"""The evaluation behind the feature list (prints figures; not a test).

DESIGN.md lets the features grow past the original 25 only with an evaluation that shows
the gain. This trains the same LightGBM (the default parameters: 300 trees, learning rate
0.05, 63 leaves, subsample 0.9, early stopping on a validation split) twice, on the same
rows, once on the 25 original features and once on all of :data:`FEATURE_NAMES` (the 25
plus the MCC flags; the text stage is measured by benchmarks/bench_quality.py), and scores
both, and the rule engine, on the same held-out rows
with the gate's own metrics (``training.evaluate.classification_metrics``). Training and
held-out rows come from different generator seeds, so no transaction is in both.

    .venv/bin/python benchmarks/bench_features.py [--rows 40000] [--test-rows 10000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.features import FEATURE_NAMES, N_ORIGINAL  # noqa: E402
from service.rules import RuleEngine  # noqa: E402
from training.data import generate_transactions, validate_transactions  # noqa: E402
from training.evaluate import classification_metrics  # noqa: E402
from training.train import _FIT_TAKES_EVAL_X, available_cpus, features_of  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=40_000, help="training rows")
    parser.add_argument("--test-rows", type=int, default=10_000, help="held-out rows")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()

    train = validate_transactions(generate_transactions(args.rows, seed=args.seed))
    test = validate_transactions(generate_transactions(args.test_rows, seed=args.seed + 1))
    classes = sorted(str(c) for c in train["label"].unique())
    index = {c: i for i, c in enumerate(classes)}
    y = train["label"].map(index).to_numpy()
    x_all, x_test_all = features_of(train).dense, features_of(test).dense
    cut = int(len(train) * 0.85)
    print(
        f"{len(train)} training rows ({cut} fit, {len(train) - cut} early stopping), "
        f"{len(test)} held-out rows; {available_cpus()} CPUs; LightGBM {lgb.__version__}"
    )

    engine = RuleEngine.default()
    started = time.perf_counter()
    rules_pred = [
        engine.suggest(m, d, float(a), 1).top
        for m, d, a in zip(test["merchant"], test["memo"], test["amount"], strict=True)
    ]
    rules_s = time.perf_counter() - started
    truth = test["label"].tolist()
    r = classification_metrics(truth, rules_pred, classes)
    print(f"{'':<28} {'accuracy':>9} {'macro-F1':>9} {'trees':>6} {'fit s':>6} {'µs/row':>7}")
    print(
        f"{'rules':<28} {r.accuracy:>9.4f} {r.macro_f1:>9.4f} {'':>6} {'':>6} "
        f"{rules_s / len(test) * 1e6:>7.1f}"
    )

    for label, columns in (
        (f"model, original {N_ORIGINAL}", slice(0, N_ORIGINAL)),
        (f"model, all {len(FEATURE_NAMES)}", slice(0, len(FEATURE_NAMES))),
    ):
        x, x_test = x_all[:, columns], x_test_all[:, columns]
        model = lgb.LGBMClassifier(
            n_estimators=300,
            learning_rate=0.05,
            num_leaves=63,
            subsample=0.9,
            subsample_freq=1,
            n_jobs=available_cpus(),
            random_state=args.seed,
            verbose=-1,
        )
        started = time.perf_counter()
        validation = {"eval_X": (x[cut:],), "eval_y": (y[cut:],)}
        if not _FIT_TAKES_EVAL_X:  # LightGBM < 4.7
            validation = {"eval_set": [(x[cut:], y[cut:])]}
        model.fit(x[:cut], y[:cut], callbacks=[lgb.early_stopping(20, verbose=False)], **validation)
        fit_s = time.perf_counter() - started
        booster = model.booster_
        predicted = [classes[i] for i in np.asarray(model.predict(x_test))]
        m = classification_metrics(truth, predicted, classes)
        started = time.perf_counter()
        booster.predict(x_test[:2000], raw_score=True, num_threads=1)
        per_row = (time.perf_counter() - started) / min(2000, len(x_test)) * 1e6
        print(
            f"{label:<28} {m.accuracy:>9.4f} {m.macro_f1:>9.4f} {model.best_iteration_:>6} "
            f"{fit_s:>6.1f} {per_row:>7.1f}"
        )


if __name__ == "__main__":
    main()
