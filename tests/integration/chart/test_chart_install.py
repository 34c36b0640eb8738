"""``helm install --wait`` into the development cluster's real control plane, then upgrade and uninstall.

The namespace enforces the Pod Security "restricted" profile, so the API
server itself refuses any pod of the chart that breaks it. The operator pod
runs as a local process with the chart's ServiceAccount token: its RBAC is
checked by the real authorizer, both by ``kubectl auth can-i`` (what it may
and may not do) and by the operator's own calls (no Forbidden in its log).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from chartkit import (
    CHART_DIR,
    MATRIX,
    RESTRICTED_LABELS,
    harness_values,
    helm,
    merge,
    values_file,
)
from steno_devcluster.controlplane import ControlPlane
from steno_devcluster.kubeapi import KubeApi
from steno_devcluster.kubelet import ProcessKubelet
from steno_devcluster.waiting import wait_for

pytestmark = pytest.mark.integration

RELEASE = "steno-it"
OPERATOR = f"{RELEASE}-operator"  # the release name contains "steno": no suffix added
INSTALL_TIMEOUT_S = 180  # the operator imports kopf and kubernetes on two busy cores
LIVENESS_WINDOW_S = 15.0  # three liveness periods of the harness values (5 s each)


def _can(control_plane: ControlPlane, namespace: str, *args: str) -> bool:
    completed = subprocess.run(
        [str(control_plane.toolbox.kubectl), f"--kubeconfig={control_plane.admin_kubeconfig}",
         "auth", "can-i", *args, f"--as=system:serviceaccount:{namespace}:{OPERATOR}"],
        capture_output=True, text=True, timeout=30, check=False)
    assert completed.returncode in (0, 1), completed.stderr
    return completed.returncode == 0


def _operator_pod(kube_api: KubeApi, namespace: str) -> dict[str, Any] | None:
    pods = kube_api.get(f"/api/v1/namespaces/{namespace}/pods",
                        labelSelector="app.kubernetes.io/component=operator")["items"]
    running = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    return running[0] if len(running) == 1 else None


def _ready(pod: dict[str, Any] | None) -> bool:
    conditions = (pod or {}).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_every_case_passes_the_api_servers_validation(
    control_plane: ControlPlane, kube_api: KubeApi, namespace: str, tmp_path: Path,
) -> None:
    """Each rendered case, applied with --dry-run=server: the API server's own schemas
    (strict field validation) and admission, Pod Security "restricted" included."""
    kube_api.patch(f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": RESTRICTED_LABELS}})
    for name, values in sorted(MATRIX.items()):
        if values.get("operator", {}).get("watchNamespaces"):
            values = merge(values, {"operator": {"watchNamespaces": [namespace]}})
        path = values_file(values, tmp_path)
        rendered = helm("template", f"dry-{name}"[:40], str(CHART_DIR), "--namespace", namespace,
                        "-f", str(path)).stdout
        manifest = tmp_path / f"{name}.yaml"
        manifest.write_text(rendered)
        completed = subprocess.run(
            [str(control_plane.toolbox.kubectl), f"--kubeconfig={control_plane.admin_kubeconfig}",
             "apply", "--dry-run=server", "--validate=strict", "-f", str(manifest)],
            capture_output=True, text=True, timeout=120, check=False)
        assert completed.returncode == 0, (name, completed.stderr)
        assert "Warning" not in completed.stderr, (name, completed.stderr)
        assert "created (server dry run)" in completed.stdout, (name, completed.stdout)


def test_install_wait_upgrade_uninstall(
    control_plane: ControlPlane, process_kubelet: ProcessKubelet, kube_api: KubeApi,
    namespace: str, tmp_path: Path,
) -> None:
    kube_api.patch(f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": RESTRICTED_LABELS}})
    values = harness_values(watch_namespaces=[namespace], pool=False)
    path = values_file(values, tmp_path)
    kubeconfig = control_plane.admin_kubeconfig
    helm("install", RELEASE, str(CHART_DIR), "--namespace", namespace, "-f", str(path),
         "--wait", f"--timeout={INSTALL_TIMEOUT_S}s", kubeconfig=kubeconfig,
         timeout_s=INSTALL_TIMEOUT_S + 30)
    try:
        pod = _operator_pod(kube_api, namespace)
        assert _ready(pod), pod
        assert pod is not None
        spec = pod["spec"]
        assert spec["serviceAccountName"] == OPERATOR
        # Restricted admission accepted it; the token mounted is the chart's ServiceAccount's.
        assert any(v.get("projected") for v in spec["volumes"])

        # The kubelet's liveness probe keeps passing: no restart over three periods.
        time.sleep(LIVENESS_WINDOW_S)
        name = pod["metadata"]["name"]
        pod = kube_api.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
        log = process_kubelet.logs(namespace, name)
        assert _ready(pod), (pod["status"], log[-4000:])
        assert pod["status"]["containerStatuses"][0]["restartCount"] == 0, log[-4000:]
        health = f"http://{pod['status']['podIP']}:{values['operator']['healthPort']}/healthz"
        with urllib.request.urlopen(health, timeout=10) as answer:
            assert answer.status == 200

        assert "Forbidden" not in log and "Not enough permissions" not in log, log[-3000:]

        # RBAC, as the real authorizer decides for the operator's ServiceAccount.
        allowed = [
            ("list", "transcriptionjobs.steno.dev"), ("watch", "transcriptionjobs.steno.dev"),
            ("patch", "transcriptionjobs.steno.dev"),
            ("patch", "transcriptionjobs.steno.dev", "--subresource=status"),
            ("update", "transcriptionjobs.steno.dev", "--subresource=finalizers"),
            ("create", "jobs.batch"), ("get", "jobs.batch"), ("watch", "jobs.batch"),
            ("patch", "jobs.batch"), ("list", "pods"), ("get", "secrets/storage"),
            ("create", "events"),
        ]
        for verb_and_resource in allowed:
            assert _can(control_plane, namespace, *verb_and_resource, "-n", namespace), \
                verb_and_resource
        # Nothing cluster-scoped (Kopf's run-time scanning is off).
        for cluster_scoped in (("list", "customresourcedefinitions.apiextensions.k8s.io"),
                               ("list", "namespaces"), ("list", "nodes")):
            assert not _can(control_plane, namespace, *cluster_scoped)
        refused = [
            ("list", "secrets"), ("watch", "secrets"), ("create", "secrets"),
            ("delete", "jobs.batch"), ("create", "pods"), ("get", "configmaps"),
            ("update", "transcriptionjobs.steno.dev"), ("delete", "transcriptionjobs.steno.dev"),
            ("create", "transcriptionjobs.steno.dev"), ("*", "*"),
        ]
        for verb_and_resource in refused:
            assert not _can(control_plane, namespace, *verb_and_resource, "-n", namespace), \
                verb_and_resource
        # Namespaced mode: nothing at all in other namespaces.
        for verb_and_resource in (("get", "secrets/storage"), ("list", "transcriptionjobs.steno.dev"),
                                  ("create", "jobs.batch")):
            assert not _can(control_plane, namespace, *verb_and_resource, "-n", "default")

        # An upgrade replaces the operator (Recreate): the old pod is gone before the new one.
        old_uid = pod["metadata"]["uid"]
        helm("upgrade", RELEASE, str(CHART_DIR), "--namespace", namespace, "--reuse-values",
             "--set", "operator.resyncSeconds=7", "--wait", f"--timeout={INSTALL_TIMEOUT_S}s",
             kubeconfig=kubeconfig, timeout_s=INSTALL_TIMEOUT_S + 30)
        new = wait_for(lambda: (p := _operator_pod(kube_api, namespace)) and _ready(p)
                       and p["metadata"]["uid"] != old_uid and p, 60, "the upgraded operator pod")
        env = {e["name"]: e.get("value") for e in new["spec"]["containers"][0]["env"]}
        assert env["STENO_RESYNC_SECONDS"] == "7"
        deployment = kube_api.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{OPERATOR}")
        assert deployment["spec"]["strategy"]["type"] == "Recreate"
        assert deployment["metadata"]["generation"] == 2
    finally:
        helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout=120s",
             kubeconfig=kubeconfig, timeout_s=150)

    selector = f"app.kubernetes.io/instance={RELEASE}"
    for path_ in (f"/apis/apps/v1/namespaces/{namespace}/deployments",
                  f"/api/v1/namespaces/{namespace}/serviceaccounts",
                  f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies",
                  f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
                  "/apis/rbac.authorization.k8s.io/v1/clusterroles",
                  "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"):
        leftovers = kube_api.get(path_, labelSelector=selector)["items"]
        assert leftovers == [], (path_, [o["metadata"]["name"] for o in leftovers])
    # helm never deletes what crds/ installed: jobs survive an uninstall.
    crd = kube_api.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                       "transcriptionjobs.steno.dev")
    assert json.dumps(crd["spec"]["names"]["shortNames"]) == '["tj"]'
