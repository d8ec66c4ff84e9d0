"""The training Job's command line: exit codes, errors a person can act on, the summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from service.artifact import list_versions, read_manifest
from training import __main__ as cli
from training.cluster import (
    PROTECTED_FIELD_PATHS,
    field_at,
    parse_rollout_ref,
    propose_patch,
    referenced_versions,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "training" / "sample_data" / "transactions_sample.csv"
QUICK = ["--n-estimators", "40", "--num-leaves", "15", "--learning-rate", "0.2", "--threads", "1"]


def run(*argv: str) -> int:
    try:
        return cli.main(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.fixture(autouse=True)
def _no_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.delenv(cli.MODELS_ROOT_ENV, raising=False)
    monkeypatch.delenv("MODELROLLOUT_NAMESPACE", raising=False)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "required: COMMAND"),
        (["fly"], "invalid choice: 'fly'"),
        (["train", "--generate", "0"], "--generate: expected a positive integer, got 0"),
        (["train", "--generate", "many"], "expected a positive integer, got 'many'"),
        (["train", "--keep", "-1"], "--keep: expected a positive integer"),
        (["train", "--min-macro-f1", "1.5"], "expected a number in [0, 1], got 1.5"),
        (["train", "--data", "x.csv", "--generate", "10"], "not allowed with argument"),
        (["train", "--propose-to", "suggest"], "expected NAMESPACE/NAME, got 'suggest'"),
        (["train", "--corrupt", "rotate_labels"], "add --no-gate"),
        (["train", "--corrupt", "invert"], "invalid choice: 'invert'"),
        (["train", "--baseline-margin", "0.1"], "--baseline-margin needs --baseline"),
        (["train", "--cv-folds", "1"], "train: error: cv_folds must be 0 (off) or >= 2"),
        (["train", "--learning-rate", "0"], "learning_rate: Input should be greater than 0"),
        (["generate"], "the following arguments are required: --out"),
        (["verify"], "the following arguments are required: version"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(*argv) == 2
    assert message in capsys.readouterr().err


def test_train_publishes_and_prints_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run("train", "--models-root", str(tmp_path), "--generate", "8000", *QUICK)
    out, err = capsys.readouterr()
    assert code == 0, err
    (version,) = list_versions(tmp_path)
    assert f"version                  {version}" in out
    assert "macro-F1" in out
    assert "rules macro-F1" in out
    assert "Healthcare" in out  # the per-class table
    assert "pass  min_macro_f1" in out
    assert "pass  beats_rules" in out
    assert "published" in err  # progress on stderr
    assert "published" not in out
    assert "refit on all but cal     yes" in out
    manifest = read_manifest(tmp_path / version)
    assert manifest.params["n_estimators"] == 40


def test_on_the_small_sample_the_rules_win_and_nothing_is_published_unless_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """3,000 rows are too few for the model to beat the rule engine: the gate says so."""
    base = ["train", "--models-root", str(tmp_path), "--data", str(SAMPLE), *QUICK]
    assert run(*base) == 3
    err = capsys.readouterr().err
    assert "FAIL  beats_rules" in err
    assert "nothing published" in err
    assert list_versions(tmp_path) == []

    assert run(*base, "--no-require-beat-rules") == 0
    out = capsys.readouterr().out
    assert "info  beats_rules" in out
    assert len(list_versions(tmp_path)) == 1


def test_the_models_root_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(cli.MODELS_ROOT_ENV, str(tmp_path))
    assert run("train", "--generate", "8000", "--version", "env-v1", "--json", *QUICK) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["version"] == "env-v1"
    assert result["path"] == str(tmp_path / "env-v1")
    assert list_versions(tmp_path) == ["env-v1"]
    assert run("list", "--json") == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["version"] == "env-v1"
    assert run("verify", "env-v1") == 0
    assert "env-v1: ok" in capsys.readouterr().out


def test_a_failed_gate_exits_3_and_publishes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(
        "train", "--models-root", str(tmp_path), "--generate", "8000", "--min-macro-f1", "0.99",
        *QUICK,
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 3
    assert "FAIL  min_macro_f1" in captured.out
    assert "nothing published" in captured.err
    assert list_versions(tmp_path) == []
    assert [p.name for p in tmp_path.iterdir()] == []


def test_a_bad_model_can_be_published_on_purpose(tmp_path: Path) -> None:
    argv = ["train", "--models-root", str(tmp_path), "--generate", "8000", *QUICK]
    assert run(*argv, "--corrupt", "shuffle_labels", "--no-gate") == 0
    (version,) = list_versions(tmp_path)
    assert read_manifest(tmp_path / version).params["corrupt"] == "shuffle_labels"


def test_bad_data_exits_4_naming_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "bad.csv"
    data.write_text("id,merchant,memo,amount,user_id\n1,X,,1.0,u\n")
    assert run("train", "--models-root", str(tmp_path / "m"), "--data", str(data)) == 4
    assert "missing column(s) ['label']" in capsys.readouterr().err
    assert run("train", "--models-root", str(tmp_path / "m"), "--data", str(tmp_path / "no")) == 4


def test_verify_and_list_report_broken_versions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "v1").mkdir()
    assert run("verify", "v1", "--models-root", str(tmp_path)) == 1
    assert "no manifest.json" in capsys.readouterr().err
    assert run("verify", "v9", "--models-root", str(tmp_path)) == 1
    assert run("list", "--models-root", str(tmp_path)) == 0
    assert "v1       invalid: no manifest.json" in capsys.readouterr().out
    assert run("list", "--models-root", str(tmp_path / "empty")) == 0
    assert "no versions under" in capsys.readouterr().out


def test_generate_writes_a_dataset(tmp_path: Path) -> None:
    out = tmp_path / "d.parquet"
    assert run("generate", "--rows", "100", "--seed", "3", "--out", str(out)) == 0
    assert out.stat().st_size > 0
    assert run("generate", "--rows", "10", "--out", str(tmp_path / "d.xlsx")) == 2


def test_retention_without_a_reachable_cluster_removes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["train", "--models-root", str(tmp_path), "--generate", "8000", *QUICK]
    for v in ("v1", "v2"):
        assert run(*base, "--version", v) == 0
    assert run(*base, "--version", "v3", "--keep", "1", "--protect-from-cluster") == 0
    assert "retention skipped" in capsys.readouterr().err
    assert list_versions(tmp_path) == ["v1", "v2", "v3"]
    assert run(*base, "--version", "v4", "--keep", "2", "--protect", "v1") == 0
    assert list_versions(tmp_path) == ["v1", "v3", "v4"]


class FakeRollouts:
    """Stands in for the Kubernetes adapter: the CLI's decisions, not the API, are tested."""

    objects: dict[tuple[str, str], dict[str, Any]] = {}
    patches: list[tuple[str, str, str]] = []

    def list(self, namespace: str | None) -> list[dict[str, Any]]:
        return [o for (ns, _), o in self.objects.items() if namespace in (None, ns)]

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return self.objects[(namespace, name)]

    def propose(self, namespace: str, name: str, version: str) -> None:
        self.patches.append((namespace, name, version))


def test_cluster_named_versions_are_protected_and_better_models_proposed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "ClusterRollouts", FakeRollouts)
    FakeRollouts.patches = []
    base = ["train", "--models-root", str(tmp_path), "--generate", "8000", *QUICK]
    assert run(*base, "--version", "v1", "--corrupt", "shuffle_labels", "--no-gate") == 0
    assert run(*base, "--version", "v2") == 0
    FakeRollouts.objects = {
        ("ml", "suggest"): {
            "spec": {"model": {"version": "v1"}},
            "status": {"stableVersion": "v1"},
        },
        ("other", "x"): {"spec": {"model": {"version": "v2"}}},
    }
    monkeypatch.setenv("MODELROLLOUT_NAMESPACE", "ml")
    argv = [*base, "--version", "v3", "--keep", "1", "--protect-from-cluster"]
    assert run(*argv, "--propose-to", "ml/suggest") == 0
    assert list_versions(tmp_path) == ["v1", "v3"]  # v2 is named only in another namespace
    assert FakeRollouts.patches == [("ml", "suggest", "v3")]  # v3 beats the bad stable v1

    FakeRollouts.objects[("ml", "suggest")]["status"]["stableVersion"] = "v3"
    assert run(*base, "--version", "v4", "--propose-to", "ml/suggest") == 0
    assert FakeRollouts.patches == [("ml", "suggest", "v3")]  # same data, no gain: not proposed


def test_field_paths_and_patches() -> None:
    rollout = {
        "spec": {"model": {"version": "v3"}},
        "status": {"stableVersion": "v1", "candidateVersion": "v3", "serving": {"stable": "v0"}},
    }
    assert referenced_versions([rollout, {"spec": None}, {}]) == {"v0", "v1", "v3"}
    assert ("spec", "model", "version") in PROTECTED_FIELD_PATHS
    assert field_at(rollout, ("status", "serving", "candidate")) is None
    assert field_at({"spec": "text"}, ("spec", "model")) is None
    assert propose_patch("v9") == {"spec": {"model": {"version": "v9"}}}
    assert parse_rollout_ref("ml/suggest") == ("ml", "suggest")
    for bad in ("ml", "/x", "ml/", "a/b/c"):
        with pytest.raises(ValueError, match="NAMESPACE/NAME"):
            parse_rollout_ref(bad)


def test_the_module_runs_as_a_program(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "training", "list", "--models-root", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no versions" in proc.stdout
