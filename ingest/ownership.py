"""One ingest consumer per events stream: a Redis key names the consumer that reads it.

Two consumers of the same group split the entries between them. With two databases, each would
hold only part of the ratings, so a consumer whose database differs from the owner's refuses to
start. A consumer with the owner's host and database takes over: it holds that database's lock,
so the owner it replaces has stopped.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import redis

from store.errors import ConsumerConflictError
from store.keys import INGEST_OWNER

# Seconds the owner key lives without renewal. A consumer that stopped frees the stream after this.
OWNER_TTL_SECONDS = 30
# Seconds between two renewals by a running consumer.
RENEW_INTERVAL_SECONDS = 5.0


class StreamOwnership:
    """A consumer's claim on the events stream, renewed while the consumer runs."""

    def __init__(self, connection: redis.Redis, database_path: Path) -> None:
        self._connection = connection
        self._identity = {"host": socket.gethostname(), "database": str(Path(database_path).resolve())}
        self._value = json.dumps({**self._identity, "pid": os.getpid()})
        self._renewed_at = -float("inf")

    def claim(self) -> None:
        """Take the stream, or raise ConsumerConflictError naming the consumer that has it."""
        current = self._connection.get(INGEST_OWNER)
        if current is not None and not self._is_ours(current):
            owner = json.loads(current)
            raise ConsumerConflictError(
                f"another ingest consumer reads the events stream: pid {owner.get('pid')} on "
                f"{owner.get('host')} with the database {owner.get('database')}. Two consumers "
                "with different databases would split the events between them. Stop that one, "
                f"or wait {OWNER_TTL_SECONDS} s after it stopped"
            )
        self._connection.set(INGEST_OWNER, self._value, ex=OWNER_TTL_SECONDS)
        self._renewed_at = time.monotonic()

    def renew(self) -> None:
        """Extend the claim at most every RENEW_INTERVAL_SECONDS; raise if another consumer took it."""
        if time.monotonic() - self._renewed_at >= RENEW_INTERVAL_SECONDS:
            self.claim()

    def release(self) -> None:
        """Delete the claim if it is still this consumer's, so another may start at once."""
        current = self._connection.get(INGEST_OWNER)
        if current is not None and current in (self._value, self._value.encode()):
            self._connection.delete(INGEST_OWNER)

    def _is_ours(self, value: bytes | str) -> bool:
        try:
            owner = json.loads(value)
        except ValueError:
            return False
        return isinstance(owner, dict) and all(owner.get(key) == item for key, item in self._identity.items())
