"""The ModelRollout CRD on a real API server: defaults, and bad specs refused at admission
with a message that names the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from testbed.controlplane import ControlPlane

CRD = Path(__file__).resolve().parents[2] / "crds" / "modelrollout.io_modelrollouts.yaml"


@pytest.fixture(scope="module")
def crd(control_plane: ControlPlane) -> None:
    control_plane.kubectl("apply", "-f", str(CRD))
    control_plane.wait_established("modelrollouts.modelrollout.io")


def manifest(name: str, **spec: object) -> str:
    body = {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": name},
        "spec": {"target": "suggest", "model": {"version": "v2"}, **spec},
    }
    return yaml.safe_dump(body)


def test_minimal_rollout_gets_every_default(
    crd: None, control_plane: ControlPlane, namespace: str
) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("minimal"))
    got = json.loads(
        control_plane.kubectl("get", "-n", namespace, "mro", "minimal", "-o", "json").stdout
    )
    spec = got["spec"]
    assert spec["shadow"] == {"percent": 100, "duration": "0s", "passes": 3}
    assert spec["canary"]["percent"] == 100
    assert spec["canary"]["stepInterval"] == "30s"
    assert spec["analysis"]["interval"] == "10s"
    assert spec["analysis"]["window"] == "1m"
    assert spec["analysis"]["inconclusivePolicy"] == "Hold"
    assert spec["analysis"]["thresholds"]["minAgreement"] == 0.9
    assert spec["alerts"] == {"enabled": True}
    assert spec["retry"] == 0


def test_printer_columns_and_short_name(
    crd: None, control_plane: ControlPlane, namespace: str
) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("cols"))
    header = control_plane.kubectl("get", "-n", namespace, "mro").stdout.splitlines()[0].split()
    assert header == [
        "NAME",
        "PHASE",
        "STABLE",
        "CANDIDATE",
        "SHADOW%",
        "CANARY%",
        "AGREEMENT",
        "AGE",
    ]


INVALID = [
    pytest.param(
        {"canary": {"percent": 50, "steps": [20, 5]}}, "strictly increasing", id="steps-decrease"
    ),
    pytest.param(
        {"canary": {"percent": 50, "steps": [5, 5]}}, "strictly increasing", id="steps-repeat"
    ),
    pytest.param(
        {"canary": {"percent": 50, "steps": [5, 60]}},
        "must not exceed canary.percent",
        id="step-over-percent",
    ),
    pytest.param({"canary": {"percent": 120}}, "spec.canary.percent", id="percent-over-100"),
    pytest.param({"shadow": {"percent": -1}}, "spec.shadow.percent", id="percent-negative"),
    pytest.param(
        {"model": {"version": "../etc/passwd"}}, "spec.model.version", id="version-pattern"
    ),
    pytest.param(
        {"analysis": {"interval": "30s", "window": "10s"}},
        "window must be at least analysis.interval",
        id="window-below-interval",
    ),
    pytest.param(
        {"analysis": {"interval": "500ms"}}, "interval must be at least 1s", id="interval-below-1s"
    ),
    pytest.param(
        {"analysis": {"interval": "ten seconds"}}, "spec.analysis.interval", id="duration-syntax"
    ),
    pytest.param(
        {"analysis": {"inconclusivePolicy": "Maybe"}}, "supported values", id="policy-enum"
    ),
    pytest.param(
        {"analysis": {"customChecks": [{"name": "x", "query": "up"}]}},
        "needs min or max",
        id="custom-unbounded",
    ),
    pytest.param(
        {"analysis": {"customChecks": [{"name": "x", "query": "up", "min": 2, "max": 1}]}},
        "min must not exceed max",
        id="custom-min-over-max",
    ),
    pytest.param(
        {"analysis": {"labelSelector": {"bad-key": "x"}}},
        "Prometheus label names",
        id="selector-key",
    ),
    pytest.param(
        {"analysis": {"thresholds": {"minAgreement": 1.5}}}, "minAgreement", id="agreement-over-1"
    ),
    pytest.param({"retry": -1}, "spec.retry", id="retry-negative"),
]


@pytest.mark.parametrize(("spec", "message"), INVALID)
def test_invalid_spec_is_rejected_with_the_field(
    crd: None, control_plane: ControlPlane, namespace: str, spec: dict[str, object], message: str
) -> None:
    result = control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=manifest("bad", **spec), check=False
    )
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    gone = control_plane.kubectl("get", "-n", namespace, "mro", "bad", check=False)
    assert gone.returncode != 0


def test_target_is_immutable_and_retry_only_grows(
    crd: None, control_plane: ControlPlane, namespace: str
) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("edit", retry=2))
    moved = control_plane.kubectl(
        "patch",
        "-n",
        namespace,
        "mro",
        "edit",
        "--type=merge",
        "-p",
        '{"spec":{"target":"other"}}',
        check=False,
    )
    assert moved.returncode != 0
    assert "target is immutable" in moved.stderr
    lowered = control_plane.kubectl(
        "patch",
        "-n",
        namespace,
        "mro",
        "edit",
        "--type=merge",
        "-p",
        '{"spec":{"retry":1}}',
        check=False,
    )
    assert lowered.returncode != 0
    assert "retry only grows" in lowered.stderr


def test_unknown_spec_fields_are_refused_by_strict_validation(
    crd: None, control_plane: ControlPlane, namespace: str
) -> None:
    result = control_plane.kubectl(
        "apply",
        "--validate=strict",
        "-n",
        namespace,
        "-f",
        "-",
        input=manifest("typo", canary={"percnt": 5}),
        check=False,
    )
    assert result.returncode != 0
    assert "percnt" in result.stderr
