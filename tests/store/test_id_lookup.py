"""Tests for looking up ids joined by encode_ids without decoding them."""

from __future__ import annotations

import numpy as np
import pytest

from store.id_lookup import EncodedIdLookup
from store.rating_index import encode_ids

IDS = ["1", "10", "318", "", "alice", "b:c", "δ 7", "x" * 256, "2:ab", "01"]


def _joined(ids: list[str]) -> bytes:
    return b"".join(encode_ids(ids).tolist())


def test_lookup_matches_dict() -> None:
    lookup = EncodedIdLookup(np.array(IDS))
    rng = np.random.default_rng(2)
    unknown = ["2", "ab", "alice ", "δ", "x" * 255, "1:"]
    queries = [str(value) for value in rng.choice(IDS + unknown, 500)]
    expected = [IDS.index(value) if value in IDS else -1 for value in queries]
    assert lookup.indices(_joined(queries)).tolist() == expected


def test_lookup_many_ids() -> None:
    ids = [f"item-{value}" for value in range(50_000)]
    lookup = EncodedIdLookup(np.array(ids))
    queries = ids[::7] + ["item-50000", "item--1"]
    found = lookup.indices(_joined(queries))
    assert found[:-2].tolist() == list(range(0, 50_000, 7))
    assert found[-2:].tolist() == [-1, -1]


def test_lookup_empty_input() -> None:
    lookup = EncodedIdLookup(np.array(IDS))
    assert lookup.indices(b"").tolist() == []


@pytest.mark.parametrize(
    "encoded", [b"3:ab", b"x:1", b"12", b":1", b"2:ab3:", b"18446744073709551595:", b"99999999999:1"]
)
def test_lookup_rejects_malformed(encoded: bytes) -> None:
    lookup = EncodedIdLookup(np.array(IDS))
    with pytest.raises(ValueError, match="encoded ids"):
        lookup.indices(encoded)


def test_lookup_rejects_repeated_ids() -> None:
    with pytest.raises(ValueError, match="must be distinct"):
        EncodedIdLookup(np.array(["a", "b", "a"]))
