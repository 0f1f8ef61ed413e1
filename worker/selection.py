"""Partial selection of the best `n` scores per row of a block of users, chunk by chunk of items.

The kernels run on the calling thread. A parallel numba region right after each NumPy matrix
product competed for the two cores with OpenBLAS threads still spinning after the product, and
made the lists of one user take 2.5 to 15 ms instead of under 1 ms.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _better(score_a, index_a, score_b, index_b):
    """Order of the lists: higher score first, and equal scores to the lower item index."""
    return score_a > score_b or (score_a == score_b and index_a < index_b)


@njit(cache=True, nogil=True)
def _sift_down(heap_scores, heap_index, size, position):
    """Restore the heap below `position`. The root of the heap is the worst entry kept."""
    while True:
        child = 2 * position + 1
        if child >= size:
            return
        if child + 1 < size and _better(
            heap_scores[child], heap_index[child], heap_scores[child + 1], heap_index[child + 1]
        ):
            child += 1
        if _better(heap_scores[child], heap_index[child], heap_scores[position], heap_index[position]):
            return
        heap_scores[position], heap_scores[child] = heap_scores[child], heap_scores[position]
        heap_index[position], heap_index[child] = heap_index[child], heap_index[position]
        position = child


# Scores tested against a full heap's root together. Most items fall below the root, and a block
# whose scores all do is passed over. Offering every item to the heap code instead made the
# lists of 4,096 users at 87,585 items 20 times slower.
SKIP_BLOCK = 16


@njit(cache=True, nogil=True)
def select_chunk(scores, n_items, first_item, seen_indptr, seen_indices, heap_index, heap_scores, sizes):
    """Add the items first_item .. first_item + n_items - 1 of each row to the row's heap of best
    items.

    scores (B, C) float32, C >= n_items, contains those items' scores in its first n_items
    columns and is overwritten: seen items of row b
    (seen_indices[seen_indptr[b]:seen_indptr[b + 1]]) that fall in the chunk are set to -inf.
    heap_index (B, n) int64, heap_scores (B, n) float32 and sizes (B,) int64 carry each row's
    heap from chunk to chunk. Start with sizes 0, and end with finish_selection. A heap's root is
    the worst entry kept, so most items cost one comparison with it.
    """
    n_rows = scores.shape[0]
    width = heap_index.shape[1]
    for row in range(n_rows):
        for position in range(seen_indptr[row], seen_indptr[row + 1]):
            item = seen_indices[position] - first_item
            if 0 <= item < n_items:
                scores[row, item] = -np.inf

        row_scores = scores[row]
        row_heap_scores = heap_scores[row]
        row_heap_index = heap_index[row]
        size = sizes[row]
        full_blocks_end = n_items - n_items % SKIP_BLOCK
        for start in range(0, full_blocks_end, SKIP_BLOCK):
            if size == width:
                root = row_heap_scores[0]
                above = False
                for offset in range(SKIP_BLOCK):
                    above |= row_scores[start + offset] >= root
                if not above:
                    continue
            for item in range(start, start + SKIP_BLOCK):
                size = _offer(row_heap_scores, row_heap_index, size, width, row_scores[item], first_item + item)
        for item in range(full_blocks_end, n_items):
            size = _offer(row_heap_scores, row_heap_index, size, width, row_scores[item], first_item + item)
        sizes[row] = size


@njit(cache=True, nogil=True)
def _offer(heap_scores, heap_index, size, width, score, item):
    """Add (score, item) to a heap of at most width entries if it belongs there; return the size."""
    if size == width and score < heap_scores[0]:
        return size
    if not score > -np.inf:  # -inf and NaN never enter a list
        return size
    if size < width:
        # Sift up the new entry from the bottom of the heap.
        position = size
        heap_scores[position] = score
        heap_index[position] = item
        while position > 0:
            parent = (position - 1) // 2
            if _better(heap_scores[parent], heap_index[parent], heap_scores[position], heap_index[position]):
                heap_scores[parent], heap_scores[position] = heap_scores[position], heap_scores[parent]
                heap_index[parent], heap_index[position] = heap_index[position], heap_index[parent]
                position = parent
            else:
                break
        return size + 1
    if _better(score, item, heap_scores[0], heap_index[0]):
        heap_scores[0] = score
        heap_index[0] = item
        _sift_down(heap_scores, heap_index, size, 0)
    return size


@njit(cache=True, nogil=True)
def finish_selection(heap_index, heap_scores, sizes):
    """Sort each row's heap best first and pad the rest of the row with -1 and -inf."""
    n_rows, width = heap_index.shape
    for row in range(n_rows):
        row_heap_scores = heap_scores[row]
        row_heap_index = heap_index[row]
        size = sizes[row]
        # Heap sort: moving the worst entry to the end each time leaves the best first.
        for last in range(size - 1, 0, -1):
            row_heap_scores[0], row_heap_scores[last] = row_heap_scores[last], row_heap_scores[0]
            row_heap_index[0], row_heap_index[last] = row_heap_index[last], row_heap_index[0]
            _sift_down(row_heap_scores, row_heap_index, last, 0)
        for position in range(size, width):
            row_heap_scores[position] = -np.inf
            row_heap_index[position] = -1
