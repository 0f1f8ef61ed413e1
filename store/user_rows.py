"""Several users' ratings as one CSR block, the form in which refreshes are handed on."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np


class UserRows(Mapping):
    """Users' ratings: row r contains user_ids[r]'s item_idx and stars.

    With `since_seq` None a row contains the user's complete ratings, by ascending item_idx.
    Otherwise it contains only the ratings written by a batch numbered above `since_seq`, in no
    particular order: what a refresh adds to a snapshot whose watermark is `since_seq`.

    As a mapping, `rows[user_id]` gives (item ids, float32 stars), the form Database.user_ratings
    returns. Code that can work with dense item indices reads `offsets`, `item_idx` and
    `ratings` directly and skips turning millions of indices into id strings.
    """

    def __init__(
        self,
        user_ids: list[str],
        offsets: np.ndarray,
        item_idx: np.ndarray,
        ratings: np.ndarray,
        item_ids: np.ndarray,
        encoded_item_ids: np.ndarray | None = None,
        since_seq: int | None = None,
    ) -> None:
        if offsets.shape[0] != len(user_ids) + 1:
            raise ValueError(f"offsets: need {len(user_ids) + 1} entries, got {offsets.shape[0]}")
        self.user_ids = user_ids
        self.offsets = offsets  # int64 (users + 1,)
        self.item_idx = item_idx  # int32
        self.ratings = ratings  # float32
        self.item_ids = item_ids  # every item id, indexed by item_idx
        # The same ids encoded by store.rating_index.encode_ids, when the caller has them.
        self.encoded_item_ids = encoded_item_ids
        self.since_seq = since_seq
        # Built on the first lookup by id: the consumer hands whole blocks on and never looks up.
        self._row_of: dict[str, int] | None = None

    def row(self, user_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Return one user's (item_idx, stars)."""
        if self._row_of is None:
            self._row_of = {user_id: row for row, user_id in enumerate(self.user_ids)}
        row = self._row_of[user_id]
        start, stop = self.offsets[row], self.offsets[row + 1]
        return self.item_idx[start:stop], self.ratings[start:stop]

    def __getitem__(self, user_id: str) -> tuple[np.ndarray, np.ndarray]:
        items, stars = self.row(user_id)
        return self.item_ids[items], stars

    def __iter__(self) -> Iterator[str]:
        return iter(self.user_ids)

    def __len__(self) -> int:
        return len(self.user_ids)
