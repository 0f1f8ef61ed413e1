"""The `streamrec` command: one subcommand per job, each defined in its own module."""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from pathlib import Path

from cli.connect import configure_logging
from store.errors import StreamrecError
from store.settings import Settings

# The module that defines each subcommand. Only the module of the command being run is
# imported, because importing them all (numba, DuckDB, the bench stages) takes over a second.
COMMAND_MODULES = {
    "load-movielens": "cli.data_commands",
    "ingest": "cli.process_commands",
    "worker": "cli.process_commands",
    "retrain": "cli.operator_commands",
    "status": "cli.operator_commands",
    "snapshots": "cli.operator_commands",
    "push": "cli.operator_commands",
    "recommend": "cli.query_commands",
    "similar": "cli.query_commands",
    "evaluate": "cli.evaluate_command",
    "tune": "cli.tune_command",
    "demo": "cli.demo",
    "bench": "cli.bench_command",
}


def modules_for(argv: list[str]) -> list[str]:
    """Return the modules to import: the named command's only, or all of them for --help."""
    for word in argv:
        if word in COMMAND_MODULES:
            return [COMMAND_MODULES[word]]
    return list(dict.fromkeys(COMMAND_MODULES.values()))


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
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
    for name in modules_for(sys.argv[1:] if argv is None else argv):
        importlib.import_module(name).add_parsers(subparsers)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    if args.data_dir is not None:
        return Settings(data_dir=args.data_dir)
    return Settings()


def main(argv: list[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
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
