"""Events the database rejects after validation passed: isolated, dead-lettered, never blocking."""

from __future__ import annotations

import pytest
import redis

from ingest.client import RatingClient
from ingest.consumer import IngestConsumer
from store import keys
from store.database import Database
from store.settings import Settings


class FlakyDatabase:
    """A real database whose writes fail for one item id, as a bug the validation missed would."""

    def __init__(self, database: Database, poison_item: str) -> None:
        self._database = database
        self._poison_item = poison_item
        self.fail_everything = False

    def apply_rating_columns(self, user_ids, item_ids, ratings, timestamps, **kwargs):
        if self.fail_everything or self._poison_item in item_ids:
            raise OverflowError("Python int too large to convert to C long")
        return self._database.apply_rating_columns(user_ids, item_ids, ratings, timestamps, **kwargs)

    def __getattr__(self, name):
        return getattr(self._database, name)


@pytest.fixture
def consumer_parts(tmp_path, redis_url):
    settings = Settings(data_dir=tmp_path, redis_url=redis_url)
    connection = redis.Redis.from_url(redis_url)
    refreshed: list[dict] = []
    with Database(settings.database_path) as database:
        flaky = FlakyDatabase(database, poison_item="666")
        consumer = IngestConsumer(settings, connection, flaky, lambda users, seq: refreshed.append(users))
        yield consumer, flaky, database, connection
    connection.close()


def test_rejected_event_dead_lettered_rest_stored(consumer_parts):
    consumer, _, database, connection = consumer_parts
    client = RatingClient(connection)
    client.push("u1", "1", 4.0, timestamp=1000)
    client.push("u1", "666", 3.0, timestamp=1001)
    client.push("u2", "2", 5.0, timestamp=1002)

    while consumer.process_once():
        pass

    assert database.counts().ratings == 2
    dead = connection.xrange(keys.DEAD_LETTER_STREAM)
    assert len(dead) == 1
    assert dead[0][1][b"item_id"] == b"666"
    assert dead[0][1][b"reason"].startswith(b"database rejected the event: Python int too large")
    assert connection.xpending(keys.EVENTS_STREAM, keys.INGEST_GROUP)["pending"] == 0


def test_failing_database_acknowledges_nothing(consumer_parts):
    consumer, flaky, database, connection = consumer_parts
    flaky.fail_everything = True
    RatingClient(connection).push("u1", "1", 4.0, timestamp=1000)

    with pytest.raises(OverflowError):
        consumer.process_once()

    assert not connection.exists(keys.DEAD_LETTER_STREAM)
    assert connection.xpending(keys.EVENTS_STREAM, keys.INGEST_GROUP)["pending"] == 1
