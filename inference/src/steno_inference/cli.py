"""``steno``: the command line. Each subcommand lives in ``steno_inference.commands``.

Exit status: 0 on success; 1 when some inputs failed (the others are still
done, each failure named on its own line); 2 for a usage, option or model
error that stops the command before it starts work.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from steno_inference.commands import bench, client, serve, transcribe, work

COMMANDS = (transcribe, work, bench, serve, client)
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="steno", description="Whisper transcription, fast, on one machine or a cluster."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    for command in COMMANDS:
        if args.command == command.NAME:
            status: int = command.run(args)
            return status
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
