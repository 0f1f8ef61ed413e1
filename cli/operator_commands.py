"""Operator commands: start a retrain, watch the queues, list and roll back snapshots, push a rating.

The handlers import numba, rq and the snapshot store themselves, so `streamrec push` starts
without loading them.
"""

from __future__ import annotations

import argparse
import json
import logging
import time


from cli.connect import connect_redis, parse_stars
from ingest.client import RatingClient
from store import keys
from store.errors import SnapshotNotFoundError, StreamrecError
from store.settings import Settings

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
    rollback = actions.add_parser(
        "rollback",
        help="publish an older version's model again as the next version and rewrite the lists",
    )
    rollback.add_argument("version", type=int)
    rollback.set_defaults(handler=run_snapshots_rollback)
    prune = actions.add_parser("prune", help="delete all but the newest versions")
    prune.add_argument("--keep", type=int, default=None, help="versions to keep (default: settings)")
    prune.set_defaults(handler=run_snapshots_prune)

    push = subparsers.add_parser("push", help="push one rating event into the Redis stream")
    push.add_argument("user_id", help="the user's id: 1 to 256 characters, no control characters, "
                      "no leading or trailing whitespace")
    push.add_argument("item_id", help="the item's id, under the same rules as user_id")
    push.add_argument("rating", help="stars, within the configured scale")
    push.add_argument("--timestamp", type=int, default=None, help="seconds since the epoch")
    push.set_defaults(handler=run_push)


def run_retrain_command(args: argparse.Namespace, settings: Settings) -> int:
    import als
    from rq.job import JobStatus
    from worker.queues import enqueue_retrain

    overrides = {name: getattr(args, name) for name in HYPERPARAMETERS if getattr(args, name) is not None}
    als.ALSConfig(**overrides)  # reject invalid values here, not inside the worker
    connection = connect_redis(settings)
    job = enqueue_retrain(connection, overrides, reason="operator")
    print(f"retrain enqueued: job {job.id}")
    if not args.wait:
        return 0

    deadline = time.monotonic() + args.timeout
    last_progress = None
    warned_dead = False
    while time.monotonic() < deadline:
        status = job.get_status(refresh=True)
        progress = job.get_meta(refresh=True).get("progress")
        if progress != last_progress and progress:
            details = " ".join(
                f"{key}={_progress_value(value)}" for key, value in progress.items()
                if key not in ("stage", "updated_at")
            )
            print(f"  {progress.get('stage', '')} {details}".rstrip())
            last_progress = progress
        if status == JobStatus.STARTED and not warned_dead and _worker_is_gone(connection, job):
            print(f"  warning: the worker running job {job.id} ({job.worker_name}) sends no heartbeat; "
                  "rq runs the job again once its timeout has passed, if a retrain worker is running")
            warned_dead = True
        if status == JobStatus.FINISHED:
            result = job.return_value()
            print(f"published version {result['version']}: {result['ratings']:,} ratings, "
                  f"train RMSE {result['train_rmse']:.4f}, {result['train_seconds']:.1f} s training")
            return 0
        if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            raise StreamrecError(f"retrain job {job.id} {status.value}; see the worker's log")
        time.sleep(0.5)
    raise StreamrecError(
        f"retrain job {job.id} not finished after {args.timeout:.0f} s; "
        "is a worker serving the retrain queue running?"
    )


# Seconds without a heartbeat after which `retrain --wait` reports the job's worker as gone.
HEARTBEAT_STALE_SECONDS = 90


def _progress_value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _worker_is_gone(connection, job) -> bool:
    """Return whether the worker that started `job` has left or stopped sending heartbeats."""
    from datetime import datetime, timezone

    from rq import Worker

    if not job.worker_name:
        return False
    worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + job.worker_name, connection=connection)
    if worker is None or worker.last_heartbeat is None:
        return True
    heartbeat = worker.last_heartbeat
    if heartbeat.tzinfo is None:
        heartbeat = heartbeat.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - heartbeat).total_seconds() > HEARTBEAT_STALE_SECONDS


def stream_report(connection) -> dict:
    """Stream lengths, and per consumer group its lag and each consumer's idle time."""
    report: dict = {}
    for name, key in (("events_stream_length", keys.EVENTS_STREAM), ("dead_letter_length", keys.DEAD_LETTER_STREAM)):
        report[name] = connection.xlen(key) if connection.exists(key) else 0
    groups = []
    if connection.exists(keys.EVENTS_STREAM):
        for group in connection.xinfo_groups(keys.EVENTS_STREAM):
            name = group["name"].decode()
            consumers = [
                {"name": c["name"].decode(), "pending": c["pending"], "idle_seconds": round(c["idle"] / 1000, 1)}
                for c in connection.xinfo_consumers(keys.EVENTS_STREAM, name)
            ]
            groups.append({"name": name, "pending": group["pending"], "lag": group.get("lag"),
                           "consumers": consumers})
    report["ingest_groups"] = groups
    return report


def queue_report(connection) -> dict:
    """Per queue: queued, running (with progress and whether its worker is alive), failed, finished."""
    from rq import Worker
    from worker.queues import refresh_queue, retrain_queue

    workers = {worker.name: worker for worker in Worker.all(connection=connection)}
    report: dict = {
        "workers": [
            {"name": name, "queues": worker.queue_names(), "state": str(worker.get_state()),
             "last_heartbeat": str(worker.last_heartbeat)}
            for name, worker in workers.items()
        ]
    }
    for queue in (refresh_queue(connection), retrain_queue(connection)):
        running = []
        for job_id in queue.started_job_registry.get_job_ids():
            job = queue.fetch_job(job_id)
            if job is None:
                continue
            # A job whose worker no longer exists was abandoned; RQ retries or fails it during
            # a later maintenance pass.
            progress = job.get_meta().get("progress") or {}
            updated_at = progress.get("updated_at")
            running.append({
                "id": job.id, "progress": progress, "worker": job.worker_name,
                # A SimpleWorker sends no heartbeat while it runs a job, and RQ keeps a dead
                # worker registered until the job's timeout. So the progress age is the signal.
                "worker_registered": job.worker_name in workers,
                "seconds_since_progress": round(time.time() - updated_at, 1) if updated_at else None,
            })
        report[queue.name] = {
            "queued": queue.count,
            "started": running,
            "failed": queue.failed_job_registry.count,
            "finished": queue.finished_job_registry.count,
        }
    return report


def status_report(settings: Settings) -> dict:
    from store.snapshots import SnapshotStore

    store = SnapshotStore(settings.snapshots_dir)
    connection = connect_redis(settings)
    report: dict = {
        "data_dir": str(settings.data_dir),
        "current_version": store.current_version(),
        "versions": store.versions(),
        "lists_written_for_version": connection.get(keys.SNAPSHOT_LISTS_WRITTEN),
    }
    if report["lists_written_for_version"] is not None:
        report["lists_written_for_version"] = int(report["lists_written_for_version"])
    report.update(stream_report(connection))
    report.update(queue_report(connection))
    return report


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    report = status_report(settings)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    for name, value in report.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value, default=str)
        print(f"{name:26} {value}")
    return 0


def run_snapshots_list(args: argparse.Namespace, settings: Settings) -> int:
    from store.snapshots import SnapshotStore

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
    """Publish the model of an older version again, as the next version, and rewrite the lists."""
    from store.snapshots import SnapshotStore
    from worker.retrain import finish_publication

    store = SnapshotStore(settings.snapshots_dir)
    version = store.restore(args.version)
    print(f"version {args.version} published again as version {version}")
    connection = connect_redis(settings)
    written = finish_publication(settings, connection, version)
    print(f"wrote {written} user lists; refold of newer ratings requested")
    return 0


def run_snapshots_prune(args: argparse.Namespace, settings: Settings) -> int:
    from store.snapshots import SnapshotStore

    keep = args.keep if args.keep is not None else settings.snapshots_kept
    removed = SnapshotStore(settings.snapshots_dir).prune(keep)
    print(f"removed versions: {removed}")
    return 0


def run_push(args: argparse.Namespace, settings: Settings) -> int:
    client = RatingClient(
        connect_redis(settings), rating_min=settings.rating_min, rating_max=settings.rating_max
    )
    stream_id = client.push(args.user_id, args.item_id, parse_stars(args.rating), timestamp=args.timestamp)
    print(stream_id)
    return 0
