"""Per-user data in Redis: precomputed top-N lists and refolded user state.

Key layout (also documented in docs/ARCHITECTURE.md for clients in other languages):

- `streamrec:recs:<user_id>`: sorted set of item ids scored by ranking score, higher is better.
- `streamrec:user:<user_id>`: hash with `version` and `seq` (decimal integers), `bias` (decimal
  float), `factors` (little-endian float32 bytes) and `seen` (little-endian int32 item_idx bytes,
  ascending).

A user's state and list are written together by one Lua script that first compares (version,
seq) with the stored pair, so a refresh computed against older data never replaces a newer one.
The clients passed here must return bytes (the redis-py default, not `decode_responses=True`),
because `factors` and `seen` are binary.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import redis
from redis.client import Pipeline

from store import keys
from store.list_payload import (
    MemberEntries,
    forget_restore_support,
    restore_supported,
    sorted_set_payloads,
)

log = logging.getLogger(__name__)

FACTORS_DTYPE = np.dtype("<f4")
SEEN_DTYPE = np.dtype("<i4")

# KEYS[1] user state hash, KEYS[2] top-N sorted set. ARGV: version, seq, bias, factors, seen,
# then how the list comes:
# - "0": no list, the stored one stays;
# - "1": the item ids as "<length in bytes>:<id>" one after another, then their scores joined by
#   single spaces. Packing the list into two arguments costs Redis and redis-py one argument each
#   instead of two per item. Scores stay strings, so Redis parses them as Python formatted them;
# - "2": the list as a DUMP payload (store/list_payload.py), or "" for an empty list.
# Returns 1 when it wrote, 0 when the stored (version, seq) is newer. The list goes first: Redis
# keeps a script's writes made before a command fails, and a rejected RESTORE must not leave a
# new state beside the old list.
_WRITE_USER_STATE_LUA = """
local stored = redis.call('HMGET', KEYS[1], 'version', 'seq')
local version = tonumber(ARGV[1])
local seq = tonumber(ARGV[2])
if stored[1] then
  local stored_version = tonumber(stored[1])
  local stored_seq = tonumber(stored[2]) or -1
  if version < stored_version or (version == stored_version and seq < stored_seq) then
    return 0
  end
end
if ARGV[6] == '2' then
  if ARGV[7] == '' then
    redis.call('DEL', KEYS[2])
  else
    redis.call('RESTORE', KEYS[2], 0, ARGV[7], 'REPLACE')
  end
elseif ARGV[6] == '1' then
  redis.call('DEL', KEYS[2])
  local ids = ARGV[7]
  local pairs = {}
  local position = 1
  for score in string.gmatch(ARGV[8], '%S+') do
    local colon = string.find(ids, ':', position, true)
    local length = tonumber(string.sub(ids, position, colon - 1))
    pairs[#pairs + 1] = score
    pairs[#pairs + 1] = string.sub(ids, colon + 1, colon + length)
    position = colon + length + 1
  end
  if #pairs > 0 then
    redis.call('ZADD', KEYS[2], unpack(pairs))
  end
end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'seq', ARGV[2], 'bias', ARGV[3],
           'factors', ARGV[4], 'seen', ARGV[5])
return 1
"""


@dataclass(frozen=True)
class UserState:
    """A refolded user as stored in Redis: the snapshot version and ingest seq it was computed at."""

    version: int
    seq: int
    bias: float
    factors: np.ndarray  # float32 (K,)
    seen_idx: np.ndarray  # int32 item_idx, ascending


def read_list(client: redis.Redis, user_id: str, n: int) -> list[tuple[str, float]]:
    """Return up to `n` (item_id, score) pairs of the user's precomputed list, best first.

    Equal scores come in descending item id order (the Redis ZREVRANGE order). A user without a
    list gets an empty list.
    """
    if n < 1:
        raise ValueError(f"n: must be at least 1, got {n}")
    pairs = client.zrevrange(keys.recs_key(user_id), 0, n - 1, withscores=True)
    return [(_text(member), float(score)) for member, score in pairs]


def write_list(
    client: redis.Redis | Pipeline, user_id: str, item_ids: Sequence[str], scores: Sequence[float]
) -> None:
    """Replace the user's list with `item_ids` scored by `scores` (any order).

    Given a client, DEL and ZADD run in one MULTI/EXEC transaction, so readers see the old list
    or the new one. Given a pipeline, they are only queued and the caller executes it (atomically
    only when the pipeline is transactional). An empty `item_ids` deletes the list.
    """
    mapping = _list_mapping(item_ids, scores)
    key = keys.recs_key(user_id)
    if isinstance(client, Pipeline):
        _queue_list_write(client, key, mapping)
        return
    with client.pipeline(transaction=True) as pipeline:
        _queue_list_write(pipeline, key, mapping)
        pipeline.execute()


def write_user_state(
    client: redis.Redis,
    user_id: str,
    version: int,
    seq: int,
    bias: float,
    factors: np.ndarray,
    seen_idx: np.ndarray,
    item_ids: Sequence[str] | None = None,
    scores: Sequence[float] | None = None,
) -> bool:
    """Store a refolded user, and optionally their list, unless a newer state is stored.

    `version` is the snapshot the user was folded into and `seq` the ingest batch number their
    ratings are complete up to. The write happens only when (version, seq) >= the stored pair,
    compared lexicographically, and it replaces the list in the same step when `item_ids` and
    `scores` are given. Returns whether it wrote. The check and the write run in one Lua script,
    so concurrent refreshes cannot interleave between them.
    """
    args = _state_args(version, seq, bias, factors, seen_idx)
    if item_ids is None and scores is None:
        args.extend(("0", "", ""))
    elif item_ids is None or scores is None:
        raise ValueError("item_ids and scores: pass both or neither")
    else:
        mapping = _list_mapping(item_ids, scores)
        args.append("1")
        args.append("".join(_pack_id(item_id) for item_id in mapping))
        args.append(" ".join(repr(score) for score in mapping.values()))

    script = client.register_script(_WRITE_USER_STATE_LUA)
    written = bool(script(keys=[keys.user_key(user_id), keys.recs_key(user_id)], args=args))
    if not written:
        log.debug("user state stale, not written user_id=%s version=%d seq=%d", user_id, version, seq)
    return written


def read_user_state(client: redis.Redis, user_id: str) -> UserState | None:
    """Return the user's refolded state, or None when none is stored.

    Raises ValueError naming the key and field when the stored hash is malformed.
    """
    key = keys.user_key(user_id)
    version, seq, bias, factors, seen = client.hmget(key, "version", "seq", "bias", "factors", "seen")
    if version is None:
        return None
    if seq is None or bias is None or factors is None or seen is None:
        raise ValueError(f"{key}: incomplete user state, expected fields version, seq, bias, factors and seen")
    if isinstance(factors, str) or isinstance(seen, str):
        raise ValueError(
            f"{key}: factors and seen came back as text. Use a Redis client without "
            "decode_responses=True"
        )
    if len(factors) % FACTORS_DTYPE.itemsize or len(seen) % SEEN_DTYPE.itemsize:
        raise ValueError(
            f"{key}: factors ({len(factors)} bytes) and seen ({len(seen)} bytes) must be whole "
            "4-byte values"
        )
    try:
        state = UserState(
            version=int(_text(version)),
            seq=int(_text(seq)),
            bias=float(_text(bias)),
            factors=np.frombuffer(factors, dtype=FACTORS_DTYPE).astype(np.float32),
            seen_idx=np.frombuffer(seen, dtype=SEEN_DTYPE).astype(np.int32),
        )
    except ValueError as exc:
        raise ValueError(f"{key}: invalid user state: {exc}") from None
    if not (math.isfinite(state.bias) and np.isfinite(state.factors).all()):
        raise ValueError(f"{key}: bias and factors must be finite")
    return state


def _state_args(
    version: int, seq: int, bias: float, factors: np.ndarray, seen_idx: np.ndarray
) -> list[str | bytes]:
    if version < 1:
        raise ValueError(f"version: must be at least 1, got {version}")
    if seq < 0:
        raise ValueError(f"seq: must be at least 0, got {seq}")
    if not math.isfinite(bias):
        raise ValueError(f"bias: must be finite, got {bias}")
    factors = np.asarray(factors)
    if factors.ndim != 1 or not np.isfinite(factors).all():
        raise ValueError(f"factors: must be a finite 1-D array, got shape {factors.shape}")
    seen_idx = np.asarray(seen_idx)
    if seen_idx.ndim != 1 or (seen_idx.size and seen_idx.min() < 0):
        raise ValueError(
            f"seen_idx: must be a 1-D array of non-negative item_idx, got shape {seen_idx.shape} "
            f"min {seen_idx.min() if seen_idx.size else None}"
        )
    return [
        str(int(version)),
        str(int(seq)),
        repr(float(bias)),
        factors.astype(FACTORS_DTYPE).tobytes(),
        np.sort(seen_idx).astype(SEEN_DTYPE).tobytes(),
    ]


def _list_mapping(item_ids: Sequence[str], scores: Sequence[float]) -> dict[str, float]:
    if len(item_ids) != len(scores):
        raise ValueError(
            f"item_ids and scores: must have the same length, got {len(item_ids)} and {len(scores)}"
        )
    mapping = {}
    for item_id, score in zip(item_ids, scores):
        score = float(score)
        if not math.isfinite(score):
            raise ValueError(f"scores: must be finite, got {score} for item_id={item_id}")
        mapping[str(item_id)] = score
    if len(mapping) != len(item_ids):
        raise ValueError("item_ids: must be distinct")
    return mapping


def _queue_list_write(pipeline: Pipeline, key: str, mapping: dict[str, float]) -> None:
    pipeline.delete(key)
    if mapping:
        pipeline.zadd(key, mapping)


# The packed ids and the listpack entries of the last item_ids array seen, since a worker writes
# many batches against one snapshot: (the array itself, its packed ids or entries).
_packed_cache: tuple[np.ndarray, np.ndarray] | None = None
_members_cache: tuple[np.ndarray, MemberEntries | None] | None = None


def _member_entries(item_ids: np.ndarray) -> MemberEntries | None:
    """Return the listpack entries of a snapshot's item ids, or None when one is too long."""
    global _members_cache
    if _members_cache is not None and _members_cache[0] is item_ids:
        return _members_cache[1]
    try:
        members = MemberEntries(item_ids)
    except ValueError as exc:
        log.warning("lists written with ZADD, an item id does not fit a listpack entry error=%s", exc)
        members = None
    _members_cache = (item_ids, members)
    return members


def _packed_item_ids(item_ids: np.ndarray) -> np.ndarray:
    """Return each item id as "<length in bytes>:<id>", the form the packed write script parses."""
    global _packed_cache
    if _packed_cache is not None and _packed_cache[0] is item_ids:
        return _packed_cache[1]
    packed = np.empty(item_ids.shape[0], dtype=object)
    for index, item_id in enumerate(item_ids.tolist()):
        packed[index] = _pack_id(str(item_id))
    _packed_cache = (item_ids, packed)
    return packed


def _pack_id(item_id: str) -> str:
    return f"{len(item_id.encode())}:{item_id}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def write_users(
    client: redis.Redis,
    snapshot,
    *,
    user_ids: Sequence[str],
    seq: int | Sequence[int],
    biases: np.ndarray,
    factors: np.ndarray,
    seen: Sequence[np.ndarray],
    list_idx: np.ndarray,
    list_scores: np.ndarray,
) -> int:
    """Write many users' states and lists in one pipeline, each guarded like write_user_state.

    `seq` is one ingest batch number for all users or one per user. `list_idx` contains item
    indices of `snapshot` (-1 for padding) and `list_scores` their scores. Returns the number of
    users written; the others had a newer state stored already.
    """
    seqs = [int(seq)] * len(user_ids) if isinstance(seq, (int, np.integer)) else [int(s) for s in seq]
    if len(seqs) != len(user_ids):
        raise ValueError(f"seq: expected one per user ({len(user_ids)}), got {len(seqs)}")
    script = client.register_script(_WRITE_USER_STATE_LUA)
    _check_lists(user_ids, list_idx, list_scores, snapshot.item_ids.shape[0])
    # Lists go as RESTORE payloads where the server takes them, else as packed ids for ZADD.
    members = _member_entries(snapshot.item_ids) if restore_supported(client) else None
    payloads = sorted_set_payloads(members, list_idx, list_scores) if members is not None else None
    packed_ids = _packed_item_ids(snapshot.item_ids) if payloads is None else None
    with client.pipeline(transaction=False) as pipeline:
        for row, user_id in enumerate(user_ids):
            args = _state_args(snapshot.version, seqs[row], float(biases[row]), factors[row], seen[row])
            if payloads is not None:
                args.extend(("2", payloads[row]))
            else:
                listed = list_idx[row]
                listed = listed[listed >= 0]
                args.append("1")
                args.append("".join(packed_ids[listed]))
                args.append(" ".join(map(repr, list_scores[row][: listed.shape[0]].tolist())))
            script(keys=[keys.user_key(user_id), keys.recs_key(user_id)], args=args, client=pipeline)
        try:
            results = pipeline.execute()
        except redis.ResponseError:
            if payloads is not None:
                # The server may have changed under the pool (a failover to one that rejects
                # RESTORE); the next batch probes it again.
                forget_restore_support(client)
            raise
    written = sum(1 for result in results if result)
    if written < len(user_ids):
        log.info("stale user states skipped users=%d version=%d max_seq=%d",
                 len(user_ids) - written, snapshot.version, max(seqs))
    return written


def _check_lists(user_ids: Sequence[str], list_idx: np.ndarray, list_scores: np.ndarray, n_items: int) -> None:
    """Raise ValueError naming the user unless each row lists distinct items of the snapshot,
    padded with -1 only at its end, with finite scores."""
    if list_idx.shape != list_scores.shape or list_idx.shape[0] != len(user_ids):
        raise ValueError(
            f"list_idx, list_scores: must both have shape ({len(user_ids)}, n), "
            f"got {list_idx.shape} and {list_scores.shape}"
        )
    if list_idx.size == 0:
        return
    listed = list_idx >= 0
    problems = [
        ("item index outside the snapshot", (list_idx >= n_items) | (list_idx < -1)),
        ("-1 before a listed item", listed[:, 1:] & ~listed[:, :-1]),
        ("score not finite", listed & ~np.isfinite(list_scores)),
    ]
    # Padding gets distinct negative values, so only a repeated item makes equal neighbours.
    padded = np.where(listed, list_idx, -1 - np.arange(list_idx.shape[1]))
    ordered = np.sort(padded, axis=1)
    problems.append(("item listed twice", ordered[:, 1:] == ordered[:, :-1]))
    for problem, bad in problems:
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise ValueError(f"list_idx: {problem} for user_id={user_ids[row]}: {list_idx[row].tolist()[:20]}")
