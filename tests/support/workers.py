"""Driving job workers as processes: forked from a zygote (cheap) or as the real ``steno``."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ZYGOTE = Path(__file__).with_name("worker_zygote.py")
READY_TIMEOUT_S = 120.0  # importing torch and transformers on two busy cores
LINE_TIMEOUT_S = 30.0
LOG_POLL_S = 0.02


@dataclass
class WorkerRun:
    tag: str
    pid: int
    log: Path
    started_at: float
    exit_code: int | None = None
    ended_at: float | None = None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class WorkerZygote:
    """One zygote process; ``start`` forks a worker running ``steno <argv>``."""

    def __init__(self, env: dict[str, str]) -> None:
        self._process = subprocess.Popen(
            [sys.executable, str(ZYGOTE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=None, text=True, env=env, bufsize=1,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._runs: dict[str, WorkerRun] = {}
        threading.Thread(target=self._pump, daemon=True).start()
        line = self._next_line(READY_TIMEOUT_S)
        if line != "ready":
            raise RuntimeError(f"zygote did not start: {line!r}")

    def _pump(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put("")

    def _next_line(self, timeout_s: float) -> str:
        try:
            return self._lines.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"zygote said nothing for {timeout_s:.0f} s") from None

    def _handle(self, line: str) -> None:
        parts = line.split()
        if len(parts) == 3 and parts[0] == "exited":
            run = self._runs[parts[1]]
            run.exit_code = int(parts[2])
            run.ended_at = time.monotonic()
        elif line == "":
            raise RuntimeError("the zygote exited")

    def start(self, tag: str, argv: list[str], log: Path, env: dict[str, str]) -> WorkerRun:
        assert self._process.stdin is not None
        self._process.stdin.write(f"run {tag} {log} {json.dumps(argv)}\t{json.dumps(env)}\n")
        self._process.stdin.flush()
        deadline = time.monotonic() + LINE_TIMEOUT_S
        while True:
            line = self._next_line(max(0.1, deadline - time.monotonic()))
            parts = line.split()
            if len(parts) == 3 and parts[0] == "started" and parts[1] == tag:
                run = WorkerRun(tag, int(parts[2]), log, time.monotonic())
                self._runs[tag] = run
                return run
            self._handle(line)

    def wait(self, run: WorkerRun, timeout_s: float) -> int | None:
        """The run's exit code once it ends, or None if still running after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while run.exit_code is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                self._handle(self._lines.get(timeout=left))
            except queue.Empty:
                return None
        return run.exit_code

    def wait_for_log(self, run: WorkerRun, text: str, timeout_s: float) -> float | None:
        """When ``text`` appeared in the run's log (monotonic), or None if the run ended first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in run.text():
                return time.monotonic()
            if self.wait(run, LOG_POLL_S) is not None:
                return time.monotonic() if text in run.text() else None
        raise TimeoutError(f"worker {run.tag}: no {text!r} in {timeout_s:.0f} s")

    def wait_for_lines(self, run: WorkerRun, marker: str, count: int, timeout_s: float) -> bool:
        """Wait until the run's log has ``count`` lines with ``marker``; False if it ended first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if run.text().count(marker) >= count:
                return True
            if self.wait(run, LOG_POLL_S) is not None:
                return run.text().count(marker) >= count
        raise TimeoutError(f"worker {run.tag}: fewer than {count} {marker!r} in {timeout_s:.0f} s")

    def kill(self, run: WorkerRun, timeout_s: float = LINE_TIMEOUT_S) -> int:
        """SIGKILL the run (if still running) and return its exit code."""
        if run.exit_code is None:
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.kill(run.pid, signal.SIGKILL)
        code = self.wait(run, timeout_s)
        if code is None:
            raise TimeoutError(f"worker {run.tag} did not die")
        return code

    def close(self) -> None:
        for run in self._runs.values():
            if run.exit_code is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(run.pid, signal.SIGKILL)
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
