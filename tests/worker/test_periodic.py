import time

from worker.queues import retrain_queue
from worker.runner import PeriodicRetrain


def test_periodic_retrain_once_per_interval(redis_client):
    # Two workers run the scheduler thread; only one of them may enqueue in each interval.
    threads = [PeriodicRetrain(redis_client, interval=0.5) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(1.3)
    for thread in threads:
        thread.stop()
    for thread in threads:
        thread.join(timeout=2)

    queue = retrain_queue(redis_client)
    jobs = queue.get_jobs()
    assert 1 <= len(jobs) <= 2
    assert all(job.args[0]["reason"] == "periodic" for job in jobs)
