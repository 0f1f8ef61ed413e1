"""Sending many commands, or commands with many arguments, packed by hiredis in one write."""

from __future__ import annotations

from collections.abc import Sequence

import hiredis
import redis

Argument = bytes | str | int


def send_packed(connection: redis.Redis, commands: Sequence[Sequence[Argument]]) -> list:
    """Send commands in one write on a pooled connection and return their replies, in order.

    This is what a redis-py pipeline does, without redis-py encoding every argument in Python,
    which cost more than building the commands. Replies are not parsed by redis-py either, so
    they arrive as the server sends them (bytes, ints, lists). An error reply raises
    redis.ResponseError; the commands before it have been executed.
    """
    packed = b"".join([hiredis.pack_command(tuple(command)) for command in commands])
    pool = connection.connection_pool
    pooled = pool.get_connection()
    try:
        pooled.send_packed_command([packed])
        replies = [pooled.read_response() for _ in commands]
    except BaseException:
        # Replies left unread would be read as the replies to the next command.
        pooled.disconnect()
        raise
    finally:
        pool.release(pooled)
    return replies
