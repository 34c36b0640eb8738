"""The control plane itself: version, TLS and authentication, CRDs, RBAC."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request

import pytest
from steno_devcluster import versions
from steno_devcluster.controlplane import ControlPlane
from steno_devcluster.kubeapi import ApiError, KubeApi
from steno_devcluster.kubeconfig import client_ssl_context
from steno_devcluster.waiting import wait_for

pytestmark = pytest.mark.integration

WIDGET_GROUP = "test.steno.dev"
WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{WIDGET_GROUP}"},
    "spec": {
        "group": WIDGET_GROUP,
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"size": {"type": "integer", "minimum": 1}},
                                "required": ["size"],
                            },
                            "status": {
                                "type": "object",
                                "properties": {"phase": {"type": "string"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}


def test_api_server_reports_the_pinned_version(kube_api: KubeApi) -> None:
    assert kube_api.get("/version")["gitVersion"] == versions.KUBERNETES_VERSION


def test_requests_without_a_client_certificate_are_refused(control_plane: ControlPlane) -> None:
    anonymous = client_ssl_context(control_plane.pki.ca.cert)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{control_plane.server}/api/v1/namespaces", context=anonymous)
    assert refused.value.code == 401


def test_the_serving_certificate_does_not_verify_against_another_ca(
    control_plane: ControlPlane,
) -> None:
    foreign = ssl.create_default_context()  # the system CAs, not the cluster's
    with pytest.raises(urllib.error.URLError) as refused:
        urllib.request.urlopen(f"{control_plane.server}/version", context=foreign, timeout=5)
    assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)


def test_crd_custom_resource_and_status_subresource(kube_api: KubeApi, namespace: str) -> None:
    crd_path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.{WIDGET_GROUP}"
    if kube_api.get_or_none(crd_path) is None:
        kube_api.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", WIDGET_CRD)

    def established() -> bool:
        conditions = kube_api.get(crd_path).get("status", {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    wait_for(established, 30, "the Widget CRD to be Established")
    widgets = f"/apis/{WIDGET_GROUP}/v1/namespaces/{namespace}/widgets"
    # Discovery can lag Established by a moment; the create is what must work.
    created = wait_for(
        lambda: _create_or_none(
            kube_api,
            widgets,
            {
                "apiVersion": f"{WIDGET_GROUP}/v1",
                "kind": "Widget",
                "metadata": {"name": "w1"},
                "spec": {"size": 3},
                "status": {"phase": "ignored-on-create"},
            },
        ),
        30,
        "the Widget resource to be served",
    )
    # With the status subresource, status is dropped on create and generation is 1.
    assert "status" not in created
    assert created["metadata"]["generation"] == 1

    # Schema validation runs on the custom resource.
    with pytest.raises(ApiError) as invalid:
        kube_api.create(
            widgets,
            {
                "apiVersion": f"{WIDGET_GROUP}/v1",
                "kind": "Widget",
                "metadata": {"name": "w2"},
                "spec": {"size": 0},
            },
        )
    assert invalid.value.status == 422

    # /status writes status only and leaves generation alone...
    patched = kube_api.patch(
        f"{widgets}/w1/status", {"status": {"phase": "Ready"}, "spec": {"size": 9}}
    )
    assert patched["status"]["phase"] == "Ready"
    assert patched["spec"]["size"] == 3
    assert patched["metadata"]["generation"] == 1
    # ...and the main resource ignores status but bumps generation on spec changes.
    updated = kube_api.patch(f"{widgets}/w1", {"spec": {"size": 5}, "status": {"phase": "X"}})
    assert updated["spec"]["size"] == 5
    assert updated["status"]["phase"] == "Ready"
    assert updated["metadata"]["generation"] == 2


def _create_or_none(api: KubeApi, path: str, body: dict[str, object]) -> dict[str, object] | None:
    try:
        return api.create(path, body)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def _service_account_api(
    control_plane: ControlPlane, kube_api: KubeApi, namespace: str, account: str
) -> KubeApi:
    kube_api.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}},
    )
    answer = kube_api.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )
    token = answer["status"]["token"]
    return KubeApi(control_plane.server, client_ssl_context(control_plane.pki.ca.cert), token=token)


def test_rbac_denies_a_service_account_without_a_rule(
    control_plane: ControlPlane, kube_api: KubeApi, namespace: str
) -> None:
    kube_api.create(
        f"/api/v1/namespaces/{namespace}/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}},
    )
    kube_api.create(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "read-configmaps"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        },
    )
    kube_api.create(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "read-configmaps",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )
    reader = _service_account_api(control_plane, kube_api, namespace, "reader")
    stranger = _service_account_api(control_plane, kube_api, namespace, "stranger")
    settings = f"/api/v1/namespaces/{namespace}/configmaps/settings"

    # The bound account may do exactly what its rule says...
    assert reader.get(settings)["metadata"]["name"] == "settings"
    # ...and nothing more: same resource, another verb.
    with pytest.raises(ApiError) as other_verb:
        reader.delete(settings)
    assert other_verb.value.status == 403
    # The account without any rule is denied, and the API says it was RBAC.
    with pytest.raises(ApiError) as denied:
        stranger.get(settings)
    assert denied.value.status == 403
    assert denied.value.reason == "Forbidden"
    assert f"system:serviceaccount:{namespace}:stranger" in str(denied.value)
