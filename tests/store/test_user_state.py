"""Tests for the Redis top-N lists and the guarded user-state write, on real Redis and fakeredis."""

from __future__ import annotations

import fakeredis
import numpy as np
import pytest
import redis

from store.user_state import read_list, read_user_state, write_list, write_user_state
from store import keys


@pytest.fixture(params=["real", "fake"])
def client(request: pytest.FixtureRequest) -> redis.Redis:
    """A real Redis database (flushed around the test) or an in-process fakeredis."""
    if request.param == "real":
        return request.getfixturevalue("redis_client")
    return fakeredis.FakeRedis()


def _write_state(client: redis.Redis, version: int, seq: int, marker: float, with_list: bool = True) -> bool:
    """Write a state whose bias, first factor and single list score all equal `marker`."""
    return write_user_state(
        client,
        "alice",
        version=version,
        seq=seq,
        bias=marker,
        factors=np.array([marker, 1.0], dtype=np.float32),
        seen_idx=np.array([3, 1], dtype=np.int32),
        item_ids=[f"item-{marker}"] if with_list else None,
        scores=[marker] if with_list else None,
    )


def test_write_list_read_list_round_trip(client: redis.Redis) -> None:
    write_list(client, "alice", ["10", "20", "30"], [0.5, 2.25, -1.0])

    assert read_list(client, "alice", 10) == [("20", 2.25), ("10", 0.5), ("30", -1.0)]
    assert read_list(client, "alice", 2) == [("20", 2.25), ("10", 0.5)]
    assert read_list(client, "bob", 10) == []


def test_write_list_replaces_old_items(client: redis.Redis) -> None:
    write_list(client, "alice", ["10", "20", "30"], [3.0, 2.0, 1.0])
    write_list(client, "alice", ["40"], [0.1])

    assert read_list(client, "alice", 10) == [("40", 0.1)]


def test_write_list_empty_deletes(client: redis.Redis) -> None:
    write_list(client, "alice", ["10"], [1.0])
    write_list(client, "alice", [], [])

    assert client.exists(keys.recs_key("alice")) == 0


def test_write_list_into_pipeline_waits_for_execute(client: redis.Redis) -> None:
    write_list(client, "alice", ["10"], [1.0])
    pipeline = client.pipeline(transaction=True)

    write_list(pipeline, "alice", ["20", "30"], [2.0, 3.0])
    assert read_list(client, "alice", 10) == [("10", 1.0)]
    pipeline.execute()

    assert read_list(client, "alice", 10) == [("30", 3.0), ("20", 2.0)]


@pytest.mark.parametrize(
    ("item_ids", "scores", "message"),
    [
        (["10", "20"], [1.0], "item_ids and scores: must have the same length, got 2 and 1"),
        (["10"], [float("nan")], "scores: must be finite, got nan for item_id=10"),
        (["10", "10"], [1.0, 2.0], "item_ids: must be distinct"),
    ],
)
def test_write_list_rejects_bad_input(client: redis.Redis, item_ids, scores, message) -> None:
    with pytest.raises(ValueError, match=message):
        write_list(client, "alice", item_ids, scores)


def test_read_list_rejects_n_below_one(client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="n: must be at least 1, got 0"):
        read_list(client, "alice", 0)


def test_user_state_round_trip(client: redis.Redis) -> None:
    written = write_user_state(
        client,
        "alice",
        version=3,
        seq=17,
        bias=-0.125,
        factors=np.array([0.5, -1.5, 2.0], dtype=np.float32),
        seen_idx=np.array([9, 2, 5], dtype=np.int64),
        item_ids=["10", "20"],
        scores=[1.5, 0.75],
    )
    state = read_user_state(client, "alice")

    assert written is True
    assert state is not None
    assert state.version == 3
    assert state.seq == 17
    assert state.bias == -0.125
    assert state.factors.dtype == np.float32
    np.testing.assert_array_equal(state.factors, [0.5, -1.5, 2.0])
    assert state.seen_idx.dtype == np.int32
    assert state.seen_idx.tolist() == [2, 5, 9]
    assert read_list(client, "alice", 10) == [("10", 1.5), ("20", 0.75)]


def test_user_state_binary_layout(client: redis.Redis) -> None:
    # Clients in other languages read these bytes: little-endian float32 and int32.
    write_user_state(client, "alice", 1, 0, 0.5, np.array([1.0, -2.0]), np.array([7, 3]))
    stored = client.hgetall(keys.user_key("alice"))

    assert stored[b"version"] == b"1"
    assert stored[b"seq"] == b"0"
    assert float(stored[b"bias"]) == 0.5
    assert stored[b"factors"] == np.array([1.0, -2.0], dtype="<f4").tobytes()
    assert stored[b"seen"] == np.array([3, 7], dtype="<i4").tobytes()


def test_read_user_state_missing_is_none(client: redis.Redis) -> None:
    assert read_user_state(client, "nobody") is None


@pytest.mark.parametrize(
    ("version", "seq", "expected"),
    [
        (1, 9, False),  # older version, even with a higher seq
        (2, 4, False),  # same version, older seq
        (2, 5, True),  # the same pair again
        (2, 6, True),  # same version, newer seq
        (3, 0, True),  # newer version, even with a lower seq
    ],
)
def test_user_state_guard(client: redis.Redis, version: int, seq: int, expected: bool) -> None:
    assert _write_state(client, version=2, seq=5, marker=1.0) is True

    written = _write_state(client, version=version, seq=seq, marker=2.0)
    state = read_user_state(client, "alice")

    assert written is expected
    winner = 2.0 if expected else 1.0
    assert (state.version, state.seq) == ((version, seq) if expected else (2, 5))
    assert state.bias == winner
    assert state.factors[0] == winner
    assert read_list(client, "alice", 10) == [(f"item-{winner}", winner)]


def test_user_state_without_list_keeps_list(client: redis.Redis) -> None:
    write_list(client, "alice", ["10", "20"], [2.0, 1.0])

    assert _write_state(client, version=1, seq=1, marker=3.0, with_list=False) is True
    assert read_user_state(client, "alice").bias == 3.0
    assert read_list(client, "alice", 10) == [("10", 2.0), ("20", 1.0)]


def test_user_state_empty_list_deletes_list(client: redis.Redis) -> None:
    write_list(client, "alice", ["10"], [2.0])

    write_user_state(client, "alice", 1, 1, 0.0, np.zeros(2), np.zeros(0, np.int32), [], [])

    assert client.exists(keys.recs_key("alice")) == 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"version": 0}, "version: must be at least 1, got 0"),
        ({"seq": -1}, "seq: must be at least 0, got -1"),
        ({"bias": float("inf")}, "bias: must be finite, got inf"),
        ({"factors": np.array([np.nan, 1.0])}, "factors: must be a finite 1-D array"),
        ({"seen_idx": np.array([-1, 2])}, "seen_idx: must be a 1-D array of non-negative item_idx"),
        ({"item_ids": ["10"]}, "item_ids and scores: pass both or neither"),
    ],
)
def test_user_state_rejects_bad_input(client: redis.Redis, changes: dict, message: str) -> None:
    arguments = dict(version=1, seq=0, bias=0.0, factors=np.zeros(2), seen_idx=np.zeros(0, np.int32))
    arguments.update(changes)

    with pytest.raises(ValueError, match=message):
        write_user_state(client, "alice", **arguments)
    assert client.exists(keys.user_key("alice")) == 0


def test_read_user_state_rejects_malformed_hash(client: redis.Redis) -> None:
    client.hset(
        keys.user_key("alice"),
        mapping={"version": "1", "seq": "0", "bias": "0.5", "factors": b"\x00\x00\x80", "seen": b""},
    )

    with pytest.raises(ValueError, match=r"streamrec:user:alice: factors \(3 bytes\)"):
        read_user_state(client, "alice")


def test_read_user_state_rejects_incomplete_hash(client: redis.Redis) -> None:
    client.hset(keys.user_key("alice"), mapping={"version": "1"})

    with pytest.raises(ValueError, match="streamrec:user:alice: incomplete user state"):
        read_user_state(client, "alice")
