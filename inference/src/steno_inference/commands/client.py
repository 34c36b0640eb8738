"""``steno client transcribe|stream|health|progress|info``: call a steno server from the shell.

Exit status: 0 on success (``health``: the server is SERVING); 1 when the call
failed (the status code and the server's message are printed) or health is
not SERVING; 2 for a usage error. The token is read from ``--token-file`` or
``$STENO_AUTH_TOKEN``, never from the command line (which other users can see).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steno_inference.options import OUTPUT_FORMATS, TASKS, TIMESTAMP_MODES, OutputFormat

if TYPE_CHECKING:
    from steno_inference.server.client import StenoClient

NAME = "client"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
TOKEN_ENV = "STENO_AUTH_TOKEN"
DEFAULT_TARGET = "127.0.0.1:50051"


def register(subparsers: Any) -> None:
    cl = subparsers.add_parser(
        "client", help="call a steno gRPC server",
        description="Call a steno server: transcribe, stream, health, progress, info.",
    )
    actions = cl.add_subparsers(dest="action", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--target", default=DEFAULT_TARGET, help="host:port of the server")
    common.add_argument("--token-file", type=Path,
                        help=f"file whose first token line is sent as a bearer token "
                             f"(else ${TOKEN_ENV})")
    common.add_argument("--tls", action="store_true", help="use TLS (system roots or --ca-cert)")
    common.add_argument("--ca-cert", type=Path, help="PEM CA that signed the server certificate")
    common.add_argument("--client-cert", type=Path, help="PEM client certificate (mutual TLS)")
    common.add_argument("--client-key", type=Path, help="PEM key of --client-cert")
    common.add_argument("--server-name", help="name to check in the server certificate")
    common.add_argument("--timeout-s", type=float, default=None, help="deadline of the call")

    audio = argparse.ArgumentParser(add_help=False)
    audio.add_argument("--model", default="", help="model name (default: the server's)")
    audio.add_argument("--task", choices=TASKS, default="transcribe")
    audio.add_argument("--language", default="auto")
    audio.add_argument("--timestamps", choices=TIMESTAMP_MODES, default="segment")
    audio.add_argument("--diarize", action="store_true", help="label speakers")
    audio.add_argument("--num-speakers", type=int)
    audio.add_argument("--min-speakers", type=int)
    audio.add_argument("--max-speakers", type=int)
    audio.add_argument("--format", default="",
                       help=f"comma-separated formats to render: {','.join(OUTPUT_FORMATS)}")
    audio.add_argument("--output-dir", type=Path,
                       help="write <name>.<format> files here (default: print them)")
    audio.add_argument("--raw-rate", type=int, help="headerless PCM at this sample rate (Hz)")
    audio.add_argument("--raw-channels", type=int, default=1)
    audio.add_argument("--raw-encoding", choices=("s16le", "f32le"), default="s16le")

    tr = actions.add_parser("transcribe", parents=[common, audio],
                            help="transcribe a file (sent as bytes) or an s3:// URI")
    tr.add_argument("source", help="a local file or s3://bucket/key")
    st = actions.add_parser("stream", parents=[common, audio],
                            help="stream a file (or - for stdin); print segments as they come")
    st.add_argument("source", help="a local file, or - for standard input")
    st.add_argument("--chunk-kib", type=int, default=64, help="KiB per message")
    he = actions.add_parser("health", parents=[common], help="the server's health status")
    he.add_argument("--service", default="", help="a service name (default: the server)")
    actions.add_parser("progress", parents=[common], help="watch a job pod's progress")
    actions.add_parser("info", parents=[common], help="the server's model and limits")


def run(args: argparse.Namespace) -> int:
    import grpc

    try:
        client = _client(args)
    except ValueError as error:
        print(f"steno: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with client:
            return _ACTIONS[args.action](client, args)
    except grpc.RpcError as error:
        code = error.code().name if hasattr(error, "code") else "UNKNOWN"
        details = error.details() if hasattr(error, "details") else str(error)
        print(f"steno: error: {code}: {details}", file=sys.stderr)
        return EXIT_FAILED
    except (ValueError, OSError) as error:
        print(f"steno: error: {error}", file=sys.stderr)
        return EXIT_USAGE


def _client(args: argparse.Namespace) -> StenoClient:
    from steno_inference.server.auth import load_tokens
    from steno_inference.server.client import StenoClient

    token = os.environ.get(TOKEN_ENV, "").strip() or None
    if args.token_file is not None:
        token = load_tokens(args.token_file)[0]  # the same file format as the server's
    return StenoClient(
        args.target, token=token, tls=args.tls, ca_cert=args.ca_cert,
        client_cert=args.client_cert, client_key=args.client_key,
        server_name=args.server_name, timeout_s=args.timeout_s,
    )


def _call_args(args: argparse.Namespace) -> dict[str, Any]:
    from steno_inference.options import TranscribeOptions, parse_formats
    from steno_inference.server.calls import RawPcmSpec

    options = TranscribeOptions(
        task=args.task, language=args.language, timestamps=args.timestamps,
        diarize=args.diarize, num_speakers=args.num_speakers,
        min_speakers=args.min_speakers, max_speakers=args.max_speakers,
    )
    raw = None
    if args.raw_rate is not None:
        raw = RawPcmSpec(args.raw_rate, args.raw_channels, args.raw_encoding)
    formats = parse_formats(args.format) if args.format else ()
    return {"options": options, "model": args.model, "formats": formats, "raw_pcm": raw}


def _transcribe(client: StenoClient, args: argparse.Namespace) -> int:
    source = args.source
    result = client.transcribe(source, **_call_args(args))
    _emit(result.transcript.text, result.outputs, args, Path(source).stem or "audio")
    print(f"{result.transcript.duration_s:.1f} s of audio, language {result.transcript.language}, "
          f"queue {result.timing.queue_wait_s:.2f} s, total {result.timing.processing_s:.2f} s",
          file=sys.stderr)
    return EXIT_OK


def _stream(client: StenoClient, args: argparse.Namespace) -> int:
    from steno_inference.server.client import StreamEnd

    source: Any = sys.stdin.buffer if args.source == "-" else args.source
    events = client.stream(source, chunk_bytes=args.chunk_kib * 1024, **_call_args(args))
    for event in events:
        if isinstance(event, StreamEnd):
            _emit(None, event.outputs, args, Path(args.source).stem or "stream")
            print(f"{event.duration_s:.1f} s of audio, {event.segment_count} segments, "
                  f"language {event.language}", file=sys.stderr)
            continue
        for segment in event.segments:
            print(f"[{segment.start_s:8.2f} → {segment.end_s:8.2f}] {segment.text.strip()}",
                  flush=True)
    return EXIT_OK


def _health(client: StenoClient, args: argparse.Namespace) -> int:
    status = client.health(args.service)
    print(status)
    return EXIT_OK if status == "SERVING" else EXIT_FAILED


def _progress(client: StenoClient, args: argparse.Namespace) -> int:
    for snapshot in client.watch_progress():
        print(f"{snapshot.state}: {snapshot.files_done}/{snapshot.files_total} files "
              f"({snapshot.files_failed} failed), "
              f"{snapshot.audio_s_done:.0f}/{snapshot.audio_s_total:.0f} s of audio", flush=True)
        if snapshot.finished:
            for failure in snapshot.failures:
                print(f"failed: {failure.uri}: {failure.reason}")
    return EXIT_OK


def _info(client: StenoClient, args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToDict

    print(json.dumps(MessageToDict(client.server_info()), indent=2))
    return EXIT_OK


def _emit(
    text: str | None, outputs: Mapping[OutputFormat, str], args: argparse.Namespace, stem: str
) -> None:
    if args.output_dir is not None:
        from steno_inference.formats import write_atomic

        args.output_dir.mkdir(parents=True, exist_ok=True)
        for fmt, content in outputs.items():
            path = args.output_dir / f"{stem}.{fmt}"
            write_atomic(path, content.encode("utf-8"))
            print(f"wrote {path}", file=sys.stderr)
        return
    if outputs:
        for content in outputs.values():
            sys.stdout.write(content)
    elif text is not None:
        print(text)


_ACTIONS = {
    "transcribe": _transcribe,
    "stream": _stream,
    "health": _health,
    "progress": _progress,
    "info": _info,
}
