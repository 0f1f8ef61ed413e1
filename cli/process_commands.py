"""`streamrec ingest` and `streamrec worker`: the long-lived processes."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from cli.connect import connect_redis
from ingest.consumer import IngestConsumer
from store.database import Database
from store.settings import Settings
from worker.pending import warm_up as warm_up_entries
from worker.queues import RefreshEnqueuer
from worker.runner import run_worker

log = logging.getLogger(__name__)


def add_parsers(subparsers) -> None:
    ingest = subparsers.add_parser(
        "ingest",
        help="run the ingest consumer: Redis stream to DuckDB (owns the database file)",
    )
    ingest.add_argument("--consumer", default="ingest-1", help="consumer name within the group")
    ingest.set_defaults(handler=run_ingest)

    worker = subparsers.add_parser("worker", help="run an RQ worker for refresh and retrain jobs")
    worker.add_argument(
        "--queues", default="refresh,retrain",
        help="comma-separated queues to serve: refresh, retrain (default: both)",
    )
    worker.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    worker.set_defaults(handler=run_worker_command)


def run_ingest(args: argparse.Namespace, settings: Settings) -> int:
    connection = connect_redis(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    log.info("refresh entry kernel ready seconds=%.1f", warm_up_entries())
    with Database(settings.database_path, keep_index=True) as database:
        consumer = IngestConsumer(
            settings, connection, database, RefreshEnqueuer(connection), consumer_name=args.consumer
        )
        log.info("ingest started consumer=%s database=%s", args.consumer, settings.database_path)
        consumer.run(stop_event=stop)
    log.info("ingest stopped consumer=%s", args.consumer)
    return 0


def run_worker_command(args: argparse.Namespace, settings: Settings) -> int:
    connection = connect_redis(settings)
    queue_names = [name.strip() for name in args.queues.split(",") if name.strip()]
    run_worker(settings, connection, queue_names, burst=args.burst)
    return 0
