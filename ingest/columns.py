"""Checks of every character of many short strings at once, with numpy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DIGITS = b"0123456789"
# Characters an id may contain on the column paths: printable ASCII other than space.
PRINTABLE_ASCII = bytes(range(0x21, 0x7F))


class CharacterMatrix:
    """Strings (all str or all bytes) as rows of a matrix of character codes, padded with zeros."""

    def __init__(self, values: Sequence[bytes] | Sequence[str], max_length: int) -> None:
        count = len(values)
        self.lengths = np.fromiter(map(len, values), dtype=np.int64, count=count)
        self.max_length = max_length
        width = max(1, min(int(self.lengths.max(initial=0)), max_length))
        # numpy cuts longer values to `width`; only() rejects those by their length.
        if count and isinstance(values[0], str):
            codes = np.array(values, dtype=f"U{width}").view(np.uint32)
        else:
            codes = np.array(values, dtype=f"S{width}").view(np.uint8)
        self.codes = codes.reshape(count, width)

    def only(self, allowed: bytes) -> np.ndarray:
        """Return which values are 1 to max_length characters long, all of them in `allowed`.

        `allowed` lists ASCII characters; no other character passes.
        """
        table = np.zeros(256, dtype=bool)
        table[np.frombuffer(allowed, dtype=np.uint8)] = True
        codes = self.codes
        if codes.dtype != np.uint8:
            # Codes above 255 share entry 255, which is not ASCII and so never allowed.
            codes = np.minimum(codes, 255)
        # Padding is code 0, never allowed, so a value passes when all its characters are counted.
        allowed_count = table[codes].sum(axis=1)
        return (self.lengths >= 1) & (self.lengths <= self.max_length) & (allowed_count == self.lengths)

    def count(self, character: bytes) -> np.ndarray:
        """Return how often an ASCII character occurs in each value (within max_length)."""
        return (self.codes == ord(character)).sum(axis=1)
