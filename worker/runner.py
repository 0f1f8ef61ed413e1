"""The long-lived `streamrec worker` process."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

import numpy as np
import redis
from rq import SimpleWorker
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

import als
from store.settings import Settings
from worker.context import configure
from worker.heartbeat import LeasedJobWorker
from worker.pending import PendingRefreshes
from worker.queues import enqueue_pending_job, enqueue_retrain, refresh_queue, retrain_queue
from worker.refresh import refold_users
from worker.retrain import resume_publication

log = logging.getLogger(__name__)

PERIODIC_LOCK_KEY = "streamrec:retrain:periodic"


# Seconds between two checks of a refresh worker for pending users that no job will take: users
# left by a consumer that stopped between its add and its enqueue, or by a job that was lost.
PENDING_CHECK_SECONDS = 5.0
# Seconds between two of rq's maintenance passes, which find a job abandoned by a dead worker
# (once its lease, worker/heartbeat.py, has expired) and retry it. rq's default is 600 s;
# refresh jobs hold users.
MAINTENANCE_INTERVAL_SECONDS = 60
# rq's work loop returns on any error it does not expect, a lost Redis connection included.
# The worker then starts a new one after this delay, doubled after each failure up to the max.
RESTART_FIRST_DELAY = 0.5
RESTART_MAX_DELAY = 10.0
# A worker that ran this many seconds before it ended restarts after the first delay again.
RESTART_RESET_SECONDS = 60.0


class PendingCheck(threading.Thread):
    """Enqueue a refresh job whenever users are pending and no job is scheduled."""

    def __init__(self, connection: redis.Redis, interval: float = PENDING_CHECK_SECONDS) -> None:
        super().__init__(name="pending-check", daemon=True)
        self._pending = PendingRefreshes(connection)
        self._connection = connection
        self._interval = interval
        self._stopping = threading.Event()

    def check(self) -> bool:
        """Enqueue a job if users are pending and none is scheduled; return whether it did."""
        if not self._pending.claim_schedule():
            return False
        enqueue_pending_job(self._connection)
        log.info("refresh enqueued for users left pending users=%d", self._pending.count())
        return True

    def run(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                self.check()
            except redis.RedisError:
                log.exception("pending users not checked, will try next interval")

    def stop(self) -> None:
        self._stopping.set()


class PeriodicRetrain(threading.Thread):
    """Enqueue a retrain every `interval` seconds.

    Several workers may run this thread. A Redis key set with NX and an expiry of one interval
    makes sure only one of them enqueues per interval.
    """

    def __init__(self, connection: redis.Redis, interval: float) -> None:
        super().__init__(name="periodic-retrain", daemon=True)
        self._connection = connection
        self._interval = interval
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                claimed = self._connection.set(
                    PERIODIC_LOCK_KEY, "1", nx=True, px=max(1, int(self._interval * 1000 * 0.9))
                )
                if claimed:
                    enqueue_retrain(self._connection, reason="periodic")
            except redis.RedisError:
                log.exception("periodic retrain not enqueued, will try next interval")

    def stop(self) -> None:
        self._stopping.set()


def run_worker(settings: Settings, connection: redis.Redis, queue_names: list[str], burst: bool = False) -> None:
    """Run an RQ SimpleWorker on the given queues ("refresh", "retrain").

    SimpleWorker runs each job in this process instead of a forked child, so the compiled numba
    kernels and the memory-mapped snapshot stay loaded from one job to the next. Its subclass
    LeasedJobWorker (worker/heartbeat.py) also lets rq retry a job of a killed worker within
    minutes instead of after the job's timeout.
    """
    queues = []
    if "refresh" in queue_names:
        queues.append(refresh_queue(connection))
    if "retrain" in queue_names:
        queues.append(retrain_queue(connection))
    unknown = set(queue_names) - {"refresh", "retrain"}
    if unknown:
        raise ValueError(f"queues: unknown queue {sorted(unknown)}, expected refresh and/or retrain")

    configure(settings)
    # GNU OpenMP threads spin after each parallel region by default, which took about 8 ms of CPU
    # per region on this project's 2-core bench machine, CPU the consumer and Redis need there.
    # libgomp reads this when numba first starts its threads, in warm_up_kernels below.
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    warm_up_kernels()
    pending_check = None
    if "refresh" in queue_names:
        pending_check = PendingCheck(connection)
        pending_check.check()
        pending_check.start()
    maintenance = None
    if "retrain" in queue_names:
        resume_publication(settings, connection)
        maintenance = PublicationCheck(settings, connection, retrain_queue(connection))
    periodic = None
    if settings.retrain_interval_seconds > 0 and "retrain" in queue_names:
        periodic = PeriodicRetrain(connection, settings.retrain_interval_seconds)
        periodic.start()
        log.info("periodic retrain on interval_seconds=%s", settings.retrain_interval_seconds)

    try:
        work_until_stopped(connection, queues, burst, maintenance)
    finally:
        if periodic is not None:
            periodic.stop()
        if pending_check is not None:
            pending_check.stop()
        log.info("worker stopped")


class PublicationCheck:
    """Maintenance step of a retrain worker: rewrite the lists of the current version when Redis
    lost them.

    A Redis restarted without persistence loses every list and the key naming the version whose
    lists were written, and a worker killed while publishing leaves that key behind. The check runs
    between jobs, and not while another worker runs a retrain, which writes the lists itself.
    """

    def __init__(self, settings: Settings, connection: redis.Redis, queue) -> None:
        self._settings = settings
        self._connection = connection
        self._queue = queue

    def __call__(self) -> None:
        try:
            if StartedJobRegistry(queue=self._queue).count:
                return
            resume_publication(self._settings, self._connection)
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except Exception:
            # An unreadable snapshot must not stop the worker, so the next pass tries again.
            log.exception("publication check failed, trying again at the next maintenance")


def work_until_stopped(
    connection: redis.Redis, queues: list, burst: bool, maintenance: Callable[[], object] | None = None
) -> None:
    """Run SimpleWorkers on `queues` one after another until one stops on request or ends a burst.

    rq's work loop returns after an error it does not handle, such as a Redis restart. Ending the
    process there would leave the users of a running refresh job taken until someone started a
    worker again. Instead a new worker, with a new name, takes over after a delay, and rq's
    retry of the interrupted job finds those users in its taken hash.
    """
    stop = threading.Event()
    delay = RESTART_FIRST_DELAY
    while True:
        worker = LeasedJobWorker(
            queues, connection=connection, serializer=JSONSerializer, maintenance=maintenance,
            maintenance_interval=MAINTENANCE_INTERVAL_SECONDS,
            # rq runs maintenance between dequeues, and an idle worker waits worker_ttl - 15 s
            # for a job (405 s by default), so this makes an idle worker check every interval.
            worker_ttl=MAINTENANCE_INTERVAL_SECONDS + 15,
        )
        log.info("worker started name=%s queues=%s", worker.name, ",".join(q.name for q in queues))
        started = time.monotonic()
        try:
            worker.work(burst=burst, logging_level="INFO")
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # Raised before rq's own loop runs, while it registers the worker.
            log.warning("worker could not start error=%s", exc)
        else:
            if burst or stop_requested(worker):
                return
        if time.monotonic() - started > RESTART_RESET_SECONDS:
            delay = RESTART_FIRST_DELAY
        log.warning("worker stopped without a stop request, starting a new one delay_seconds=%.1f", delay)
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            if stop.wait(delay):
                log.info("worker stop requested while waiting to restart")
                return
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        delay = min(delay * 2, RESTART_MAX_DELAY)


def stop_requested(worker: SimpleWorker) -> bool:
    """Return whether a SIGINT or SIGTERM asked `worker` to stop.

    rq 3.0 records the time of the request in `_shutdown_requested_date`, and `_stop_requested`
    when the request came during a job. Neither is public, so a worker without both attributes
    (another rq release) counts as stopped on request, and the process ends as it did before.
    """
    if not hasattr(worker, "_shutdown_requested_date") or not hasattr(worker, "_stop_requested"):
        return True
    return worker._shutdown_requested_date is not None or bool(worker._stop_requested)


def warm_up_kernels() -> None:
    """Compile (or load from numba's cache) the fold-in and ranking kernels before the first job.

    A refresh runs the same kernels for every batch, so after this no job compiles anything.
    """
    started = time.perf_counter()
    model = als.ALSModel(
        global_mean=3.0,
        user_factors=np.zeros((1, 2), np.float32), user_bias=np.zeros(1, np.float32),
        item_factors=np.ones((3, 2), np.float32), item_bias=np.zeros(3, np.float32),
        genre_factors=np.zeros((0, 2), np.float32),
    )
    config = als.ALSConfig(factors=2)
    refold_users(
        model, config, np.ones(3, np.int32), [np.array([0], np.int32)],
        [np.array([4.0], np.float32)], top_n=2,
    )
    log.info("kernels ready seconds=%.2f", time.perf_counter() - started)
