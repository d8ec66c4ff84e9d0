"""``python -m training`` (``modelrollout-train``): the program of the training Job.

Subcommands::

    train     train, evaluate, gate and publish a model version (then retention)
    generate  write a generated dataset (CSV or Parquet)
    list      the published versions with their headline metrics
    verify    check one version as serving will (manifest, sha256, features)

Exit status: 0 done; 1 failed (I/O, cluster, a version that does not verify); 2 bad
arguments; 3 the evaluation gate rejected the model (nothing published); 4 bad data.
Progress goes to stderr; the summary to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final, NoReturn

from pydantic import ValidationError

from service.artifact import ArtifactError, list_versions, read_manifest, verify_version
from training.cluster import (
    NAMESPACE_ENV,
    STABLE_FIELD_PATH,
    ClusterError,
    ClusterRollouts,
    field_at,
    parse_rollout_ref,
    referenced_versions,
)
from training.gate import GateConfig, GateRejectedError, MetricValue, proposal_decision
from training.publish import PublishError, apply_retention

MODELS_ROOT_ENV: Final = "MODELROLLOUT_MODELS_ROOT"
DEFAULT_MODELS_ROOT: Final = "/models"

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_GATE: Final = 3
EXIT_DATA: Final = 4


def _progress(message: str) -> None:
    print(f"[training {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


def _rollout_ref(text: str) -> tuple[str, str]:
    try:
        return parse_rollout_ref(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelrollout-train",
        description="Train, evaluate and publish model versions of modelrollout.",
    )
    root_help = f"models volume (env {MODELS_ROOT_ENV}, default {DEFAULT_MODELS_ROOT})"
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train, evaluate, gate and publish a version")
    train.set_defaults(subparser=train)
    train.add_argument("--models-root", type=Path, help=root_help)
    source = train.add_mutually_exclusive_group()
    source.add_argument("--data", type=Path, help="a CSV or Parquet dataset")
    source.add_argument(
        "--generate",
        type=_positive_int,
        metavar="ROWS",
        help="train on ROWS generated rows (default 20000 when --data is not given)",
    )
    train.add_argument("--seed", type=int, default=0, help="data generation and training seed")
    train.add_argument("--version", help="version name (default: <UTC time>Z-<6 hex>)")
    train.add_argument("--n-estimators", type=_positive_int, help="trees per class (300)")
    train.add_argument("--learning-rate", type=float, help="learning rate (0.05)")
    train.add_argument("--num-leaves", type=_positive_int, help="leaves per tree (63)")
    train.add_argument(
        "--early-stopping-rounds", type=int, help="rounds without improvement (30; 0: off)"
    )
    train.add_argument("--cv-folds", type=int, default=0, help="k-fold macro-F1 (0: off)")
    train.add_argument(
        "--split",
        choices=("group", "row"),
        help="held-out parts by group (brand, merchant: the default, honest on unseen "
        "merchants) or by row (what a row split would claim)",
    )
    train.add_argument(
        "--refit",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="publish the graded model fitted again on the train, validation and test parts "
        "(default: on; it knows the test's brands too, the figures stay the graded model's; "
        "calibrated on the calibration part; not published if worse there)",
    )
    train.add_argument(
        "--threads", type=_positive_int, help="training threads (default: the CPUs allowed)"
    )
    train.add_argument(
        "--min-macro-f1", type=_fraction, help="gate: minimum held-out macro-F1 (0.75)"
    )
    train.add_argument(
        "--require-beat-rules",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="gate: the model's macro-F1 must exceed the rule engine's (default: on; "
        "--no-require-beat-rules only reports the comparison)",
    )
    train.add_argument("--rules-margin", type=_fraction, default=0.0, help="... by this much")
    train.add_argument("--baseline", metavar="VERSION", help="gate: compare with this version")
    train.add_argument(
        "--baseline-margin",
        type=float,
        default=0.0,
        help="gate: macro-F1 must be >= the baseline's + this (with --baseline)",
    )
    train.add_argument(
        "--no-gate",
        action="store_true",
        help="publish even when the gate fails (deliberately bad models for tests)",
    )
    train.add_argument(
        "--corrupt",
        choices=["shuffle_labels", "rotate_labels"],
        help="train a deliberately bad model (needs --no-gate)",
    )
    train.add_argument("--keep", type=_positive_int, help="keep the newest N versions")
    train.add_argument(
        "--protect", action="append", default=[], metavar="VERSION", help="never remove it"
    )
    train.add_argument(
        "--protect-from-cluster",
        action="store_true",
        help="never remove versions that ModelRollouts name (lists them in the cluster)",
    )
    train.add_argument(
        "--namespace",
        help=f"namespace of ModelRollouts (env {NAMESPACE_ENV}; default all namespaces)",
    )
    train.add_argument(
        "--propose-to",
        type=_rollout_ref,
        metavar="NAMESPACE/NAME",
        help="set this ModelRollout's spec.model.version when the model beats its stable",
    )
    train.add_argument(
        "--propose-margin",
        type=float,
        default=0.01,
        help="macro-F1 the model must gain over the stable to be proposed (0.01)",
    )
    train.add_argument(
        "--compile-trees",
        choices=["auto", "on", "off"],
        default="auto",
        help="also publish the trees compiled to machine code, which serving pods score with "
        "(needs lleaves and GNU ld; minutes of one core and ~1.5 GB for a 600-tree model). "
        "auto: when this machine can, else publish without and say why; on: or fail (auto)",
    )
    train.add_argument("--json", action="store_true", help="print the result as JSON")

    generate = sub.add_parser("generate", help="write a generated dataset")
    generate.add_argument("--rows", type=_positive_int, default=20_000)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument(
        "--out", type=Path, required=True, help="file (.csv, .csv.gz, .parquet, .pq)"
    )

    listing = sub.add_parser("list", help="published versions and their metrics")
    listing.add_argument("--models-root", type=Path, help=root_help)
    listing.add_argument("--json", action="store_true")

    verify = sub.add_parser("verify", help="verify a version as serving does")
    verify.add_argument("version")
    verify.add_argument("--models-root", type=Path, help=root_help)
    return parser


def _models_root(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    return Path(os.environ.get(MODELS_ROOT_ENV) or DEFAULT_MODELS_ROOT)


def _number(metrics: dict[str, MetricValue], key: str) -> str:
    value = metrics.get(key)
    return f"{value:.4f}" if isinstance(value, float | int) else "-"


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _fail(code: int, message: str) -> NoReturn:
    print(f"modelrollout-train: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _cmd_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    # pandas, LightGBM and scikit-learn load only for the commands that need them.
    from training.data import DataError  # noqa: PLC0415
    from training.pipeline import train_and_publish  # noqa: PLC0415
    from training.train import TrainParams  # noqa: PLC0415
    from training.trees import TreesCompileError  # noqa: PLC0415

    if args.corrupt and not args.no_gate:
        parser.error("--corrupt trains a bad model on purpose: add --no-gate to publish it")
    if args.baseline_margin and not args.baseline:
        parser.error("--baseline-margin needs --baseline VERSION")
    overrides = {
        "n_estimators": args.n_estimators,
        "learning_rate": args.learning_rate,
        "num_leaves": args.num_leaves,
        "early_stopping_rounds": args.early_stopping_rounds,
        "cv_folds": args.cv_folds,
        "split": args.split,
        "n_jobs": args.threads,
        "refit": args.refit,
    }
    gate_fields = {
        "enforce": not args.no_gate,
        "require_beat_rules": args.require_beat_rules,
        "min_margin_over_rules": args.rules_margin,
        "min_margin_over_baseline": args.baseline_margin if args.baseline else None,
        "min_macro_f1": args.min_macro_f1,
    }
    try:
        params = TrainParams.model_validate({k: v for k, v in overrides.items() if v is not None})
        gate = GateConfig.model_validate({k: v for k, v in gate_fields.items() if v is not None})
    except ValidationError as exc:
        parser.error(_validation_message(exc))

    root = _models_root(args.models_root)
    protected = set(args.protect)
    keep = args.keep
    namespace = args.namespace or os.environ.get(NAMESPACE_ENV) or None
    cluster: ClusterRollouts | None = None
    if args.protect_from_cluster or args.propose_to:
        try:
            cluster = ClusterRollouts()
        except ClusterError as exc:
            if args.propose_to:
                _fail(EXIT_FAILED, str(exc))
            _progress(f"warning: {exc}; retention skipped (nothing is removed)")
            keep = None
    if args.protect_from_cluster and cluster is not None and keep is not None:
        try:
            named = referenced_versions(cluster.list(namespace))
        except ClusterError as exc:
            _progress(f"warning: {exc}; retention skipped (nothing is removed)")
            keep = None
        else:
            _progress(f"ModelRollouts name {sorted(named) or 'no versions'}: never removed")
            protected |= named

    if args.baseline and not (root / args.baseline).is_dir():
        _fail(EXIT_FAILED, f"baseline version {args.baseline!r} not found under {root}")

    try:
        result = train_and_publish(
            root,
            rows=args.generate or 20_000,
            seed=args.seed,
            version=args.version,
            params=params,
            gate=gate,
            data=args.data,
            corrupt=args.corrupt,
            baseline_version=args.baseline,
            keep=None,
            progress=_progress,
            compile_trees=args.compile_trees,
        )
    except GateRejectedError as exc:
        print(exc.decision.summary())
        _fail(EXIT_GATE, f"{exc}; nothing published")
    except DataError as exc:
        _fail(EXIT_DATA, str(exc))
    except TreesCompileError as exc:
        _fail(EXIT_FAILED, f"{exc}; nothing published (--compile-trees auto publishes without)")
    except (PublishError, ArtifactError, OSError) as exc:
        _fail(EXIT_FAILED, str(exc))

    removed: tuple[str, ...] = ()
    if keep is not None:
        removed = apply_retention(root, keep, protected).removed
        if removed:
            _progress(f"retention removed {', '.join(removed)}")

    proposed = _propose(args, cluster, root, result.version, result.metrics)

    metrics = result.metrics
    compiled = result.manifest.compiled_trees
    if args.json:
        print(
            json.dumps(
                {
                    "version": result.version,
                    "path": str(result.path),
                    "metrics": metrics,
                    "gate": [dataclasses.asdict(c) for c in result.gate.checks],
                    "removed": list(removed),
                    "proposed": proposed,
                    "compiled_trees": compiled.model_dump() if compiled else None,
                },
                indent=2,
            )
        )
        return EXIT_OK
    rows = [
        ["version", result.version],
        ["path", str(result.path)],
        ["classes", str(len(result.manifest.classes))],
        ["rows train/val/cal/test", "/".join(str(v) for v in result.evaluation.rows.values())],
        ["trees per class", str(result.trained.best_iteration)],
        ["compiled trees", f"for {compiled.target_cpu}" if compiled else "no"],
        ["accuracy", _number(metrics, "accuracy")],
        ["macro-F1", _number(metrics, "macro_f1")],
        ["log loss", _number(metrics, "log_loss")],
        ["ECE", _number(metrics, "ece")],
        ["rules accuracy", _number(metrics, "rules_accuracy")],
        ["rules macro-F1", _number(metrics, "rules_macro_f1")],
        ["refit on all but cal", "yes" if result.published.refitted else "no"],
    ]
    if "cv_macro_f1_mean" in metrics:
        cv = f"{_number(metrics, 'cv_macro_f1_mean')} ± {_number(metrics, 'cv_macro_f1_std')}"
        rows.append(["cv macro-F1", cv])
    rows.append(["removed", ", ".join(removed) or "-"])
    rows.append(["proposed", proposed or "-"])
    print(_table(rows))
    print()
    f1 = metrics.get("f1")
    precision = metrics.get("precision")
    recall = metrics.get("recall")
    if isinstance(f1, dict) and isinstance(precision, dict) and isinstance(recall, dict):
        per_class = [["class", "precision", "recall", "F1"]]
        per_class += [
            [c, f"{precision[c]:.3f}", f"{recall[c]:.3f}", f"{f1[c]:.3f}"]
            for c in result.manifest.classes
        ]
        print(_table(per_class))
        print()
    print(result.gate.summary())
    return EXIT_OK


def _propose(
    args: argparse.Namespace,
    cluster: ClusterRollouts | None,
    root: Path,
    version: str,
    metrics: dict[str, MetricValue],
) -> str | None:
    """Patch the rollout's model version when the new model beats its stable; what was done."""
    if not args.propose_to or cluster is None:
        return None
    namespace, name = args.propose_to
    try:
        rollout = cluster.get(namespace, name)
    except ClusterError as exc:
        _fail(EXIT_FAILED, f"published, but {exc}")
    stable = field_at(rollout, STABLE_FIELD_PATH)
    stable_metrics: dict[str, MetricValue] | None = None
    if isinstance(stable, str) and stable:
        try:
            stable_metrics = dict(read_manifest(root / stable).metrics)
        except ArtifactError as exc:
            _progress(f"not proposed: the stable version's manifest is unreadable: {exc}")
            return None
    proposal = proposal_decision(metrics, stable_metrics, args.propose_margin, str(stable))
    _progress(proposal.reason)
    if not proposal.propose:
        return None
    try:
        cluster.propose(namespace, name, version)
    except ClusterError as exc:
        _fail(EXIT_FAILED, f"published, but {exc}")
    return f"{namespace}/{name}"


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        message = str(err["msg"]).removeprefix("Value error, ")
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def _cmd_generate(args: argparse.Namespace) -> int:
    from training.data import DataError, generate_transactions, write_transactions  # noqa: PLC0415

    frame = generate_transactions(args.rows, args.seed)
    try:
        write_transactions(frame, args.out)
    except DataError as exc:
        _fail(EXIT_USAGE, str(exc))
    except OSError as exc:
        _fail(EXIT_FAILED, f"cannot write {args.out}: {exc}")
    _progress(f"wrote {len(frame)} rows to {args.out}")
    return EXIT_OK


def _cmd_list(args: argparse.Namespace) -> int:
    root = _models_root(args.models_root)
    entries = []
    for version in list_versions(root):
        try:
            manifest = read_manifest(root / version)
        except ArtifactError as exc:
            entries.append({"version": version, "error": exc.reason})
            continue
        metrics = dict(manifest.metrics)
        entries.append(
            {
                "version": version,
                "created": manifest.created.isoformat(),
                "accuracy": _number(metrics, "accuracy"),
                "macro_f1": _number(metrics, "macro_f1"),
                "rules_macro_f1": _number(metrics, "rules_macro_f1"),
                "corrupt": str(manifest.params.get("corrupt") or "-"),
            }
        )
    if args.json:
        print(json.dumps(entries, indent=2))
        return EXIT_OK
    if not entries:
        print(f"no versions under {root}")
        return EXIT_OK
    header = ["VERSION", "CREATED", "ACCURACY", "MACRO-F1", "RULES-F1", "CORRUPT"]
    keys = ["version", "created", "accuracy", "macro_f1", "rules_macro_f1", "corrupt"]
    rows = [header]
    for e in entries:
        if "error" in e:
            rows.append([e["version"], f"invalid: {e['error']}", "", "", "", ""])
        else:
            rows.append([e[k] for k in keys])
    print(_table(rows))
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    root = _models_root(args.models_root)
    try:
        manifest = verify_version(root, args.version)
    except ArtifactError as exc:
        _fail(EXIT_FAILED, str(exc))
    print(f"{manifest.version}: ok ({len(manifest.files)} files, {len(manifest.classes)} classes)")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "train":
        return _cmd_train(args, args.subparser)
    if args.command == "generate":
        return _cmd_generate(args)
    if args.command == "list":
        return _cmd_list(args)
    return _cmd_verify(args)


if __name__ == "__main__":
    sys.exit(main())
