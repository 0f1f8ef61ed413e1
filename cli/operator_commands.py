"""Operator commands: start a retrain, watch the queues, list and roll back snapshots, push a rating."""

from __future__ import annotations

import argparse
import json
import logging
import time

from rq.job import JobStatus

import als
from cli.connect import connect_redis
from ingest.client import RatingClient
from store import keys
from store.errors import SnapshotNotFoundError, StreamrecError
from store.settings import Settings
from store.snapshots import SnapshotStore
from worker.queues import enqueue_retrain, refresh_queue, retrain_queue

log = logging.getLogger(__name__)

HYPERPARAMETERS = {
    "factors": int, "reg_factors": float, "reg_bias": float, "reg_genre": float, "epochs": int,
}


def add_parsers(subparsers) -> None:
    retrain = subparsers.add_parser(
        "retrain", help="enqueue a full retrain that publishes the next snapshot version"
    )
    retrain.add_argument("--wait", action="store_true", help="block until the version is published")
    retrain.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds --wait waits before giving up"
    )
    for name, kind in HYPERPARAMETERS.items():
        retrain.add_argument(f"--{name.replace('_', '-')}", type=kind, help=f"override {name}")
    retrain.set_defaults(handler=run_retrain_command)

    status = subparsers.add_parser("status", help="show snapshot versions, queues and recent jobs")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(handler=run_status)

    snapshots = subparsers.add_parser("snapshots", help="list, roll back or prune snapshot versions")
    actions = snapshots.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="list the versions").set_defaults(handler=run_snapshots_list)
    rollback = actions.add_parser("rollback", help="make an older version current")
    rollback.add_argument("version", type=int)
    rollback.set_defaults(handler=run_snapshots_rollback)
    prune = actions.add_parser("prune", help="delete all but the newest versions")
    prune.add_argument("--keep", type=int, default=None, help="versions to keep (default: settings)")
    prune.set_defaults(handler=run_snapshots_prune)

    push = subparsers.add_parser("push", help="push one rating event into the Redis stream")
    push.add_argument("user_id")
    push.add_argument("item_id")
    push.add_argument("rating", type=float)
    push.add_argument("--timestamp", type=int, default=None, help="seconds since the epoch")
    push.set_defaults(handler=run_push)


def run_retrain_command(args: argparse.Namespace, settings: Settings) -> int:
    overrides = {name: getattr(args, name) for name in HYPERPARAMETERS if getattr(args, name) is not None}
    als.ALSConfig(**overrides)  # reject invalid values here, not inside the worker
    connection = connect_redis(settings)
    job = enqueue_retrain(connection, overrides, reason="operator")
    print(f"retrain enqueued: job {job.id}")
    if not args.wait:
        return 0

    deadline = time.monotonic() + args.timeout
    last_progress = None
    while time.monotonic() < deadline:
        status = job.get_status(refresh=True)
        progress = job.get_meta(refresh=True).get("progress")
        if progress != last_progress and progress:
            print(f"  {json.dumps(progress)}")
            last_progress = progress
        if status == JobStatus.FINISHED:
            result = job.return_value()
            print(f"published version {result['version']}: {json.dumps(result)}")
            return 0
        if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            raise StreamrecError(f"retrain job {job.id} {status.value}; see the worker's log")
        time.sleep(0.5)
    raise StreamrecError(
        f"retrain job {job.id} not finished after {args.timeout:.0f} s; "
        "is a worker serving the retrain queue running?"
    )


def status_report(settings: Settings) -> dict:
    store = SnapshotStore(settings.snapshots_dir)
    report: dict = {"data_dir": str(settings.data_dir), "current_version": store.current_version(),
                    "versions": store.versions()}
    connection = connect_redis(settings)
    report["events_stream_length"] = connection.xlen(keys.EVENTS_STREAM) if connection.exists(keys.EVENTS_STREAM) else 0
    report["dead_letter_length"] = connection.xlen(keys.DEAD_LETTER_STREAM) if connection.exists(keys.DEAD_LETTER_STREAM) else 0
    try:
        groups = connection.xinfo_groups(keys.EVENTS_STREAM)
        report["ingest_groups"] = [
            {"name": g["name"].decode(), "pending": g["pending"], "lag": g.get("lag")} for g in groups
        ]
    except Exception:  # the stream does not exist before the first event
        report["ingest_groups"] = []
    for queue in (refresh_queue(connection), retrain_queue(connection)):
        jobs = []
        for job_id in queue.started_job_registry.get_job_ids():
            job = queue.fetch_job(job_id)
            if job is not None:
                jobs.append({"id": job.id, "progress": job.get_meta().get("progress")})
        report[queue.name] = {
            "queued": queue.count,
            "started": jobs,
            "failed": queue.failed_job_registry.count,
            "finished": queue.finished_job_registry.count,
        }
    return report


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    report = status_report(settings)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    for name, value in report.items():
        print(f"{name:22} {value}")
    return 0


def run_snapshots_list(args: argparse.Namespace, settings: Settings) -> int:
    store = SnapshotStore(settings.snapshots_dir)
    current = store.current_version()
    versions = store.versions()
    if not versions:
        raise SnapshotNotFoundError(f"no snapshot published under {settings.snapshots_dir}")
    for version in versions:
        manifest = store.manifest(version)
        marker = "*" if version == current else " "
        print(f"{marker} v{version:<5} {manifest['created_at']}  ratings={manifest['counts']['ratings']}"
              f"  metrics={json.dumps(manifest.get('metrics', {}))}")
    return 0


def run_snapshots_rollback(args: argparse.Namespace, settings: Settings) -> int:
    SnapshotStore(settings.snapshots_dir).rollback(args.version)
    print(f"current version is now {args.version}")
    return 0


def run_snapshots_prune(args: argparse.Namespace, settings: Settings) -> int:
    keep = args.keep if args.keep is not None else settings.snapshots_kept
    removed = SnapshotStore(settings.snapshots_dir).prune(keep)
    print(f"removed versions: {removed}")
    return 0


def run_push(args: argparse.Namespace, settings: Settings) -> int:
    client = RatingClient(connect_redis(settings))
    stream_id = client.push(args.user_id, args.item_id, args.rating, timestamp=args.timestamp)
    print(stream_id)
    return 0
