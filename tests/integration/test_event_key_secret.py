"""The chart's event-id signing key on a real API server: generated at install, the same
after ``helm upgrade`` (so ids signed before an upgrade still verify), and set on the
suggestion pods. Nothing runs (the test bed has no kubelet): helm and the API server only."""

from __future__ import annotations

import base64
import json

from testbed.controlplane import ControlPlane
from testbed.stack import ROOT

CHART = ROOT / "charts" / "modelrollout"
SECRET = "ek-modelrollout-event-key"


def _key(control_plane: ControlPlane, namespace: str) -> bytes:
    out = control_plane.kubectl("-n", namespace, "get", "secret", SECRET, "-o", "json").stdout
    return base64.b64decode(json.loads(out)["data"]["key"])


def test_the_event_key_survives_helm_upgrade(control_plane: ControlPlane, namespace: str) -> None:
    common = ("--namespace", namespace, "--skip-crds", "--set", "suggest.replicas=1")
    control_plane.helm("install", "ek", str(CHART), *common)
    try:
        first = _key(control_plane, namespace)
        assert len(first) == 48
        control_plane.helm("upgrade", "ek", str(CHART), *common, "--set", "suggest.replicas=2")
        assert _key(control_plane, namespace) == first
        deployment = json.loads(control_plane.kubectl(
            "-n", namespace, "get", "deployment", "-l", "app.kubernetes.io/component=suggest",
            "-o", "json",
        ).stdout)["items"][0]  # fmt: skip
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        ref = env["MODELROLLOUT_EVENT_KEY"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": SECRET, "key": "key"}
    finally:
        control_plane.helm("uninstall", "ek", "--namespace", namespace, check=False)
