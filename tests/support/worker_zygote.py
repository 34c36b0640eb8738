"""A process that imports the worker's heavy modules once, then forks real workers on demand.

Killing a job worker twenty times would cost twenty Python start-ups with
torch and transformers imports (~6 s each on two busy cores). This zygote
pays that once: each ``run`` forks a child that executes exactly what the
``steno`` command does (``steno_inference.cli.main([...])``), with its own
environment and log file, and exits with its exit code. The child loads the
model and works like any worker; SIGKILL ends it like any worker.

Nothing of torch runs in the zygote itself (no OpenMP pool exists when it
forks), and it is single-threaded, so forking is safe.

Protocol, one line each way:
  stdin:  ``run <tag> <log path> <JSON argv> <JSON env>``
  stdout: ``ready`` once; ``started <tag> <pid>``; ``exited <tag> <code>``
          (a negative code: killed by that signal).
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys

import boto3  # noqa: F401 - imported for the children
import transformers  # noqa: F401
from steno_inference import cli
from steno_inference.commands import work  # noqa: F401
from steno_inference.engine import Engine  # noqa: F401
from steno_inference.jobs import pod  # noqa: F401
from transformers import AutoTokenizer, WhisperForConditionalGeneration  # noqa: F401

POLL_S = 0.02


def _child(log_path: str, argv: list[str], env: dict[str, str]) -> None:
    try:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        sys.stdout = open(1, "w", closefd=False, buffering=1)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False, buffering=1)  # noqa: SIM115
        os.environ.update(env)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        code = cli.main(argv)
    except BaseException as error:  # the child must never return into the zygote's loop
        print(f"zygote child failed: {error!r}", file=sys.stderr, flush=True)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    children: dict[int, str] = {}
    print("ready", flush=True)
    stdin_open = True
    while stdin_open or children:
        readable, _, _ = select.select([sys.stdin] if stdin_open else [], [], [], POLL_S)
        if readable:
            line = sys.stdin.readline()
            if not line:
                stdin_open = False
            elif line.startswith("run "):
                _, tag, log_path, rest = line.rstrip("\n").split(" ", 3)
                argv_json, env_json = rest.split("\t")
                pid = os.fork()
                if pid == 0:
                    _child(log_path, json.loads(argv_json), json.loads(env_json))
                children[pid] = tag
                print(f"started {tag} {pid}", flush=True)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            tag = children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            print(f"exited {tag} {code}", flush=True)


if __name__ == "__main__":
    main()
