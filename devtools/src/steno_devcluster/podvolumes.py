"""A pod's volumes as files in its folder, and how they reach the process.

Supported volume types, written under ``<pod dir>/volumes/<name>/``:

- ``configMap`` and ``secret`` (``items``, ``optional``, ``defaultMode``/``mode``);
- ``projected`` with ``serviceAccountToken`` (a real TokenRequest bound to
  the pod, refreshed at 80 % of its lifetime as the kubelet does),
  ``configMap``, ``secret`` and ``downwardAPI`` sources — this is the
  ``kube-api-access-…`` volume that the ServiceAccount admission plugin adds
  to every pod;
- ``downwardAPI`` (``fieldRef`` items);
- ``emptyDir`` (an empty folder);
- ``hostPath`` (the host path itself, not copied).

Other types make the pod fail with a clear message.

Processes see each volume at its ``mountPath`` through a private mount
namespace: the container is started as ``unshare --mount --propagation
private -- sh -c '<bind mounts>; exec "$@"' …`` (with ``--user
--map-root-user`` added when not root), so paths such as
``/var/run/secrets/kubernetes.io/serviceaccount/token`` exist for that
process only. A bind mount needs an existing mount point, so a missing one
is created on the host first (see :class:`MountPoints`) and removed when the
kubelet stops.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steno_devcluster.kubeapi import ApiError, JsonObject, KubeApi
from steno_devcluster.podenv import EnvError, ObjectReader, field_value

# Kubernetes' defaults for volume file modes and token lifetimes.
DEFAULT_FILE_MODE = 0o644
DEFAULT_TOKEN_EXPIRATION_S = 3607
# Refresh a token once this share of its lifetime has passed (kubelet: 80 %).
TOKEN_REFRESH_FRACTION = 0.8


class VolumeError(RuntimeError):
    """A volume cannot be prepared (missing object, unsupported type)."""


@dataclass
class TokenFile:
    """A projected service-account token that must be kept fresh."""

    path: Path
    audiences: list[str]
    expiration_s: int
    refresh_at: float = 0.0  # time.monotonic() after which to request a new one


@dataclass(frozen=True)
class Mount:
    """One bind mount of a container."""

    source: Path  # file or folder on the host
    target: str  # mountPath inside the container's view
    read_only: bool


@dataclass
class PodVolumes:
    """Where each volume of one pod lives, and the tokens to refresh."""

    directory: Path
    sources: dict[str, Path] = field(default_factory=dict)
    tokens: list[TokenFile] = field(default_factory=list)

    def mounts(self, container: JsonObject) -> list[Mount]:
        mounts = []
        for mount in container.get("volumeMounts") or []:
            name = str(mount["name"])
            if name not in self.sources:
                raise VolumeError(f"volumeMount {name!r} names no volume of the pod")
            source = self.sources[name]
            sub_path = str(mount.get("subPath") or "")
            if sub_path:
                source = source / sub_path
            mounts.append(Mount(source, str(mount["mountPath"]), bool(mount.get("readOnly"))))
        return mounts


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    partial.chmod(mode)
    # A rename is atomic, so a process never reads half a file (or a half-refreshed token).
    partial.replace(path)


def _write_items(
    directory: Path,
    data: dict[str, bytes],
    items: list[JsonObject] | None,
    default_mode: int,
) -> None:
    if items:
        for item in items:
            key = str(item["key"])
            if key not in data:
                raise VolumeError(f"key {key!r} not found")
            mode = int(item.get("mode", default_mode))
            _write_atomically(directory / str(item["path"]), data[key], mode)
        return
    for key, value in data.items():
        _write_atomically(directory / key, value, default_mode)


class VolumeBuilder:
    """Materializes the volumes of one pod."""

    def __init__(
        self, api: KubeApi, pod: JsonObject, directory: Path, clock: Callable[[], float]
    ) -> None:
        self._api = api
        self._pod = pod
        self._namespace = str(pod["metadata"]["namespace"])
        self._reader = ObjectReader(api, self._namespace)
        self._directory = directory
        self._clock = clock

    def build(self) -> PodVolumes:
        volumes = PodVolumes(self._directory)
        for volume in self._pod.get("spec", {}).get("volumes") or []:
            name = str(volume["name"])
            target = self._directory / name
            try:
                volumes.sources[name] = self._build_one(volume, target, volumes)
            except (EnvError, ApiError) as exc:
                raise VolumeError(f"volume {name!r}: {exc}") from exc
        return volumes

    def _build_one(self, volume: JsonObject, target: Path, volumes: PodVolumes) -> Path:
        if "hostPath" in volume:
            return Path(str(volume["hostPath"]["path"]))
        target.mkdir(parents=True, exist_ok=True)
        if "emptyDir" in volume:
            return target
        if "configMap" in volume or "secret" in volume:
            kind = "configMap" if "configMap" in volume else "secret"
            source = volume[kind]
            name = str(source.get("name") or source.get("secretName") or "")
            self._write_object(kind, name, source, target, int(source.get("defaultMode", 0o644)))
            return target
        if "downwardAPI" in volume:
            source = volume["downwardAPI"]
            self._write_downward(source, target, int(source.get("defaultMode", 0o644)))
            return target
        if "projected" in volume:
            projected = volume["projected"]
            mode = int(projected.get("defaultMode", DEFAULT_FILE_MODE))
            for source in projected.get("sources") or []:
                self._write_projection(source, target, mode, volumes)
            return target
        kinds = sorted(set(volume) - {"name"})
        raise VolumeError(f"unsupported volume type {kinds} (the process kubelet has no storage)")

    def _write_object(
        self, kind: str, name: str, source: JsonObject, target: Path, mode: int
    ) -> None:
        data = self._reader.data(kind, name, bool(source.get("optional")))
        if data is not None:
            _write_items(target, data, source.get("items"), mode)

    def _write_downward(self, source: JsonObject, target: Path, mode: int) -> None:
        for item in source.get("items") or []:
            if "fieldRef" not in item:
                raise VolumeError("only fieldRef downwardAPI items are supported")
            value = field_value(self._pod, str(item["fieldRef"]["fieldPath"]))
            _write_atomically(target / str(item["path"]), value.encode(), item.get("mode", mode))

    def _write_projection(
        self, source: JsonObject, target: Path, mode: int, volumes: PodVolumes
    ) -> None:
        if "serviceAccountToken" in source:
            token_source = source["serviceAccountToken"]
            audience = token_source.get("audience")
            token = TokenFile(
                path=target / str(token_source["path"]),
                audiences=[str(audience)] if audience else [],
                expiration_s=int(token_source.get("expirationSeconds", DEFAULT_TOKEN_EXPIRATION_S)),
            )
            refresh_token(self._api, self._pod, token, self._clock)
            volumes.tokens.append(token)
        elif "configMap" in source or "secret" in source:
            kind = "configMap" if "configMap" in source else "secret"
            inner = source[kind]
            self._write_object(kind, str(inner.get("name", "")), inner, target, mode)
        elif "downwardAPI" in source:
            self._write_downward(source["downwardAPI"], target, mode)
        else:
            raise VolumeError(f"unsupported projected source {sorted(source)}")


def refresh_token(
    api: KubeApi, pod: JsonObject, token: TokenFile, clock: Callable[[], float]
) -> None:
    """Request a token bound to *pod* and write it; schedule the next refresh."""
    metadata = pod["metadata"]
    account = pod.get("spec", {}).get("serviceAccountName") or "default"
    spec: dict[str, Any] = {
        "expirationSeconds": token.expiration_s,
        "boundObjectRef": {
            "kind": "Pod",
            "apiVersion": "v1",
            "name": metadata["name"],
            "uid": metadata["uid"],
        },
    }
    if token.audiences:
        spec["audiences"] = token.audiences
    answer = api.create(
        f"/api/v1/namespaces/{metadata['namespace']}/serviceaccounts/{account}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
    )
    status = answer.get("status", {})
    _write_atomically(token.path, str(status["token"]).encode(), DEFAULT_FILE_MODE)
    lifetime_s = float(token.expiration_s)
    expires = status.get("expirationTimestamp")
    if expires:
        until = datetime.datetime.fromisoformat(str(expires).replace("Z", "+00:00"))
        lifetime_s = (until - datetime.datetime.now(datetime.UTC)).total_seconds()
    token.refresh_at = clock() + max(1.0, lifetime_s * TOKEN_REFRESH_FRACTION)


def refresh_due_tokens(api: KubeApi, pod: JsonObject, volumes: PodVolumes) -> None:
    now = time.monotonic()
    for token in volumes.tokens:
        if now >= token.refresh_at:
            refresh_token(api, pod, token, time.monotonic)


def remove_pod_files(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


class MountPoints:
    """Mount points created on the host for pods, removed again when done.

    A bind mount needs an existing target, so a missing ``mountPath`` is
    created on the host (folders, or an empty file for a file mount) before
    the container starts. :meth:`remove_created` takes them away again —
    only what this registry created, only while empty — except under
    ``/var/run/secrets``: every pod mounts its token there, and another
    kubelet on the machine may be using that mount point right now.
    """

    # Left in place: shared by every pod of every kubelet on the machine.
    SHARED_ROOTS = (Path("/var/run/secrets"), Path("/run/secrets"))

    def __init__(self) -> None:
        self._created: list[Path] = []

    def ensure(self, mount: Mount) -> None:
        target = Path(mount.target)
        missing: list[Path] = []
        probe = target
        while not probe.exists() and probe != probe.parent:
            missing.append(probe)
            probe = probe.parent
        for path in reversed(missing):
            if path == target and not mount.source.is_dir():
                path.touch()
            else:
                path.mkdir()
            self._created.append(path)

    def remove_created(self) -> None:
        for path in reversed(self._created):
            if any(path == root or root in path.parents for root in self.SHARED_ROOTS):
                continue
            with contextlib.suppress(OSError):  # not empty, or in use: leave it
                if path.is_dir():
                    path.rmdir()
                elif path.stat().st_size == 0:
                    path.unlink()
        self._created.clear()


def mount_wrapper(mounts: list[Mount], working_dir: str | None) -> list[str]:
    """argv prefix that runs the rest of argv with *mounts* in a mount namespace.

    Without mounts and working dir it is empty: the process starts directly.
    """
    if not mounts and not working_dir:
        return []
    lines = ["set -e"]
    for mount in mounts:
        source = shlex.quote(str(mount.source))
        target = shlex.quote(mount.target)
        # The mount point exists: MountPoints.ensure created it beforehand.
        lines.append(f"mount --bind {source} {target}")
        if mount.read_only:
            lines.append(f"mount -o remount,bind,ro {target}")
    if working_dir:
        lines.append(f"mkdir -p {shlex.quote(working_dir)}; cd {shlex.quote(working_dir)}")
    lines.append('exec "$@"')
    script = "\n".join(lines)
    if not mounts:
        return ["sh", "-c", script, "steno-pod"]
    namespace = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        namespace[1:1] = ["--user", "--map-root-user"]
    return [*namespace, "--", "sh", "-c", script, "steno-pod"]
