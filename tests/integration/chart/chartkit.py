"""Rendering the chart with the project's pinned helm, and the checks its objects must pass.

helm comes from the devcluster cache (``python -m steno_devcluster install``);
a missing helm fails the tests (a skipped chart test would read as a pass).
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from steno_devcluster.binaries import BinaryNotFoundError, helm_path
from steno_devcluster.cache import Cache

REPO_ROOT = Path(__file__).resolve().parents[3]
CHART_DIR = REPO_ROOT / "charts" / "steno"
HELM_TIMEOUT_S = 120.0  # helm template/lint: a second; install --wait has its own bound

# The Pod Security "restricted" profile allows only these volume types.
RESTRICTED_VOLUME_TYPES = frozenset({
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
})
POD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "Job", "Pod"})


def helm_binary() -> Path:
    try:
        return helm_path(Cache.default())
    except BinaryNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)


def helm(*args: str, kubeconfig: Path | None = None, timeout_s: float = HELM_TIMEOUT_S,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm; with ``check``, fail with its output when it exits non-zero."""
    argv = [str(helm_binary()), *args]
    if kubeconfig is not None:
        argv.append(f"--kubeconfig={kubeconfig}")
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s,
                               check=False)
    if check and completed.returncode != 0:
        raise AssertionError(
            f"helm {' '.join(args)} exited {completed.returncode}:\n"
            f"{completed.stdout[-4000:]}\n{completed.stderr[-4000:]}")
    return completed


def values_file(values: Mapping[str, Any], directory: Path) -> Path:
    """``values`` as a file for ``-f`` (JSON is YAML)."""
    path = directory / "values.json"
    path.write_text(json.dumps(values))
    return path


def render(values: Mapping[str, Any] | None = None, *, release: str = "steno",
           namespace: str = "steno-system") -> list[dict[str, Any]]:
    """The chart's objects (tests included) for ``values``."""
    with tempfile.TemporaryDirectory() as folder:
        path = values_file(values or {}, Path(folder))
        completed = helm("template", release, str(CHART_DIR), "--namespace", namespace,
                         "-f", str(path))
    return [doc for doc in yaml.safe_load_all(completed.stdout) if doc]


def render_error(values: Mapping[str, Any]) -> str:
    """helm's complaint about ``values`` (fails when helm renders them)."""
    with tempfile.TemporaryDirectory() as folder:
        path = values_file(values, Path(folder))
        completed = helm("template", "steno", str(CHART_DIR), "-f", str(path), check=False)
    assert completed.returncode != 0, f"helm accepted {values}"
    return completed.stderr


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of value trees (``override`` wins)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# --- the values matrix ----------------------------------------------------------

NAMESPACE = "steno-system"
DIGEST = "sha256:" + "ab" * 32
POOL = {"serving": {"enabled": True}}
GPU_PLACEMENT = {
    "resourceName": "nvidia.com/mig-1g.10gb",
    "nodeSelector": {"cloud.example/accelerator": "a100"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
        {"key": "nvidia.com/gpu", "operator": "Exists"},
    ],
    "runtimeClassName": "nvidia",
    "priorityClassName": "gpu-batch",
}

# name → values; the checks in test_matrix apply to every one.
MATRIX: dict[str, dict[str, Any]] = {
    "defaults": {},
    "pool": POOL,
    "pool-hpa": merge(POOL, {"serving": {"autoscaling": {"enabled": True}}}),
    "pool-hpa-custom-metric": merge(POOL, {"serving": {"autoscaling": {
        "enabled": True, "maxReplicas": 8,
        "metrics": [{"type": "Pods", "pods": {
            "metric": {"name": "steno_queue_audio_seconds"},
            "target": {"type": "AverageValue", "averageValue": "120"}}}],
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 600}}}}}),
    "pool-tls-mtls-auth": merge(POOL, {"serving": {
        "tls": {"enabled": True, "secretName": "steno-tls", "clientAuth": True},
        "auth": {"tokenSecretName": "steno-tokens"}}}),
    # The documented CPU pool (ONNX Runtime, int8, no GPU), exactly as shipped.
    "pool-cpu-only": merge(POOL, yaml.safe_load(
        (CHART_DIR / "examples" / "cpu-pool.yaml").read_text())),
    "pool-pvc-pod-ip": merge(POOL, {"serving": {
        "modelCache": {"existingClaim": "whisper-models"}, "listenOnPodIP": True,
        "metricsPort": 0, "batchSize": 32, "reflection": True,
        "env": {"AWS_REGION": "eu-west-1"}, "envFromSecret": "steno-storage"}}),
    # The engine's GPU decoding and voice-activity settings, rendered as steno serve flags.
    "pool-int8-vad-threads": merge(POOL, {"serving": {"int8CrossKV": True, "vadThreads": 4}}),
    # Beam search (torch backend), rendered as steno serve's --beam-size.
    "pool-beam-search": merge(POOL, {"serving": {"beamSize": 4}}),
    # Repeatable GPU decoding, rendered as steno serve's --deterministic.
    "pool-deterministic": merge(POOL, {"serving": {"deterministic": True}}),
    "network-policies-off": merge(POOL, {"networkPolicy": {"enabled": False}}),
    "network-policies-narrow": merge(POOL, {"networkPolicy": {
        "apiServer": {"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}], "ports": [443]},
        "objectStorage": {"to": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "minio"}}}], "ports": [9000]},
        "servingClients": [{"namespaceSelector": {"matchLabels": {"team": "asr"}}}],
        "metricsScrapers": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "monitoring"}}}],
        "extraEgress": [{"to": [{"ipBlock": {"cidr": "10.1.0.0/16"}}],
                         "ports": [{"port": 8200, "protocol": "TCP"}]}]}}),
    "namespaced": {"operator": {"watchNamespaces": ["team-a", "team-b"]}},
    "gpu-placement": merge(POOL, {"gpu": GPU_PLACEMENT}),
    "no-gpu-tolerations": merge(POOL, {"gpu": {"tolerations": []}}),
    "digests": merge(POOL, {"images": {"operator": {"digest": DIGEST},
                                       "inference": {"digest": DIGEST}}}),
    "own-service-accounts": merge(POOL, {
        "operator": {"serviceAccount": {"create": False, "name": "platform-steno"},
                     "rbac": {"create": False}},
        "serving": {"serviceAccount": {"create": False}},
        "userRoles": {"aggregate": False}}),
    "operator-tuned": {"operator": {"metricsPort": 0, "extraArgs": ["--verbose"],
                                    "resyncSeconds": 10, "activePollSeconds": 2.5},
                       "worker": {"extraArgs": ["--dtype", "bf16"], "cpu": "8",
                                  "memory": "32Gi", "serviceAccountName": "steno-worker",
                                  "env": {"HF_HOME": None, "STENO_LOG": "debug"}},
                       "podSecurity": {"runAsUser": 2000, "runAsGroup": 3000},
                       "fullnameOverride": "asr"},
}


# --- finding things -----------------------------------------------------------


def by_kind(objects: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: Iterable[dict[str, Any]], kind: str, name_suffix: str) -> dict[str, Any]:
    found = [obj for obj in by_kind(objects, kind) if obj["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, found {len(found)}"
    return found[0]


def component(obj: dict[str, Any]) -> str:
    return str(obj["metadata"].get("labels", {}).get("app.kubernetes.io/component", ""))


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]
    return spec


def pod_specs(objects: Iterable[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        if obj["kind"] in POD_KINDS:
            yield f"{obj['kind']}/{obj['metadata']['name']}", pod_spec(obj)


def containers(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def env_of(container: Mapping[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container.get("env", [])
            if "value" in item}


# --- checks (each returns what is wrong, empty when nothing is) ----------------


def restricted_violations(where: str, spec: Mapping[str, Any]) -> list[str]:
    """How ``spec`` breaks the Pod Security "restricted" profile (and our read-only root)."""
    problems = []
    for field in ("hostNetwork", "hostPID", "hostIPC", "hostUsers"):
        if spec.get(field) and field != "hostUsers":
            problems.append(f"{where}: {field}")
    pod_security = spec.get("securityContext", {})
    if pod_security.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
        problems.append(f"{where}: pod seccompProfile")
    if pod_security.get("runAsUser") == 0:
        problems.append(f"{where}: pod runs as root")
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"{where}: volume {volume['name']} is {sorted(kinds)}")
    for container in containers(spec):
        name = f"{where}/{container['name']}"
        security = container.get("securityContext", {})
        if security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation")
        if security.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{name}: capabilities not dropped")
        if security.get("capabilities", {}).get("add"):
            problems.append(f"{name}: capabilities added")
        if security.get("privileged"):
            problems.append(f"{name}: privileged")
        if security.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: writable root file system")
        non_root = security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
        if non_root is not True:
            problems.append(f"{name}: runAsNonRoot")
        if security.get("runAsUser") == 0:
            problems.append(f"{name}: runs as root")
        seccomp = security.get("seccompProfile", pod_security.get("seccompProfile", {}))
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile")
        for port in container.get("ports", []):
            if port.get("hostPort"):
                problems.append(f"{name}: hostPort")
        if not container.get("command"):
            # The process kubelet (and readers) need to see what runs: no image entry points.
            problems.append(f"{name}: no explicit command")
    return problems


def rbac_violations(objects: Iterable[dict[str, Any]]) -> list[str]:
    """Wildcards anywhere; Secrets listed or watched, or written; cluster-wide Secret writes."""
    problems = []
    for obj in objects:
        if obj["kind"] not in ("ClusterRole", "Role"):
            continue
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj.get("aggregationRule"):
            problems.append(f"{where}: aggregationRule (it could pull in any rule)")
        for rule in obj.get("rules", []):
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                if any("*" in item for item in rule.get(field, [])):
                    problems.append(f"{where}: wildcard in {field}: {rule}")
            if rule.get("nonResourceURLs"):
                problems.append(f"{where}: nonResourceURLs {rule['nonResourceURLs']}")
            if "" in rule.get("apiGroups", []) and "secrets" in rule.get("resources", []):
                extra = set(rule["verbs"]) - {"get"}
                if extra:
                    problems.append(f"{where}: secrets verbs {sorted(extra)}")
    return problems


_KEY_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z0-9_.-]+):(?P<rest>.*)$")


def undocumented_values(text: str) -> list[str]:
    """Keys of values.yaml without a comment line right above them.

    A ``# --`` comment documents the value below it as a whole (its nested keys
    need none); any other comment introduces a section, whose keys each need their
    own comment. List items are part of the value they belong to.
    """
    missing: list[str] = []
    exempt_below: int | None = None  # nested keys deeper than this indent are documented
    block: list[str] = []  # the comment lines right above the current line
    path: list[tuple[int, str]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            block.append(stripped)
            continue
        comments, block = block, []
        match = _KEY_LINE.match(line)
        if not stripped or match is None:
            continue
        indent = len(match.group("indent"))
        while path and path[-1][0] >= indent:
            path.pop()
        path.append((indent, match.group("key")))
        if exempt_below is not None and indent > exempt_below:
            continue
        exempt_below = None
        if not comments:
            missing.append(".".join(key for _, key in path))
        elif comments[0].startswith("# --"):
            exempt_below = indent
    return missing


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow local ``$ref``s (and the ``allOf: [$ref]`` wrapper that adds a description)."""
    while "$ref" in schema or ("allOf" in schema and "properties" not in schema):
        if "$ref" in schema:
            schema = root["definitions"][schema["$ref"].rsplit("/", 1)[-1]]
        else:
            schema = schema["allOf"][0]
    return schema


def undeclared_values(values: Mapping[str, Any], schema: Mapping[str, Any],
                      root: Mapping[str, Any], prefix: str = "") -> set[str]:
    """Keys of ``values`` the schema does not declare (free-form maps are declared whole)."""
    schema = _resolve(schema, root)
    properties = schema.get("properties")
    if properties is None:
        return set()
    found: set[str] = set()
    for key, value in values.items():
        if key not in properties:
            found.add(f"{prefix}{key}")
        elif isinstance(value, Mapping):
            found |= undeclared_values(value, properties[key], root, f"{prefix}{key}.")
    return found


def schema_paths(schema: Mapping[str, Any], root: Mapping[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of a JSON schema's declared properties, following local $refs."""
    properties = _resolve(schema, root).get("properties")
    if not properties:
        return {prefix.rstrip(".")} if prefix else set()
    paths: set[str] = set()
    for key, sub in properties.items():
        paths |= schema_paths(sub, root, f"{prefix}{key}.")
    return paths


def value_paths(tree: Mapping[str, Any], schema: Mapping[str, Any], root: Mapping[str, Any],
                prefix: str = "") -> set[str]:
    """Dotted paths of ``tree`` down to where the schema stops declaring properties."""
    properties = _resolve(schema, root).get("properties")
    if not properties:
        return {prefix.rstrip(".")} if prefix else set()
    paths: set[str] = set()
    for key, value in tree.items():
        if isinstance(value, Mapping) and key in properties:
            paths |= value_paths(value, properties[key], root, f"{prefix}{key}.")
        else:
            paths.add(f"{prefix}{key}")
    return paths


# --- the chart on the development cluster -----------------------------------------

RESTRICTED_LABELS = {  # Pod Security admission: refuse pods that are not restricted, and
    "pod-security.kubernetes.io/enforce": "restricted",  # warn about such pod templates
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/warn-version": "latest",
}


def free_port() -> int:
    """A TCP port free on every address (the operator listens on 0.0.0.0)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("", 0))
        port: int = probe.getsockname()[1]
        return port


def harness_values(*, watch_namespaces: list[str], pool: bool) -> dict[str, Any]:
    """Values for the process-kubelet cluster: tiny.en on CPU, small requests, own ports.

    Images are not pulled there (each container's command runs from this
    machine's virtualenv), so the chart's default images stay as they are.
    """
    return {
        "operator": {
            "watchNamespaces": watch_namespaces,
            # The operator listens on every address: ports no other process holds.
            "metricsPort": free_port(),
            "healthPort": free_port(),
            "livenessProbe": {"initialDelaySeconds": 5, "periodSeconds": 5},
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"},
                          "limits": {"memory": "1Gi"}},
            "resyncSeconds": 5,
            "activePollSeconds": 1,
            "progressPatchSeconds": 1,
        },
        "worker": {
            "extraArgs": ["--device", "cpu", "--batch-size", "8"],
            "env": {"OMP_WAIT_POLICY": "PASSIVE"},  # added to the chart's (maps merge)
            "progressPort": free_port(),
            "cpu": "500m",
            "memory": "2Gi",
            "scratchSize": "1Gi",
            "backoffLimitPerIndex": 1,
        },
        "serving": {
            "enabled": pool,
            "model": "tiny.en",
            "device": "cpu",
            "batchSize": 8,
            # Pods share this machine's network namespace: each listens on its own IP.
            "listenOnPodIP": True,
            "port": free_port(),
            "metricsPort": free_port(),
            "env": {"OMP_WAIT_POLICY": "PASSIVE"},
            "graceSeconds": 5,
            "resources": {"requests": {"cpu": "500m", "memory": "2Gi"},
                          "limits": {"memory": "4Gi"}},
            "modelCache": {"sizeLimit": "1Gi"},
            "startupProbe": {"periodSeconds": 2, "failureThreshold": 150},
            "readinessProbe": {"periodSeconds": 2},
        },
    }
