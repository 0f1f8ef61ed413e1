"""An in-memory copy of the ratings table, kept by the process that owns the database.

With it, a batch of events finds the stored rating of each (user, item) pair and every touched
user's complete ratings without a query, so the database only receives appended rows. At 32M
ratings, a lookup through DuckDB's primary key or a join of the batch with the whole table cost
0.1 to 1 s per batch. Here a batch costs microseconds per event.

Layout:

- a CSR matrix by user, built at load time: `indptr`, and per rating `items` (sorted within each
  user), `stars`, `times` and `seqs` (the batch that last wrote the rating, as `updated_seq`);
- pairs added since then ("extra" pairs) in growable arrays, found by a hash of the pair and
  chained per user (`head[user]`, `next[extra]`) so a user's extras can be listed;
- external id maps for users and items.

Updates overwrite the stars and time in place, wherever the pair lives. When the extras reach a
share of the CSR, both are merged into a new CSR.

Memory: 24 bytes per rating in the CSR (4 item, 4 stars, 8 time, 8 seq), plus about 70 per extra
pair.
A merge briefly needs two CSR copies.
"""

from __future__ import annotations

import itertools
import logging
import time

import numba
import numpy as np
from numba import types
from numba.typed import Dict

log = logging.getLogger(__name__)

# Extras are merged into the CSR when they exceed this share of it, or this count when larger.
MERGE_SHARE = 0.05
MERGE_MIN = 200_000
# While most extras are newer than `keep_after`, the merge waits until they reach this many
# times the threshold above.
MERGE_DEFER_LIMIT = 2

# Maximum extras of one row that are inserted one by one into its sorted CSR part. A row with
# more is sorted whole, because each insertion shifts the items after it.
INSERT_EXTRAS_MAX = 32

# Location code of a pair without a rating. decide() gives other pairs as an index into the
# CSR arrays, or as -2 - e for extra pair e.
NOT_STORED = -1


def pair_key(user: np.ndarray | int, item: np.ndarray | int):
    """Return one int64 per (user, item) pair: the user in the high 32 bits, the item in the low."""
    return (np.asarray(user, dtype=np.int64) << 32) | np.asarray(item, dtype=np.int64)


@numba.njit(cache=True)
def _find_in_row(items, start, stop, item):
    """Find `item` in the sorted slice items[start:stop] by binary search; return its index or -1."""
    low, high = start, stop
    while low < high:
        middle = (low + high) // 2
        if items[middle] < item:
            low = middle + 1
        else:
            high = middle
    if low < stop and items[low] == item:
        return low
    return -1


@numba.njit(cache=True)
def _decide(users, items_in, times_in, indptr, items, times, extra_of, extra_times):
    """Locate each incoming pair and decide whether it replaces the stored rating.

    A rating wins when nothing is stored for its pair or its time is not older than the stored
    one: incoming events always belong to a later batch, and a later batch wins a tie.
    """
    n = users.shape[0]
    n_csr_users = indptr.shape[0] - 1
    where = np.full(n, -1, dtype=np.int64)
    wins = np.ones(n, dtype=np.bool_)
    for k in range(n):
        user, item = users[k], items_in[k]
        found = -1
        if user < n_csr_users:
            found = _find_in_row(items, indptr[user], indptr[user + 1], item)
        if found >= 0:
            where[k] = found
            wins[k] = times_in[k] >= times[found]
            continue
        key = (np.int64(user) << 32) | np.int64(item)
        if key in extra_of:
            extra = extra_of[key]
            where[k] = -2 - extra
            wins[k] = times_in[k] >= extra_times[extra]
    return where, wins


@numba.njit(cache=True)
def _store(where, users, items_in, stars_in, times_in, seq, stars, times, seqs, row_max_seq, extra_of,
           head, next_extra, extra_users, extra_items, extra_stars, extra_times, extra_seqs, n_extra):
    """Write winning ratings of batch `seq`: overwrite stored pairs, append new ones as extras;
    return n_extra.

    The extra arrays and `head` must have room for every new pair and user.
    """
    for k in range(where.shape[0]):
        location = where[k]
        if location >= 0:
            stars[location] = stars_in[k]
            times[location] = times_in[k]
            seqs[location] = seq
            row_max_seq[users[k]] = max(row_max_seq[users[k]], seq)
        elif location <= -2:
            extra = -2 - location
            extra_stars[extra] = stars_in[k]
            extra_times[extra] = times_in[k]
            extra_seqs[extra] = seq
        else:
            user = users[k]
            extra_users[n_extra] = user
            extra_items[n_extra] = items_in[k]
            extra_stars[n_extra] = stars_in[k]
            extra_times[n_extra] = times_in[k]
            extra_seqs[n_extra] = seq
            next_extra[n_extra] = head[user]
            head[user] = n_extra
            extra_of[(np.int64(user) << 32) | np.int64(items_in[k])] = n_extra
            n_extra += 1
    return n_extra


@numba.njit(cache=True)
def _row_lengths(users, indptr, head, next_extra):
    lengths = np.zeros(users.shape[0], dtype=np.int64)
    n_csr_users = indptr.shape[0] - 1
    for k in range(users.shape[0]):
        user = users[k]
        if user < n_csr_users:
            lengths[k] = indptr[user + 1] - indptr[user]
        extra = head[user]
        while extra >= 0:
            lengths[k] += 1
            extra = next_extra[extra]
    return lengths


@numba.njit(cache=True)
def _gather(users, offsets, indptr, items, stars, times, seqs, head, next_extra,
            extra_items, extra_stars, extra_times, extra_seqs):
    """Copy each user's complete ratings into one row of a new CSR, sorted by item."""
    total = offsets[-1]
    out_items = np.empty(total, dtype=np.int32)
    out_stars = np.empty(total, dtype=np.float32)
    out_times = np.empty(total, dtype=np.int64)
    out_seqs = np.empty(total, dtype=np.int64)
    n_csr_users = indptr.shape[0] - 1
    for k in range(users.shape[0]):
        user = users[k]
        position = offsets[k]
        if user < n_csr_users:
            for source in range(indptr[user], indptr[user + 1]):
                out_items[position] = items[source]
                out_stars[position] = stars[source]
                out_times[position] = times[source]
                out_seqs[position] = seqs[source]
                position += 1
        extra = head[user]
        if extra < 0:
            continue
        row_start = offsets[k]
        few_extras = offsets[k + 1] - position <= INSERT_EXTRAS_MAX
        while extra >= 0:
            item = extra_items[extra]
            slot = position
            # The row so far is sorted when extras are inserted one by one into place.
            while few_extras and slot > row_start and out_items[slot - 1] > item:
                out_items[slot] = out_items[slot - 1]
                out_stars[slot] = out_stars[slot - 1]
                out_times[slot] = out_times[slot - 1]
                out_seqs[slot] = out_seqs[slot - 1]
                slot -= 1
            out_items[slot] = item
            out_stars[slot] = extra_stars[extra]
            out_times[slot] = extra_times[extra]
            out_seqs[slot] = extra_seqs[extra]
            position += 1
            extra = next_extra[extra]
        if not few_extras:
            row = slice(row_start, offsets[k + 1])
            order = np.argsort(out_items[row], kind="mergesort")
            out_items[row] = out_items[row][order]
            out_stars[row] = out_stars[row][order]
            out_times[row] = out_times[row][order]
            out_seqs[row] = out_seqs[row][order]
    return out_items, out_stars, out_times, out_seqs


@numba.njit(cache=True)
def _gather_since(users, since, indptr, items, stars, seqs, row_max_seq, head, next_extra,
                  extra_items, extra_stars, extra_seqs):
    """Copy each user's ratings written by a batch after `since` into one row of a new CSR.

    The stored part of a row comes first, in item order, then the extras in the order of their
    chain, so rows are not sorted by item. The stored part is scanned only when its largest seq
    (row_max_seq) is above `since`. Returns (offsets, items, stars).
    """
    n_csr_users = indptr.shape[0] - 1
    offsets = np.zeros(users.shape[0] + 1, dtype=np.int64)
    for k in range(users.shape[0]):
        user = users[k]
        count = 0
        if user < n_csr_users and row_max_seq[user] > since:
            for source in range(indptr[user], indptr[user + 1]):
                if seqs[source] > since:
                    count += 1
        extra = head[user]
        while extra >= 0:
            if extra_seqs[extra] > since:
                count += 1
            extra = next_extra[extra]
        offsets[k + 1] = offsets[k] + count

    out_items = np.empty(offsets[-1], dtype=np.int32)
    out_stars = np.empty(offsets[-1], dtype=np.float32)
    for k in range(users.shape[0]):
        user = users[k]
        position = offsets[k]
        if user < n_csr_users and row_max_seq[user] > since:
            for source in range(indptr[user], indptr[user + 1]):
                if seqs[source] > since:
                    out_items[position] = items[source]
                    out_stars[position] = stars[source]
                    position += 1
        extra = head[user]
        while extra >= 0:
            if extra_seqs[extra] > since:
                out_items[position] = extra_items[extra]
                out_stars[position] = extra_stars[extra]
                position += 1
            extra = next_extra[extra]
    return offsets, out_items, out_stars


@numba.njit(cache=True)
def _row_max(indptr, values):
    """Return each CSR row's largest value, or -1 for an empty row."""
    n_rows = indptr.shape[0] - 1
    result = np.full(n_rows, -1, dtype=np.int64)
    for row in range(n_rows):
        for position in range(indptr[row], indptr[row + 1]):
            result[row] = max(result[row], values[position])
    return result


@numba.njit(cache=True)
def _csr_from_rows(user_idx, item_idx, stars_in, times_in, seqs_in, n_users):
    """Group rows by user in linear time, then sort each row by item where it is not sorted."""
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    for user in user_idx:
        indptr[user + 1] += 1
    for user in range(n_users):
        indptr[user + 1] += indptr[user]
    fill = indptr[:-1].copy()
    n = user_idx.shape[0]
    items = np.empty(n, dtype=np.int32)
    stars = np.empty(n, dtype=np.float32)
    times = np.empty(n, dtype=np.int64)
    seqs = np.empty(n, dtype=np.int64)
    for k in range(n):
        position = fill[user_idx[k]]
        items[position] = item_idx[k]
        stars[position] = stars_in[k]
        times[position] = times_in[k]
        seqs[position] = seqs_in[k]
        fill[user_idx[k]] += 1
    for user in range(n_users):
        start, stop = indptr[user], indptr[user + 1]
        in_order = True
        for position in range(start + 1, stop):
            if items[position] < items[position - 1]:
                in_order = False
                break
        if not in_order:
            order = np.argsort(items[start:stop], kind="mergesort")
            items[start:stop] = items[start:stop][order]
            stars[start:stop] = stars[start:stop][order]
            times[start:stop] = times[start:stop][order]
            seqs[start:stop] = seqs[start:stop][order]
    return indptr, items, stars, times, seqs


def encode_ids(ids: list[str]) -> np.ndarray:
    """Encode each id as bytes "<length in bytes>:<id>", so ids can be joined without a separator."""
    encoded = np.empty(len(ids), dtype=object)
    for position, text in enumerate(ids):
        data = str(text).encode()
        encoded[position] = b"%d:%s" % (len(data), data)
    return encoded


def decode_ids(data: bytes) -> list[str]:
    """Split bytes joined from encode_ids back into ids."""
    ids = []
    position = 0
    while position < len(data):
        colon = data.index(b":", position)
        stop = colon + 1 + int(data[position:colon])
        ids.append(data[colon + 1:stop].decode())
        position = stop
    return ids


def _new_extra_map():
    return Dict.empty(key_type=types.int64, value_type=types.int64)


def warm_up() -> float:
    """Compile the kernels, or load them from numba's cache, on tiny inputs; return the seconds."""
    started = time.perf_counter()
    index = RatingIndex.from_columns(
        ["u"], ["i", "j"], np.zeros(1, np.int32), np.zeros(1, np.int32),
        np.ones(1, np.float32), np.zeros(1, np.int64),
    )
    users, items, times = np.zeros(1, np.int32), np.ones(1, np.int32), np.ones(1, np.int64)
    where, _ = index.decide(users, items, times)
    index.store(where, users, items, np.ones(1, np.float32), times, 1)
    index.user_rows(np.zeros(1, np.int64))
    index.user_rows_since(np.zeros(1, np.int64), 0)
    return time.perf_counter() - started


class RatingIndex:
    """Every stored rating by user, plus the id maps; see the module docstring."""

    def __init__(
        self,
        user_ids: list[str],
        item_ids: list[str],
        indptr: np.ndarray,
        items: np.ndarray,
        stars: np.ndarray,
        times: np.ndarray,
        seqs: np.ndarray,
    ) -> None:
        self.user_ids = list(user_ids)
        self.item_ids = list(item_ids)
        self._user_of = {user_id: idx for idx, user_id in enumerate(self.user_ids)}
        self._item_of = {item_id: idx for idx, item_id in enumerate(self.item_ids)}
        self._item_id_array = np.asarray(self.item_ids, dtype=object)
        self._encoded_ids = encode_ids(self.item_ids)
        # Set by the consumer to the watermark its refresh entries are relative to: extras newer
        # than it are kept out of a merge while they are most of the extras (_defer_merge).
        self.keep_after: int | None = None
        self._set_csr(indptr, items, stars, times, seqs)

    @classmethod
    def from_columns(
        cls,
        user_ids: list[str],
        item_ids: list[str],
        user_idx: np.ndarray,
        item_idx: np.ndarray,
        stars: np.ndarray,
        times: np.ndarray,
        seqs: np.ndarray | None = None,
    ) -> RatingIndex:
        """Build from one row per rating (user_idx, item_idx, stars, time, seq), in any order.

        `seqs` gives the batch that wrote each rating (the ratings table's updated_seq); 0 for
        all when None.
        """
        if seqs is None:
            seqs = np.zeros(np.shape(stars)[0], dtype=np.int64)
        csr = _csr_from_rows(
            np.ascontiguousarray(user_idx, dtype=np.int32), np.ascontiguousarray(item_idx, dtype=np.int32),
            np.ascontiguousarray(stars, dtype=np.float32), np.ascontiguousarray(times, dtype=np.int64),
            np.ascontiguousarray(seqs, dtype=np.int64), len(user_ids),
        )
        return cls(user_ids, item_ids, *csr)

    def _set_csr(self, indptr, items, stars, times, seqs) -> None:
        self._indptr, self._items, self._stars, self._times, self._seqs = indptr, items, stars, times, seqs
        # Per user, the largest seq in the CSR part, so user_rows_since skips rows with none newer.
        self._row_max_seq = _row_max(indptr, seqs)
        capacity = 1024
        self._extra_users = np.empty(capacity, dtype=np.int32)
        self._extra_items = np.empty(capacity, dtype=np.int32)
        self._extra_stars = np.empty(capacity, dtype=np.float32)
        self._extra_times = np.empty(capacity, dtype=np.int64)
        self._extra_seqs = np.empty(capacity, dtype=np.int64)
        self._next_extra = np.empty(capacity, dtype=np.int64)
        self._n_extra = 0
        self._extra_of = _new_extra_map()
        self._head = np.full(max(len(self.user_ids), 1024), -1, dtype=np.int64)

    # -- sizes ---------------------------------------------------------------------------------

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_ratings(self) -> int:
        return int(self._indptr[-1]) + self._n_extra

    # -- ids -----------------------------------------------------------------------------------

    def user_indices(self, user_ids: list[str]) -> tuple[np.ndarray, list[str]]:
        """Map user ids to indices, giving unseen ones the next indices in order of appearance.

        Returns the indices and the new ids. The new ids are not kept until add_ids is called.
        """
        return _indices(user_ids, self._user_of, len(self.user_ids))

    def item_indices(self, item_ids: list[str]) -> tuple[np.ndarray, list[str]]:
        """As user_indices, for items."""
        return _indices(item_ids, self._item_of, len(self.item_ids))

    def add_ids(self, new_user_ids: list[str], new_item_ids: list[str]) -> None:
        """Keep ids that user_indices and item_indices gave out, once they are stored."""
        for user_id in new_user_ids:
            self._user_of[user_id] = len(self.user_ids)
            self.user_ids.append(user_id)
        if new_item_ids:
            for item_id in new_item_ids:
                self._item_of[item_id] = len(self.item_ids)
                self.item_ids.append(item_id)
            self._item_id_array = np.asarray(self.item_ids, dtype=object)
            self._encoded_ids = np.concatenate([self._encoded_ids, encode_ids(new_item_ids)])
        if len(self.user_ids) > self._head.shape[0]:
            grown = np.full(2 * len(self.user_ids), -1, dtype=np.int64)
            grown[: self._head.shape[0]] = self._head
            self._head = grown

    def item_id_array(self) -> np.ndarray:
        """Item ids as an object array indexed by item_idx."""
        return self._item_id_array

    def encoded_item_ids(self) -> np.ndarray:
        """Item ids encoded by encode_ids, indexed by item_idx."""
        return self._encoded_ids

    # -- ratings -------------------------------------------------------------------------------

    def decide(self, users: np.ndarray, items: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Locate pairs (one event per pair) and decide which incoming ratings win, changing nothing.

        Returns (where, wins): where is NOT_STORED for a pair without a rating.
        """
        return _decide(
            np.ascontiguousarray(users, dtype=np.int32), np.ascontiguousarray(items, dtype=np.int32),
            np.ascontiguousarray(times, dtype=np.int64), self._indptr, self._items, self._times,
            self._extra_of, self._extra_times,
        )

    def store(self, where: np.ndarray, users: np.ndarray, items: np.ndarray, stars: np.ndarray,
              times: np.ndarray, seq: int) -> None:
        """Write winning ratings located by decide(); call after the database committed them.

        Users must already have indices (add_ids). `seq` is the batch that wrote them.
        """
        new_pairs = int(np.count_nonzero(where == NOT_STORED))
        self._reserve(self._n_extra + new_pairs)
        self._n_extra = _store(
            where, np.ascontiguousarray(users, dtype=np.int32),
            np.ascontiguousarray(items, dtype=np.int32),
            np.ascontiguousarray(stars, dtype=np.float32),
            np.ascontiguousarray(times, dtype=np.int64), np.int64(seq),
            self._stars, self._times, self._seqs, self._row_max_seq, self._extra_of, self._head,
            self._next_extra,
            self._extra_users, self._extra_items, self._extra_stars, self._extra_times,
            self._extra_seqs, self._n_extra,
        )
        threshold = max(MERGE_MIN, MERGE_SHARE * int(self._indptr[-1]))
        if self._n_extra > threshold and not self._defer_merge(threshold):
            self.merge_extras()

    def user_rows(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (offsets, items, stars): each user's complete ratings as one CSR row, by item."""
        offsets, items, stars, _, _ = self._rows(np.ascontiguousarray(users, dtype=np.int64))
        return offsets, items, stars

    def user_rows_since(self, users: np.ndarray, since: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (offsets, items, stars): each user's ratings written by a batch after `since`.

        Rows are not sorted by item.
        """
        return _gather_since(
            np.ascontiguousarray(users, dtype=np.int64), np.int64(since), self._indptr, self._items,
            self._stars, self._seqs, self._row_max_seq, self._head, self._next_extra,
            self._extra_items, self._extra_stars, self._extra_seqs,
        )

    def _defer_merge(self, threshold: float) -> bool:
        """Return whether to keep the extras unmerged for now, because most are newer than keep_after.

        user_rows_since(keep_after) reads a user's extras only, unless the user's CSR row has a
        rating newer than keep_after. Merged, those ratings sit inside rows of about 160 at 32M,
        and every touched row was read whole: 0.1 s per 50,000 users.
        """
        if self.keep_after is None or self._n_extra > MERGE_DEFER_LIMIT * threshold:
            return False
        newer = int(np.count_nonzero(self._extra_seqs[: self._n_extra] > self.keep_after))
        return 2 * newer > self._n_extra

    def merge_extras(self) -> None:
        """Fold the extra pairs into a new CSR, so lookups stay binary searches."""
        started = time.perf_counter()
        merged = self._n_extra
        self._set_csr(*self._rows(np.arange(len(self.user_ids), dtype=np.int64)))
        log.info("rating index merged extra_pairs=%d ratings=%d seconds=%.2f",
                 merged, self.n_ratings, time.perf_counter() - started)

    def _rows(self, users: np.ndarray) -> tuple[np.ndarray, ...]:
        lengths = _row_lengths(users, self._indptr, self._head, self._next_extra)
        offsets = np.zeros(users.shape[0] + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        items, stars, times, seqs = _gather(
            users, offsets, self._indptr, self._items, self._stars, self._times, self._seqs,
            self._head, self._next_extra, self._extra_items, self._extra_stars, self._extra_times,
            self._extra_seqs,
        )
        return offsets, items, stars, times, seqs

    def _reserve(self, count: int) -> None:
        capacity = self._extra_users.shape[0]
        if count <= capacity:
            return
        capacity = max(count, 2 * capacity)
        for name in ("_extra_users", "_extra_items", "_extra_stars", "_extra_times", "_extra_seqs",
                     "_next_extra"):
            old = getattr(self, name)
            grown = np.empty(capacity, dtype=old.dtype)
            grown[: self._n_extra] = old[: self._n_extra]
            setattr(self, name, grown)


def _indices(ids: list[str], known: dict[str, int], next_index: int) -> tuple[np.ndarray, list[str]]:
    # map() looks the ids up in C, and only the unknown ones (-1) go through the Python loop. A
    # loop over every id cost 1.4 us an id, 14% of the consumer's time at 32M ratings.
    result = np.fromiter(map(known.get, ids, itertools.repeat(-1)), dtype=np.int32, count=len(ids))
    new: dict[str, int] = {}
    for position in np.flatnonzero(result < 0).tolist():
        external = ids[position]
        index = new.get(external)
        if index is None:
            index = next_index + len(new)
            new[external] = index
        result[position] = index
    return result, list(new)
