"""huge_page_zeros: zeroed arrays that behave as np.zeros, on 2 MB pages where Linux allows."""

import mmap
import re

import numpy as np
import pytest

from als.kernels import pad_factors, tile_row_width
from als.memory import HUGE_PAGE, MIN_HUGE_BYTES, huge_page_zeros, is_immutable


def test_large_array_is_zeroed_writable_and_aligned():
    shape = (MIN_HUGE_BYTES // 160 + 7, 40)
    array = huge_page_zeros(shape, np.float32)
    assert array.shape == shape
    assert array.dtype == np.float32
    assert array.flags.c_contiguous
    assert array.flags.writeable
    assert not array.any()
    array[-1, -1] = 3.0
    assert array.sum() == 3.0
    if hasattr(mmap, "MADV_HUGEPAGE"):
        assert array.ctypes.data % HUGE_PAGE == 0


@pytest.mark.skipif(not hasattr(mmap, "MADV_HUGEPAGE"), reason="needs madvise(MADV_HUGEPAGE)")
def test_large_array_gets_huge_pages():
    setting = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    if "[never]" in setting:
        pytest.skip("transparent huge pages are off on this machine")
    array = huge_page_zeros((4 * MIN_HUGE_BYTES // 8,), np.float64)
    array[:] = 1.0
    assert _huge_kilobytes(array.ctypes.data) > 0


def test_small_array_is_plain_zeros():
    array = huge_page_zeros((10, 3), np.int64)
    assert array.shape == (10, 3)
    assert array.dtype == np.int64
    assert not array.any()


def test_padded_rows_hold_factors_one_and_bias():
    rng = np.random.default_rng(3)
    for n_rows in (5, MIN_HUGE_BYTES // 160 + 1):
        factors = rng.normal(size=(n_rows, 32)).astype(np.float32)
        bias = rng.normal(size=n_rows).astype(np.float32)
        padded = pad_factors(factors, bias)
        assert padded.shape == (n_rows, tile_row_width(32))
        np.testing.assert_array_equal(padded[:, :32], factors)
        assert np.all(padded[:, 32] == 1.0)
        np.testing.assert_array_equal(padded[:, 33], bias)
        assert not padded[:, 34:].any()


def _huge_kilobytes(address: int) -> int:
    """Return the AnonHugePages of the mapping that contains address, from /proc/self/smaps."""
    inside = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            span = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
            if span:
                inside = int(span.group(1), 16) <= address < int(span.group(2), 16)
            elif inside and line.startswith("AnonHugePages:"):
                return int(line.split()[1])
    return 0


def test_is_immutable_only_for_read_only_buffers(tmp_path):
    np.save(tmp_path / "table.npy", np.ones((4, 3), np.float32))
    mapped = np.load(tmp_path / "table.npy", mmap_mode="r")
    assert is_immutable(mapped)
    assert is_immutable(mapped[1:])
    assert is_immutable(np.frombuffer(b"\x00" * 16, np.float32))

    owned = np.ones(4, np.float32)
    view = owned.view()
    view.flags.writeable = False
    assert not is_immutable(view)
    owned.flags.writeable = False
    assert not is_immutable(owned)
    assert not is_immutable(np.frombuffer(bytearray(16), np.float32))
