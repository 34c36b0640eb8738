"""The chart, rendered by the pinned helm over a matrix of values, and checked object by object.

Every case must lint, render, and pass the same rules: restricted pod security
everywhere (the worker pods the operator would build from the chart's
settings included), an explicit command in every container, RBAC without
wildcards or Secret listing, probes on every long-running container, pinned
images. The rendered command lines are parsed by the programs' own argument
parsers and the operator's environment by its own settings code, so a flag or
variable the chart invents fails here, not in a cluster.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from chartkit import (
    CHART_DIR,
    DIGEST,
    GPU_PLACEMENT,
    MATRIX,
    NAMESPACE,
    POOL,
    REPO_ROOT,
    by_kind,
    component,
    containers,
    env_of,
    helm,
    merge,
    one,
    pod_spec,
    pod_specs,
    rbac_violations,
    render,
    render_error,
    restricted_violations,
    schema_paths,
    undeclared_values,
    undocumented_values,
    value_paths,
    values_file,
)
from steno_inference.cli import build_parser as steno_parser
from steno_operator.__main__ import build_parser as operator_parser
from steno_operator.manifests import JobIdentity, PlanRef, build_job
from steno_operator.rbac import RULES
from steno_operator.settings import OperatorSettings, settings_from_env
from steno_operator.spec import parse_spec

pytestmark = pytest.mark.integration

def _operator_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    deployment = one(objects, "Deployment", "-operator")
    return env_of(pod_spec(deployment)["containers"][0])


def _operator_settings(objects: list[dict[str, Any]]) -> OperatorSettings:
    return settings_from_env(_operator_env(objects))


def _worker_job(settings: OperatorSettings, **spec_fields: Any) -> dict[str, Any]:
    """The Job the operator would create under the chart's settings."""
    spec = parse_spec({
        "input": {"uris": ["s3://steno-audio/a.wav"]},
        "output": {"uri": "s3://steno-results/run/"},
        "model": "tiny.en",
        "storageSecretRef": {"name": "storage"},
        **spec_fields,
    })
    identity = JobIdentity(namespace="team-a", name="demo", uid="0b6a3c1e-0000-4000-8000-000000000001")
    plan = PlanRef(uri="s3://steno-results/run/_steno/plan.json", sha256="0" * 64, shards=1)
    return build_job(identity, spec, plan, settings)


@pytest.fixture(scope="module", params=sorted(MATRIX))
def case(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    values = MATRIX[request.param]
    return request.param, values, render(values, namespace=NAMESPACE)


def test_lint_strict_over_the_matrix(tmp_path: Path) -> None:
    helm("lint", "--strict", str(CHART_DIR))
    for name, values in MATRIX.items():
        path = values_file(values, tmp_path)
        result = helm("lint", "--strict", str(CHART_DIR), "-f", str(path))
        assert "0 chart(s) failed" in result.stdout, (name, result.stdout)


def test_matrix(case: tuple[str, dict[str, Any], list[dict[str, Any]]]) -> None:
    name, values, objects = case
    problems: list[str] = []
    for where, spec in pod_specs(objects):
        problems += restricted_violations(where, spec)
    # The worker pods: built by the operator's own code from the chart's settings.
    settings = _operator_settings(objects)
    problems += restricted_violations("worker Job", pod_spec(_worker_job(settings)))
    problems += rbac_violations(objects)
    assert problems == [], f"{name}: {problems}"

    for obj in objects:
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "steno", obj["metadata"]["name"]
        assert labels.get("app.kubernetes.io/managed-by") == "Helm"
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            expected = {NAMESPACE, *values.get("operator", {}).get("watchNamespaces", [])}
            assert obj["metadata"]["namespace"] in expected

    # Images: pinned by digest when one is given, else by the exact tag.
    inference = values.get("images", {}).get("inference", {})
    expected_tag = "@" + DIGEST if inference.get("digest") else ":0.1.0"
    assert settings.worker.image == "steno-inference" + expected_tag
    for where, spec in pod_specs(objects):
        for container in containers(spec):
            image = container["image"]
            assert image.endswith(("@" + DIGEST, ":0.1.0")), (where, image)
            assert not image.endswith(":latest")


def test_commands_parse_with_the_programs_own_parsers(
    case: tuple[str, dict[str, Any], list[dict[str, Any]]],
) -> None:
    name, values, objects = case
    operator = pod_spec(one(objects, "Deployment", "-operator"))["containers"][0]
    assert operator["command"] == ["steno-operator"]
    operator_parser().parse_args(operator.get("args", []))

    settings = _operator_settings(objects)
    worker = pod_spec(_worker_job(settings))["containers"][0]
    assert worker["command"][0] == "steno"
    args = steno_parser().parse_args([*worker["command"][1:], *worker["args"]])
    assert args.command == "work"
    assert args.progress_port == settings.worker.progress_port

    for deployment in by_kind(objects, "Deployment"):
        if component(deployment) != "serving":
            continue
        server = pod_spec(deployment)["containers"][0]
        parsed = steno_parser().parse_args([*server["command"][1:], *server["args"]])
        assert parsed.command == "serve", name
        serving = merge(json.loads(json.dumps(_defaults()["serving"])), values.get("serving", {}))
        assert parsed.port == serving["port"]
        assert parsed.model == serving["model"]
        assert (parsed.host == "$(POD_IP)") == serving["listenOnPodIP"]
        assert (parsed.tls_cert is not None) == serving["tls"]["enabled"]
        assert (parsed.tls_client_ca is not None) == serving["tls"]["clientAuth"]
        assert (parsed.auth_token_file is not None) == bool(serving["auth"]["tokenSecretName"])
        assert parsed.int8_cross_kv is serving["int8CrossKV"]
        assert parsed.vad_threads == (serving["vadThreads"] or None)  # 0: the server's default
        assert parsed.beam_size == serving["beamSize"]
        assert parsed.deterministic is serving["deterministic"]
    for pod in by_kind(objects, "Pod"):  # the helm test pod
        for container in containers(pod["spec"]):
            parsed = steno_parser().parse_args([*container["command"][1:], *container["args"]])
            assert parsed.command == "client"
            assert parsed.action in ("health", "info")


def _defaults() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    return loaded


def test_probes(case: tuple[str, dict[str, Any], list[dict[str, Any]]]) -> None:
    name, values, objects = case
    operator = pod_spec(one(objects, "Deployment", "-operator"))["containers"][0]
    liveness = operator["livenessProbe"]["httpGet"]
    assert liveness["path"] == "/healthz"
    assert operator["readinessProbe"]["httpGet"] == liveness  # Ready once Kopf is watching
    ports = {port["name"]: port["containerPort"] for port in operator["ports"]}
    assert ports[liveness["port"]] == int(_operator_env(objects)["STENO_HEALTH_PORT"])

    serving = [d for d in by_kind(objects, "Deployment") if component(d) == "serving"]
    assert len(serving) == (1 if values.get("serving", {}).get("enabled") else 0)
    for deployment in serving:
        server = pod_spec(deployment)["containers"][0]
        port = server["ports"][0]["containerPort"]
        tls = values["serving"].get("tls", {}).get("enabled", False)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert probe in server, (name, probe)
            if tls:  # the kubelet's gRPC probes cannot speak TLS
                command = server[probe]["exec"]["command"]
                assert "steno client health" in command[-1] and f":{port}" in command[-1]
                assert "--client-cert" in command[-1]  # mutual TLS in this case
            else:
                assert server[probe]["grpc"] == {"port": port, "service": ""}
        # The startup probe gives a large model time to load; liveness outlasts a drain.
        startup = server["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
        live = server["livenessProbe"]
        grace = values["serving"].get("graceSeconds", 30)
        assert live["periodSeconds"] * live["failureThreshold"] > grace
        assert pod_spec(deployment)["terminationGracePeriodSeconds"] > grace


def test_pool_off_renders_no_pool() -> None:
    objects = render({})
    assert [o for o in objects if component(o) in ("serving", "test")] == []
    assert by_kind(objects, "HorizontalPodAutoscaler") == []
    assert by_kind(objects, "PodDisruptionBudget") == []


def test_pool_objects_and_hpa_toggle() -> None:
    fixed = render(MATRIX["pool"])
    deployment = one(fixed, "Deployment", "-serving")
    assert deployment["spec"]["replicas"] == 1
    assert by_kind(fixed, "HorizontalPodAutoscaler") == []
    pdb = one(fixed, "PodDisruptionBudget", "-serving")
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    service = one(fixed, "Service", "-serving")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {
        "grpc": "grpc", "metrics": "metrics"}
    tests = by_kind(fixed, "Pod")
    assert len(tests) == 1 and tests[0]["metadata"]["annotations"]["helm.sh/hook"] == "test"

    scaled = render(MATRIX["pool-hpa"])
    assert "replicas" not in one(scaled, "Deployment", "-serving")["spec"]
    hpa = one(scaled, "HorizontalPodAutoscaler", "-serving")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70

    custom = one(render(MATRIX["pool-hpa-custom-metric"]), "HorizontalPodAutoscaler", "-serving")
    assert custom["spec"]["metrics"][0]["pods"]["metric"]["name"] == "steno_queue_audio_seconds"
    assert custom["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600


def test_gpu_placement_reaches_the_pool_and_the_workers() -> None:
    objects = render(MATRIX["gpu-placement"])
    pool = pod_spec(one(objects, "Deployment", "-serving"))
    worker = pod_spec(_worker_job(_operator_settings(objects)))
    for spec in (pool, worker):
        assert spec["nodeSelector"] == GPU_PLACEMENT["nodeSelector"]
        assert spec["tolerations"] == GPU_PLACEMENT["tolerations"]
        assert spec["runtimeClassName"] == "nvidia"
        assert spec["priorityClassName"] == "gpu-batch"
        resources = spec["containers"][0]["resources"]
        assert resources["limits"]["nvidia.com/mig-1g.10gb"] == "1"
        assert "nvidia.com/gpu" not in resources["limits"]

    # Defaults: tolerate the usual GPU taint; no selector, RuntimeClass or priority.
    defaults = render(POOL)
    pool = pod_spec(one(defaults, "Deployment", "-serving"))
    worker = pod_spec(_worker_job(_operator_settings(defaults)))
    taint = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    for spec in (pool, worker):
        assert spec["tolerations"] == taint
        assert not {"nodeSelector", "runtimeClassName", "priorityClassName"} & set(spec)

    cleared = _worker_job(_operator_settings(render(MATRIX["no-gpu-tolerations"])))
    assert pod_spec(cleared)["tolerations"] == []

    cpu_pool = pod_spec(one(render(MATRIX["pool-cpu-only"]), "Deployment", "-serving"))
    assert "nvidia.com/gpu" not in json.dumps(cpu_pool["containers"][0]["resources"])
    assert "tolerations" not in cpu_pool
    server = cpu_pool["containers"][0]
    assert {"--device=cpu", "--backend=onnx", "--dtype=int8"} <= set(server["args"])
    assert server["resources"]["requests"] == {"cpu": "2", "memory": "2Gi"}


def test_engine_flags_render_only_when_set() -> None:
    def server_args(values: dict[str, Any]) -> list[str]:
        args: list[str] = pod_spec(one(render(values), "Deployment", "-serving"))["containers"][0]["args"]
        return args

    tuned = server_args(MATRIX["pool-int8-vad-threads"])
    assert "--int8-cross-kv" in tuned and "--vad-threads=4" in tuned
    # Left at their defaults, neither flag appears: the server's own defaults apply.
    plain = server_args(POOL)
    assert not [a for a in plain if a.startswith(("--int8-cross-kv", "--vad-threads"))]
    assert not [a for a in server_args(merge(POOL, {"serving": {"int8CrossKV": False, "vadThreads": 0}}))
                if a.startswith(("--int8-cross-kv", "--vad-threads"))]

    # A job's spec.int8CrossKV reaches the worker pods the operator builds from the chart's
    # settings, as a flag steno work's own parser takes; absent by default.
    settings = _operator_settings(render({}))
    worker = pod_spec(_worker_job(settings, int8CrossKV=True))["containers"][0]
    parsed = steno_parser().parse_args([*worker["command"][1:], *worker["args"]])
    assert parsed.command == "work" and parsed.int8_cross_kv is True
    assert "--int8-cross-kv" not in pod_spec(_worker_job(settings))["containers"][0]["args"]


def test_beam_size_renders_only_above_one() -> None:
    def server_args(values: dict[str, Any]) -> list[str]:
        args: list[str] = pod_spec(one(render(values), "Deployment", "-serving"))["containers"][0]["args"]
        return args

    assert "--beam-size=4" in server_args(MATRIX["pool-beam-search"])
    # 1 (the default) is greedy, the server's own default: no flag.
    for values in (POOL, merge(POOL, {"serving": {"beamSize": 1}})):
        assert not [a for a in server_args(values) if a.startswith("--beam-size")]
    # Beam search on a CPU pool's torch backend (backend auto picks torch for it) is fine.
    cpu = server_args(merge(POOL, {"serving": {"gpus": 0, "device": "cpu", "beamSize": 2}}))
    assert "--beam-size=2" in cpu

    # A job's spec.beamSize reaches the worker pods as a flag steno work's parser takes.
    settings = _operator_settings(render({}))
    worker = pod_spec(_worker_job(settings, beamSize=4))["containers"][0]
    parsed = steno_parser().parse_args([*worker["command"][1:], *worker["args"]])
    assert parsed.command == "work" and parsed.beam_size == 4
    assert "--beam-size" not in pod_spec(_worker_job(settings))["containers"][0]["args"]


def test_worker_settings_follow_the_values() -> None:
    settings = _operator_settings(render(MATRIX["operator-tuned"]))
    assert settings.worker.extra_args == ("--dtype", "bf16")
    assert settings.worker.cpu_request == "8" and settings.worker.memory == "32Gi"
    assert settings.worker.service_account_name == "steno-worker"
    assert settings.worker.run_as_user == 2000
    # helm merges maps with the defaults; null removes a default entry.
    assert settings.worker.extra_env == (("HF_HUB_OFFLINE", "0"),
                                         ("STENO_CACHE_DIR", "/tmp/steno-cache"),
                                         ("STENO_LOG", "debug"))
    assert settings.metrics_port == 0 and settings.resync_s == 10 and settings.active_poll_s == 2.5

    defaults = _operator_settings(render({}))
    assert defaults.worker.run_as_user == 10001
    assert dict(defaults.worker.extra_env)["STENO_CACHE_DIR"].startswith("/tmp/")
    assert defaults.namespaces == ()
    assert _operator_settings(render(MATRIX["namespaced"])).namespaces == ("team-a", "team-b")


def _rules(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def test_rbac_cluster_wide_and_namespaced() -> None:
    cluster = render({})
    operator_role = one(cluster, "ClusterRole", "-operator")
    rules = _rules(operator_role)
    assert ("", "secrets", "get") in rules
    assert not {("", "secrets", "list"), ("", "secrets", "watch")} & rules
    assert ("batch", "jobs", "create") in rules and ("batch", "jobs", "delete") not in rules
    assert by_kind(cluster, "Role") == []
    binding = one(cluster, "ClusterRoleBinding", "-operator")
    deployment = one(cluster, "Deployment", "-operator")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "namespace": NAMESPACE,
                                    "name": pod_spec(deployment)["serviceAccountName"]}]

    namespaced = render(MATRIX["namespaced"], namespace=NAMESPACE)
    roles = by_kind(namespaced, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert all(_rules(r) == rules for r in roles)
    # Nothing cluster-scoped for a namespaced operator.
    assert [r for r in by_kind(namespaced, "ClusterRole") if component(r) == "operator"] == []
    assert by_kind(namespaced, "ClusterRoleBinding") == []
    assert all("secrets" not in json.dumps(r["rules"]) for r in by_kind(namespaced, "ClusterRole"))
    bindings = by_kind(namespaced, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]

    none = render(MATRIX["own-service-accounts"])
    assert not [o for o in none if o["kind"] in
                ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount")]
    assert pod_spec(one(none, "Deployment", "-operator"))["serviceAccountName"] == "platform-steno"
    assert pod_spec(one(none, "Deployment", "-serving"))["serviceAccountName"] == "default"

    # Only the operator mounts a token; the pool and the test pod call no API.
    pool = render(POOL)
    for where, spec in pod_specs(pool):
        assert spec["automountServiceAccountToken"] is ("operator" in where), where


def test_rbac_is_exactly_the_operators_declared_rules() -> None:
    """The chart grants ``steno_operator.rbac.RULES`` (the operator's own list, which its
    cluster tests run under), no more and no less, in both modes."""
    declared = {(group, resource, verb) for rule in RULES for group in rule.api_groups
                for resource in rule.resources for verb in rule.verbs}
    for values in ({}, MATRIX["namespaced"]):
        objects = render(values)
        for role in [*by_kind(objects, "ClusterRole"), *by_kind(objects, "Role")]:
            if component(role) == "operator":
                assert _rules(role) == declared, role["metadata"]


def _selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return all(labels.get(key) == value for key, value in wanted.items())


def test_network_policies() -> None:
    objects = render(MATRIX["pool"], namespace=NAMESPACE)
    policies = by_kind(objects, "NetworkPolicy")
    default_deny = one(objects, "NetworkPolicy", "-default-deny")
    assert default_deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in default_deny["spec"] and "egress" not in default_deny["spec"]
    worker_labels = pod_spec(_worker_job(_operator_settings(objects)))  # pods built by the operator
    worker_pod_labels = _worker_job(_operator_settings(objects))["spec"]["template"]["metadata"]["labels"]
    assert worker_labels
    pods = [(where, labels) for where, labels in [
        *((o["metadata"]["name"], o["spec"]["template"]["metadata"]["labels"])
          for o in by_kind(objects, "Deployment")),
        *((o["metadata"]["name"], o["metadata"]["labels"]) for o in by_kind(objects, "Pod")),
        ("worker", worker_pod_labels)]]
    for where, labels in pods:
        covering = [p for p in policies if _selects(p, labels)]
        assert covering, f"{where} is selected by no NetworkPolicy"
        assert all(p["spec"]["policyTypes"] == ["Ingress", "Egress"] for p in covering)

    operator = one(objects, "NetworkPolicy", "-operator")
    egress_ports = {port["port"] for rule in operator["spec"]["egress"] for port in rule["ports"]}
    assert {53, 443, 6443, 50051} <= egress_ports
    assert operator["spec"]["ingress"] == []  # no scrapers configured
    workers = one(objects, "NetworkPolicy", "-workers")
    source = workers["spec"]["ingress"][0]["from"][0]
    assert _selects({"spec": {"podSelector": source["podSelector"]}},
                    one(objects, "Deployment", "-operator")["spec"]["template"]["metadata"]["labels"])
    assert source["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": NAMESPACE}

    narrow = render(MATRIX["network-policies-narrow"], namespace=NAMESPACE)
    operator = one(narrow, "NetworkPolicy", "-operator")
    assert {"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}],
            "ports": [{"port": 443, "protocol": "TCP"}]} in operator["spec"]["egress"]
    assert operator["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"}
    serving = one(narrow, "NetworkPolicy", "-serving")
    clients = serving["spec"]["ingress"][0]["from"]
    assert clients[0] == {"namespaceSelector": {"matchLabels": {"team": "asr"}}}
    assert {"port": 8200, "protocol": "TCP"} in serving["spec"]["egress"][-1]["ports"]

    namespaced = render(MATRIX["namespaced"], namespace=NAMESPACE)
    assert sorted(p["metadata"]["namespace"] for p in by_kind(namespaced, "NetworkPolicy")
                  if p["metadata"]["name"].endswith("-workers")) == [NAMESPACE, "team-a", "team-b"]
    assert by_kind(render(MATRIX["network-policies-off"]), "NetworkPolicy") == []


@pytest.mark.parametrize(("values", "complaint"), [
    ({"serving": {"bogus": 1}}, "additional properties 'bogus' not allowed"),
    ({"images": {"inference": {"tag": "latest"}}}, "/images/inference/tag"),
    ({"images": {"operator": {"digest": "sha256:abc"}}}, "/images/operator/digest"),
    ({"serving": {"tls": {"enabled": True}}}, "/serving/tls/secretName"),
    ({"operator": {"serviceAccount": {"create": False}}}, "/operator/serviceAccount/name"),
    ({"operator": {"watchNamespaces": ["Not_A_Namespace"]}}, "/operator/watchNamespaces/0"),
    ({"operator": {"healthPort": 0}}, "/operator/healthPort"),
    ({"gpu": {"tolerations": [{"key": "x", "operator": "Maybe"}]}}, "/gpu/tolerations/0/operator"),
    ({"worker": {"memory": "lots"}}, "/worker/memory"),
    ({"serving": {"env": {"STENO_CACHE_DIR": "/elsewhere"}}}, "invalid propertyName 'STENO_CACHE_DIR'"),
    ({"podSecurity": {"runAsUser": 0}}, "/podSecurity/runAsUser"),
    ({"networkPolicy": {"objectStorage": {"to": [], "ports": []}}}, "/networkPolicy/objectStorage/ports"),
    ({"serving": {"enabled": True, "autoscaling": {"enabled": True, "minReplicas": 5,
                                                   "maxReplicas": 2}}},
     "minReplicas must not exceed"),
    ({"serving": {"enabled": True, "tls": {"enabled": True, "secretName": "x"},
                  "listenOnPodIP": "yes"}}, "/serving/listenOnPodIP"),
    ({"serving": {"int8CrossKV": "true"}}, "/serving/int8CrossKV"),
    ({"serving": {"vadThreads": -1}}, "/serving/vadThreads"),
    ({"serving": {"vadThreads": 2.5}}, "/serving/vadThreads"),
    # int8 cross-attention K/V needs a GPU: a CPU pool's server would exit at start.
    ({"serving": {"enabled": True, "gpus": 0, "int8CrossKV": True}}, "serving.int8CrossKV needs a GPU"),
    ({"serving": {"enabled": True, "device": "cpu", "int8CrossKV": True}}, "serving.int8CrossKV needs a GPU"),
    ({"serving": {"enabled": True, "backend": "onnx", "int8CrossKV": True}}, "serving.int8CrossKV needs a GPU"),
    ({"serving": {"beamSize": 0}}, "/serving/beamSize"),
    ({"serving": {"beamSize": 17}}, "/serving/beamSize"),
    ({"serving": {"beamSize": "4"}}, "/serving/beamSize"),
    # Beam search runs on the torch backend only: an onnx pool's server would exit at start.
    ({"serving": {"enabled": True, "backend": "onnx", "beamSize": 4}},
     "serving.beamSize above 1 needs the torch backend"),
    ({"serving": {"enabled": True, "dtype": "int8", "beamSize": 4}},
     "serving.beamSize above 1 needs the torch backend"),
])
def test_schema_refuses(values: dict[str, Any], complaint: str) -> None:
    assert complaint in render_error(values)


def test_every_value_is_documented_and_in_the_schema() -> None:
    text = (CHART_DIR / "values.yaml").read_text()
    assert undocumented_values(text) == []
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    values = yaml.safe_load(text)
    assert undeclared_values(values, schema, schema) == set(), "values missing from the schema"
    declared = schema_paths(schema, schema)
    assert declared - value_paths(values, schema, schema) == {"global"}, \
        "schema properties missing from values.yaml"


def _versions_env() -> dict[str, str]:
    lines = (REPO_ROOT / "images/versions.env").read_text().splitlines()
    return {key: value for key, _, value in (line.partition("=") for line in lines
                                             if line and not line.startswith("#"))}


def _first(pattern: str, text: str) -> str:
    match = re.search(pattern, text, re.M)
    assert match is not None, pattern
    return match.group(1)


def test_images_match_the_chart() -> None:
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    defaults = _defaults()
    for image in ("operator", "inference"):
        assert defaults["images"][image]["tag"] == chart["appVersion"]
        assert defaults["images"][image]["digest"] == ""
        assert (REPO_ROOT / f"images/{image}.Dockerfile").is_file()
    # The user the images create is the user the pods run as.
    uid = int(_versions_env()["STENO_UID"])
    assert defaults["podSecurity"] == {"runAsUser": uid, "runAsGroup": uid}
    # The inference image exposes the ports the chart uses, and puts models where the pool mounts them.
    dockerfile = (REPO_ROOT / "images/inference.Dockerfile").read_text()
    exposed = {int(p) for p in _first(r"^EXPOSE (.+)$", dockerfile).split()}
    assert {defaults["serving"]["port"], defaults["serving"]["metricsPort"]} <= exposed
    cache = _first(r"STENO_CACHE_DIR=(\S+)", dockerfile)
    pool = pod_spec(one(render(POOL), "Deployment", "-serving"))
    mounts = {m["mountPath"] for m in pool["containers"][0]["volumeMounts"]}
    assert cache in mounts
    assert env_of(pool["containers"][0])["STENO_CACHE_DIR"] == cache
    # The operator image's entry point is the command the chart runs.
    operator = (REPO_ROOT / "images/operator.Dockerfile").read_text()
    assert 'ENTRYPOINT ["steno-operator"]' in operator
    assert defaults["operator"]["command"] == ["steno-operator"]


def test_the_crd_comes_only_from_crds_dir() -> None:
    crds = sorted((CHART_DIR / "crds").glob("*.yaml"))
    assert [p.name for p in crds] == ["transcriptionjobs.steno.dev.yaml"]
    assert by_kind(render(POOL), "CustomResourceDefinition") == []
    with_crds = helm("template", "steno", str(CHART_DIR), "--include-crds").stdout
    crd_docs = [d for d in yaml.safe_load_all(with_crds) if d and d["kind"] == "CustomResourceDefinition"]
    assert [d["metadata"]["name"] for d in crd_docs] == ["transcriptionjobs.steno.dev"]


def test_deterministic_renders_only_when_on() -> None:
    def server_args(values: dict[str, Any]) -> list[str]:
        args: list[str] = pod_spec(one(render(values), "Deployment", "-serving"))["containers"][0]["args"]
        return args

    assert "--deterministic" in server_args(MATRIX["pool-deterministic"])
    assert "--deterministic" not in server_args(POOL)

    # A job's spec.deterministic reaches the worker pods as a flag steno work's parser takes.
    settings = _operator_settings(render({}))
    worker = pod_spec(_worker_job(settings, deterministic=True))["containers"][0]
    parsed = steno_parser().parse_args([*worker["command"][1:], *worker["args"]])
    assert parsed.command == "work" and parsed.deterministic is True
    assert "--deterministic" not in pod_spec(_worker_job(settings))["containers"][0]["args"]
