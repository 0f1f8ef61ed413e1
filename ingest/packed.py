"""Sending many commands, or commands with many arguments, packed by hiredis in one write."""

from __future__ import annotations

from collections.abc import Sequence

import hiredis
import redis

Argument = bytes | str | int

# hiredis-py has packed commands since 2.2.1. Older versions fall back to redis-py's packing,
# which is correct but encodes every argument in Python.
_PACK_COMMAND = getattr(hiredis, "pack_command", None)


def send_packed(connection: redis.Redis, commands: Sequence[Sequence[Argument]]) -> list:
    """Send commands in one write on a pooled connection and return their replies, in order.

    This is what a redis-py pipeline does, without redis-py encoding every argument in Python,
    which cost more than building the commands. Replies are not parsed by redis-py either, so
    they arrive as the server sends them (bytes, ints, lists). An error reply raises
    redis.ResponseError; the commands before it have been executed.
    """
    pool = connection.connection_pool
    pooled = _pooled_connection(pool)
    if _PACK_COMMAND is not None:
        packed = [b"".join([_PACK_COMMAND(tuple(command)) for command in commands])]
    else:
        packed = pooled.pack_commands(commands)
    return _send(pool, pooled, packed, len(commands))


def send_payload(connection: redis.Redis, payload: bytes, count: int) -> list:
    """Send `count` commands already encoded in the Redis protocol (RESP) in `payload`, as
    send_packed does, and return their replies in order."""
    pool = connection.connection_pool
    return _send(pool, _pooled_connection(pool), [payload], count)


def _send(pool: redis.ConnectionPool, pooled, packed: list[bytes], count: int) -> list:
    try:
        pooled.send_packed_command(packed)
        replies = [pooled.read_response() for _ in range(count)]
    except BaseException:
        # Replies left unread would be read as the replies to the next command.
        pooled.disconnect()
        raise
    finally:
        pool.release(pooled)
    return replies


def _pooled_connection(pool: redis.ConnectionPool):
    try:
        return pool.get_connection()
    except TypeError:
        # redis-py before 5.3 requires a command name argument.
        return pool.get_connection("XADD")
