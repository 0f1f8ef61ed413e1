"""XREADGROUP for one consumer of the ingest group, with the next read of new entries sent early.

While a busy stream's batch is validated and written, Redis can already build the reply to the
next read: at 50,000 entries a batch that takes it about 60 ms, which the consumer otherwise
spent waiting. `send_ahead()` sends that read on a connection of its own; the next `read()` of new
entries receives its reply.

Entries are delivered, and so pending for this consumer, once Redis replies to a read sent ahead.
When such a read is dropped before its entries are processed (drop_ahead(), or a failure), the
consumer reads them again as pending entries, exactly as it does after a crash.
"""

from __future__ import annotations

import redis

from ingest.packed import pooled_connection

# A stream entry as the server sends it: (stream id, [name, value, name, value, ...]). The
# fields are None when the entry was deleted from the stream after it was delivered.
Entry = tuple[bytes, list | None]


class GroupReader:
    """Reads one stream as one consumer of a group; replies stay as the server sends them."""

    def __init__(self, connection: redis.Redis, stream: str, group: str, consumer_name: str) -> None:
        self.stream = stream
        self.group = group
        self.consumer_name = consumer_name
        self._pool = connection.connection_pool
        # redis-py's parsing of XREADGROUP into one dict per entry cost as much as validating
        # the batch, so this client leaves replies unparsed. It shares the connection pool.
        self._client = redis.Redis(connection_pool=self._pool)
        self._client.set_response_callback("XREADGROUP", _unparsed_reply)
        # The pooled connection that a read was sent ahead on, until its reply is received.
        self._ahead = None

    @property
    def ahead(self) -> bool:
        """True while a read sent ahead waits to be received."""
        return self._ahead is not None

    def read(self, start_id: str, count: int, block: int | None) -> list[Entry]:
        """Return up to `count` entries after `start_id`: ">" for new entries, "0" for this
        consumer's pending ones. `block` is the wait in ms for new entries, None for none.

        The reply to a read sent ahead is returned for a read of new entries. Before a read of pending entries its
        reply is received and dropped, since its entries are pending by then and come again.
        """
        if self._ahead is not None:
            entries = self._receive_ahead()
            if start_id == ">":
                return entries
        response = self._client.execute_command("XREADGROUP", *self._arguments(start_id, count, block))
        return _entries(response)

    def send_ahead(self, count: int, block: int | None) -> None:
        """Send the next read of new entries now, on a connection of its own; read() receives it."""
        if self._ahead is not None:
            raise RuntimeError("a read sent ahead is not received yet")
        pooled = pooled_connection(self._pool)
        try:
            pooled.send_command("XREADGROUP", *self._arguments(">", count, block))
        except BaseException:
            pooled.disconnect()
            self._pool.release(pooled)
            raise
        self._ahead = pooled

    def drop_ahead(self) -> None:
        """Close the connection of a read sent ahead without reading its reply.

        Whatever it delivered stays pending for this consumer and is read again as pending.
        """
        pooled, self._ahead = self._ahead, None
        if pooled is not None:
            pooled.disconnect()
            self._pool.release(pooled)

    def _receive_ahead(self) -> list[Entry]:
        pooled, self._ahead = self._ahead, None
        try:
            return _entries(pooled.read_response())
        except BaseException:
            # An unread reply would be read as the reply to the connection's next command.
            pooled.disconnect()
            raise
        finally:
            self._pool.release(pooled)

    def _arguments(self, start_id: str, count: int, block: int | None) -> list[str | int]:
        arguments: list[str | int] = ["GROUP", self.group, self.consumer_name, "COUNT", count]
        if block is not None:
            arguments += ["BLOCK", block]
        return [*arguments, "STREAMS", self.stream, start_id]


def _entries(response) -> list[Entry]:
    if not response:
        return []
    # RESP3 replies map stream names to entries; RESP2 replies list [name, entries] pairs.
    if isinstance(response, dict):
        return list(next(iter(response.values())))
    return list(response[0][1])


def _unparsed_reply(response, **options):
    return response
