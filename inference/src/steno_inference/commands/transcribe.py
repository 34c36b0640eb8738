"""``steno transcribe FILE...``: the engine on this machine, every output format per file."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from steno_inference.backends import BACKENDS, DTYPES
from steno_inference.commands.decoding_flags import add_decoding_flags
from steno_inference.options import (
    OUTPUT_FORMATS,
    TASKS,
    TIMESTAMP_MODES,
    OptionsError,
    TranscribeOptions,
    parse_formats,
)

NAME = "transcribe"
EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2


def _batch_size(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be auto or a positive integer, not {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def register(subparsers: Any) -> None:
    tr = subparsers.add_parser(
        "transcribe",
        help="transcribe audio or video files on this machine",
        description="Transcribe files with the steno engine (GPU when present, else CPU).",
    )
    tr.add_argument("paths", nargs="+", metavar="PATH", help="audio or video files")
    tr.add_argument("--model", default="tiny.en",
                    help="tiny.en, base, a local HF or CTranslate2 directory, or a hub id")
    tr.add_argument("--task", choices=TASKS, default="transcribe")
    tr.add_argument("--language", default="auto", help="auto (detect) or a code such as en")
    tr.add_argument("--timestamps", choices=TIMESTAMP_MODES, default="segment",
                    help="segment (Whisper's timestamp tokens) or word (adds word times)")
    tr.add_argument("--format", default="json",
                    help=f"comma-separated output formats: {','.join(OUTPUT_FORMATS)}")
    tr.add_argument("--output-dir", type=Path, default=Path("."),
                    help="where <name>.<format> files are written (default: .)")
    add_decoding_flags(tr)
    tr.add_argument("--batch-size", type=_batch_size, default=None, metavar="auto|N",
                    help="decoder batch (windows at once); auto sizes it from the device")
    tr.add_argument("--device", default="auto", help="auto, cpu or cuda:N")
    tr.add_argument("--dtype", default="auto", choices=DTYPES,
                    help="torch: auto, fp16, bf16, fp32; onnx: auto (fp32), fp32, int8")
    tr.add_argument("--backend", default="auto", choices=BACKENDS,
                    help="torch, onnx (CPU, ONNX Runtime) or auto: torch on GPU, onnx on CPU")
    tr.add_argument("--attention", default="auto", choices=("auto", "flash", "sdpa", "eager"),
                    help="encoder attention kernel; flash uses flash-attn when installed")
    tr.add_argument("--diarize", action="store_true",
                    help="label speakers (needs pip install 'steno[diarization]')")
    tr.add_argument("--num-speakers", type=int, default=None, metavar="N",
                    help="exact number of speakers (excludes --min/--max-speakers)")
    tr.add_argument("--min-speakers", type=int, default=None, metavar="A")
    tr.add_argument("--max-speakers", type=int, default=None, metavar="B")
    tr.add_argument("--no-vad", action="store_true",
                    help="skip voice activity; decode back-to-back 30 s windows")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")


def _advance(bar: Any, seconds: float) -> None:
    bar.update(round(seconds, 1))


def run(args: argparse.Namespace) -> int:
    # Heavy imports only for the command that needs them: `steno --help` stays instant.
    from tqdm import tqdm

    from steno_inference.audio import AudioError, probe_duration_s
    from steno_inference.engine import Engine, EngineConfig
    from steno_inference.formats import unique_stems, write_outputs
    from steno_inference.models.errors import ModelError

    try:
        formats = parse_formats(args.format)
        options = TranscribeOptions(
            task=args.task,
            language=args.language,
            timestamps=args.timestamps,
            diarize=args.diarize,
            num_speakers=args.num_speakers,
            min_speakers=args.min_speakers,
            max_speakers=args.max_speakers,
        ).validated()
        if not args.diarize and (args.num_speakers or args.min_speakers or args.max_speakers):
            raise OptionsError("speaker counts need --diarize")
        config = EngineConfig(
            model=args.model, device=args.device, dtype=args.dtype, attention=args.attention,
            batch_size=args.batch_size, vad=not args.no_vad, backend=args.backend,
            int8_cross_kv=args.int8_cross_kv, beam_size=args.beam_size,
            deterministic=args.deterministic,
        )
        engine = Engine.load(config)
        engine.check_options(options)
    except (OptionsError, ModelError) as error:
        print(f"steno: error: {error}", file=sys.stderr)
        return EXIT_USAGE

    paths: list[str] = list(args.paths)
    stems = unique_stems(paths)
    total_s = 0.0
    for path in paths:
        # A bad file is reported once, by the engine, with the others' results.
        with contextlib.suppress(AudioError):
            total_s += probe_duration_s(path) or 0.0
    show = not args.quiet and sys.stderr.isatty()
    failed = 0
    with tqdm(total=round(total_s, 1), unit="s", unit_scale=True, disable=not show,
              desc="audio", file=sys.stderr) as bar:
        results = engine.transcribe_many(
            [(path, path) for path in paths], options,
            on_progress=lambda seconds: _advance(bar, seconds),
        )
        for result in results:
            if result.error is not None or result.transcript is None:
                failed += 1
                bar.write(f"steno: error: {result.error}", file=sys.stderr)
                continue
            written = write_outputs(result.transcript, formats, args.output_dir,
                                    stems[result.index])
            names = ", ".join(os.fspath(p) for p in written)
            bar.write(f"{result.name}: {result.transcript.duration_s:.1f} s → {names}",
                      file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK


