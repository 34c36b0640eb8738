"""``steno serve``: the gRPC inference server (a serving pool) on this machine's GPU or CPU.

Loads the model, starts listening with health NOT_SERVING, warms up, then
reports SERVING. SIGTERM or SIGINT drains: health NOT_SERVING, new calls
UNAVAILABLE, calls in flight get ``--grace-s`` to finish. Exit status 0 after
a clean drain, 1 when calls had to be cut off, 2 for a usage, option or model
error before serving.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from steno_inference.backends import BACKENDS, DTYPES
from steno_inference.commands.decoding_flags import add_decoding_flags
from steno_inference.server.limits import (
    DEFAULT_GRACE_S,
    DEFAULT_LONG_CALL_RESERVE_S,
    DEFAULT_MAX_AUDIO_BYTES,
    DEFAULT_MAX_CONCURRENT_CALLS,
    DEFAULT_MAX_QUEUE_AUDIO_S,
    DEFAULT_METRICS_PORT,
    DEFAULT_PORT,
    MIB,
)

if TYPE_CHECKING:
    from steno_inference.server.tls import TlsFiles

NAME = "serve"
EXIT_OK = 0
EXIT_CUT_OFF = 1
EXIT_USAGE = 2
LOG = logging.getLogger("steno.serve")
SIGNAL_POLL_S = 0.5  # how soon the main thread notices SIGTERM (see run())


def register(subparsers: Any) -> None:
    sv = subparsers.add_parser(
        "serve",
        help="run the gRPC transcription server",
        description="Serve steno_api.v1.TranscriptionService, grpc.health.v1 and metrics.",
    )
    sv.add_argument("--host", default="0.0.0.0", help="address to listen on (default: 0.0.0.0)")
    sv.add_argument("--port", type=int, default=DEFAULT_PORT, help="gRPC port (0: any free)")
    sv.add_argument("--model", default="tiny.en",
                    help="tiny.en, base, a local HF or CTranslate2 directory, or a hub id")
    sv.add_argument("--device", default="auto", help="auto, cpu or cuda:N")
    sv.add_argument("--dtype", default="auto", choices=DTYPES,
                    help="torch: auto, fp16, bf16, fp32; onnx: auto (fp32), fp32, int8")
    sv.add_argument("--backend", default="auto", choices=BACKENDS,
                    help="torch, onnx (CPU, ONNX Runtime) or auto: torch on GPU, onnx on CPU")
    add_decoding_flags(sv)
    sv.add_argument("--batch-size", type=int, default=None, metavar="N",
                    help="decoder slots (default: sized from the device)")
    sv.add_argument("--vad-threads", type=int, default=None, metavar="N",
                    help="calls running voice activity at once (default: half the CPUs)")
    sv.add_argument("--max-message-mib", type=float, default=DEFAULT_MAX_AUDIO_BYTES / MIB,
                    help="largest audio in one Transcribe request, MiB (default: %(default)g)")
    sv.add_argument("--max-queue-audio-s", type=float, default=DEFAULT_MAX_QUEUE_AUDIO_S,
                    help="audio seconds accepted and not yet decoded before calls get "
                         "RESOURCE_EXHAUSTED (default: %(default)g)")
    sv.add_argument("--long-call-reserve-s", type=float, default=DEFAULT_LONG_CALL_RESERVE_S,
                    help="queue seconds a stream, URI or long audio reserves; such calls are "
                         "paced by the decoder (default: %(default)g)")
    sv.add_argument("--max-concurrent-calls", type=int, default=DEFAULT_MAX_CONCURRENT_CALLS,
                    help="transcription calls handled at once (default: %(default)d)")
    sv.add_argument("--grace-s", type=float, default=DEFAULT_GRACE_S,
                    help="on SIGTERM, seconds in-flight calls get to finish (default: %(default)g)")
    sv.add_argument("--tls-cert", type=Path, help="PEM certificate chain: serve TLS")
    sv.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    sv.add_argument("--tls-client-ca", type=Path,
                    help="PEM CA of client certificates: require mutual TLS")
    sv.add_argument("--auth-token-file", type=Path,
                    help="accepted bearer tokens, one per line: require authorization")
    sv.add_argument("--reflection", action="store_true", help="serve gRPC server reflection")
    sv.add_argument("--metrics-port", type=int, default=DEFAULT_METRICS_PORT,
                    help="Prometheus /metrics port (0: none; default: %(default)d)")
    sv.add_argument("--metrics-host", default="0.0.0.0",
                    help="address of the metrics endpoint (default: 0.0.0.0)")
    sv.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def run(args: argparse.Namespace) -> int:
    logging.getLogger().setLevel(args.log_level.upper())
    from steno_inference.engine import Engine, EngineConfig
    from steno_inference.models.errors import ModelError
    from steno_inference.options import OptionsError
    from steno_inference.server.auth import load_tokens
    from steno_inference.server.server import ServerSettings, build_server

    try:
        settings = ServerSettings(
            host=args.host,
            port=args.port,
            max_audio_bytes=int(args.max_message_mib * MIB),
            max_queue_audio_s=args.max_queue_audio_s,
            long_call_reserve_s=args.long_call_reserve_s,
            grace_s=args.grace_s,
            max_concurrent_calls=args.max_concurrent_calls,
            tls=_tls(args),
            auth_tokens=load_tokens(args.auth_token_file) if args.auth_token_file else (),
            reflection=args.reflection,
            metrics_host=args.metrics_host,
            metrics_port=args.metrics_port or None,
        ).validated()
        engine = Engine.load(EngineConfig(
            model=args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
            backend=args.backend, vad_threads=args.vad_threads,
            int8_cross_kv=args.int8_cross_kv, beam_size=args.beam_size,
            deterministic=args.deterministic,
        ))
    except (OptionsError, ModelError, ValueError) as error:
        print(f"steno: error: {error}", file=sys.stderr)
        return EXIT_USAGE

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        LOG.info("%s: draining", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # A server that does not stop or answer can say why: SIGUSR1 writes every
    # thread's Python stack to stderr (the pod's log) and the server goes on.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    server = build_server(engine, settings)
    try:
        server.start()
        LOG.info("gRPC on %s:%d, metrics on %s; warming up",
                 settings.host, server.port, server.metrics_port or "none")
        server.warm_up()
        server.set_serving()
        LOG.info("serving %s on %s", engine.model_name, engine.device)
        # Waiting in slices: CPython runs a signal's handler only on the main
        # thread, between bytecodes. When the kernel delivers SIGTERM to one of
        # the server's hundreds of other threads, an untimed wait here never
        # returns to run it, and the server would ignore SIGTERM until SIGKILL.
        while not stop.wait(SIGNAL_POLL_S):
            pass
        clean = server.drain()
    except OSError as error:
        print(f"steno: error: {error}", file=sys.stderr)
        server.stop()
        return EXIT_USAGE
    finally:
        engine.close()
    LOG.info("stopped")
    return EXIT_OK if clean else EXIT_CUT_OFF


def _tls(args: argparse.Namespace) -> TlsFiles | None:
    from steno_inference.server.tls import TlsFiles

    if args.tls_cert is None and args.tls_key is None:
        if args.tls_client_ca is not None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise ValueError("--tls-cert and --tls-key go together")
    return TlsFiles(args.tls_cert, args.tls_key, args.tls_client_ca)
