"""Build the Kubernetes control plane and kwok from their Go modules.

``go install k8s.io/kubernetes/cmd/kube-apiserver@v1.Y.Z`` is refused: the
``k8s.io/kubernetes`` go.mod replaces its staging modules (k8s.io/api,
apimachinery, client-go, ...) with local ``./staging/src`` paths, and Go does
not allow ``replace`` in a module installed by version. So we build from a
small *wrapper module* in the cache that

- requires ``k8s.io/kubernetes vX.Y.Z``,
- replaces every staging module that go.mod names with its published
  ``v0.Y.Z`` release (the list is read from the downloaded go.mod, so a
  version bump picks up new staging modules by itself),
- declares the three commands as ``tool`` dependencies so ``go mod tidy``
  keeps everything they import,

and then ``go build``s the three ``cmd/`` packages with the version stamped
through ``-ldflags -X`` (as Kubernetes' own ``hack/lib/version.sh`` does), so
``/version`` and kubectl's skew check see a real version. Current releases
commit their generated OpenAPI code, so no code generation is needed.

kwok has no such replaces and installs with plain ``go install``.

Builds run under ``nice`` (the machines are small and shared), write into the
versioned cache folder, and stamp it complete last. The Go module and build
caches are Go's usual ones (``go env GOMODCACHE GOCACHE``), so a second build
of a close version is incremental.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from steno_devcluster import versions
from steno_devcluster.cache import Cache

logger = logging.getLogger(__name__)

# Wall-clock limits. A cold Kubernetes build on 2 busy cores took ~15 minutes;
# the limit leaves room for a slower machine without hanging CI forever.
KUBERNETES_BUILD_TIMEOUT_S = 60 * 60
KWOK_BUILD_TIMEOUT_S = 30 * 60
GO_QUERY_TIMEOUT_S = 10 * 60
# Lower priority than interactive work; the builds are long and CPU-bound.
NICE_LEVEL = 10
# Wrapper module path; never published, only names the main module.
WRAPPER_MODULE = "steno.dev/devcluster/kubernetes-build"
KUBERNETES_MODULE = "k8s.io/kubernetes"
KWOK_PACKAGE = "sigs.k8s.io/kwok/cmd/kwok"

# `k8s.io/api => ./staging/src/k8s.io/api` inside go.mod's replace block.
_STAGING_REPLACE = re.compile(r"^\s*(k8s\.io/[A-Za-z0-9._-]+)\s+=>\s+\./staging/src/\S+\s*$")
_GO_DIRECTIVE = re.compile(r"^go\s+(\S+)\s*$")
_GODEBUG_DIRECTIVE = re.compile(r"^godebug\s+\S.*$")


class BuildError(RuntimeError):
    """A Go command failed; the message carries the tail of its output."""


@dataclass(frozen=True)
class BuildResult:
    """What a build step produced and how long it took (0 when cached)."""

    bin_dir: Path  # folder holding the built executables
    seconds: float  # wall-clock time spent building; 0.0 when the cache was warm
    cached: bool  # True when nothing had to be built


def go_executable() -> str:
    found = shutil.which("go")
    if found is None:
        raise BuildError("the Go toolchain (`go`) is not on PATH; install Go >= 1.26")
    return found


def _run_go(
    args: list[str],
    cwd: Path,
    log_path: Path,
    timeout_s: float,
    extra_env: dict[str, str] | None = None,
) -> str:
    """Run a go command at low priority; keep its output in *log_path*."""
    command = ["nice", "-n", str(NICE_LEVEL), go_executable(), *args]
    env = dict(os.environ)
    env.update(extra_env or {})
    # Static binaries: no libc dependency, same as Kubernetes' release builds.
    env["CGO_ENABLED"] = "0"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(command)}  (in {cwd})\n")
        log.flush()
        try:
            completed = subprocess.run(
                command,
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BuildError(f"`go {' '.join(args)}` ran past {timeout_s:.0f} s") from exc
        log.write(completed.stdout)
    if completed.returncode != 0:
        tail = "\n".join(completed.stdout.splitlines()[-40:])
        raise BuildError(
            f"`go {' '.join(args)}` exited {completed.returncode} (log: {log_path}):\n{tail}"
        )
    return completed.stdout


def _downloaded_go_mod(module: str, version: str, workdir: Path, log_path: Path) -> Path:
    """Fetch a module's go.mod through the module proxy; return its local path."""
    workdir.mkdir(parents=True, exist_ok=True)
    output = _run_go(
        ["mod", "download", "-json", f"{module}@{version}"],
        cwd=workdir,
        log_path=log_path,
        timeout_s=GO_QUERY_TIMEOUT_S,
    )
    info = json.loads(output)
    if "Error" in info:
        raise BuildError(f"cannot download {module}@{version}: {info['Error']}")
    return Path(info["GoMod"])


def staging_modules(go_mod_text: str) -> list[str]:
    """The modules that a go.mod replaces with ``./staging/src/...`` paths."""
    found = []
    for line in go_mod_text.splitlines():
        match = _STAGING_REPLACE.match(line)
        if match:
            found.append(match.group(1))
    return found


def wrapper_go_mod(
    kubernetes_go_mod: str, kubernetes_version: str, staging_version: str, commands: tuple[str, ...]
) -> str:
    """go.mod text of the wrapper module that builds *commands* of Kubernetes."""
    go_version = "1.26.0"
    godebug: list[str] = []
    for line in kubernetes_go_mod.splitlines():
        go_match = _GO_DIRECTIVE.match(line)
        if go_match:
            go_version = go_match.group(1)
        if _GODEBUG_DIRECTIVE.match(line):
            # The main module's godebug settings win; carry Kubernetes' own.
            godebug.append(line)
    modules = staging_modules(kubernetes_go_mod)
    if not modules:
        raise BuildError("found no staging replaces in k8s.io/kubernetes' go.mod")
    lines = [f"module {WRAPPER_MODULE}", "", f"go {go_version}", ""]
    if godebug:
        lines += [*godebug, ""]
    lines += [f"require {KUBERNETES_MODULE} {kubernetes_version}", "", "replace ("]
    lines += [f"\t{module} => {module} {staging_version}" for module in modules]
    lines += [")", "", "tool ("]
    lines += [f"\t{KUBERNETES_MODULE}/cmd/{command}" for command in commands]
    lines += [")", ""]
    return "\n".join(lines)


def version_ldflags(kubernetes_version: str) -> str:
    """``-X`` flags that stamp the version, as Kubernetes' hack/lib/version.sh does."""
    match = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", kubernetes_version)
    if match is None:
        raise BuildError(f"not a release version: {kubernetes_version}")
    major, minor = match.group(1), match.group(2)
    values = {
        "gitVersion": kubernetes_version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",  # fixed: reproducible builds
    }
    flags = ["-s", "-w"]  # no symbol tables: ~30 % smaller binaries
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {package}.{key}={value}" for key, value in values.items()]
    return " ".join(flags)


def build_kubernetes(
    cache: Cache,
    version: str = versions.KUBERNETES_VERSION,
    staging_version: str = versions.KUBERNETES_STAGING_VERSION,
    commands: tuple[str, ...] = versions.KUBERNETES_COMMANDS,
) -> BuildResult:
    """Build the control-plane commands into ``cache/kubernetes-<version>/bin``."""
    bin_dir = cache.bin_dir("kubernetes", version)
    if cache.is_complete("kubernetes", version) and all(
        (bin_dir / command).is_file() for command in commands
    ):
        return BuildResult(bin_dir=bin_dir, seconds=0.0, cached=True)
    started = time.monotonic()
    workdir = cache.go_work_dir / f"kubernetes-{version}"
    log_path = cache.component_dir("kubernetes", version) / "build.log"
    logger.info("building Kubernetes %s (%s) in %s", version, ", ".join(commands), workdir)
    go_mod_path = _downloaded_go_mod(KUBERNETES_MODULE, version, workdir, log_path)
    go_mod = wrapper_go_mod(
        go_mod_path.read_text(encoding="utf-8"), version, staging_version, commands
    )
    (workdir / "go.mod").write_text(go_mod, encoding="utf-8")
    _run_go(["mod", "tidy"], cwd=workdir, log_path=log_path, timeout_s=GO_QUERY_TIMEOUT_S)
    bin_dir.mkdir(parents=True, exist_ok=True)
    _run_go(
        [
            "build",
            "-trimpath",
            "-ldflags",
            version_ldflags(version),
            "-o",
            str(bin_dir) + os.sep,
            *(f"{KUBERNETES_MODULE}/cmd/{command}" for command in commands),
        ],
        cwd=workdir,
        log_path=log_path,
        timeout_s=KUBERNETES_BUILD_TIMEOUT_S,
    )
    cache.mark_complete("kubernetes", version)
    return BuildResult(bin_dir=bin_dir, seconds=time.monotonic() - started, cached=False)


def build_kwok(cache: Cache, version: str = versions.KWOK_VERSION) -> BuildResult:
    """``go install`` kwok into ``cache/kwok-<version>/bin``."""
    bin_dir = cache.bin_dir("kwok", version)
    if cache.is_complete("kwok", version) and (bin_dir / "kwok").is_file():
        return BuildResult(bin_dir=bin_dir, seconds=0.0, cached=True)
    started = time.monotonic()
    component_dir = cache.component_dir("kwok", version)
    bin_dir.mkdir(parents=True, exist_ok=True)
    logger.info("installing kwok %s into %s", version, bin_dir)
    _run_go(
        ["install", "-trimpath", "-ldflags", "-s -w", f"{KWOK_PACKAGE}@{version}"],
        cwd=component_dir,
        log_path=component_dir / "build.log",
        timeout_s=KWOK_BUILD_TIMEOUT_S,
        extra_env={"GOBIN": str(bin_dir)},
    )
    cache.mark_complete("kwok", version)
    return BuildResult(bin_dir=bin_dir, seconds=time.monotonic() - started, cached=False)
