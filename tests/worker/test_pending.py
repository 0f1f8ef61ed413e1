"""Pending refreshes: one per user, the quiet window, the schedule key, and nothing lost."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest

from store import keys
from store.rating_index import encode_ids
from store.user_rows import UserRows
from worker import pending as pending_module
from worker.pending import PendingRefreshes

pytestmark = pytest.mark.redis


def ratings(*pairs: tuple[str, float]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([item for item, _ in pairs]), np.array([value for _, value in pairs], np.float32)


def test_user_rows_sent_with_item_ids(redis_client):
    pending = PendingRefreshes(redis_client, quiet_ms=0)
    item_ids = np.array(["a", "b:c", "", "δ 7"], dtype=object)
    rows = UserRows(
        ["u1", "u2"], np.array([0, 3, 4]), np.array([0, 1, 3, 2], np.int32),
        np.array([4.0, 2.5, 0.5, 5.0], np.float32), item_ids,
    )
    pending.add(rows, seq=5)

    taken, _ = pending.take_due("job-1", max_users=100)

    assert sorted(taken) == ["u1", "u2"]
    assert taken["u1"].seq == 5
    assert taken["u1"].item_ids == ["a", "b:c", "δ 7"]
    assert taken["u1"].ratings.tolist() == [4.0, 2.5, 0.5]
    assert taken["u2"].item_ids == [""]
    assert taken["u2"].ratings.tolist() == [5.0]
    # A retry reads the same entries back from the job's taken hash.
    assert pending.taken_users("job-1")["u1"].item_ids == ["a", "b:c", "δ 7"]


def test_add_after_script_cache_flushed(redis_client):
    """A server that restarted, or a new one, has not seen the add script yet."""
    pending = PendingRefreshes(redis_client, quiet_ms=0)
    rows = UserRows(["u1"], np.array([0, 1]), np.array([3], np.int32), np.array([4.0], np.float32),
                    np.array(["a", "b", "c", "d"], dtype=object))
    redis_client.script_flush()

    assert pending.add(rows, seq=1) is True

    taken, _ = pending.take_due("job-1", max_users=10)
    assert taken["u1"].item_ids == ["d"]


def server_ms(redis_client) -> int:
    seconds, micros = redis_client.time()
    return seconds * 1000 + micros // 1000


def test_due_user_taken_with_ratings_and_seq(redis_client):
    pending = PendingRefreshes(redis_client, quiet_ms=0)
    pending.add({"u1": ratings(("10", 4.0), ("11", 2.5))}, seq=3)

    taken, wait_ms = pending.take_due("job-1", max_users=100)

    assert list(taken) == ["u1"]
    assert taken["u1"].seq == 3
    assert taken["u1"].item_ids == ["10", "11"]
    assert taken["u1"].ratings == [4.0, 2.5]
    assert wait_ms == -1
    assert pending.count() == 0


def test_later_add_replaces_ratings(redis_client):
    pending = PendingRefreshes(redis_client, quiet_ms=0)
    pending.add({"u1": ratings(("10", 4.0))}, seq=3)
    pending.add({"u1": ratings(("10", 4.0), ("12", 1.0))}, seq=4)

    taken, _ = pending.take_due("job-1", max_users=100)

    assert pending.count() == 0
    assert taken["u1"].seq == 4
    assert taken["u1"].item_ids == ["10", "12"]


def test_older_seq_does_not_replace_newer(redis_client):
    pending = PendingRefreshes(redis_client, quiet_ms=0)
    pending.add({"u1": ratings(("10", 4.0), ("12", 1.0))}, seq=9)
    pending.add({"u1": ratings(("10", 4.0))}, seq=8)

    taken, _ = pending.take_due("job-1", max_users=100)

    assert taken["u1"].seq == 9
    assert taken["u1"].item_ids == ["10", "12"]


def test_quiet_user_due_after_quiet_window(redis_client):
    pending = PendingRefreshes(redis_client, quiet_ms=50, max_delay_ms=1000)
    before = server_ms(redis_client)
    pending.add({"u1": ratings(("10", 4.0))}, seq=1)
    after = server_ms(redis_client)

    due = redis_client.zscore(keys.REFRESH_DUE, "u1")

    assert before + 50 <= due <= after + 50


def entry_due_ms(redis_client, user_id: str) -> int:
    """The due time a pending entry's header gives."""
    header = redis_client.hget(keys.REFRESH_PENDING, user_id).partition(b"\n")[0]
    return int(header.split(b" ")[2])


def test_later_add_moves_due_time(redis_client):
    pending = PendingRefreshes(redis_client, quiet_ms=200, max_delay_ms=230)
    first_add = server_ms(redis_client)
    pending.add({"u1": ratings(("10", 4.0))}, seq=1)
    first_due = entry_due_ms(redis_client, "u1")
    time.sleep(0.02)
    pending.add({"u1": ratings(("10", 4.0), ("11", 3.0))}, seq=2)
    second_due = entry_due_ms(redis_client, "u1")
    time.sleep(0.05)
    pending.add({"u1": ratings(("10", 4.0), ("11", 3.0), ("12", 5.0))}, seq=3)
    third_due = entry_due_ms(redis_client, "u1")

    assert redis_client.zscore(keys.REFRESH_DUE, "u1") == first_due
    assert second_due > first_due
    assert third_due >= second_due
    assert third_due <= first_add + 230 + 5  # 5 ms: the add reads the clock after first_add


def test_take_moves_readded_user_to_entry_due(redis_client):
    pending = PendingRefreshes(redis_client, quiet_ms=300, max_delay_ms=10_000)
    pending.add({"u1": ratings(("10", 4.0))}, seq=1)
    time.sleep(0.2)
    pending.add({"u1": ratings(("10", 4.0), ("11", 3.0))}, seq=2)
    entry_due = entry_due_ms(redis_client, "u1")
    time.sleep(max(0.0, (redis_client.zscore(keys.REFRESH_DUE, "u1") - server_ms(redis_client)) / 1000) + 0.02)

    early, wait_ms = pending.take_due("job-1", max_users=10)
    moved_to = redis_client.zscore(keys.REFRESH_DUE, "u1")
    time.sleep(wait_ms / 1000 + 0.02)
    late, _ = pending.take_due("job-1", max_users=10)

    assert early == {}
    assert moved_to == entry_due
    assert 0 < wait_ms <= 300
    assert late["u1"].seq == 2
    assert late["u1"].item_ids == ["10", "11"]
    assert pending.count() == 0


def test_entry_without_due_time_taken_by_score(redis_client):
    # Entries of earlier releases have "<seq> <first add>" only.
    body = b'[["10"], [4.0]]'
    redis_client.hset(keys.REFRESH_PENDING, "u1", b"3 1000\n" + body)
    redis_client.zadd(keys.REFRESH_DUE, {"u1": 1000})

    taken, _ = PendingRefreshes(redis_client).take_due("job-1", max_users=10)

    assert taken["u1"].seq == 3
    assert taken["u1"].item_ids == ["10"]


def test_user_not_due_is_left_pending(redis_client):
    pending = PendingRefreshes(redis_client, quiet_ms=60_000, max_delay_ms=60_000)
    pending.add({"u1": ratings(("10", 4.0))}, seq=1)

    taken, wait_ms = pending.take_due("job-1", max_users=100)

    assert taken == {}
    assert 0 < wait_ms <= 60_000
    assert pending.count() == 1
    assert redis_client.exists(keys.REFRESH_SCHEDULED)


def test_schedule_claimed_once_until_drained(redis_client):
    pending = PendingRefreshes(redis_client, quiet_ms=0)

    assert pending.add({"u1": ratings(("10", 4.0))}, seq=1) is True
    assert pending.add({"u2": ratings(("10", 4.0))}, seq=1) is False
    pending.take_due("job-1", max_users=100)
    assert not redis_client.exists(keys.REFRESH_SCHEDULED)
    assert pending.add({"u3": ratings(("10", 4.0))}, seq=2) is True


def test_take_respects_max_users(redis_client):
    pending = PendingRefreshes(redis_client, quiet_ms=0)
    pending.add({f"u{n}": ratings(("10", 4.0)) for n in range(5)}, seq=1)

    taken, wait_ms = pending.take_due("job-1", max_users=3)

    assert len(taken) == 3
    assert wait_ms == 0
    assert pending.count() == 2


def test_taken_users_kept_until_finished(redis_client):
    pending = PendingRefreshes(redis_client, quiet_ms=0)
    pending.add({"u1": ratings(("10", 4.0))}, seq=1)
    pending.take_due("job-1", max_users=100)

    # A retry of job-1 after its worker died finds what it had taken.
    assert list(pending.taken_users("job-1")) == ["u1"]
    pending.finish("job-1")
    assert pending.taken_users("job-1") == {}


def test_give_back_returns_users_unless_newer_pending(redis_client):
    pending = PendingRefreshes(redis_client, quiet_ms=0)
    pending.add({"u1": ratings(("10", 4.0)), "u2": ratings(("10", 1.0))}, seq=1)
    pending.take_due("job-1", max_users=100)
    pending.add({"u2": ratings(("10", 1.0), ("11", 2.0))}, seq=2)

    assert pending.give_back("job-1") == 2

    taken, _ = pending.take_due("job-2", max_users=100)
    assert taken["u1"].seq == 1
    assert taken["u2"].seq == 2
    assert taken["u2"].item_ids == ["10", "11"]


def test_claim_schedule_only_with_pending_users(redis_client):
    pending = PendingRefreshes(redis_client, quiet_ms=0)
    assert pending.claim_schedule() is False

    pending.add({"u1": ratings(("10", 4.0))}, seq=1)
    pending.release_schedule()

    assert pending.claim_schedule() is True
    assert pending.claim_schedule() is False


@pytest.mark.parametrize(
    ("quiet_ms", "max_delay_ms", "message"),
    [(-1, 10, "quiet_ms: must be at least 0, got -1"),
     (50, 10, "max_delay_ms: must be at least quiet_ms (50), got 10")],
)
def test_rejects_bad_window(redis_client, quiet_ms, max_delay_ms, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PendingRefreshes(redis_client, quiet_ms=quiet_ms, max_delay_ms=max_delay_ms)


def test_pending_check_enqueues_job_after_lost_one(redis_client):
    from worker.queues import refresh_queue
    from worker.runner import PendingCheck

    pending = PendingRefreshes(redis_client, quiet_ms=0)
    assert pending.add({"alice": ratings(("1", 4.0))}, seq=1)
    check = PendingCheck(redis_client)
    assert not check.check()  # a job is scheduled, so nothing to do
    redis_client.delete(keys.REFRESH_SCHEDULED)  # that job was lost with its worker

    assert check.check()
    assert refresh_queue(redis_client).count == 1
    assert not check.check()


def test_binary_bodies_layout() -> None:
    # Each body is "I", the count as uint32, the stars as float32, then the ids as encode_ids has them.
    rng = np.random.default_rng(0)
    ids = np.array([f"item{k}" for k in range(500)] + ["δ", "a:b", ""])
    counts = rng.integers(0, 30, 50)
    offsets = np.zeros(51, np.int64)
    np.cumsum(counts, out=offsets[1:])
    idx = np.concatenate([np.sort(rng.choice(len(ids), c, replace=False)) for c in counts]).astype(np.int32)
    stars = (rng.integers(1, 11, idx.shape[0]) / 2).astype(np.float32)
    rows = UserRows([f"u{k}" for k in range(50)], offsets, idx, stars, ids)
    encoded = encode_ids(ids.tolist())

    for row, body in enumerate(pending_module._binary_bodies(rows)):
        start, stop = offsets[row], offsets[row + 1]
        expected = b"".join([b"I", struct.pack("<I", stop - start), stars[start:stop].astype("<f4").tobytes(),
                             *encoded[idx[start:stop]]])
        assert body == expected


def test_newer_only_rows_round_trip(redis_client):
    pending = PendingRefreshes(redis_client, quiet_ms=0)
    item_ids = np.array(["a", "b", "c"], dtype=object)
    rows = UserRows(
        ["u1", "u2"], np.array([0, 2, 3]), np.array([2, 0, 1], np.int32),
        np.array([4.0, 2.5, 0.5], np.float32), item_ids, encode_ids(item_ids.tolist()), since_seq=41,
    )
    pending.add(rows, seq=44)

    taken, _ = pending.take_due("job-1", max_users=100)

    assert taken["u1"].since_seq == 41
    assert taken["u1"].seq == 44
    assert taken["u1"].item_ids == ["c", "a"]
    assert taken["u1"].ratings.tolist() == [4.0, 2.5]
    assert taken["u2"].item_ids == ["b"]
    assert taken["u2"].since_seq == 41
    assert pending.taken_users("job-1")["u1"].since_seq == 41


def test_complete_rows_have_no_since_seq(redis_client):
    pending = PendingRefreshes(redis_client, quiet_ms=0)
    rows = UserRows(["u1"], np.array([0, 1]), np.array([0], np.int32), np.array([3.0], np.float32),
                    np.array(["a"], dtype=object))
    pending.add(rows, seq=2)

    taken, _ = pending.take_due("job-1", max_users=100)

    assert taken["u1"].since_seq is None


def test_newer_only_body_layout() -> None:
    ids = np.array(["x", "yz"], dtype=object)
    rows = UserRows(["u"], np.array([0, 2]), np.array([1, 0], np.int32), np.array([1.5, 5.0], np.float32),
                    ids, since_seq=2**40 + 3)

    (body,) = pending_module._binary_bodies(rows)

    expected = b"".join([b"D", struct.pack("<q", 2**40 + 3), struct.pack("<I", 2),
                         np.array([1.5, 5.0], "<f4").tobytes(), b"2:yz", b"1:x"])
    assert body == expected


def test_add_many_users_across_chunks(redis_client):
    # The script takes users 1,000 at a time; 2,500 users cross two chunk boundaries.
    pending = PendingRefreshes(redis_client, quiet_ms=0)
    newer = {f"u{k}": ratings(("x", 1.0)) for k in range(0, 2500, 7)}
    pending.add(newer, seq=9)
    everyone = {f"u{k}": ratings((str(k), float(k % 5))) for k in range(2500)}

    pending.add(everyone, seq=8)
    taken, _ = pending.take_due("job-1", max_users=5000)

    assert len(taken) == 2500
    for k in (0, 6, 7, 999, 1000, 1001, 2499):
        user = taken[f"u{k}"]
        if f"u{k}" in newer:
            assert (user.seq, user.item_ids) == (9, ["x"])
        else:
            assert (user.seq, user.item_ids) == (8, [str(k)])
    assert redis_client.zcard(keys.REFRESH_DUE) == 0
