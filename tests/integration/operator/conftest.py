"""Fixtures for the operator's cluster tests; helpers live in ``support.operator_cluster``."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from steno_devcluster.controlplane import ControlPlane
from steno_devcluster.kubeapi import ApiError, KubeApi
from steno_devcluster.kubelet import ProcessKubelet
from steno_devcluster.objectstore import ObjectStore
from steno_devcluster.waiting import wait_for
from support.operator_cluster import (
    BUCKET,
    SECRET,
    TEARDOWN_DELETE_S,
    OperatorProcess,
    operator_env,
    tj_path,
)


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


@pytest.fixture
def operator(
    control_plane: ControlPlane,
    kube_api: KubeApi,
    namespace: str,
    process_kubelet: ProcessKubelet,
    tmp_path: Path,
) -> Iterator[OperatorProcess]:
    """A running operator for the test's namespace; at the end the test's jobs are deleted."""
    running = OperatorProcess(control_plane, namespace, tmp_path / "operator.log", operator_env())
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


