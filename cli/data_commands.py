"""`streamrec load-movielens`: bulk-load a MovieLens release into the DuckDB file."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from store.database import Database
from store.movielens import load_movielens
from store.settings import Settings

log = logging.getLogger(__name__)


def add_parsers(subparsers) -> None:
    parser = subparsers.add_parser(
        "load-movielens",
        help="bulk-load ratings and movies of a MovieLens release into the database",
        description="Load ratings.csv and movies.csv (or ratings.dat/movies.dat, or u.data/u.item) "
        "from DIR. A rating replaces a stored one of the same user and item only when it is newer.",
    )
    parser.add_argument("directory", type=Path, metavar="DIR", help="folder of the MovieLens files")
    parser.set_defaults(handler=run_load)


def run_load(args: argparse.Namespace, settings: Settings) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with Database(settings.database_path) as database:
        result = load_movielens(database, args.directory)
        counts = database.counts()
    log.info("movielens loaded dir=%s seconds=%.2f", args.directory, time.perf_counter() - started)
    print(f"read {result.ratings_read:,} ratings and {result.movies_read:,} movies from {args.directory}")
    print(f"stored {result.ratings_written:,} ratings ({result.ratings_stale:,} already stored as new or newer), "
          f"{result.new_users:,} new users, {result.new_items:,} new items "
          f"({result.items_without_movie:,} named only by ratings)")
    print(f"database {settings.database_path}: {counts.users:,} users, {counts.items:,} items, "
          f"{counts.ratings:,} ratings")
    return 0
