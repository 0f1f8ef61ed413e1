"""A separate process that pushes synthetic rating events through the Python client.

Run as `python -m cli.bench.pusher REDIS_URL EVENTS N_USERS N_ITEMS`; prints the seconds spent.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import redis

from ingest.client import RatingClient

# Events validated and sent per push_many call.
CHUNK = 10_000


def push_events(url: str, n_events: int, n_users: int, n_items: int, seed: int = 3) -> float:
    """Push n_events random ratings of known users and items; return the seconds it took."""
    rng = np.random.default_rng(seed)
    # Python strings and floats, as an app would hold them, not numpy scalars.
    users = rng.integers(0, n_users, n_events).astype(str).tolist()
    items = rng.integers(0, n_items, n_events).astype(str).tolist()
    stars = (rng.integers(1, 11, n_events) / 2.0).tolist()
    now = int(time.time())
    client = RatingClient(redis.Redis.from_url(url))
    started = time.perf_counter()
    for start in range(0, n_events, CHUNK):
        stop = min(start + CHUNK, n_events)
        client.push_many(
            {"user_id": users[i], "item_id": items[i], "rating": stars[i], "timestamp": now}
            for i in range(start, stop)
        )
    return time.perf_counter() - started


if __name__ == "__main__":
    url, events, n_users, n_items = sys.argv[1:5]
    print(f"{push_events(url, int(events), int(n_users), int(n_items)):.3f}")
