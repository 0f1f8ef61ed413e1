"""Pending refreshes in Redis: at most one per user, coalesced until the user has been quiet.

The ingest consumer adds each touched user's ratings: the complete ratings, or only those
written after the watermark of the current snapshot, which contains the rest. Refresh jobs take the
users that are due. The rule, with times read from the Redis server's clock:

- A user with nothing pending becomes due `quiet_ms` after the add.
- A later add for a user who is still pending replaces the stored ratings, unless the stored
  ones carry a higher seq, and moves the due time to `quiet_ms` after this add. The due time is
  never later than `max_delay_ms` after the add that made the user pending.

So a burst of ratings whose gaps stay under `quiet_ms` ends in one refresh with the last
ratings, and a user who keeps rating is still refreshed at least every `max_delay_ms`.

A later add writes the new due time into the entry only. The sorted set keeps the earlier time
until a take reaches it, finds the user not yet due and moves them to the time in their entry.
Moving every re-added user in the sorted set cost Redis up to 2 us a user once about 100,000
users were pending, and most are taken before they are added again.

Keys (names in store/keys.py):

- REFRESH_PENDING, hash: user_id -> "<seq> <first add, ms> <due, ms>\\n<ratings>". Entries
  that earlier releases added have no due time and are due at their time in the sorted set. The
  ratings are one of:
  - "I", the count as a little-endian uint32, the stars as little-endian float32, then the item
    ids each as "<length in bytes>:<id>": the user's complete ratings;
  - "D", the base watermark as a little-endian int64, then the rest as after "I": only the
    ratings written by batches after the base, which a snapshot with that watermark completes;
  - JSON [[item_id...], [rating...]], complete ratings, which earlier releases added and this
    one still reads.
- REFRESH_DUE, sorted set: user_id -> due time in ms since the epoch, or an earlier time when a
  later add moved the due time in the entry.
- REFRESH_SCHEDULED, string with an expiry: set while a refresh job is queued or running, so the
  consumer enqueues a job only when none is.
- refresh_taken_key(job_id), hash like REFRESH_PENDING: the users a job took and has not written
  yet. A retry of the job after its worker died refreshes them first, so nothing taken is lost.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import redis
from numba import njit

from ingest.packed import send_packed
from store import keys
from store.rating_index import decode_ids, encode_ids
from store.user_rows import UserRows

# Users per call of the add script. A batch of 50,000 users in one call kept Redis from serving
# anyone else, the pushing clients included, for about 0.2 s.
ADD_CALL_USERS = 2000

# Milliseconds a pending user must be quiet before the refresh, and the longest a refresh waits.
QUIET_MS = 50
MAX_DELAY_MS = 1000
# Milliseconds REFRESH_SCHEDULED lives unless a running job renews it. When a job is lost before
# it ran (a consumer killed between the add and the enqueue), the next add after this long
# enqueues a new one.
SCHEDULED_TTL_MS = 30_000

# Shared by the scripts below: `now` in ms from the server clock, and `merge(hash, user, entry)`,
# which stores an entry unless the hash holds one for the user with a higher seq.
_PRELUDE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local function seq_of(entry)
  return tonumber(string.match(entry, '^(%d+) '))
end
local function merge(hash, user, entry)
  local stored = redis.call('HGET', hash, user)
  if stored and seq_of(stored) > seq_of(entry) then
    return false
  end
  redis.call('HSET', hash, user, entry)
  return true
end
"""

# KEYS: pending, due, scheduled. ARGV: quiet_ms, max_delay_ms, scheduled_ttl_ms, seq, then
# (user_id, body) per user. Returns 1 when it set REFRESH_SCHEDULED, so the caller must enqueue a
# job, else 0. Users go in chunks, each with one HMGET, one HSET and at most one ZADD: calls per
# user cost Redis about 8 us a user, as much as the consumer's own work per event. A user listed
# twice in one call is compared with what was stored before the call, and the later entry wins.
# Only users with nothing pending enter the sorted set here (see the module docstring).
_ADD_LUA = _PRELUDE + """
local quiet = tonumber(ARGV[1])
local max_delay = tonumber(ARGV[2])
local seq = ARGV[4]
local new_header = seq .. ' ' .. now .. ' ' .. (now + quiet) .. '\\n'
local n_users = (#ARGV - 4) / 2
local chunk = 1000
for start = 0, n_users - 1, chunk do
  local users = {}
  for k = start, math.min(n_users, start + chunk) - 1 do
    users[#users + 1] = ARGV[5 + 2 * k]
  end
  local stored = redis.call('HMGET', KEYS[1], unpack(users))
  local fields = {}
  local due = {}
  for j, user in ipairs(users) do
    local body = ARGV[6 + 2 * (start + j - 1)]
    local old = stored[j]
    if old then
      local old_seq, first = string.match(old, '^(%d+) (%d+)')
      local due_at = math.min(now + quiet, tonumber(first) + max_delay)
      local entry_seq = seq
      if tonumber(old_seq) > tonumber(seq) then
        -- The stored ratings are newer: keep them, with the new due time.
        entry_seq = old_seq
        body = string.sub(old, string.find(old, '\\n', 1, true) + 1)
      end
      fields[#fields + 1] = user
      fields[#fields + 1] = entry_seq .. ' ' .. first .. ' ' .. due_at .. '\\n' .. body
    else
      fields[#fields + 1] = user
      fields[#fields + 1] = new_header .. body
      due[#due + 1] = now + quiet
      due[#due + 1] = user
    end
  end
  redis.call('HSET', KEYS[1], unpack(fields))
  if #due > 0 then
    redis.call('ZADD', KEYS[2], unpack(due))
  end
end
if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[3]) then
  return 1
end
return 0
"""

# KEYS: pending, due, scheduled, taken. ARGV: max users, scheduled_ttl_ms. Moves up to max users
# that are due from pending to taken and returns {user_id, entry, user_id, entry, ...,
# wait_ms}. A user whose entry gives a later due time stays pending and moves to that time in the
# sorted set. wait_ms is -1 when nothing is left pending, and then REFRESH_SCHEDULED is deleted,
# so the next add enqueues a new job. Otherwise it is the time until the next user is due, which
# may be an earlier time than the user's entry gives.
_TAKE_LUA = _PRELUDE + """
local users = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local result = {}
if #users > 0 then
  local entries = redis.call('HMGET', KEYS[1], unpack(users))
  local taken = {}
  local later = {}
  for i, user in ipairs(users) do
    local entry = entries[i]
    local due_at = entry and tonumber(string.match(entry, '^%d+ %d+ (%d+)'))
    if due_at and due_at > now then
      later[#later + 1] = due_at
      later[#later + 1] = user
    else
      taken[#taken + 1] = user
      if entry then
        merge(KEYS[4], user, entry)
        result[#result + 1] = user
        result[#result + 1] = entry
      end
    end
  end
  for start = 1, #taken, 1000 do
    local stop = math.min(#taken, start + 999)
    redis.call('ZREM', KEYS[2], unpack(taken, start, stop))
    redis.call('HDEL', KEYS[1], unpack(taken, start, stop))
  end
  for start = 1, #later, 2000 do
    redis.call('ZADD', KEYS[2], unpack(later, start, math.min(#later, start + 1999)))
  end
end
local next_due = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if #next_due == 0 then
  redis.call('DEL', KEYS[3])
  result[#result + 1] = -1
else
  redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
  result[#result + 1] = math.max(0, tonumber(next_due[2]) - now)
end
return result
"""

# KEYS: pending, due, taken. Puts a failed job's taken users back as due now, unless a newer
# entry arrived meanwhile, and deletes taken. Returns the number of users put back.
_RETURN_LUA = _PRELUDE + """
local taken = redis.call('HGETALL', KEYS[3])
for i = 1, #taken, 2 do
  if merge(KEYS[1], taken[i], taken[i + 1]) then
    redis.call('ZADD', KEYS[2], now, taken[i])
  end
end
redis.call('DEL', KEYS[3])
return #taken / 2
"""


@dataclass(frozen=True)
class PendingUser:
    """A user's ratings as the consumer added them, at ingest batch `seq`.

    With `since_seq` None they are the user's complete ratings. Otherwise they are only the
    ratings written by batches after `since_seq`, and the rest are the user's training ratings
    in a snapshot whose watermark is `since_seq`.

    The item ids stay as the consumer encoded them (store.rating_index.encode_ids) in
    `encoded_ids`, which Snapshot.item_indices reads without decoding. Entries in the JSON form
    of earlier releases come with `decoded_ids` instead.
    """

    seq: int
    ratings: np.ndarray | list[float]
    encoded_ids: bytes | None = None
    decoded_ids: list[str] | None = None
    since_seq: int | None = None

    @property
    def item_ids(self) -> list[str]:
        """The item ids as strings, in the order of `ratings`."""
        if self.decoded_ids is not None:
            return self.decoded_ids
        return decode_ids(self.encoded_ids or b"")

    @property
    def item_keys(self) -> bytes | list[str]:
        """The item ids in the cheapest form Snapshot.item_indices takes."""
        return self.encoded_ids if self.encoded_ids is not None else self.item_ids


class PendingRefreshes:
    """The pending refreshes of one Redis database; see the module docstring for the rule."""

    def __init__(
        self,
        connection: redis.Redis,
        *,
        quiet_ms: int = QUIET_MS,
        max_delay_ms: int = MAX_DELAY_MS,
    ) -> None:
        if quiet_ms < 0:
            raise ValueError(f"quiet_ms: must be at least 0, got {quiet_ms}")
        if max_delay_ms < quiet_ms:
            raise ValueError(
                f"max_delay_ms: must be at least quiet_ms ({quiet_ms}), got {max_delay_ms}"
            )
        self.connection = connection
        self.quiet_ms = quiet_ms
        self.max_delay_ms = max_delay_ms
        self._add = connection.register_script(_ADD_LUA)
        self._take = connection.register_script(_TAKE_LUA)
        self._return = connection.register_script(_RETURN_LUA)

    def add(self, user_ratings: Mapping[str, tuple[np.ndarray, np.ndarray]], seq: int) -> bool:
        """Add each user's (item_ids, ratings); return True when the caller must enqueue a refresh
        job because none is queued or running.

        Given UserRows, the entries are binary, with ids encoded once per item rather than once
        per rating, and hold only the newer ratings when its `since_seq` is set. Other mappings
        must give complete ratings.
        """
        if seq < 0:
            raise ValueError(f"seq: must be at least 0, got {seq}")
        pairs: list[str | bytes] = []
        if isinstance(user_ratings, UserRows):
            for user_id, body in zip(user_ratings.user_ids, _binary_bodies(user_ratings)):
                pairs.extend((user_id, body))
        else:
            for user_id, (item_ids, ratings) in user_ratings.items():
                body = json.dumps([np.asarray(item_ids).tolist(), np.asarray(ratings, dtype=float).tolist()])
                pairs.extend((str(user_id), body))
        keys_ = [keys.REFRESH_PENDING, keys.REFRESH_DUE, keys.REFRESH_SCHEDULED]
        head = ("EVALSHA", self._add.sha, len(keys_), *keys_, self.quiet_ms, self.max_delay_ms,
                SCHEDULED_TTL_MS, int(seq))
        # One script call per ADD_CALL_USERS users, sent together: Redis serves other clients
        # between the calls instead of blocking them for a whole batch. Packed by hiredis, as
        # redis-py encoded the arguments one by one in Python.
        width = 2 * ADD_CALL_USERS
        commands = [(*head, *pairs[start : start + width]) for start in range(0, len(pairs), width)]
        try:
            replies = send_packed(self.connection, commands)
        except redis.exceptions.NoScriptError:
            # Every call failed the same way, so none ran: load the script and send them again.
            self.connection.script_load(_ADD_LUA)
            replies = send_packed(self.connection, commands)
        return any(replies)

    def take_due(self, job_id: str, max_users: int) -> tuple[dict[str, PendingUser], int]:
        """Move up to `max_users` due users into the job's taken hash and return them.

        Also returns the milliseconds until the next pending user is due, or -1 when none is
        pending any more (the job may then stop: the next add enqueues a new one).
        """
        reply = self._take(
            keys=[keys.REFRESH_PENDING, keys.REFRESH_DUE, keys.REFRESH_SCHEDULED,
                  keys.refresh_taken_key(job_id)],
            args=[max_users, SCHEDULED_TTL_MS],
        )
        wait_ms = int(reply[-1])
        return _decode_entries(reply[:-1]), wait_ms

    def taken_users(self, job_id: str) -> dict[str, PendingUser]:
        """Return the users a job took and did not finish, which a retry of the job refreshes first."""
        entries = self.connection.hgetall(keys.refresh_taken_key(job_id))
        flat: list[bytes] = []
        for user_id, entry in entries.items():
            flat.extend((user_id, entry))
        return _decode_entries(flat)

    def finish(self, job_id: str) -> None:
        """Forget the users the job took, once their states are written."""
        self.connection.delete(keys.refresh_taken_key(job_id))

    def give_back(self, job_id: str) -> int:
        """Put a failed job's taken users back as due now; return how many there were."""
        return int(self._return(
            keys=[keys.REFRESH_PENDING, keys.REFRESH_DUE, keys.refresh_taken_key(job_id)], args=[]
        ))

    def claim_schedule(self) -> bool:
        """Set REFRESH_SCHEDULED when users are pending and no job is scheduled; return whether
        it did, in which case the caller must enqueue a job."""
        if not self.connection.exists(keys.REFRESH_PENDING):
            return False
        return bool(self.connection.set(keys.REFRESH_SCHEDULED, "1", nx=True, px=SCHEDULED_TTL_MS))

    def release_schedule(self) -> None:
        """Delete REFRESH_SCHEDULED, so the next add enqueues a job."""
        self.connection.delete(keys.REFRESH_SCHEDULED)

    def count(self) -> int:
        """Return the number of users waiting for a refresh (taken ones not included)."""
        return int(self.connection.hlen(keys.REFRESH_PENDING))


# The encoded item ids of the last UserRows seen, joined: (the object array, bytes, offsets).
# The consumer's index replaces that array only when new items arrive.
_joined_ids: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


def _joined_item_ids(encoded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    global _joined_ids
    if _joined_ids is None or _joined_ids[0] is not encoded:
        offsets = np.zeros(encoded.shape[0] + 1, np.int64)
        np.cumsum([len(value) for value in encoded.tolist()], out=offsets[1:])
        data = np.frombuffer(b"".join(encoded.tolist()), np.uint8)
        _joined_ids = (encoded, data, offsets)
    return _joined_ids[1], _joined_ids[2]


def _binary_bodies(rows: UserRows) -> list[bytes]:
    """Return each user's entry body: "I" (or "D" and the base watermark as int64), the count
    (uint32), the stars (float32), the ids.

    Built for all users in one kernel call. Joining 160 ids per user in Python took 1.13 s for
    50,000 users, this takes 0.8 s (0.55 s in the kernel), most of it writing the 87 MB.
    """
    if rows.since_seq is None:
        prefix = b"I"
    else:
        prefix = b"D" + struct.pack("<q", rows.since_seq)
    encoded = rows.encoded_item_ids
    if encoded is None:
        encoded = encode_ids(rows.item_ids.tolist())
    id_data, id_offsets = _joined_item_ids(encoded)
    stars = np.ascontiguousarray(rows.ratings, dtype="<f4").view(np.uint8)
    buffer, bounds = _build_bodies(
        np.frombuffer(prefix, np.uint8), np.asarray(rows.offsets, np.int64),
        np.asarray(rows.item_idx, np.int64), stars, id_data, id_offsets,
    )
    data = buffer.tobytes()
    cuts = bounds.tolist()
    return [data[cuts[row]:cuts[row + 1]] for row in range(len(cuts) - 1)]


def warm_up() -> float:
    """Compile the entry kernel, or load it from numba's cache, on a tiny input; return the seconds."""
    started = time.perf_counter()
    rows = UserRows(["u"], np.array([0, 1]), np.zeros(1, np.int32), np.ones(1, np.float32), np.array(["i"]))
    _binary_bodies(rows)
    return time.perf_counter() - started


@njit(cache=True, nogil=True)
def _build_bodies(prefix, offsets, item_idx, star_bytes, id_data, id_offsets):
    n_users = offsets.shape[0] - 1
    header = prefix.shape[0] + 4
    total = 0
    for row in range(n_users):
        total += header + 4 * (offsets[row + 1] - offsets[row])
        for position in range(offsets[row], offsets[row + 1]):
            item = item_idx[position]
            total += id_offsets[item + 1] - id_offsets[item]
    out = np.empty(total, np.uint8)
    bounds = np.zeros(n_users + 1, np.int64)
    cursor = 0
    for row in range(n_users):
        start, stop = offsets[row], offsets[row + 1]
        count = stop - start
        for b in range(prefix.shape[0]):
            out[cursor] = prefix[b]
            cursor += 1
        for b in range(4):
            out[cursor + b] = (count >> (8 * b)) & 0xFF
        cursor += 4
        # Ids are a few bytes long, so they are copied byte by byte.
        for byte in range(4 * start, 4 * stop):
            out[cursor] = star_bytes[byte]
            cursor += 1
        for position in range(start, stop):
            item = item_idx[position]
            for byte in range(id_offsets[item], id_offsets[item + 1]):
                out[cursor] = id_data[byte]
                cursor += 1
        bounds[row + 1] = cursor
    return out, bounds


def _decode_entries(flat: list[bytes]) -> dict[str, PendingUser]:
    users: dict[str, PendingUser] = {}
    for position in range(0, len(flat), 2):
        user_id = _text(flat[position])
        entry = flat[position + 1]
        entry = entry.encode() if isinstance(entry, str) else entry
        header, _, body = entry.partition(b"\n")
        seq = int(header.split(b" ", 1)[0])
        if body[:1] in (b"I", b"D"):
            since_seq = None
            start = 1
            if body[:1] == b"D":
                (since_seq,) = struct.unpack_from("<q", body, 1)
                start = 9
            (count,) = struct.unpack_from("<I", body, start)
            start += 4
            ratings = np.frombuffer(body, dtype="<f4", count=count, offset=start).astype(np.float32)
            users[user_id] = PendingUser(
                seq, ratings, encoded_ids=body[start + 4 * count:], since_seq=since_seq
            )
        else:
            item_ids, ratings = json.loads(body)
            users[user_id] = PendingUser(seq, ratings, decoded_ids=item_ids)
    return users


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
