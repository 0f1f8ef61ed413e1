"""An rq SimpleWorker whose running job keeps a short lease in rq's StartedJobRegistry.

rq finds a job abandoned by a dead worker when the job's entry in the StartedJobRegistry has
expired. rq's forking Worker renews that entry every `job_monitoring_interval` seconds while the
job runs, so the entry only needs to outlive one interval. SimpleWorker runs the job in its own
thread and renews nothing, so rq 3.0 gives the entry the job's whole timeout plus 60 s: a
retrain killed with its worker waited an hour before rq retried it. Here a second thread renews
the entry, so it lives JOB_LEASE_SECONDS, and a killed job is retried at the first maintenance
pass after that (worker.runner sets the interval).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis
from rq import SimpleWorker
from rq.job import Job
from rq.queue import Queue
from rq.worker import WorkerStatus

log = logging.getLogger(__name__)

# Seconds a running job's registry entry lives without a renewal, and seconds between renewals.
# A renewal comes from a thread, which a job holding the GIL for long could delay, so the lease
# spans several renewals.
JOB_LEASE_SECONDS = 120
JOB_RENEW_SECONDS = 20.0


class LeasedJobWorker(SimpleWorker):
    """SimpleWorker that renews its running job's StartedJobRegistry entry from a thread.

    `maintenance` is called after rq's own maintenance, between jobs.
    """

    def __init__(self, *args, maintenance: Callable[[], object] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._maintenance = maintenance

    def run_maintenance_tasks(self) -> None:
        """Run rq's maintenance, then this worker's own."""
        super().run_maintenance_tasks()
        if self._maintenance is not None:
            self._maintenance()

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """Return the lease: how long the job's registry entry lives without a renewal."""
        return JOB_LEASE_SECONDS

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run the job in this thread, as SimpleWorker does, while another renews its lease."""
        # The same steps as rq 3.0's SimpleWorker.execute_job, with the renewal around the job.
        execution = self.prepare_execution(job)
        stop = threading.Event()
        renewer = threading.Thread(
            target=self._renew_lease, args=(job, execution, stop), name="job-lease", daemon=True
        )
        renewer.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            stop.set()
            renewer.join()
        self.set_state(WorkerStatus.IDLE)

    def _renew_lease(self, job: Job, execution, stop: threading.Event) -> None:
        while not stop.wait(JOB_RENEW_SECONDS):
            try:
                # Renews only entries that still exist, so a renewal racing the job's end does not
                # put the finished job back.
                self.maintain_heartbeats(job, execution)
            except redis.RedisError as exc:
                log.warning("job lease not renewed job_id=%s error=%s", job.id, exc)
