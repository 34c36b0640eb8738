"""One pod's life as local processes: start, probe, restart, stop, report.

A :class:`PodRunner` is driven by the process kubelet's single sync thread
(:mod:`steno_devcluster.kubelet`); it never blocks for long — a stop sends
SIGTERM and remembers a deadline, later syncs send SIGKILL if needed.

Lifecycle, following the kubelet's rules:

1. the pod gets its loopback IP and its volumes are written;
2. init containers run one after another, each to exit 0 (a failure fails
   the pod under ``restartPolicy: Never``, else it is retried with back-off);
3. the containers start together; each exit is recorded with its real exit
   code and restarted according to ``restartPolicy`` (Always, OnFailure,
   Never) with exponential back-off (``CrashLoopBackOff``), capped;
4. the phase is Pending → Running → Succeeded (every container exited 0 and
   none will restart) or Failed (one exited non-zero and none will restart);
5. ``Ready`` is true while the pod runs and each container is running and
   passed its readiness probe (or has none); a failed liveness probe
   restarts the container, a startup probe holds the other two back.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from steno_devcluster.kubeapi import ApiError, JsonObject, KubeApi
from steno_devcluster.podenv import (
    ApiServerAddress,
    EnvError,
    ObjectReader,
    container_argv,
    container_environment,
)
from steno_devcluster.podvolumes import (
    MountPoints,
    PodVolumes,
    VolumeBuilder,
    VolumeError,
    mount_wrapper,
    refresh_due_tokens,
)
from steno_devcluster.probes import ProbeState, run_probe
from steno_devcluster.processes import die_with_parent

logger = logging.getLogger(__name__)

# Restart back-off: 1 s, 2 s, 4 s … (the kubelet starts at 10 s and caps at
# 5 min; tests want crash loops to be observable quickly).
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 10.0
# Retry interval when a container cannot be configured yet (missing ConfigMap …).
CONFIG_RETRY_S = 1.0
DEFAULT_TERMINATION_GRACE_S = 30.0
# Exit code reported when a container's program could not be started at all.
START_FAILURE_EXIT_CODE = 128


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ContainerRun:
    """One container of a pod: its process and what the status reports."""

    spec: JsonObject
    init: bool
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    restart_count: int = 0
    started_at: str = ""
    started_monotonic: float = 0.0
    state: JsonObject = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: JsonObject = field(default_factory=dict)
    exit_code: int | None = None  # of the latest run, None while running or never run
    next_start_at: float = 0.0  # monotonic; 0 = start as soon as allowed
    probes: dict[str, ProbeState] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def pid_text(self) -> str:
        return str(self.process.pid) if self.process is not None else "?"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def ready(self) -> bool:
        if not self.running:
            return False
        startup = self.probes.get("startupProbe")
        if startup is not None and not startup.passed:
            return False
        readiness = self.probes.get("readinessProbe")
        return readiness is None or readiness.passed

    @property
    def started(self) -> bool:
        startup = self.probes.get("startupProbe")
        return self.running and (startup is None or startup.passed)

    def status(self) -> JsonObject:
        status: JsonObject = {
            "name": self.name,
            "image": str(self.spec.get("image", "")),
            "imageID": "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.process is not None:
            status["containerID"] = f"steno-process://{self.process.pid}"
        return status


class PodRunner:
    """Runs one pod bound to one of the kubelet's nodes."""

    def __init__(
        self,
        pod: JsonObject,
        api: KubeApi,
        directory: Path,
        pod_ip: str,
        host_ip: str,
        api_server: ApiServerAddress,
        base_environment: Mapping[str, str],
        max_grace_s: float,
        mount_points: MountPoints,
    ) -> None:
        self.pod = pod
        self.uid = str(pod["metadata"]["uid"])
        self.api = api
        self.directory = directory
        self.pod_ip = pod_ip
        self.host_ip = host_ip
        self.api_server = api_server
        self.base_environment = base_environment
        self.max_grace_s = max_grace_s
        self.mount_points = mount_points
        spec = pod.get("spec", {})
        self.restart_policy = str(spec.get("restartPolicy", "Always"))
        logs = directory / "logs"
        self.init_containers = [
            ContainerRun(c, True, logs / f"{c['name']}.log")
            for c in spec.get("initContainers") or []
        ]
        self.containers = [
            ContainerRun(c, False, logs / f"{c['name']}.log") for c in spec.get("containers") or []
        ]
        self.volumes: PodVolumes | None = None
        self.start_time = now_rfc3339()
        self.phase = "Pending"
        self.reason = ""
        self.message = ""
        self.kill_deadline: float | None = None  # set once a stop has begun
        self.deleted_confirmed = False
        self._condition_times: dict[str, tuple[str, str]] = {}
        self._last_status: JsonObject | None = None

    # -- naming ----------------------------------------------------------------

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    @property
    def name(self) -> str:
        return str(self.pod["metadata"]["name"])

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def deleting(self) -> bool:
        return bool(self.pod["metadata"].get("deletionTimestamp"))

    def all_runs(self) -> list[ContainerRun]:
        return [*self.init_containers, *self.containers]

    # -- events ----------------------------------------------------------------

    def event(self, kind: str, reason: str, message: str) -> None:
        """Post a core/v1 Event about this pod (best effort: events are advisory)."""
        stamp = now_rfc3339()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{self.name}.", "namespace": self.namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": self.name,
                "namespace": self.namespace,
                "uid": self.uid,
            },
            "type": kind,
            "reason": reason,
            "message": message,
            "source": {"component": "kubelet", "host": self.pod["spec"].get("nodeName", "")},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            self.api.create(f"/api/v1/namespaces/{self.namespace}/events", body)
        except (ApiError, OSError) as exc:
            logger.debug(
                "event %s for %s/%s not posted: %s", reason, self.namespace, self.name, exc
            )

    # -- the sync step -------------------------------------------------------------

    def sync(self, pod: JsonObject) -> None:
        """Advance the pod one step toward its desired state and report status."""
        # The watched object may predate our first status write; the
        # downward API (status.podIP in env and files) must see the addresses.
        status = {**pod.get("status", {}), "podIP": self.pod_ip, "hostIP": self.host_ip}
        self.pod = {**pod, "status": status}
        now = time.monotonic()
        if self.deleting:
            self._stop_step(now)
            return
        if self.terminal:
            self._report()
            return
        if self.volumes is None and not self._prepare():
            self._report()
            return
        if self.volumes is not None:
            try:
                refresh_due_tokens(self.api, self.pod, self.volumes)
            except (ApiError, OSError) as exc:
                logger.warning("token refresh for %s/%s failed: %s", self.namespace, self.name, exc)
        if self._run_init_containers(now):
            for run in self.containers:
                self._drive(run, now)
            self._update_phase()
        self._report()

    def _prepare(self) -> bool:
        """Write volumes; a failure fails the pod (the kubelet would retry
        forever; failing says at once what is missing)."""
        builder = VolumeBuilder(self.api, self.pod, self.directory / "volumes", time.monotonic)
        try:
            self.volumes = builder.build()
        except (VolumeError, OSError) as exc:
            self._fail("FailedMount", str(exc))
            return False
        return True

    def _fail(self, reason: str, message: str) -> None:
        self.phase = "Failed"
        self.reason = reason
        self.message = message
        self.event("Warning", reason, message)
        self._kill_all(signal.SIGKILL)

    def _run_init_containers(self, now: float) -> bool:
        """Drive init containers in order; True once all have exited 0."""
        for run in self.init_containers:
            self._poll(run)
            if run.exit_code == 0:
                continue
            if run.running:
                return False
            if run.exit_code is not None and self.restart_policy == "Never":
                self.phase = "Failed"
                self.reason = "InitContainerFailed"
                self.message = f"init container {run.name} exited {run.exit_code}"
                return False
            self._start_if_due(run, now)
            return False
        return True

    def _drive(self, run: ContainerRun, now: float) -> None:
        self._poll(run)
        if run.running:
            self._probe(run, now)
            return
        if run.exit_code is None or self._should_restart(run.exit_code):
            self._start_if_due(run, now)

    def _should_restart(self, exit_code: int) -> bool:
        if self.restart_policy == "Always":
            return True
        return self.restart_policy == "OnFailure" and exit_code != 0

    def _start_if_due(self, run: ContainerRun, now: float) -> None:
        if now < run.next_start_at:
            return
        if run.exit_code is not None:
            run.restart_count += 1
        try:
            self._launch(run)
        except (EnvError, VolumeError) as exc:
            run.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
            run.next_start_at = now + CONFIG_RETRY_S
            if run.exit_code is not None:
                run.restart_count -= 1
            return
        except OSError as exc:
            # The program could not be executed: report it as a failed run.
            self._record_exit(run, START_FAILURE_EXIT_CODE, "StartError", str(exc))
            run.next_start_at = now + self._backoff(run)
            return
        run.next_start_at = 0.0
        run.probes = {
            kind: ProbeState(spec=run.spec[kind], started_at=time.monotonic())
            for kind in ("startupProbe", "readinessProbe", "livenessProbe")
            if run.spec.get(kind)
        }
        self.event("Normal", "Started", f"Started container {run.name} (pid {run.pid_text})")

    def _launch(self, run: ContainerRun) -> None:
        if self.volumes is None:
            raise VolumeError("volumes are not ready")
        reader = ObjectReader(self.api, self.namespace)
        environment = container_environment(
            self.pod, run.spec, reader, self.api_server, self.base_environment
        )
        argv = container_argv(run.spec, environment)
        working_dir = run.spec.get("workingDir")
        mounts = self.volumes.mounts(run.spec)
        for mount in mounts:
            self.mount_points.ensure(mount)
        prefix = mount_wrapper(mounts, working_dir)
        run.log_path.parent.mkdir(parents=True, exist_ok=True)
        if run.log_file is not None:
            run.log_file.close()
        run.log_file = run.log_path.open("ab")
        run.process = subprocess.Popen(
            [*prefix, *argv],
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=run.log_file,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        if "terminated" in run.state:
            run.last_state = run.state
        run.exit_code = None
        run.started_at = now_rfc3339()
        run.started_monotonic = time.monotonic()
        run.state = {"running": {"startedAt": run.started_at}}

    def _poll(self, run: ContainerRun) -> None:
        if run.process is None or run.exit_code is not None:
            return
        code = run.process.poll()
        if code is None:
            return
        # A signal death is reported like a shell does: 128 + signal number.
        exit_code = code if code >= 0 else 128 - code
        reason = "Completed" if exit_code == 0 else "Error"
        self._record_exit(run, exit_code, reason, "")
        if run.log_file is not None:
            run.log_file.close()
            run.log_file = None
        if exit_code != 0 or not run.init:
            run.next_start_at = time.monotonic() + self._backoff(run)

    def _record_exit(self, run: ContainerRun, exit_code: int, reason: str, message: str) -> None:
        terminated: JsonObject = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": run.started_at or now_rfc3339(),
            "finishedAt": now_rfc3339(),
        }
        if message:
            terminated["message"] = message
        if run.process is not None:
            terminated["containerID"] = f"steno-process://{run.process.pid}"
        run.exit_code = exit_code
        run.state = {"terminated": terminated}
        run.probes = {}

    def _backoff(self, run: ContainerRun) -> float:
        return float(min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2 ** min(run.restart_count, 10)))

    def _probe(self, run: ContainerRun, now: float) -> None:
        pid = run.process.pid if run.process is not None else None
        startup = run.probes.get("startupProbe")
        kinds = (
            ["startupProbe"]
            if startup is not None and not startup.passed
            else [
                "readinessProbe",
                "livenessProbe",
            ]
        )
        for kind in kinds:
            state = run.probes.get(kind)
            if state is None or not state.due(now):
                continue
            ok, message = run_probe(state.spec, run.spec, self.pod_ip, pid)
            state.record(ok, message, time.monotonic(), fast=kind != "livenessProbe")
            if kind in ("livenessProbe", "startupProbe") and state.exhausted:
                self.event("Warning", "Unhealthy", f"{kind} of {run.name} failed: {message}")
                self._signal(run, signal.SIGKILL)

    def _update_phase(self) -> None:
        if any(run.running for run in self.containers):
            self.phase = "Running"
            return
        pending = [r for r in self.containers if r.exit_code is None]
        if pending:
            return
        restarting = [r for r in self.containers if self._should_restart(r.exit_code or 0)]
        if restarting:
            for run in restarting:
                if not run.running and "terminated" in run.state:
                    run.last_state = run.state
                    run.state = {
                        "waiting": {
                            "reason": "CrashLoopBackOff",
                            "message": f"back-off restarting {run.name}",
                        }
                    }
            self.phase = "Running"
            return
        failed = [r for r in self.containers if r.exit_code != 0]
        self.phase = "Failed" if failed else "Succeeded"

    # -- stopping ----------------------------------------------------------------

    def _grace_s(self) -> float:
        metadata = self.pod["metadata"]
        spec = self.pod.get("spec", {})
        grace = metadata.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds", DEFAULT_TERMINATION_GRACE_S)
        return min(self.max_grace_s, float(grace))

    def _signal(self, run: ContainerRun, signum: int) -> None:
        if run.process is not None and run.process.poll() is None:
            # Containers lead their own session: signal the whole group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(run.process.pid, signum)

    def _kill_all(self, signum: int) -> None:
        for run in self.all_runs():
            self._signal(run, signum)

    def begin_stop(self, now: float, grace_s: float | None = None) -> None:
        if self.kill_deadline is None:
            self.kill_deadline = now + (self._grace_s() if grace_s is None else grace_s)
            if any(run.running for run in self.all_runs()):
                self.event("Normal", "Killing", "Stopping the pod's processes")
            self._kill_all(signal.SIGTERM)

    def stopped(self, now: float) -> bool:
        """True once every process is gone (SIGKILL after the deadline)."""
        if self.kill_deadline is not None and now >= self.kill_deadline:
            self._kill_all(signal.SIGKILL)
        for run in self.all_runs():
            self._poll(run)
        if any(run.running for run in self.all_runs()):
            return False
        for run in self.all_runs():
            if run.log_file is not None:
                run.log_file.close()
                run.log_file = None
        return True

    def _stop_step(self, now: float) -> None:
        self.begin_stop(now)
        if not self.stopped(now) or self.deleted_confirmed:
            return
        # The kubelet's last word on a graceful deletion: remove the object now.
        try:
            self.api.delete(
                self.path,
                {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}},
            )
        except ApiError as exc:
            if exc.status not in (404, 409):
                raise
        self.deleted_confirmed = True

    # -- status --------------------------------------------------------------------

    def _condition(self, kind: str, true: bool, reason: str = "") -> JsonObject:
        status = "True" if true else "False"
        previous = self._condition_times.get(kind)
        if previous is None or previous[0] != status:
            self._condition_times[kind] = (status, now_rfc3339())
        condition: JsonObject = {
            "type": kind,
            "status": status,
            "lastProbeTime": None,
            "lastTransitionTime": self._condition_times[kind][1],
        }
        if reason and not true:
            condition["reason"] = reason
        return condition

    def status(self) -> JsonObject:
        initialized = all(r.exit_code == 0 for r in self.init_containers)
        running = self.phase == "Running"
        containers_ready = running and all(r.ready for r in self.containers)
        not_ready_reason = "PodCompleted" if self.terminal else "ContainersNotReady"
        status: JsonObject = {
            "phase": self.phase,
            "hostIP": self.host_ip,
            "hostIPs": [{"ip": self.host_ip}],
            "podIP": self.pod_ip,
            "podIPs": [{"ip": self.pod_ip}],
            "startTime": self.start_time,
            "conditions": [
                self._condition("PodReadyToStartContainers", self.volumes is not None),
                self._condition("Initialized", initialized, "ContainersNotInitialized"),
                self._condition("ContainersReady", containers_ready, not_ready_reason),
                self._condition("Ready", containers_ready, not_ready_reason),
            ],
            "containerStatuses": [r.status() for r in self.containers],
        }
        if self.init_containers:
            status["initContainerStatuses"] = [r.status() for r in self.init_containers]
        if self.reason:
            status["reason"] = self.reason
            status["message"] = self.message
        return status

    def _report(self) -> None:
        status = self.status()
        if status == self._last_status:
            return
        try:
            self.api.patch(self.path + "/status", {"status": status}, patch_type="strategic")
        except ApiError as exc:
            if exc.status == 404:
                return
            raise
        self._last_status = status

    def log_text(self, container: str) -> str:
        for run in self.all_runs():
            if run.name == container:
                try:
                    return run.log_path.read_text(encoding="utf-8", errors="replace")
                except FileNotFoundError:
                    return ""
        raise KeyError(container)
