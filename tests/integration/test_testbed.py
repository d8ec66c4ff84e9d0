"""The test bed itself: what every other integration test relies on, shown on real servers.

A real kube-apiserver validates CRDs and enforces RBAC; kubectl and helm work against it;
kube-controller-manager collects garbage; Prometheus scrapes loopback targets; Alertmanager
delivers webhooks; and nothing is left running afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from testbed.alertmanager import Alertmanager
from testbed.controlplane import RESTRICTED_USER, ControlPlane
from testbed.exporter import MetricsExporter
from testbed.process import wait_until
from testbed.prometheus import Prometheus, PrometheusUnavailableError, ScrapeTarget
from testbed.webhook import WebhookReceiver

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "testbed"


def widget(name: str, **spec: int) -> str:
    return (
        "apiVersion: testbed.modelrollout.io/v1\nkind: Widget\n"
        f"metadata: {{name: {name}}}\nspec: {dict(spec)!r}\n".replace("'", '"')
    )


@pytest.fixture(scope="module")
def widget_crd(control_plane: ControlPlane) -> Iterator[str]:
    control_plane.kubectl("apply", "-f", str(FIXTURES / "crd.yaml"))
    crd = "crd/widgets.testbed.modelrollout.io"
    control_plane.wait_established(crd)
    yield crd
    control_plane.kubectl("delete", crd, "--wait=false", check=False)


# -- the API server --------------------------------------------------------------------------


def test_a_valid_custom_resource_is_accepted(
    control_plane: ControlPlane, widget_crd: str, namespace: str
) -> None:
    control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=widget("ok", replicas=3, minReplicas=1)
    )

    got = control_plane.kubectl("get", "widget", "ok", "-n", namespace, "-o", "name")
    assert got.stdout.strip() == "widget.testbed.modelrollout.io/ok"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param({"replicas": 11}, "should be less than or equal to 10", id="schema-maximum"),
        pytest.param(
            {"replicas": 2, "minReplicas": 3},
            "minReplicas must not exceed replicas",
            id="cel-rule",
        ),
    ],
)
def test_an_invalid_custom_resource_is_rejected_with_the_schema_message(
    control_plane: ControlPlane,
    widget_crd: str,
    namespace: str,
    spec: dict[str, int],
    message: str,
) -> None:
    result = control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=widget("bad", **spec), check=False
    )

    assert result.returncode != 0
    assert "is invalid" in result.stderr
    assert message in result.stderr
    absent = control_plane.kubectl("get", "widget", "bad", "-n", namespace, check=False)
    assert "NotFound" in absent.stderr


def test_the_restricted_identity_is_forbidden_until_a_role_binding_allows_it(
    control_plane: ControlPlane, namespace: str
) -> None:
    denied = control_plane.kubectl(
        "get", "configmaps", "-n", namespace, identity="restricted", check=False
    )
    assert denied.returncode != 0
    assert f'User "{RESTRICTED_USER}" cannot list resource "configmaps"' in denied.stderr
    with control_plane.api_client("restricted") as api:
        with pytest.raises(ApiException) as forbidden:
            k8s.CoreV1Api(api).list_namespaced_config_map(namespace)
        assert forbidden.value.status == 403

    control_plane.kubectl(
        "create", "role", "read-config", "-n", namespace, "--verb=get,list", "--resource=configmaps"
    )
    control_plane.kubectl(
        "create",
        "rolebinding",
        "read-config",
        "-n",
        namespace,
        "--role=read-config",
        f"--user={RESTRICTED_USER}",
    )

    # RBAC is served from an informer cache: poll, do not assume it is instant.
    wait_until(
        lambda: (
            control_plane.kubectl(
                "get", "configmaps", "-n", namespace, identity="restricted", check=False
            ).returncode
            == 0
        ),
        timeout=30,
        what="the RoleBinding to take effect",
    )
    with control_plane.api_client("restricted") as api:
        names = [
            c.metadata.name for c in k8s.CoreV1Api(api).list_namespaced_config_map(namespace).items
        ]
        assert "kube-root-ca.crt" in names  # published by kube-controller-manager
    still_denied = control_plane.kubectl(
        "get", "secrets", "-n", namespace, identity="restricted", check=False
    )
    assert "Forbidden" in still_denied.stderr
    elsewhere = control_plane.kubectl(
        "get", "configmaps", "-n", "default", identity="restricted", check=False
    )
    assert "Forbidden" in elsewhere.stderr


def test_a_service_account_token_has_exactly_its_bindings_permissions(
    control_plane: ControlPlane, namespace: str
) -> None:
    control_plane.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    # `view` only has rules once kube-controller-manager has aggregated them.
    control_plane.kubectl(
        "create",
        "rolebinding",
        "reader-view",
        "-n",
        namespace,
        "--clusterrole=view",
        f"--serviceaccount={namespace}:reader",
    )
    reader = control_plane.service_account_kubeconfig(namespace, "reader")

    def can(verb: str, resource: str) -> bool:
        answer = control_plane.kubectl(
            "auth", "can-i", verb, resource, "-n", namespace, identity=reader.name, check=False
        )
        return answer.stdout.strip() == "yes"

    wait_until(lambda: can("list", "configmaps"), timeout=30, what="`view` to allow listing")
    assert not can("create", "configmaps")
    assert not can("list", "secrets")
    whoami = control_plane.kubectl(
        "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", identity=reader.name
    )
    assert whoami.stdout == f"system:serviceaccount:{namespace}:reader"


def test_kubectl_apply_creates_then_updates_an_object(
    control_plane: ControlPlane, namespace: str
) -> None:
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata: {{mode: {}}}\n"

    created = control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=manifest.format("a"))
    updated = control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=manifest.format("b"))

    assert "configmap/settings created" in created.stdout
    assert "configmap/settings configured" in updated.stdout
    with control_plane.api_client() as api:
        assert k8s.CoreV1Api(api).read_namespaced_config_map("settings", namespace).data == {
            "mode": "b"
        }


def test_a_rendered_helm_chart_passes_server_side_dry_run(
    control_plane: ControlPlane, namespace: str
) -> None:
    rendered = control_plane.helm(
        "template", "r1", str(FIXTURES / "chart"), "--namespace", namespace
    ).stdout

    applied = control_plane.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=rendered
    )

    for kind in ("serviceaccount", "role", "rolebinding", "configmap", "deployment", "service"):
        assert f"{kind}" in applied.stdout.lower()
    assert applied.stdout.count("(server dry run)") == 6
    nothing = control_plane.kubectl("get", "deployments", "-n", namespace, "-o", "name")
    assert nothing.stdout.strip() == ""


def test_objects_whose_owner_is_deleted_are_garbage_collected(
    control_plane: ControlPlane, namespace: str
) -> None:
    assert "kube-controller-manager" in control_plane.pids, "no kube-controller-manager running"
    with control_plane.api_client() as api:
        core = k8s.CoreV1Api(api)
        owner = core.create_namespaced_config_map(
            namespace, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="owner"))
        )
        reference = k8s.V1OwnerReference(
            api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
        )
        core.create_namespaced_config_map(
            namespace,
            k8s.V1ConfigMap(
                metadata=k8s.V1ObjectMeta(name="dependent", owner_references=[reference])
            ),
        )

        core.delete_namespaced_config_map("owner", namespace)

        def dependent_gone() -> bool:
            names = {c.metadata.name for c in core.list_namespaced_config_map(namespace).items}
            return "dependent" not in names

        wait_until(dependent_gone, timeout=60, what="the garbage collector")


# -- Prometheus and Alertmanager --------------------------------------------------------------


def test_prometheus_scrapes_a_loopback_exporter_with_per_target_labels(
    prometheus: Prometheus, metrics_exporter: MetricsExporter
) -> None:
    metrics_exporter.set("testbed_agreement_ratio", 0.875, {"model": "v2"})
    metrics_exporter.inc("testbed_requests_total", 3)

    prometheus.set_targets(
        [ScrapeTarget(metrics_exporter.address, job="suggest", labels={"pod": "suggest-0"})]
    )

    value = prometheus.wait_for(
        'testbed_agreement_ratio{job="suggest", pod="suggest-0", model="v2"}',
        lambda v: v is not None,
    )
    assert value == 0.875
    assert prometheus.query_scalar('testbed_requests_total{pod="suggest-0"}') == 3.0
    prometheus.wait_for_targets_up()


def test_a_stopped_prometheus_is_unreachable_until_started_again(
    start_prometheus: Callable[..., Prometheus], metrics_exporter: MetricsExporter
) -> None:
    metrics_exporter.set("testbed_value", 7)
    prometheus = start_prometheus([metrics_exporter.address])
    prometheus.wait_for("testbed_value", lambda v: v == 7)

    prometheus.stop()
    with pytest.raises(PrometheusUnavailableError):
        prometheus.query("testbed_value")

    prometheus.start()
    assert prometheus.wait_for("testbed_value", lambda v: v == 7) == 7


def test_a_failing_scrape_target_shows_as_down(
    start_prometheus: Callable[..., Prometheus], metrics_exporter: MetricsExporter
) -> None:
    prometheus = start_prometheus([ScrapeTarget(metrics_exporter.address, labels={"pod": "p"})])
    prometheus.wait_for('up{pod="p"}', lambda v: v == 1)

    metrics_exporter.fail_with(500)

    prometheus.wait_for('up{pod="p"}', lambda v: v == 0)


def test_alertmanager_delivers_a_posted_alert_to_the_webhook(
    alertmanager: Alertmanager, webhook_receiver: WebhookReceiver
) -> None:
    labels = {"alertname": "SuggestAgreementDrop", "rollout": "ml/fraud-v2"}

    alertmanager.fire(labels, {"summary": "agreement below 75%"})

    firing = webhook_receiver.wait_for_alert("SuggestAgreementDrop")
    assert firing["labels"] == labels
    assert firing["annotations"] == {"summary": "agreement below 75%"}

    alertmanager.resolve(labels)

    webhook_receiver.wait_for_alert("SuggestAgreementDrop", status="resolved")


def test_alertmanager_authenticates_its_webhook_with_a_bearer_token(
    alertmanager: Alertmanager, webhook_receiver: WebhookReceiver
) -> None:
    alertmanager.set_webhook(webhook_receiver.url, bearer_token="s3cret")

    alertmanager.fire({"alertname": "Authenticated"})

    webhook_receiver.wait_for_alert("Authenticated")
    delivery = webhook_receiver.wait_for(
        lambda d: any(a["labels"]["alertname"] == "Authenticated" for a in d.alerts)
    )
    assert delivery.headers["authorization"] == "Bearer s3cret"


AGREEMENT_RULE = """
groups:
  - name: testbed
    rules:
      - alert: TestbedAgreementDrop
        expr: testbed_agreement_ratio < 0.75
        labels: {severity: page}
"""


def test_a_prometheus_alerting_rule_reaches_the_webhook_through_alertmanager(
    start_prometheus: Callable[..., Prometheus],
    alertmanager: Alertmanager,
    webhook_receiver: WebhookReceiver,
    metrics_exporter: MetricsExporter,
) -> None:
    metrics_exporter.set("testbed_agreement_ratio", 0.5)

    start_prometheus(
        [metrics_exporter.address],
        alertmanager=alertmanager.url,
        rules={"agreement": AGREEMENT_RULE},
    )

    alert = webhook_receiver.wait_for_alert("TestbedAgreementDrop", timeout=60)
    assert alert["labels"]["severity"] == "page"


# -- teardown -----------------------------------------------------------------------------------


def gone(pid: int) -> bool:
    """The process no longer runs (absent, or a zombie nobody has reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_closing_prometheus_and_alertmanager_leaves_no_process_or_directory() -> None:
    with WebhookReceiver() as receiver:
        am = Alertmanager(receiver.url).start()
        prom = Prometheus().start()
        pids = [am.pid, prom.pid]
        dirs = [am.workdir, prom.workdir]

        prom.close()
        am.close()

    assert all(pid is not None and gone(pid) for pid in pids)
    assert not any(d.exists() for d in dirs)


PROMETHEUS_IN_CHILD = """
import signal
from testbed.prometheus import Prometheus
p = Prometheus().start()
print(p.pid, p.workdir, flush=True)
signal.pause()  # until the test kills this process
"""


@pytest.fixture
def prometheus_in_child(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """A child Python (a test process of its own) running a Prometheus: (child, pid, dir)."""
    out = tmp_path / "out.txt"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-c", PROMETHEUS_IN_CHILD],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def ready_line() -> str | None:
        text = out.read_text()
        if proc.poll() is not None:
            raise AssertionError(f"the child exited with {proc.returncode}:\n{text}")
        return text if text.endswith("\n") else None

    try:
        pid, workdir = wait_until(ready_line, timeout=120, what="the child's Prometheus").split()
        yield proc, int(pid), Path(workdir)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_a_sigterm_to_the_test_process_stops_its_servers_and_removes_their_directories(
    prometheus_in_child: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    child, pid, workdir = prometheus_in_child

    child.terminate()

    assert child.wait(timeout=60) == -signal.SIGTERM  # the default action, re-raised
    assert gone(pid)
    assert not workdir.exists()


def test_servers_die_with_a_killed_test_process(
    prometheus_in_child: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    child, pid, workdir = prometheus_in_child

    child.kill()  # SIGKILL: no Python cleanup can run; the kernel's parent-death signal does
    child.wait()

    try:
        wait_until(lambda: gone(pid), timeout=30, what="Prometheus to die with its parent")
    finally:
        if not gone(pid):  # do not leak it into the rest of the session
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(workdir, ignore_errors=True)


def test_the_control_plane_cli_stops_every_server_and_cleans_up_on_sigterm(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.txt"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "testbed.controlplane", "--no-controller-manager"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        wait_until(
            lambda: "Ctrl-C stops it" in out.read_text() or proc.poll() is not None,
            timeout=120,
            what="the control plane CLI to be ready",
        )
        assert proc.poll() is None, out.read_text()
        lines = out.read_text().splitlines()
        pids = [int(p) for p in next(ln for ln in lines if ln.startswith("# pids ")).split()[2:]]
        logs = Path(next(ln for ln in lines if ln.startswith("# server ")).split("logs in ")[1])
        kubeconfig = next(ln for ln in lines if ln.startswith("export KUBECONFIG="))
        assert len(pids) == 2  # etcd, kube-apiserver
        assert Path(kubeconfig.split("=", 1)[1]).is_file()

        proc.terminate()

        assert proc.wait(timeout=60) == 0
        assert all(gone(pid) for pid in pids)
        assert not logs.parent.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
