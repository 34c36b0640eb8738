"""Fixtures for the operator's cluster tests; helpers live in ``support.operator_cluster``."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from steno_devcluster.controlplane import ControlPlane
from steno_devcluster.kubeapi import ApiError, KubeApi
from steno_devcluster.kubelet import ProcessKubelet
from steno_devcluster.objectstore import ObjectStore
from steno_devcluster.waiting import wait_for
from steno_operator import rbac
from support.operator_cluster import (
    BUCKET,
    SECRET,
    TEARDOWN_DELETE_S,
    OperatorProcess,
    operator_env,
    tj_path,
)

OPERATOR_NAMESPACE = "steno-operator-tests"
OPERATOR_ACCOUNT = "steno-operator-under-test"
TOKEN_LIFETIME_S = 3 * 3600  # longer than any test session


@pytest.fixture(scope="session")
def operator_bucket(object_store: ObjectStore) -> str:
    object_store.create_bucket(BUCKET)
    return BUCKET


@pytest.fixture
def storage_secret(kube_api: KubeApi, namespace: str, object_store: ObjectStore) -> str:
    data = {key: base64.b64encode(value.encode()).decode()
            for key, value in object_store.environment().items()}
    kube_api.create(f"/api/v1/namespaces/{namespace}/secrets",
                    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET},
                     "data": data})
    return SECRET


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own in the bucket."""
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def gpu_pod_classes(kube_api: KubeApi) -> tuple[str, str]:
    """A PriorityClass and a RuntimeClass, as a GPU cluster has them (names returned)."""
    kube_api.create("/apis/scheduling.k8s.io/v1/priorityclasses", {
        "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": "steno-batch"}, "value": 1000,
        "description": "transcription jobs"})
    kube_api.create("/apis/node.k8s.io/v1/runtimeclasses", {
        "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "nvidia"},
        "handler": "nvidia"})
    return "steno-batch", "nvidia"


@pytest.fixture(scope="session")
def operator_kubeconfig(
    control_plane: ControlPlane, kube_api: KubeApi, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A kubeconfig for a ServiceAccount granted only ``steno_operator.rbac.RULES``.

    The operator never runs as cluster admin in these tests: a permission
    missing from the list the chart uses fails them.
    """
    kube_api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                           "metadata": {"name": OPERATOR_NAMESPACE}})
    kube_api.create(f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/serviceaccounts",
                    {"apiVersion": "v1", "kind": "ServiceAccount",
                     "metadata": {"name": OPERATOR_ACCOUNT}})
    kube_api.create("/apis/rbac.authorization.k8s.io/v1/clusterroles",
                    rbac.cluster_role(OPERATOR_ACCOUNT))
    kube_api.create("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": OPERATOR_ACCOUNT},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": OPERATOR_ACCOUNT},
        "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_ACCOUNT,
                      "namespace": OPERATOR_NAMESPACE}],
    })
    token = kube_api.create(
        f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/serviceaccounts/{OPERATOR_ACCOUNT}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": {"expirationSeconds": TOKEN_LIFETIME_S}},
    )["status"]["token"]
    path = tmp_path_factory.mktemp("operator-identity") / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "dev", "cluster": {"server": control_plane.server,
                                                 "certificate-authority": str(control_plane.pki.ca.cert)}}],
        "users": [{"name": OPERATOR_ACCOUNT, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "dev", "user": OPERATOR_ACCOUNT}}],
        "current-context": "operator",
    }))
    return path


@pytest.fixture
def operator(
    control_plane: ControlPlane,
    kube_api: KubeApi,
    namespace: str,
    process_kubelet: ProcessKubelet,
    operator_kubeconfig: Path,
    tmp_path: Path,
) -> Iterator[OperatorProcess]:
    """A running operator for the test's namespace; at the end the test's jobs are deleted."""
    running = OperatorProcess(operator_kubeconfig, namespace, tmp_path / "operator.log",
                              operator_env())
    running.start()
    try:
        yield running
    finally:
        # Delete the jobs while an operator runs: Kopf's finalizer needs it to go away.
        if not running.alive():
            running.start()
        try:
            for item in kube_api.get(tj_path(namespace)).get("items", []):
                kube_api.delete(tj_path(namespace, item["metadata"]["name"]))
            wait_for(lambda: not kube_api.get(tj_path(namespace)).get("items"),
                     TEARDOWN_DELETE_S, "the test's TranscriptionJobs to be deleted",
                     describe=lambda: running.log()[-3000:])
        except ApiError:
            pass
        finally:
            running.stop()


