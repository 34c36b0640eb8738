"""``steno work --plan URI --shard N``: one shard of a transcription job, then exit.

A job pod's command line (see ``docs/jobs.md``). The plan's URI and the
shard index default to ``$STENO_PLAN_URI`` and ``$JOB_COMPLETION_INDEX``
(what an Indexed Kubernetes Job gives each pod); storage is configured from
the standard AWS environment (:mod:`steno_inference.storage.config`).

With ``--progress-port``, the gRPC server runs alongside the worker so the
operator can call ``WatchProgress`` (``steno_inference.server.build_server``
in job mode, on the same engine and progress board).

SIGTERM or SIGINT stops the worker: no new file is committed, files already
committed stay, and the exit code is 75 (retryable). Since every commit is
atomic, a worker that has not stopped :data:`STOP_GRACE_S` after the signal
(a read hanging on the network, say) exits hard with the same code.

Exit codes: :mod:`steno_inference.jobs.exitcodes` (0 done, 1 unexpected,
2 bad spec, 75 retryable). One JSON line on stdout summarizes the outcome.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from steno_inference.backends import BACKENDS, DTYPES
from steno_inference.commands.decoding_flags import add_decoding_flags

NAME = "work"
STOP_GRACE_S = 20.0  # after SIGTERM; Kubernetes' default grace period is 30 s
PLAN_ENV = "STENO_PLAN_URI"
SHARD_ENV = "JOB_COMPLETION_INDEX"
DEFAULT_PROGRESS_HOST = "127.0.0.1"  # pods pass 0.0.0.0 so the operator can reach them


def register(subparsers: Any) -> None:
    work = subparsers.add_parser(
        "work",
        help="work through one shard of a transcription job (a job pod's command)",
        description="Transcribe one shard of a planned job from object storage and commit "
        "its results (outputs, commit records, shard manifest); then exit.",
    )
    work.add_argument("--plan", default=None, metavar="URI",
                      help=f"s3:// URI of the job's plan (default: ${PLAN_ENV})")
    work.add_argument("--shard", default=None, metavar="N",
                      help=f"shard index (default: ${SHARD_ENV})")
    work.add_argument("--device", default="auto", help="auto, cpu or cuda:N")
    work.add_argument("--dtype", default="auto", choices=DTYPES,
                      help="torch: auto, fp16, bf16, fp32; onnx: auto (fp32), fp32, int8")
    work.add_argument("--backend", default="auto", choices=BACKENDS,
                      help="torch, onnx (CPU, ONNX Runtime) or auto: torch on GPU, onnx on CPU")
    work.add_argument("--attention", default="auto", choices=("auto", "flash", "sdpa", "eager"))
    add_decoding_flags(work)
    work.add_argument("--batch-size", type=int, default=None, metavar="N",
                      help="decoder slots (default: sized from the device)")
    work.add_argument("--progress-port", type=int, default=None, metavar="PORT",
                      help="serve gRPC WatchProgress on PORT while working (0: any free port)")
    work.add_argument("--progress-host", default=DEFAULT_PROGRESS_HOST,
                      help=f"address for --progress-port (default: {DEFAULT_PROGRESS_HOST})")


def _shard_index(text: str | None) -> int:
    if text is None or not text.strip():
        raise ValueError(f"no shard index: pass --shard or set ${SHARD_ENV}")
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"shard index must be an integer, not {text!r}") from None
    if value < 0:
        raise ValueError(f"shard index must be 0 or more, not {value}")
    return value


def _stop_on_signals(stop: threading.Event, exit_code: int) -> None:
    def handle(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            return
        stop.set()
        logging.getLogger(__name__).warning(
            "signal %d: stopping (committed files stay); hard exit in %.0f s", signum,
            STOP_GRACE_S)

        def hard_exit() -> None:
            time.sleep(STOP_GRACE_S)
            os._exit(exit_code)  # every commit is atomic: nothing is left half-done

        threading.Thread(target=hard_exit, name="steno-stop", daemon=True).start()

    try:
        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
    except ValueError:  # not the main thread (a library caller): it handles signals itself
        pass


def run(args: argparse.Namespace) -> int:
    # Light imports first: a usage error is reported before torch is imported.
    from steno_inference.jobs.exitcodes import EXIT_BAD_SPEC, EXIT_RETRYABLE
    from steno_inference.storage.client import ObjectStorage
    from steno_inference.storage.config import StorageConfig, StorageConfigurationError

    for name in ("steno_inference.jobs", __name__):  # commit events and milestones
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        plan_uri = args.plan or os.environ.get(PLAN_ENV, "")
        if not plan_uri:
            raise ValueError(f"no plan: pass --plan or set ${PLAN_ENV}")
        shard = _shard_index(args.shard if args.shard is not None else os.environ.get(SHARD_ENV))
        storage = ObjectStorage.from_config(StorageConfig.from_env(os.environ))
    except (ValueError, StorageConfigurationError) as error:
        print(f"steno work: error: {error}", file=sys.stderr)
        return EXIT_BAD_SPEC

    from steno_inference.engine import Engine, EngineConfig
    from steno_inference.jobs.pod import run_job_pod
    from steno_inference.progress import ProgressBoard

    stop = threading.Event()
    _stop_on_signals(stop, EXIT_RETRYABLE)
    board = ProgressBoard()
    servers: list[Any] = []
    engines: list[Engine] = []

    def load_engine(model: str) -> Engine:
        engine = Engine.load(EngineConfig(
            model=model, device=args.device, dtype=args.dtype, attention=args.attention,
            batch_size=args.batch_size, backend=args.backend, int8_cross_kv=args.int8_cross_kv,
            beam_size=args.beam_size, deterministic=args.deterministic,
        ))
        engines.append(engine)
        logging.getLogger(__name__).info("engine loaded: %s on %s", model, engine.device)
        if args.progress_port is not None:
            servers.append(start_progress_server(engine, board, storage, args.progress_host,
                                                 args.progress_port))
        return engine

    try:
        result = run_job_pod(plan_uri, shard, storage=storage, load_engine=load_engine,
                             board=board, is_cancelled=stop.is_set)
    finally:
        for server in servers:
            server.stop(1.0)
        for engine in engines:
            engine.close()
    outcome = result.outcome
    summary: dict[str, Any] = {"shard": shard, "exitCode": result.exit_code}
    if outcome is not None:
        summary.update(files=outcome.files, failed=outcome.failed,
                       decidedHere=outcome.decided_here, adopted=outcome.adopted,
                       audioS=round(outcome.audio_s, 3), alreadyDone=outcome.already_done,
                       manifest=str(outcome.manifest_uri))
    elif result.error is not None:
        summary["error"] = str(result.error)[:500]
    print(json.dumps(summary, sort_keys=True), flush=True)
    return result.exit_code


def start_progress_server(
    engine: Any, board: Any, storage: Any, host: str, port: int
) -> Any:
    """The gRPC server in job mode around ``engine``, streaming ``board`` to WatchProgress.

    URI inputs of its other calls are read through ``storage`` (one client
    for the process). Returns the started server; ``stop()`` it when done.
    """
    from functools import partial

    from steno_inference.server.server import ServerSettings, build_server
    from steno_inference.storage.client import open_uri

    settings = ServerSettings(host=host, port=port, mode="job")
    server = build_server(engine, settings, progress=board,
                          open_uri=partial(open_uri, storage=storage))
    server.start()
    server.set_serving()
    logging.getLogger(__name__).info("WatchProgress on %s:%d", host, server.port)
    return server
