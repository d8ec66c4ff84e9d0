"""Decision 0009's alternative: LightGBM on ``[dense | hashed text]`` as one CSR matrix,
against the stacked model of ``training.train``, same rows, same split by brand, one thread.

    .venv/bin/python benchmarks/bench_sparse_option.py [--rows 20000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import scipy.sparse as sp  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.features import FEATURE_NAMES, N_ORIGINAL
from training.data import generate_transactions, validate_transactions
from training.train import (
    TrainParams,
    encode_labels,
    features_of,
    split_data,
    train_model,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    data = validate_transactions(generate_transactions(args.rows, seed=1))
    params = TrainParams(n_jobs=1)
    split = split_data(data, params, 0)
    classes = tuple(sorted(data["label"].unique()))

    def matrix(frame: object) -> object:
        f = features_of(frame)  # type: ignore[arg-type]
        return sp.hstack([sp.csr_matrix(f.dense), f.text_matrix()]).tocsr()

    xt, xv, xs = (matrix(p) for p in (split.train, split.validation, split.test))
    parts = (split.train, split.validation, split.test)
    yt, yv, ys = (encode_labels(p["label"], classes) for p in parts)
    started = time.perf_counter()
    model = lgb.LGBMClassifier(objective="multiclass", n_estimators=300, learning_rate=0.05,
                               num_leaves=63, subsample=0.9, subsample_freq=1, n_jobs=1,
                               verbose=-1, random_state=0)  # fmt: skip
    model.fit(xt, yt, eval_X=(xv,), eval_y=(yv,), callbacks=[lgb.early_stopping(30, verbose=False)])
    fit = time.perf_counter() - started
    booster = model.booster_
    acc = float(np.mean(booster.predict(xs).argmax(axis=1) == ys))
    bare = xs.tolil()  # type: ignore[attr-defined]
    bare[:, N_ORIGINAL : len(FEATURE_NAMES)] = 0  # no MCC
    acc_bare = float(np.mean(booster.predict(bare.tocsr()).argmax(axis=1) == ys))
    one = xs[:1]  # type: ignore[index]
    started = time.perf_counter()
    for _ in range(200):
        booster.predict(one, num_threads=1)
    one_us = (time.perf_counter() - started) / 200 * 1e6
    started = time.perf_counter()
    booster.predict(xs[:1000], num_threads=1)  # type: ignore[index]
    batch = 1000 / (time.perf_counter() - started)
    print(
        f"sparse LightGBM: fit {fit:.1f} s ({model.best_iteration_} rounds), unseen-brand "
        f"top-1 {acc:.3f}, no MCC {acc_bare:.3f}, one row {one_us:.0f} us, "
        f"{batch:,.0f} rows/s"
    )
    started = time.perf_counter()
    trained = train_model(data, params, 0)
    seconds = time.perf_counter() - started
    p = trained.predict_proba(features_of(split.test))
    p0 = trained.predict_proba(features_of(split.test.assign(mcc=None)))
    right, right_bare = np.mean(p.argmax(axis=1) == ys), np.mean(p0.argmax(axis=1) == ys)
    print(
        f"stacked: train_model {seconds:.1f} s, unseen-brand top-1 {right:.3f}, "
        f"no MCC {right_bare:.3f}"
    )


if __name__ == "__main__":
    main()
