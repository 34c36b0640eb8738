"""A container's environment and command line, resolved as a kubelet would.

- ``envFrom`` (ConfigMaps and Secrets, with ``prefix``) first, then ``env``
  in order, later names overriding earlier ones;
- ``valueFrom``: ``fieldRef`` (metadata.name/namespace/uid/labels[…]/
  annotations[…], spec.nodeName, spec.serviceAccountName, status.podIP,
  status.hostIP), ``resourceFieldRef`` (limits/requests of the container),
  ``configMapKeyRef`` and ``secretKeyRef`` (honouring ``optional``);
- ``$(VAR)`` references in values, command and args are expanded from the
  variables defined so far; ``$$(VAR)`` stays literal, unknown names stay as
  written — the same rules as Kubernetes' ``expansion`` package;
- ``KUBERNETES_SERVICE_HOST``/``PORT`` point at the API server, so in-cluster
  clients find it.

The "image" of every container is this machine: the base environment is the
kubelet's own (minus kubeconfig settings, so pods use their service account),
with the running Python's ``bin`` directory first on ``PATH``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from steno_devcluster.kubeapi import ApiError, JsonObject, KubeApi

# Variables a pod must not inherit from the machine: they would point its
# clients at the admin kubeconfig instead of its service account.
HOST_ONLY_VARIABLES = ("KUBECONFIG",)
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")
# resourceFieldRef divisors: quantities below are converted to plain numbers.
_BINARY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL_SUFFIXES = {
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "": 1.0,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
}


class EnvError(RuntimeError):
    """A referenced object or key is missing and not optional."""


@dataclass(frozen=True)
class ApiServerAddress:
    """Where in-cluster clients reach the API server."""

    host: str
    port: int


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined names replaced, ``$$`` → ``$``."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return variables.get(name, match.group(0))

    return _REFERENCE.sub(substitute, text)


def parse_quantity(quantity: str) -> float:
    """A Kubernetes quantity (``500m``, ``2Gi``, ``1e3``) as a number."""
    for suffix, factor in _BINARY_SUFFIXES.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    match = re.fullmatch(r"([0-9.eE+-]+?)([numkMGTPE]?)", quantity)
    if match is None:
        raise EnvError(f"not a quantity: {quantity!r}")
    return float(match.group(1)) * _DECIMAL_SUFFIXES[match.group(2)]


def _ceil_div(value: float, divisor: float) -> str:
    quotient = value / divisor
    whole = int(quotient)
    return str(whole if whole == quotient else whole + 1)


def field_value(pod: JsonObject, field_path: str) -> str:
    """The downward-API value of *field_path* for *pod*."""
    metadata = pod.get("metadata", {})
    spec = pod.get("spec", {})
    status = pod.get("status", {})
    subscript = _SUBSCRIPT.match(field_path)
    if subscript is not None:
        return str(metadata.get(subscript.group(1), {}).get(subscript.group(2), ""))
    simple: dict[str, Callable[[], Any]] = {
        "metadata.name": lambda: metadata.get("name", ""),
        "metadata.namespace": lambda: metadata.get("namespace", ""),
        "metadata.uid": lambda: metadata.get("uid", ""),
        "metadata.labels": lambda: _key_values(metadata.get("labels", {})),
        "metadata.annotations": lambda: _key_values(metadata.get("annotations", {})),
        "spec.nodeName": lambda: spec.get("nodeName", ""),
        "spec.serviceAccountName": lambda: spec.get("serviceAccountName", ""),
        "status.podIP": lambda: status.get("podIP", ""),
        "status.podIPs": lambda: ",".join(ip["ip"] for ip in status.get("podIPs", [])),
        "status.hostIP": lambda: status.get("hostIP", ""),
        "status.hostIPs": lambda: ",".join(ip["ip"] for ip in status.get("hostIPs", [])),
    }
    if field_path not in simple:
        raise EnvError(f"unsupported fieldRef {field_path!r}")
    return str(simple[field_path]())


def _key_values(mapping: Mapping[str, str]) -> str:
    return "\n".join(f'{key}="{value}"' for key, value in sorted(mapping.items()))


def resource_value(container: JsonObject, reference: JsonObject) -> str:
    """A ``resourceFieldRef`` value (``limits.cpu`` with a divisor, …)."""
    kind, _, resource = str(reference.get("resource", "")).partition(".")
    resources = container.get("resources", {})
    raw = resources.get(kind, {}).get(resource)
    if raw is None and kind == "requests":
        raw = resources.get("limits", {}).get(resource)
    if raw is None:
        # A real kubelet falls back to node allocatable; "0" says "unbounded" here.
        return "0"
    divisor = parse_quantity(str(reference.get("divisor", "1")))
    return _ceil_div(parse_quantity(str(raw)), divisor)


class ObjectReader:
    """Reads (and caches for one pod start) ConfigMaps and Secrets."""

    def __init__(self, api: KubeApi, namespace: str) -> None:
        self._api = api
        self._namespace = namespace
        self._cache: dict[tuple[str, str], JsonObject | None] = {}

    def _read(self, plural: str, name: str) -> JsonObject | None:
        key = (plural, name)
        if key not in self._cache:
            try:
                self._cache[key] = self._api.get_or_none(
                    f"/api/v1/namespaces/{self._namespace}/{plural}/{name}"
                )
            except ApiError as exc:
                raise EnvError(f"cannot read {plural}/{name}: {exc}") from exc
        return self._cache[key]

    def data(self, kind: str, name: str, optional: bool) -> dict[str, bytes] | None:
        """All keys of a ConfigMap or Secret as bytes; None if optional and absent."""
        plural = "configmaps" if kind == "configMap" else "secrets"
        found = self._read(plural, name)
        if found is None:
            if optional:
                return None
            raise EnvError(f"{kind} {self._namespace}/{name} not found")
        result: dict[str, bytes] = {}
        if kind == "configMap":
            for key, value in (found.get("data") or {}).items():
                result[key] = str(value).encode()
            for key, value in (found.get("binaryData") or {}).items():
                result[key] = base64.b64decode(value)
        else:
            for key, value in (found.get("data") or {}).items():
                result[key] = base64.b64decode(value)
            for key, value in (found.get("stringData") or {}).items():
                result[key] = str(value).encode()
        return result

    def key(self, kind: str, reference: JsonObject) -> str | None:
        optional = bool(reference.get("optional", False))
        data = self.data(kind, str(reference.get("name", "")), optional)
        key = str(reference.get("key", ""))
        if data is None or key not in data:
            if optional:
                return None
            raise EnvError(f"{kind} {reference.get('name')} has no key {key!r}")
        return data[key].decode(errors="replace")


def container_environment(
    pod: JsonObject,
    container: JsonObject,
    reader: ObjectReader,
    api_server: ApiServerAddress,
    base: Mapping[str, str],
) -> dict[str, str]:
    """The full environment of one container process."""
    environment = {k: v for k, v in base.items() if k not in HOST_ONLY_VARIABLES}
    environment |= {
        "HOSTNAME": str(pod["metadata"]["name"]),
        "KUBERNETES_SERVICE_HOST": api_server.host,
        "KUBERNETES_SERVICE_PORT": str(api_server.port),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(api_server.port),
        "KUBERNETES_PORT": f"tcp://{api_server.host}:{api_server.port}",
    }
    defined: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix", ""))
        for kind in ("configMap", "secret"):
            reference = source.get(f"{kind}Ref")
            if reference is None:
                continue
            data = reader.data(kind, str(reference["name"]), bool(reference.get("optional")))
            for key, raw in (data or {}).items():
                defined[prefix + key] = raw.decode(errors="replace")
    for variable in container.get("env") or []:
        name = str(variable["name"])
        if "value" in variable:
            defined[name] = expand(str(variable["value"]), defined)
            continue
        value_from = variable.get("valueFrom") or {}
        value: str | None
        if "fieldRef" in value_from:
            value = field_value(pod, str(value_from["fieldRef"]["fieldPath"]))
        elif "resourceFieldRef" in value_from:
            value = resource_value(container, value_from["resourceFieldRef"])
        elif "configMapKeyRef" in value_from:
            value = reader.key("configMap", value_from["configMapKeyRef"])
        elif "secretKeyRef" in value_from:
            value = reader.key("secret", value_from["secretKeyRef"])
        else:
            value = ""
        if value is not None:
            defined[name] = value
    environment |= defined
    return environment


def container_argv(container: JsonObject, environment: Mapping[str, str]) -> list[str]:
    """``command + args`` with ``$(VAR)`` expanded. Images have no entrypoint here."""
    command = [str(part) for part in container.get("command") or []]
    args = [str(part) for part in container.get("args") or []]
    if not command:
        raise EnvError(
            f"container {container.get('name')!r} has no command: the process kubelet "
            "runs no images, so the pod must say what to execute"
        )
    return [expand(part, environment) for part in (*command, *args)]
