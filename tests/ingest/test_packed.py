"""ingest.packed: commands sent in one write, replies read in bulk, on real Redis."""

from __future__ import annotations

import fakeredis
import pytest
import redis
from redis._parsers import _RESP2Parser

from ingest.packed import send_packed, send_payload

pytestmark = pytest.mark.redis

STREAM = "test:packed"


def xadds(count: int, start: int = 0) -> list[tuple]:
    return [("XADD", STREAM, "*", "n", str(n)) for n in range(start, start + count)]


@pytest.fixture(params=["resp3", "resp2", "python parser"])
def connection(redis_url: str, request: pytest.FixtureRequest) -> redis.Redis:
    """Connections read through the hiredis reader in RESP3 and RESP2, and through redis-py's
    own parser."""
    if request.param == "python parser":
        pool = redis.ConnectionPool.from_url(redis_url, parser_class=_RESP2Parser, protocol=2)
        client = redis.Redis(connection_pool=pool)
    else:
        client = redis.Redis.from_url(redis_url, protocol=3 if request.param == "resp3" else 2)
    yield client
    client.close()


def test_replies_returned_in_order(connection):
    replies = send_packed(connection, xadds(25_000))

    listed = [stream_id for stream_id, _ in connection.xrange(STREAM)]
    assert replies == listed
    assert len(replies) == 25_000


def test_payload_replies_match_packed(connection):
    payload = b"".join(
        b"*5\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n$1\r\n*\r\n$1\r\nn\r\n$%d\r\n%d\r\n"
        % (len(STREAM), STREAM.encode(), len(str(n)), n)
        for n in range(3000)
    )

    replies = send_payload(connection, payload, 3000)

    entries = connection.xrange(STREAM)
    assert replies == [stream_id for stream_id, _ in entries]
    assert [fields[b"n"] for _, fields in entries] == [str(n).encode() for n in range(3000)]


def test_error_reply_raises_after_all_ran(connection):
    connection.set("test:not-a-stream", "x")
    commands = xadds(500) + [("XADD", "test:not-a-stream", "*", "n", "x")] + xadds(500, start=500)

    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        send_packed(connection, commands)

    assert connection.xlen(STREAM) == 1000
    # The connection went back to the pool in step with the server, or was closed.
    assert connection.ping()
    assert send_packed(connection, [("GET", "test:not-a-stream")]) == [b"x"]


def test_missing_script_raises_no_script_error(connection):
    with pytest.raises(redis.exceptions.NoScriptError):
        send_packed(connection, [("EVALSHA", "0" * 40, 0)] * 3)

    assert connection.ping()


def test_hiredis_reader_used(connection, request):
    from ingest.packed import _hiredis_reader

    pooled = connection.connection_pool.get_connection()
    try:
        pooled.connect()
        reader = _hiredis_reader(pooled)
    finally:
        connection.connection_pool.release(pooled)

    # The bulk read is the fast path; redis-py's own parser goes through read_response().
    expected = request.node.callspec.params["connection"] != "python parser"
    assert (reader is not None) is expected


def test_fakeredis_connection_reads_replies():
    connection = fakeredis.FakeRedis()

    replies = send_packed(connection, xadds(300))

    assert replies == [stream_id for stream_id, _ in connection.xrange(STREAM)]
