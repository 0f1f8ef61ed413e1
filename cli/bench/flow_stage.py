"""The live stages: ingest throughput, push-to-list freshness and query latency.

Each stage runs the real processes (`streamrec ingest`, `streamrec worker`) against the bench's
own redis-server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import redis

from api.recommender import Recommender
from cli.bench.services import start_streamrec, stop_process
from ingest.client import RatingClient
from store import keys
from store.settings import Settings
from worker.pending import QUIET_MS

# Seconds to wait for the consumer to drain the stream before giving up.
DRAIN_TIMEOUT = 300.0
# Seconds a freshness event may take before it counts as lost.
FRESHNESS_GRACE = 5.0


def percentiles_ms(seconds: list[float]) -> dict[str, float | None]:
    """Return p50, p95 and p99 of durations in seconds, in milliseconds (None without any)."""
    if not seconds:
        return {f"p{q}_ms": None for q in (50, 95, 99)}
    values = np.asarray(seconds) * 1000.0
    return {f"p{q}_ms": round(float(np.percentile(values, q)), 2) for q in (50, 95, 99)}


def time_ingest(data_dir: Path, redis_url: str, n_events: int, n_users: int, n_items: int, log_path: Path) -> dict:
    """Push n_events from a separate process into a running consumer; return events per second.

    The clock runs from the pusher's first push until the consumer group has read and
    acknowledged every event, so it covers client validation, XADD, the consumer's validation,
    the DuckDB write and the refresh enqueue. The pusher's start and the generation of its events
    come before the clock starts.
    """
    connection = redis.Redis.from_url(redis_url)
    consumer = start_streamrec(["ingest"], data_dir, redis_url, log_path)
    try:
        _wait_for_group(connection, consumer)
        pusher = subprocess.Popen(
            [sys.executable, "-m", "cli.bench.pusher", redis_url, str(n_events), str(n_users), str(n_items)],
            stdout=subprocess.PIPE, text=True,
        )
        output = pusher.communicate()[0].split()
        if pusher.returncode != 0 or len(output) != 2:
            raise RuntimeError(f"bench pusher failed with code {pusher.returncode}")
        first_push, push_seconds = map(float, output)
        _wait_for_drain(connection, consumer, n_events)
        # Wall-clock time, since the pusher's clock is in another process.
        seconds = time.time() - first_push
    finally:
        stop_process(consumer)
    return {
        "events": n_events,
        "seconds": round(seconds, 2),
        "events_per_second": round(n_events / seconds),
        "push_seconds": round(push_seconds, 2),
    }


def _wait_for_group(connection: redis.Redis, consumer: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        if consumer.poll() is not None:
            raise RuntimeError(f"ingest consumer exited with code {consumer.returncode}")
        try:
            if connection.xinfo_groups(keys.EVENTS_STREAM):
                return
        except redis.ResponseError:
            pass
        time.sleep(0.05)
    raise RuntimeError("ingest consumer did not create its group within 60 s")


def _wait_for_drain(connection: redis.Redis, consumer: subprocess.Popen, n_events: int) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while time.monotonic() < deadline:
        if consumer.poll() is not None:
            raise RuntimeError(f"ingest consumer exited with code {consumer.returncode}")
        group = connection.xinfo_groups(keys.EVENTS_STREAM)[0]
        if group["pending"] == 0 and int(group.get("entries-read") or 0) >= n_events:
            return
        time.sleep(0.01)
    raise RuntimeError(f"ingest consumer did not drain {n_events} events within {DRAIN_TIMEOUT} s")


def time_freshness(
    data_dir: Path, redis_url: str, rate: float, seconds: float, n_users: int, n_items: int,
    log_dir: Path,
) -> dict:
    """Push events at a fixed rate and time each until its user's Redis list is rewritten.

    Each event in the run goes to a different user, so the first rewrite of that user's list
    after the push is the one the event caused. Redis keyspace notifications report the writes.
    """
    connection = redis.Redis.from_url(redis_url)
    # The ingest stage leaves its stream and unprocessed refresh jobs behind on this private
    # server; a worker would chew through those first.
    connection.flushdb()
    consumer = start_streamrec(["ingest"], data_dir, redis_url, log_dir / "freshness-ingest.log")
    worker = start_streamrec(["worker", "--queues", "refresh"], data_dir, redis_url, log_dir / "freshness-worker.log")
    pushed: dict[str, float] = {}
    latencies: list[float] = []
    lock = threading.Lock()
    subscriber = connection.pubsub()
    subscriber.psubscribe(f"__keyspace@0__:{keys.recs_key('*')}")
    prefix = len(f"__keyspace@0__:{keys.recs_key('')}")

    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            message = subscriber.get_message(timeout=0.1)
            # Lists are written by RESTORE, or by ZADD where the server rejects the payloads.
            if message is None or message["type"] != "pmessage" or message["data"] not in (b"restore", b"zadd"):
                continue
            user_id = message["channel"][prefix:].decode()
            with lock:
                sent = pushed.pop(user_id, None)
            if sent is not None:
                latencies.append(time.perf_counter() - sent)

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    try:
        _wait_for_group(connection, consumer)
        _warm_up(connection, worker, n_users)
        client = RatingClient(connection)
        rng = np.random.default_rng(5)
        users = rng.permutation(n_users)[: int(rate * seconds)]
        items = rng.integers(0, n_items, users.shape[0])
        started = time.perf_counter()
        for i, user in enumerate(users):
            due = started + i / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            with lock:
                pushed[str(user)] = time.perf_counter()
            client.push(str(user), str(items[i]), 4.0)
        time.sleep(FRESHNESS_GRACE)
    finally:
        stop.set()
        listener.join()
        subscriber.close()
        stop_process(worker)
        stop_process(consumer)
    return {
        "events_per_second": rate,
        "events": int(users.shape[0]),
        "refreshed": len(latencies),
        **percentiles_ms(latencies),
        # The settings behind the figures: the refresh's quiet window, and the BLAS threads the
        # worker inherited from this process (two spinning threads cost a loaded machine).
        "quiet_ms": QUIET_MS,
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
    }


def _warm_up(connection: redis.Redis, worker: subprocess.Popen, n_users: int) -> None:
    """Push one event and wait for its list, so the worker has its kernels and snapshot loaded."""
    user_id = str(n_users - 1)
    before = connection.exists(keys.recs_key(user_id))
    RatingClient(connection).push(user_id, "0", 3.0)
    deadline = time.monotonic() + 120.0
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"refresh worker exited with code {worker.returncode}")
        if connection.exists(keys.recs_key(user_id)) and not before:
            return
        if before and connection.hget(keys.user_key(user_id), "seq") not in (None, b"0"):
            return
        time.sleep(0.05)
    raise RuntimeError("refresh worker wrote no list within 120 s of the warm-up event")


def time_queries(data_dir: Path, redis_url: str, n_users: int, n_items: int, calls: int) -> dict:
    """Time Recommender.recommend for known users and ZREVRANGE reads of written lists."""
    connection = redis.Redis.from_url(redis_url)
    recommender = Recommender(Settings(data_dir=data_dir), connection)
    rng = np.random.default_rng(9)
    users = [str(user) for user in rng.integers(0, n_users, calls)]
    for user_id in users[:20]:
        recommender.recommend(user_id, n=10)

    python_seconds = []
    for user_id in users:
        started = time.perf_counter()
        recommender.recommend(user_id, n=10)
        python_seconds.append(time.perf_counter() - started)

    listed = [key.decode() for key in connection.scan_iter(keys.recs_key("*"), count=1000)][:calls]
    redis_seconds = []
    for key in listed:
        started = time.perf_counter()
        connection.zrevrange(key, 0, 9, withscores=True)
        redis_seconds.append(time.perf_counter() - started)

    python = percentiles_ms(python_seconds)
    # The lists read are those the freshness stage wrote: the retrain's are deleted after timing.
    # Without them, redis_lists is 0 and the read is not timed.
    result = {
        "items": n_items,
        "calls": calls,
        "python_p50_ms": python["p50_ms"],
        "python_p99_ms": python["p99_ms"],
        "redis_lists": 0,
    }
    if redis_seconds:
        listed_ms = percentiles_ms(redis_seconds)
        result.update(redis_lists=len(redis_seconds), redis_p50_ms=listed_ms["p50_ms"], redis_p99_ms=listed_ms["p99_ms"])
    return result
