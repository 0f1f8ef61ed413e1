"""Connections the commands share: Redis from the settings, and logging for the entry points."""

from __future__ import annotations

import logging
import sys

import redis

from store.settings import Settings

# Redis URL of the long-lived commands when neither REDIS_URL nor STREAMREC_REDIS_URL is set.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def configure_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # numba logs every compilation step at DEBUG; keep its INFO and above only.
    logging.getLogger("numba").setLevel(logging.WARNING)


def connect_redis(settings: Settings) -> redis.Redis:
    """Connect to the configured Redis server and check that it responds."""
    url = settings.redis_url or DEFAULT_REDIS_URL
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        raise SystemExit(
            f"error: Redis not reachable at {url}: {str(exc).rstrip('.')}. "
            "Start Redis or set REDIS_URL to a reachable server."
        ) from exc
    return client


def embedded_redis() -> redis.Redis:
    """Return an in-process fakeredis server, for the demo when no Redis is configured."""
    import fakeredis

    return fakeredis.FakeRedis()


def parse_stars(text: str) -> float:
    """Parse a rating typed on the command line; float() alone would read "4_0" as 40."""
    if "_" in text or not text.isascii():
        raise ValueError(f"rating: must be a number, got {text!r}")
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"rating: must be a number, got {text!r}") from None
