"""The two ways the demo runs the system: all in one process, or as separate processes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

import als
from ingest.client import RatingClient
from ingest.consumer import IngestConsumer
from ingest.events import RatingEvent
from store import keys
from store.database import Database
from store.errors import StreamrecError
from store.movielens import load_ratings_and_movies
from store.settings import Settings
from worker.context import configure
from worker.queues import RefreshEnqueuer, enqueue_retrain, refresh_queue, retrain_queue
from worker.retrain import run_retrain

log = logging.getLogger(__name__)

# Seconds the demo waits for the processes to drain the stream and the refresh queue.
IDLE_TIMEOUT_SECONDS = 300


def stream_events(stream, rows) -> list[RatingEvent]:
    return [
        RatingEvent(
            user_id=str(stream.user_ids[i]), item_id=str(stream.item_ids[i]),
            rating=float(stream.rating[i]), timestamp=int(stream.timestamp[i]),
        )
        for i in rows
    ]


class EmbeddedCluster:
    """Ingest, refresh and retrain in this process, over fakeredis; jobs run inline."""

    def __init__(self, settings: Settings, connection: redis.Redis) -> None:
        self.settings = settings
        self.connection = connection
        self.client = RatingClient(connection)

    def __enter__(self) -> "EmbeddedCluster":
        configure(self.settings)
        self.database = Database(self.settings.database_path).__enter__()
        self.consumer = IngestConsumer(
            self.settings, self.connection, self.database,
            RefreshEnqueuer(self.connection, is_async=False), consumer_name="demo",
        )
        return self

    def __exit__(self, *exc_info) -> None:
        self.database.__exit__(*exc_info)

    def load(self, ratings_path: Path, movies_path: Path) -> dict:
        load_ratings_and_movies(self.database, ratings_path, movies_path)
        # From now on this process writes only through the consumer, which the index speeds up.
        self.database.keep_index()
        return self.database.counts()

    def retrain_now(self) -> dict:
        return run_retrain(self.settings, self.connection, als.ALSConfig(), data=self.database.ratings_arrays())

    def operator_retrain(self) -> dict:
        result = self.retrain_now()
        self.wait_until_idle()  # serves the refold request the retrain sent to the consumer
        return result

    def start_processes(self) -> None:
        pass

    def push(self, stream, rows) -> None:
        self.client.push_many(stream_events(stream, rows))
        self.wait_until_idle()

    def wait_until_idle(self) -> None:
        while self.consumer.process_once() > 0:
            pass
        self.check_failed_jobs()

    def check_failed_jobs(self) -> None:
        """Raise on the first failed refresh: inline jobs record their error instead of raising it."""
        registry = refresh_queue(self.connection).failed_job_registry
        for job_id in registry.get_job_ids():
            job = Job.fetch(job_id, connection=self.connection, serializer=JSONSerializer)
            result = job.latest_result()
            raise StreamrecError(f"refresh job {job_id} failed:\n{result.exc_string if result else ''}")

    def dead_letters(self) -> int:
        return int(self.connection.xlen(keys.DEAD_LETTER_STREAM)) if self.connection.exists(keys.DEAD_LETTER_STREAM) else 0

    def redis_list_length(self, user_id: str) -> int:
        return int(self.connection.zcard(keys.recs_key(user_id)))


class ProcessCluster(EmbeddedCluster):
    """`streamrec ingest` and two `streamrec worker` processes against a real Redis server."""

    def __enter__(self) -> "ProcessCluster":
        self.processes: list[subprocess.Popen] = []
        self.logs_dir = self.settings.data_dir / "logs"
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        deleted = 0
        for key in self.connection.scan_iter(match="streamrec:*", count=1000):
            deleted += self.connection.delete(key)
        for queue in (refresh_queue(self.connection), retrain_queue(self.connection)):
            queue.empty()
            for registry in (queue.failed_job_registry, queue.finished_job_registry):
                for job_id in registry.get_job_ids():
                    registry.remove(job_id, delete_job=True)
        print(f"deleted {deleted} streamrec keys and emptied the streamrec queues in that Redis database")
        return self

    def __exit__(self, *exc_info) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()

    def load(self, ratings_path: Path, movies_path: Path) -> dict:
        with Database(self.settings.database_path) as database:
            load_ratings_and_movies(database, ratings_path, movies_path)
            return database.counts()

    def retrain_now(self) -> dict:
        # No consumer runs yet, so the retrain reads the database file directly.
        return run_retrain(self.settings, self.connection, als.ALSConfig())

    def start_processes(self) -> None:
        env = {**os.environ, "STREAMREC_DATA_DIR": str(self.settings.data_dir),
               "REDIS_URL": self.settings.redis_url}
        commands = {
            "ingest": ["ingest"],
            "worker-refresh": ["worker", "--queues", "refresh"],
            "worker-retrain": ["worker", "--queues", "retrain"],
        }
        for name, arguments in commands.items():
            log_file = open(self.logs_dir / f"{name}.log", "w")
            self.processes.append(subprocess.Popen(
                [sys.executable, "-m", "cli.main", *arguments], env=env,
                stdout=log_file, stderr=subprocess.STDOUT,
            ))
        print(f"started ingest and workers; their logs are in {self.logs_dir}")

    def push(self, stream, rows) -> None:
        self.client.push_many(stream_events(stream, rows))

    def check_processes(self) -> None:
        for process in self.processes:
            if process.poll() is not None:
                raise StreamrecError(
                    f"process {' '.join(process.args[3:])} exited with code {process.returncode}; "
                    f"see {self.logs_dir}"
                )

    def is_idle(self) -> bool:
        groups = self.connection.xinfo_groups(keys.EVENTS_STREAM) if self.connection.exists(keys.EVENTS_STREAM) else []
        for group in groups:
            if group["pending"] or group.get("lag"):
                return False
        if not groups and self.connection.exists(keys.EVENTS_STREAM):
            return False
        if self.connection.llen(keys.EXPORT_REQUESTS):
            return False
        queue = refresh_queue(self.connection)
        return queue.count == 0 and queue.started_job_registry.count == 0

    def wait_until_idle(self) -> None:
        deadline = time.monotonic() + IDLE_TIMEOUT_SECONDS
        idle_checks = 0
        while time.monotonic() < deadline:
            self.check_processes()
            # Two idle readings in a row: a batch can sit between XACK and the enqueue of its refresh.
            idle_checks = idle_checks + 1 if self.is_idle() else 0
            if idle_checks >= 2:
                self.check_failed_jobs()
                return
            time.sleep(0.2)
        raise StreamrecError(f"system not idle after {IDLE_TIMEOUT_SECONDS} s; see {self.logs_dir}")

    def operator_retrain(self) -> dict:
        job: Job = enqueue_retrain(self.connection, reason="demo")
        deadline = time.monotonic() + IDLE_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            self.check_processes()
            status = job.get_status(refresh=True)
            if status == JobStatus.FINISHED:
                self.wait_until_idle()
                return job.return_value()
            if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                raise StreamrecError(f"retrain job {job.id} {status.value}; see {self.logs_dir}")
            time.sleep(0.2)
        raise StreamrecError(f"retrain job {job.id} not finished after {IDLE_TIMEOUT_SECONDS} s")
