"""A separate process that pushes synthetic rating events through the Python client.

Run as `python -m cli.bench.pusher REDIS_URL EVENTS N_USERS N_ITEMS`; prints the wall-clock time
(seconds since the epoch) of its first push and the seconds from there to its last.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import redis

from ingest.client import RatingClient

# Events validated and sent per push_many call.
CHUNK = 10_000


def push_events(url: str, n_events: int, n_users: int, n_items: int, seed: int = 3) -> tuple[float, float]:
    """Push n_events random ratings of known users and items.

    Returns the wall-clock time of the first push and the seconds the pushes took. The events
    are generated before the first push, which takes about 1.4 s for 2,000,000 of them.
    """
    rng = np.random.default_rng(seed)
    # Python strings and floats, as an app would hold them, not numpy scalars.
    users = rng.integers(0, n_users, n_events).astype(str).tolist()
    items = rng.integers(0, n_items, n_events).astype(str).tolist()
    stars = (rng.integers(1, 11, n_events) / 2.0).tolist()
    now = int(time.time())
    client = RatingClient(redis.Redis.from_url(url))
    started_at = time.time()
    started = time.perf_counter()
    for start in range(0, n_events, CHUNK):
        stop = min(start + CHUNK, n_events)
        client.push_many(
            {"user_id": users[i], "item_id": items[i], "rating": stars[i], "timestamp": now}
            for i in range(start, stop)
        )
    return started_at, time.perf_counter() - started


if __name__ == "__main__":
    url, events, n_users, n_items = sys.argv[1:5]
    first_push, seconds = push_events(url, int(events), int(n_users), int(n_items))
    print(f"{first_push:.6f} {seconds:.3f}")
