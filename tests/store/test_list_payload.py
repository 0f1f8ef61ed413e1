"""Tests for the top-N lists written as RESTORE payloads, checked against ZADD on real Redis."""

from __future__ import annotations

import fakeredis
import numpy as np
import pytest
import redis

from store import keys, list_payload
from store.list_payload import MemberEntries, restore_supported, sorted_set_payloads
from store.snapshots import SnapshotStore
from store.user_state import write_users
from tests.store.snapshot_factory import make_snapshot_data

# Ids around every listpack encoding boundary: 7-bit, 13-bit, 16-, 24-, 32- and 64-bit integers,
# strings that look like integers but are not canonical, and strings of 63, 64 and 4096 bytes.
ODD_IDS = [
    "0", "127", "128", "-1", "4095", "4096", "-4096", "-4097", "32767", "32768", "-32769",
    "8388607", "8388608", "2147483647", "2147483648", "9223372036854775807",
    "9223372036854775808", "-9223372036854775808", "007", "-0", "+5", "1_0", " 7", "alice",
    "é", "x" * 63, "y" * 64, "z" * 4096,
]
ODD_SCORES = [0.0, -0.0, 1.0, -2.5, 0.1, 1e-30, 3e30, 123456789.0, 1.4e-45, 3.4e38, -7.25e-8]


def _restored_and_zadded(client: redis.Redis, item_ids, list_idx, list_scores, row: int):
    """Restore one row's payload, ZADD the same pairs and return both lists, best first."""
    payload = sorted_set_payloads(MemberEntries(np.array(item_ids)), list_idx, list_scores)[row]
    client.delete("restored", "added")
    client.restore("restored", 0, payload)
    listed = list_idx[row][list_idx[row] >= 0]
    client.zadd("added", {item_ids[item]: float(list_scores[row, k]) for k, item in enumerate(listed)})
    return (
        client.zrevrange("restored", 0, -1, withscores=True),
        client.zrevrange("added", 0, -1, withscores=True),
    )


def _as_float32(pairs):
    """The members and their scores rounded to float32, the precision the payload keeps."""
    return [(member, np.float32(score)) for member, score in pairs]


def _ranked_rows(rng, n_items: int, rows: int, width: int, score_pool=None):
    """Random lists of distinct items sorted best first, padded with -1 and -inf."""
    list_idx = np.full((rows, width), -1, np.int64)
    list_scores = np.full((rows, width), -np.inf, np.float32)
    for row in range(rows):
        length = int(rng.integers(1, width + 1))
        items = rng.choice(n_items, length, replace=False)
        if score_pool is None:
            scores = rng.normal(0.0, 3.0, length).astype(np.float32)
        else:
            scores = rng.choice(np.array(score_pool, np.float32), length)
        order = np.lexsort((items, -scores.astype(np.float64)))
        list_idx[row, :length] = items[order]
        list_scores[row, :length] = scores[order]
    return list_idx, list_scores


def test_payload_matches_zadd_for_odd_ids_and_scores(redis_client: redis.Redis) -> None:
    rng = np.random.default_rng(3)
    list_idx, list_scores = _ranked_rows(rng, len(ODD_IDS), rows=40, width=len(ODD_IDS), score_pool=ODD_SCORES)
    for row in range(list_idx.shape[0]):
        restored, added = _restored_and_zadded(redis_client, ODD_IDS, list_idx, list_scores, row)
        # Scores go as 9 digits, which read back as the same float32.
        assert _as_float32(restored) == _as_float32(added)


def test_payload_ties_follow_member_bytes(redis_client: redis.Redis) -> None:
    item_ids = ["b", "a", "10", "9", "c"]
    list_idx = np.array([[0, 1, 2, 3, 4]])
    list_scores = np.array([[2.0, 2.0, 2.0, 2.0, 1.0]], np.float32)
    restored, added = _restored_and_zadded(redis_client, item_ids, list_idx, list_scores, 0)
    assert restored == added
    assert [member for member, _ in restored][:4] == [b"b", b"a", b"9", b"10"]


def test_payload_long_list_restores(redis_client: redis.Redis) -> None:
    # 300 members of 60 bytes make a listpack past 16 KB, with a 5-byte length in the payload.
    item_ids = [f"{index:060d}" for index in range(300)]
    rng = np.random.default_rng(5)
    list_idx, list_scores = _ranked_rows(rng, 300, rows=1, width=300)
    list_idx[0] = rng.permutation(300)
    list_scores[0] = np.sort(rng.normal(0, 1, 300).astype(np.float32))[::-1]
    restored, added = _restored_and_zadded(redis_client, item_ids, list_idx, list_scores, 0)
    assert len(restored) == 300
    assert _as_float32(restored) == _as_float32(added)


def test_payload_random_lists_match_zadd(redis_client: redis.Redis) -> None:
    item_ids = [str(index) for index in range(5000)] + ["user-chosen id"]
    rng = np.random.default_rng(11)
    list_idx, list_scores = _ranked_rows(rng, len(item_ids), rows=30, width=100)
    for row in range(list_idx.shape[0]):
        restored, added = _restored_and_zadded(redis_client, item_ids, list_idx, list_scores, row)
        assert _as_float32(restored) == _as_float32(added)


def test_payload_empty_row_is_empty() -> None:
    members = MemberEntries(np.array(["1", "2"]))
    payloads = sorted_set_payloads(members, np.array([[-1, -1], [1, -1]]),
                                   np.array([[-np.inf, -np.inf], [0.5, -np.inf]], np.float32))
    assert payloads[0] == b""
    assert payloads[1] != b""


def test_payload_corrupted_byte_rejected(redis_client: redis.Redis) -> None:
    members = MemberEntries(np.array(["1", "2"]))
    payload = sorted_set_payloads(members, np.array([[0, 1]]), np.array([[2.0, 1.0]], np.float32))[0]
    corrupted = bytearray(payload)
    corrupted[8] ^= 0x01
    with pytest.raises(redis.ResponseError, match="checksum"):
        redis_client.restore("corrupted", 0, bytes(corrupted))
    assert redis_client.exists("corrupted") == 0


def test_restore_supported_real_and_fake(redis_client: redis.Redis) -> None:
    assert restore_supported(redis_client)
    assert not restore_supported(fakeredis.FakeRedis())
    # The probe leaves no key behind.
    assert redis_client.keys("streamrec:probe:*") == []


def _write_one(client: redis.Redis, snapshot, row: list[int], scores: list[float], seq: int = 1) -> int:
    return write_users(
        client, snapshot, user_ids=["u1"], seq=seq, biases=np.zeros(1, np.float32),
        factors=np.zeros((1, 2), np.float32), seen=[np.zeros(0, np.int32)],
        list_idx=np.array([row], np.int64), list_scores=np.array([scores], np.float32),
    )


@pytest.fixture(params=["real", "fake"])
def any_client(request, redis_url: str):
    """A real Redis database, where lists go through RESTORE, or fakeredis, where they go through ZADD."""
    if request.param == "real":
        return redis.Redis.from_url(redis_url)
    return fakeredis.FakeRedis()


@pytest.mark.parametrize(
    "row, problem",
    [
        ([0, 1, 0], "item listed twice"),
        ([0, -1, 1], "-1 before a listed item"),
        ([0, 6, -1], "item index outside the snapshot"),
        ([0, -2, -1], "item index outside the snapshot"),
    ],
)
def test_write_users_rejects_bad_rows(any_client, tmp_path, row, problem) -> None:
    snapshot = _published_snapshot(tmp_path)
    with pytest.raises(ValueError, match=problem):
        _write_one(any_client, snapshot, row, [3.0, 2.0, 1.0])
    assert any_client.exists(keys.user_key("u1"), keys.recs_key("u1")) == 0


def test_write_users_same_list_both_ways(redis_client: redis.Redis, tmp_path) -> None:
    snapshot = _published_snapshot(tmp_path)
    fake = fakeredis.FakeRedis()
    for client in (redis_client, fake):
        assert _write_one(client, snapshot, [2, 0, 5, -1], [0.3, 0.3, -1.5, -np.inf]) == 1
    restored = _as_float32(redis_client.zrevrange(keys.recs_key("u1"), 0, -1, withscores=True))
    added = _as_float32(fake.zrevrange(keys.recs_key("u1"), 0, -1, withscores=True))
    assert restored == added
    assert [member for member, _ in restored] == [b"30", b"10", b"60"]


def test_write_users_rejected_restore_writes_nothing(redis_client: redis.Redis, tmp_path, monkeypatch) -> None:
    snapshot = _published_snapshot(tmp_path)
    assert _write_one(redis_client, snapshot, [0, 1], [2.0, 1.0], seq=1) == 1
    before = redis_client.hgetall(keys.user_key("u1"))

    # A payload the server rejects plays the part of a server that no longer takes RESTORE.
    def corrupted(*args, **kwargs):
        return [b"\x11not a payload" for _ in range(len(args[1]))]

    monkeypatch.setattr("store.user_state.sorted_set_payloads", corrupted)
    with pytest.raises(redis.ResponseError):
        _write_one(redis_client, snapshot, [2, 3], [2.0, 1.0], seq=2)
    assert redis_client.hgetall(keys.user_key("u1")) == before
    assert redis_client.zrevrange(keys.recs_key("u1"), 0, -1) == [b"10", b"20"]
    # The failure makes the next write probe the server again.
    assert redis_client.connection_pool not in list_payload._restore_support


def test_restore_supported_resp3(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, protocol=3)
    assert restore_supported(client)


def _published_snapshot(directory):
    store = SnapshotStore(directory)
    store.publish(make_snapshot_data())
    return store.open()
