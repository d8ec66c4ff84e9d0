"""Settings, and the original SUGGEST_* variables mapped onto a ServingConfig."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.serving_config import ServingConfig, SuggestMode
from service.settings import (
    ConfigSourceKind,
    Settings,
    SettingsError,
    legacy_serving_config,
)
from tests.service.conftest import CANDIDATE_VERSION, STABLE_VERSION


def config_from(monkeypatch: pytest.MonkeyPatch, **env: str) -> ServingConfig:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return legacy_serving_config(Settings())


def test_no_variables_mean_rules_only_with_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert config_from(monkeypatch) == ServingConfig()


CANARY_ON = {"SUGGEST_MODEL_VERSION": "v1", "SUGGEST_USE_MODEL_CANARY": "1"}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SUGGEST_ENABLED": "0"}, {"enabled": False}),
        ({"SUGGEST_ENABLED": "true"}, {"enabled": True}),
        ({"SUGGEST_MODE": "heuristic"}, {"mode": SuggestMode.HEURISTIC}),
        ({"SUGGEST_MODE": "MODEL"}, {"mode": SuggestMode.MODEL}),
        ({"SUGGEST_MODE": "auto"}, {"mode": SuggestMode.AUTO}),
        ({"SUGGEST_SHADOW": "1"}, {"shadow_percent": 100.0}),
        ({"SUGGEST_SHADOW": "false"}, {"shadow_percent": 0.0}),
        ({"SUGGEST_SHADOW": "25%"}, {"shadow_percent": 25.0}),
        ({"SUGGEST_MIN_CONF": "0.6"}, {"min_confidence": 0.6}),
        ({"SUGGEST_TOPK": "5"}, {"top_k": 5}),
        ({"SUGGEST_MODEL_VERSION": "v1"}, {"stable": "v1"}),
        (
            {"SUGGEST_MODEL_VERSION": "v1", "SUGGEST_USE_MODEL_CANARY": "1"},
            {"candidate": "v1", "canary_percent": 10.0},
        ),
        (
            {**CANARY_ON, "SUGGEST_CANARY_PCT": "20"},
            {"candidate": "v1", "canary_percent": 20.0},
        ),
        (
            {"SUGGEST_MODEL_VERSION": "v1", "SUGGEST_USE_MODEL_CANARY": "35%"},
            {"candidate": "v1", "canary_percent": 35.0},
        ),
        (
            {**CANARY_ON, "SUGGEST_USE_MODEL_CANARY": "0", "SUGGEST_CANARY_PCT": "20"},
            {"stable": "v1"},
        ),
        (
            {"SUGGEST_MODEL_VERSION": "v1", "SUGGEST_MODE": "heuristic", "SUGGEST_SHADOW": "1"},
            {"stable": "v1", "mode": SuggestMode.HEURISTIC, "shadow_percent": 100.0},
        ),
    ],
)  # fmt: skip
def test_each_variable_maps_onto_the_serving_config(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: dict[str, object]
) -> None:
    assert config_from(monkeypatch, **env) == ServingConfig.model_validate(expected)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SUGGEST_ENABLED": "maybe"}, "SUGGEST_ENABLED"),
        ({"SUGGEST_MODE": "magic"}, "heuristic, model, auto"),
        ({"SUGGEST_SHADOW": "50"}, "SUGGEST_SHADOW"),
        ({"SUGGEST_SHADOW": "150%"}, "within 0..100"),
        ({"SUGGEST_MIN_CONF": "high"}, "SUGGEST_MIN_CONF"),
        ({"SUGGEST_MIN_CONF": "2"}, "min_confidence"),
        ({"SUGGEST_TOPK": "three"}, "SUGGEST_TOPK"),
        ({"SUGGEST_TOPK": "0"}, "top_k"),
        ({"SUGGEST_USE_MODEL_CANARY": "1"}, "no model is named"),
        ({"SUGGEST_USE_MODEL_CANARY": "x%"}, "SUGGEST_USE_MODEL_CANARY"),
    ],
)
def test_a_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        config_from(monkeypatch, **env)


def test_model_path_to_a_version_directory(
    monkeypatch: pytest.MonkeyPatch, models_root: Path
) -> None:
    monkeypatch.setenv("SUGGEST_MODEL_PATH", str(models_root / STABLE_VERSION))
    settings = Settings()
    assert settings.effective_models_root() == models_root
    assert legacy_serving_config(settings).stable == STABLE_VERSION


def test_model_path_to_a_models_root_takes_the_named_or_newest_version(
    monkeypatch: pytest.MonkeyPatch, models_root: Path
) -> None:
    monkeypatch.setenv("SUGGEST_MODEL_PATH", str(models_root))
    assert legacy_serving_config(Settings()).stable == CANDIDATE_VERSION  # newest by name
    monkeypatch.setenv("SUGGEST_MODEL_VERSION", STABLE_VERSION)
    assert legacy_serving_config(Settings()).stable == STABLE_VERSION
    assert Settings().effective_models_root() == models_root


def test_model_path_that_does_not_exist_names_a_version_that_will_fail_to_load(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SUGGEST_MODEL_PATH", str(tmp_path / "models" / "v9"))
    settings = Settings()
    assert legacy_serving_config(settings).stable == "v9"
    assert settings.effective_models_root() == tmp_path / "models"


@pytest.mark.parametrize(
    ("env", "kind"),
    [
        ({}, ConfigSourceKind.ENV),
        ({"MODELROLLOUT_NAMESPACE": "prod"}, ConfigSourceKind.KUBE),
        ({"MODELROLLOUT_CONFIG_FILE": "/etc/serving.json"}, ConfigSourceKind.FILE),
        (
            {"MODELROLLOUT_NAMESPACE": "prod", "MODELROLLOUT_CONFIG_SOURCE": "env"},
            ConfigSourceKind.ENV,
        ),
    ],
)
def test_the_configuration_source(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], kind: ConfigSourceKind
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings().source_kind() is kind


def test_process_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELROLLOUT_TARGET", "cards")
    monkeypatch.setenv("MODELROLLOUT_MODELS_ROOT", "/data/models")
    monkeypatch.setenv("POD_NAME", "cards-7d9f-abc12")
    monkeypatch.setenv("KUBECONFIG", "/home/me/.kube/config")
    monkeypatch.setenv("MODELROLLOUT_EVENT_KEY", "s3cret")
    s = Settings()
    assert (s.target, s.models_root, s.pod_name) == (
        "cards",
        Path("/data/models"),
        "cards-7d9f-abc12",
    )
    assert s.kubeconfig == Path("/home/me/.kube/config")
    assert s.event_key is not None
    assert "s3cret" not in repr(s)


def test_fault_delays_parse_per_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELROLLOUT_FAULT_DELAY", " v2=0.25, slow-1=2 ")
    assert Settings().fault_delays() == {"v2": 0.25, "slow-1": 2.0}
    monkeypatch.delenv("MODELROLLOUT_FAULT_DELAY")
    assert Settings().fault_delays() == {}


@pytest.mark.parametrize(
    "raw", ["v2", "v2=", "=0.1", "v2=fast", "v2=0", "v2=-1", "v2=11", "v2=nan"]
)
def test_bad_fault_delays_are_refused_with_the_variable(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("MODELROLLOUT_FAULT_DELAY", raw)
    with pytest.raises(SettingsError, match=r"MODELROLLOUT_FAULT_DELAY=.*VERSION=SECONDS"):
        Settings().fault_delays()


def test_faults_parse_per_version_and_the_old_delay_is_a_burn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "MODELROLLOUT_FAULTS",
        '{"v2": {"burn": 0.02, "fraction": 0.05}, "bad": {"relabel": {"Dining": "Shopping"}}}',
    )
    monkeypatch.setenv("MODELROLLOUT_FAULT_DELAY", "v2=1,old=0.5")
    plan = Settings().fault_plan()
    assert (plan["v2"].burn, plan["v2"].fraction) == (0.02, 0.05)  # FAULTS wins for v2
    assert plan["bad"].relabel == {"Dining": "Shopping"}
    assert (plan["old"].burn, plan["old"].fraction) == (0.5, 1.0)
    monkeypatch.delenv("MODELROLLOUT_FAULTS")
    monkeypatch.delenv("MODELROLLOUT_FAULT_DELAY")
    assert Settings().fault_plan() == {}


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("{", "not JSON"),
        ("[1]", "Input should be a valid dictionary"),
        ('{"v2": {"burn": 11}}', r"v2\.burn"),
        ('{"v2": {"burn": 0.1, "fraction": 0}}', r"v2\.fraction"),
        ('{"v2": {"sleep": 0.1}}', r"v2\.sleep: Extra inputs"),
        ('{"v2": {"relabel": {"Dining": ""}}}', r"v2\.relabel"),
    ],
)
def test_bad_faults_are_refused_with_the_variable(
    monkeypatch: pytest.MonkeyPatch, raw: str, why: str
) -> None:
    monkeypatch.setenv("MODELROLLOUT_FAULTS", raw)
    with pytest.raises(SettingsError, match=rf"MODELROLLOUT_FAULTS=.*{why}"):
        Settings().fault_plan()
