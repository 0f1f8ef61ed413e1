"""The `streamrec` command: one subcommand per job, each defined in its own module."""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from cli import bench_command
from cli import (
    data_commands, demo, evaluate_command, operator_commands, process_commands, query_commands, tune_command,
)
from cli.connect import configure_logging
from store.errors import StreamrecError
from store.settings import Settings

COMMAND_MODULES = [
    data_commands, process_commands, operator_commands, query_commands, evaluate_command, tune_command, demo,
    bench_command,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamrec",
        description="Streaming recommender: ratings through Redis, ALS with biases and genres.",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None,
        help="directory of the DuckDB file and snapshots (default: $STREAMREC_DATA_DIR or ./var)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_parsers(subparsers)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    if args.data_dir is not None:
        return Settings(data_dir=args.data_dir)
    return Settings()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        return args.handler(args, settings_from(args)) or 0
    except (StreamrecError, ValueError) as exc:
        # Invalid options and data come back as one line; -v shows where they were raised.
        if args.verbose:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
