"""The Helm chart renders what a cluster operator relies on (helm template, no cluster)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelrollout"


def _helm() -> str:
    bin_dir = subprocess.run(
        [str(ROOT / "hack" / "tools.sh"), "--print"], capture_output=True, text=True, check=True
    ).stdout.strip()
    helm = Path(bin_dir) / "helm"
    if not helm.exists():
        pytest.fail(f"helm is not built; run `make setup` (looked for {helm})")
    return str(helm)


def render(*sets: str) -> list[dict[str, Any]]:
    args = [_helm(), "template", "r1", str(CHART), "--namespace", "ml"]
    for s in sets:
        args += ["--set", s]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_defaults_render_every_component() -> None:
    docs = render()
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Deployment", "r1-modelrollout-controller") in names
    assert ("Deployment", "r1-modelrollout-suggest") in names
    assert ("Job", "r1-modelrollout-train-initial") in names
    assert ("PersistentVolumeClaim", "r1-modelrollout-models") in names
    assert ("Role", "r1-modelrollout-controller-leader-election") in names
    assert not any(kind.endswith("KopfPeering") for kind, _ in names)


def test_controller_replicas_elect_a_leader_on_one_lease_they_alone_may_update() -> None:
    docs = render("controller.replicas=2")
    role = next(
        d
        for d in by_kind(docs, "Role")
        if d["metadata"]["name"] == "r1-modelrollout-controller-leader-election"
    )
    assert role["metadata"]["namespace"] == "ml"
    assert {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
            "resourceNames": ["r1-modelrollout-controller"], "verbs": ["get", "update"]} in (
        role["rules"]
    )  # fmt: skip
    dep = next(
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("controller")
    )
    assert dep["spec"]["replicas"] == 2
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert "--leader-election-lease=r1-modelrollout-controller" in container["args"]
    assert {e["name"] for e in container["env"]} >= {"POD_NAME", "POD_NAMESPACE"}


def test_suggest_pods_may_read_only_their_own_serving_configmap() -> None:
    role = next(
        d for d in by_kind(render(), "Role") if d["metadata"]["name"] == "r1-modelrollout-suggest"
    )
    cm_rules = [r for r in role["rules"] if "configmaps" in r["resources"]]
    assert cm_rules == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["r1-modelrollout-suggest-serving"],
            "verbs": ["get", "list", "watch"],
        }
    ]


def test_models_volume_is_read_only_in_suggest_pods() -> None:
    dep = next(
        d for d in by_kind(render(), "Deployment") if d["metadata"]["name"].endswith("suggest")
    )
    pod = dep["spec"]["template"]["spec"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "models")
    claim = next(v for v in pod["volumes"] if v["name"] == "models")["persistentVolumeClaim"]
    assert mount["readOnly"] is True
    assert claim["readOnly"] is True


def test_watch_namespaces_switch_to_namespaced_roles() -> None:
    docs = render("controller.watchNamespaces={team-a,team-b}")
    roles = [
        d for d in by_kind(docs, "Role") if d["metadata"]["name"] == "r1-modelrollout-controller"
    ]  # the leader-election Role is separate, in the release namespace
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    cluster_role = by_kind(docs, "ClusterRole")[0]
    assert not any("modelrollouts" in r["resources"] for r in cluster_role["rules"])
    args = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args
    assert "--all-namespaces" not in args


def test_unknown_values_are_rejected_by_the_schema() -> None:
    with pytest.raises(subprocess.CalledProcessError) as err:
        render("suggest.replcias=3")
    assert "replcias" in err.value.stderr


def test_out_of_range_values_are_rejected_by_the_schema() -> None:
    with pytest.raises(subprocess.CalledProcessError) as err:
        render("suggest.defaults.minConfidence=1.5")
    assert "minConfidence" in err.value.stderr


def test_prometheus_rule_carries_the_agreement_alert() -> None:
    docs = render("monitoring.prometheusRule.enabled=true")
    rule = by_kind(docs, "PrometheusRule")[0]["spec"]["groups"][0]["rules"][0]
    assert rule["alert"] == "SuggestAgreementDrop"
    assert "modelrollout_shadow_comparisons_total" in rule["expr"]
    assert "0.75" in rule["expr"]


def test_chart_crds_are_the_repository_crds() -> None:
    """charts/modelrollout/crds/ carries a copy of crds/ (Helm cannot reach outside the chart)."""
    source = sorted((ROOT / "crds").glob("*.yaml"))
    assert source, "crds/ holds no CRD"
    for path in source:
        copy = CHART / "crds" / path.name
        assert copy.exists(), f"{copy} is missing: run `make sync-crds`"
        assert copy.read_text() == path.read_text(), (
            f"{copy} differs from {path}: run `make sync-crds`"
        )


def _container_args(docs: list[dict[str, Any]], kind: str, name: str) -> list[str]:
    doc = next(d for d in by_kind(docs, kind) if d["metadata"]["name"] == name)
    pod_owner = doc["spec"]["jobTemplate"] if kind == "CronJob" else doc
    spec = pod_owner["spec"]["template"]["spec"]
    args: list[str] = spec["containers"][0]["args"]
    return args


@pytest.mark.parametrize(
    "sets",
    [(), ("controller.watchNamespaces={ml,ops}",), ("training.dataPath=data/txns.parquet",)],
)
def test_the_charts_arguments_are_accepted_by_the_programs_it_runs(sets: tuple[str, ...]) -> None:
    """The chart and the CLIs change separately; a flag one renames must fail here, not in a pod."""
    from controller.__main__ import parse_args  # noqa: PLC0415 - imports kopf
    from training.__main__ import _parser  # noqa: PLC0415

    docs = render("training.schedule=0 3 * * *", *sets)
    controller = parse_args(_container_args(docs, "Deployment", "r1-modelrollout-controller"))
    assert controller.webhook_token_file is not None
    assert controller.leader_election_lease == "r1-modelrollout-controller"
    assert not controller.standalone
    if sets and sets[0].startswith("controller.watchNamespaces"):
        assert controller.namespace == ["ml", "ops"]
    else:
        assert controller.all_namespaces
    for kind, name in (
        ("Job", "r1-modelrollout-train-initial"),
        ("CronJob", "r1-modelrollout-train"),
    ):
        training = _parser().parse_args(_container_args(docs, kind, name))
        assert training.command == "train"
        assert str(training.models_root) == "/models"
        assert training.protect_from_cluster


def test_every_pod_is_restricted() -> None:
    sets = ("monitoring.grafanaDashboard.enabled=true", "training.schedule=0 3 * * *")
    docs = render(*sets)
    specs = [d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("Deployment", "Job")]
    specs += [
        d["spec"]["jobTemplate"]["spec"]["template"]["spec"] for d in by_kind(docs, "CronJob")
    ]
    specs += [d["spec"] for d in by_kind(docs, "Pod")]  # the helm test hook
    assert len(specs) >= 5
    for spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]}


def test_helm_test_hook_asks_the_service_for_a_suggestion() -> None:
    (pod,) = by_kind(render(), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["command"][-1]
    assert "http://r1-modelrollout-suggest.ml.svc/v1/suggestions" in script


def test_network_policies_admit_only_the_serving_ports() -> None:
    policies = {d["metadata"]["name"]: d["spec"] for d in by_kind(render(), "NetworkPolicy")}
    assert policies["r1-modelrollout-suggest"]["ingress"] == [
        {"ports": [{"port": "http", "protocol": "TCP"}]}
    ]
    ports = policies["r1-modelrollout-controller"]["ingress"][0]["ports"]
    assert {p["port"] for p in ports} == {"metrics", "webhook"}
    assert policies["r1-modelrollout-training"]["ingress"] == []
    peers = render("networkPolicy.suggestClients[0].namespaceSelector.matchLabels.team=pay")
    suggest = next(
        d for d in by_kind(peers, "NetworkPolicy") if d["metadata"]["name"].endswith("suggest")
    )
    assert suggest["spec"]["ingress"][0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"team": "pay"}}}
    ]
    assert not by_kind(render("networkPolicy.enabled=false"), "NetworkPolicy")


def test_hpa_owns_the_replica_count_when_enabled() -> None:
    assert not by_kind(render(), "HorizontalPodAutoscaler")
    docs = render("suggest.autoscaling.enabled=true", "suggest.autoscaling.maxReplicas=9")
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "r1-modelrollout-suggest"
    assert hpa["spec"]["maxReplicas"] == 9
    deploy = next(
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("suggest")
    )
    assert "replicas" not in deploy["spec"]


def test_alert_rules_cover_agreement_latency_errors_and_availability() -> None:
    docs = render("monitoring.rulesConfigMap.enabled=true")
    cm = next(
        d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "r1-modelrollout-rules"
    )
    text = cm["data"]["modelrollout.rules.yml"]
    rules = yaml.safe_load(text)["groups"][0]["rules"]
    names = {r["alert"] for r in rules}
    assert {"SuggestAgreementDrop", "SuggestLatencyHigh", "SuggestModelErrors",
            "SuggestModelUnavailable"} <= names  # fmt: skip
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus) not installed: rules not checked")
    check = subprocess.run([promtool, "check", "rules", "/dev/stdin"], input=text,
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


def test_grafana_dashboard_is_valid_json_with_the_panels() -> None:
    docs = render("monitoring.grafanaDashboard.enabled=true")
    (cm,) = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dash = json.loads(cm["data"]["modelrollout.json"])
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    for metric in ("modelrollout_shadow_comparisons_total", "modelrollout_predictions_total",
                   "modelrollout_model_loaded", "modelrollout_controller_rollout_phase",
                   "modelrollout_controller_canary_percent"):  # fmt: skip
        assert metric in exprs


def test_suggest_pods_sign_event_ids_with_a_generated_key_by_default() -> None:
    """Issue 12 point 7: the chart set no key, so any well-formed id was trusted."""
    docs = render()
    secrets = {d["metadata"]["name"]: d for d in by_kind(docs, "Secret")}
    secret = secrets["r1-modelrollout-event-key"]
    key = base64.b64decode(secret["data"]["key"])
    assert len(key) == 48
    (deployment,) = [d for d in by_kind(docs, "Deployment") if "suggest" in d["metadata"]["name"]]
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    ref = env["MODELROLLOUT_EVENT_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "r1-modelrollout-event-key", "key": "key"}
    assert env["MODELROLLOUT_EVENT_TTL_SECONDS"]["value"] == "3600"
    # An existing Secret is used as is; off, no key at all.
    docs = render("suggest.eventKey.existingSecret=mine")
    assert "r1-modelrollout-event-key" not in {
        d["metadata"]["name"] for d in by_kind(docs, "Secret")
    }
    (deployment,) = [d for d in by_kind(docs, "Deployment") if "suggest" in d["metadata"]["name"]]
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELROLLOUT_EVENT_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "mine"
    docs = render("suggest.eventKey.enabled=false")
    (deployment,) = [d for d in by_kind(docs, "Deployment") if "suggest" in d["metadata"]["name"]]
    names = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "MODELROLLOUT_EVENT_KEY" not in names
