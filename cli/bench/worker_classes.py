"""Per-job cost of rq's SimpleWorker and forking Worker, and of numba's threading layers.

Run as `python -m cli.bench.worker_classes DATA_DIR` on a data directory with a published
snapshot (for example one left by `streamrec bench --keep-work`); prints one JSON report. Each
measurement runs in its own process against a private redis-server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import redis

from cli.bench.services import redis_server

# Refresh jobs timed per worker class, each refolding one user.
JOBS = 100
# Users per refold round and rounds timed per threading layer.
ROUND_USERS = 300
ROUNDS = 5
# Environments of the threading layer runs. GNU OpenMP threads spin while they wait for work by
# default, which costs a shared machine CPU; OMP_WAIT_POLICY=passive makes them sleep instead.
THREADING_LAYERS = {
    "omp": {"NUMBA_THREADING_LAYER": "omp"},
    "omp_passive": {"NUMBA_THREADING_LAYER": "omp", "OMP_WAIT_POLICY": "passive"},
    "tbb": {"NUMBA_THREADING_LAYER": "tbb"},
    "workqueue": {"NUMBA_THREADING_LAYER": "workqueue"},
}


def measure(data_dir: Path) -> dict:
    """Return seconds per job for each worker class and per round for each threading layer."""
    report: dict = {"jobs": JOBS, "round_users": ROUND_USERS}
    with tempfile.TemporaryDirectory() as scratch, redis_server(Path(scratch) / "redis") as url:
        for worker_class in ("SimpleWorker", "Worker"):
            report[worker_class] = _run_child(["jobs", str(data_dir), url, worker_class], {})
    for name, environment in THREADING_LAYERS.items():
        report[f"layer_{name}"] = _run_child(["rounds", str(data_dir)], environment)
    return report


def _run_child(arguments: list[str], environment: dict[str, str]) -> dict:
    completed = subprocess.run(
        [sys.executable, "-m", "cli.bench.worker_classes", "--child", *arguments],
        env={**os.environ, **environment}, capture_output=True, text=True,
    )
    if completed.returncode != 0:
        lines = completed.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exited with code {completed.returncode}"}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _sample_users(data_dir: Path, count: int):
    from store.snapshots import SnapshotStore

    snapshot = SnapshotStore(data_dir / "snapshots").open()
    rng = np.random.default_rng(11)
    rows = rng.choice(snapshot.user_ids.shape[0], count, replace=False)
    users = {}
    for row in rows:
        rated = snapshot.seen_indices[snapshot.seen_indptr[row] : snapshot.seen_indptr[row + 1]]
        users[str(snapshot.user_ids[row])] = (
            [str(item) for item in snapshot.item_ids[rated]], [4.0] * len(rated)
        )
    return snapshot, users


def _time_jobs(data_dir: Path, url: str, worker_class: str) -> dict:
    """Enqueue JOBS one-user refresh jobs, run a burst worker of the class, time the burst."""
    from rq import SimpleWorker, Worker
    from rq.job import Job
    from rq.serializers import JSONSerializer

    from store.settings import Settings
    from worker.context import configure
    from worker.queues import REFRESH_JOB, refresh_queue
    from worker.runner import warm_up_kernels
    from worker.snapshot_cache import current_snapshot

    connection = redis.Redis.from_url(url)
    connection.flushdb()
    settings = Settings(data_dir=data_dir)
    configure(settings)
    warm_up_kernels()
    # Loaded before the fork, so a forked child inherits the open snapshot.
    current_snapshot(settings.snapshots_dir)
    _, users = _sample_users(data_dir, JOBS)
    queue = refresh_queue(connection)
    for seq, (user_id, ratings) in enumerate(users.items(), start=1):
        queue.enqueue(REFRESH_JOB, {"seq": seq, "users": {user_id: [ratings[0], ratings[1]]}})

    worker_type = SimpleWorker if worker_class == "SimpleWorker" else Worker
    worker = worker_type([queue], connection=connection, serializer=JSONSerializer)
    worker.work(burst=True, logging_level="WARNING")

    # Worker start and stop are left out: the span runs from the first job's start to the last
    # job's end, and `ms_in_job` is the mean time the job function itself ran.
    jobs = Job.fetch_many(queue.finished_job_registry.get_job_ids(), connection, JSONSerializer)
    starts = [job.started_at.timestamp() for job in jobs]
    ends = [job.ended_at.timestamp() for job in jobs]
    return {
        "finished": len(jobs),
        "ms_per_job": round(1000 * (max(ends) - min(starts)) / len(jobs), 2),
        "ms_in_job": round(1000 * float(np.mean(np.subtract(ends, starts))), 2),
    }


def _time_rounds(data_dir: Path) -> dict:
    """Time refold_users (fold-in and top-N lists) of ROUND_USERS users, after a warm-up round."""
    import numba

    from store.snapshots import model_of
    from worker.refresh import refold_users

    snapshot, users = _sample_users(data_dir, ROUND_USERS)
    model, config = model_of(snapshot)
    item_rows = [np.sort(snapshot.item_indices(items)).astype(np.int32) for items, _ in users.values()]
    rating_rows = [np.full(len(row), 4.0, np.float32) for row in item_rows]
    seconds = []
    for _ in range(ROUNDS + 1):
        started = time.perf_counter()
        refold_users(model, config, snapshot.item_rating_count, item_rows, rating_rows, 100)
        seconds.append(time.perf_counter() - started)
    return {
        "threading_layer": numba.threading_layer(),
        "threads": numba.get_num_threads(),
        "first_round_seconds": round(seconds[0], 3),
        "median_round_ms": round(1000 * float(np.median(seconds[1:])), 1),
    }


def main(arguments: list[str]) -> None:
    if arguments[0] == "--child":
        kind, data_dir = arguments[1], Path(arguments[2])
        if kind == "jobs":
            result = _time_jobs(data_dir, arguments[3], arguments[4])
        else:
            result = _time_rounds(data_dir)
        print(json.dumps(result))
        return
    report = measure(Path(arguments[0]))
    report["load_average"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
