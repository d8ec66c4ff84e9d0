"""Training figures (prints them; not a test).

    .venv/bin/python benchmarks/bench_training.py [--rows 100000] [--seed 0] [--threads N]

- train + calibrate + evaluate on ``--rows`` generated rows, with the default parameters
  (300 trees, learning rate 0.05, 63 leaves, early stopping), timed per step
  (target: <= 60 s for 100,000 rows on 2 cores; data generation is reported apart);
- the published model's size on disk;
- one-row latency, p50/p99: the serving path (``Booster.predict(raw_score=True)`` +
  ``Calibration.apply``, and the service's loader when present) against
  ``CalibratedClassifierCV.predict_proba``, and whether they agree;
- held-out accuracy and macro-F1 of the model and of the rule engine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.artifact import MODEL_FILE  # noqa: E402
from service.models import load_model  # noqa: E402
from training.data import generate_transactions, validate_transactions  # noqa: E402
from training.evaluate import evaluate_model  # noqa: E402
from training.pipeline import train_and_publish  # noqa: E402
from training.rules_baseline import load_rule_engine  # noqa: E402
from training.train import TrainParams, available_cpus, feature_frame, features_of, train_model  # noqa: E402


def latency(fn: Callable[[], Any], n: int = 2000) -> tuple[float, float]:
    """p50 and p99 in milliseconds of ``n`` calls (after 50 warm-up calls)."""
    for _ in range(50):
        fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    q = statistics.quantiles(samples, n=100)
    return q[49], q[98]


def show(label: str, p50: float, p99: float) -> None:
    print(f"one row, {label + ':':<45} p50 {p50:.3f} ms, p99 {p99:.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    params = TrainParams(n_jobs=args.threads)

    print(f"machine: {os.cpu_count()} CPUs, {available_cpus()} usable; LightGBM {lgb.__version__}")
    t0 = time.perf_counter()
    frame = validate_transactions(generate_transactions(args.rows, args.seed))
    gen_s = time.perf_counter() - t0
    print(f"generate + validate {args.rows} rows: {gen_s:.1f} s (not part of the target)")

    t0 = time.perf_counter()
    trained = train_model(frame, params, args.seed)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    evaluation = evaluate_model(trained, load_rule_engine())
    eval_s = time.perf_counter() - t1
    total = train_s + eval_s
    steps = ", ".join(f"{k} {v:.1f} s" for k, v in trained.seconds.items())
    print(f"train + calibrate: {train_s:.1f} s ({steps}); trees per class {trained.best_iteration}")
    print(f"evaluate (model + rules on {len(trained.split.test)} rows): {eval_s:.1f} s")
    print(f"TOTAL train + calibrate + evaluate: {total:.1f} s (target <= 60 s)")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        result = train_and_publish(root, data=frame, params=params, seed=args.seed)
        pipeline_s = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in result.path.iterdir())
        model_size = (result.path / MODEL_FILE).stat().st_size
        print(
            f"whole pipeline (validate, train, evaluate, fingerprint, publish): {pipeline_s:.1f} s"
        )
        print(f"on disk: {size / 1e6:.2f} MB ({MODEL_FILE} {model_size / 1e6:.2f} MB)")

        booster = lgb.Booster(model_file=str(result.path / MODEL_FILE))
        calibration = result.published.calibration
        calibrated = result.published.calibrated
        batch = features_of(result.published.split.test.iloc[:1000])
        x = result.published.model_input(batch)
        row = x[:1]
        row_frame = feature_frame(row, result.published.classes)

        fast = calibration.apply(booster.predict(x, raw_score=True))
        slow = calibration.sharpen(
            calibrated.predict_proba(feature_frame(x, result.published.classes))
        )
        print(f"max |serving path - predict_proba| over 1000 rows: {np.abs(fast - slow).max():.2e}")

        b50, b99 = latency(lambda: calibration.apply(booster.predict(row, raw_score=True)))
        c50, c99 = latency(lambda: calibrated.predict_proba(row_frame), n=500)
        show("Booster.predict(raw) + Calibration.apply", b50, b99)
        show("CalibratedClassifierCV.predict_proba", c50, c99)
        loaded = load_model(root, result.version)
        row_batch, x_batch = batch.take([0]), batch
        s50, s99 = latency(lambda: loaded.predict_proba(row_batch))
        show("service.models.LoadedModel.predict_proba", s50, s99)
        t0 = time.perf_counter()
        for _ in range(20):
            loaded.predict_proba(x_batch)
        per_s = 20 * len(x) / (time.perf_counter() - t0)
        print(f"batches of 1000, LoadedModel.predict_proba: {per_s:,.0f} rows/s")
        loaded.close()

    m, r = evaluation.model, evaluation.rules
    print(
        f"held-out ({len(trained.split.test)} rows): model accuracy {m.accuracy:.4f}, "
        f"macro-F1 {m.macro_f1:.4f}, log loss {evaluation.log_loss:.4f}, "
        f"ECE {evaluation.expected_calibration_error:.4f}"
    )
    if r is not None:
        print(
            f"held-out: rules accuracy {r.accuracy:.4f}, macro-F1 {r.macro_f1:.4f}, "
            f"coverage {evaluation.rules_coverage:.4f}"
        )


if __name__ == "__main__":
    main()
