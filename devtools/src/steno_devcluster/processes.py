"""Child processes that are always stopped, and loopback ports to give them.

Every server the development cluster starts (etcd, the control plane, kwok,
SeaweedFS) is a :class:`ManagedProcess`:

- its output goes to a log file (pipes would block once full and nobody reads
  them), whose tail is quoted when a start fails;
- it runs in its own session, so stopping it signals its whole process group;
- on Linux it gets ``PR_SET_PDEATHSIG=SIGKILL``: if the Python process that
  started it dies without cleaning up (a killed pytest), the kernel kills the
  child too instead of leaking it;
- :meth:`ManagedProcess.stop` sends SIGTERM, waits a bounded time, then
  SIGKILL — some servers (SeaweedFS, now and then) ignore SIGTERM.

PDEATHSIG fires when the *thread* that forked the child exits, so start
managed processes from a thread that outlives them (the main thread, or the
process kubelet's own sync thread).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

# Time a process gets between SIGTERM and SIGKILL.
DEFAULT_STOP_GRACE_S = 5.0
# After SIGKILL the kernel reaps quickly; this only bounds a wedged wait.
KILL_WAIT_S = 5.0
# How much of a log a failure message quotes.
LOG_TAIL_LINES = 30
# linux/prctl.h
_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on *host* a moment ago (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def die_with_parent() -> Callable[[], None] | None:
    """A preexec function that sets PDEATHSIG=SIGKILL, or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    libc = ctypes.CDLL(libc_name, use_errno=True)

    def set_pdeathsig() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return set_pdeathsig


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """One child process with a log file and a bounded stop."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        logger.debug("started %s (pid %d): %s", name, self.popen.pid, " ".join(self.argv))

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def describe_exit(self) -> str:
        """A message for a process that should be running but is not."""
        return (
            f"{self.name} exited with {self.popen.returncode}; "
            f"last lines of {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def _signal_group(self, signum: int) -> None:
        # The child leads its own session, so its pid is its process group id.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signum)

    def stop(self, grace_s: float = DEFAULT_STOP_GRACE_S) -> int | None:
        """SIGTERM, wait up to *grace_s*, then SIGKILL. Returns the exit code."""
        if self.popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                logger.warning("%s ignored SIGTERM for %.1f s; killing it", self.name, grace_s)
        # Also sweeps any children the leader left behind in its group.
        self._signal_group(signal.SIGKILL)
        try:
            return self.popen.wait(timeout=KILL_WAIT_S)
        except subprocess.TimeoutExpired:
            logger.error("%s (pid %d) survived SIGKILL", self.name, self.popen.pid)
            return None
