"""Partial selection of the best `n` scores per row of a block, a numba kernel per row."""

from __future__ import annotations

import numpy as np
from numba import njit, prange


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


@njit(cache=True, nogil=True, parallel=True)
def select_top_n(scores, seen_indptr, seen_indices, out_index, out_scores):
    """Write each row's best out_index.shape[1] items, best first, leaving out its seen items.

    scores (B, N) float32 is overwritten: seen items of row b (seen_indices[seen_indptr[b]:
    seen_indptr[b + 1]]) are set to -inf. out_index (B, n) int64 and out_scores (B, n) float32
    receive the items and scores. A row with fewer than n finite scores is padded with -1 and
    -inf. Each row keeps a heap of its n best entries whose root is the worst, so most items
    cost one comparison with the root.
    """
    n_rows, n_items = scores.shape
    width = out_index.shape[1]
    for row in prange(n_rows):
        for position in range(seen_indptr[row], seen_indptr[row + 1]):
            scores[row, seen_indices[position]] = -np.inf

        heap_scores = out_scores[row]
        heap_index = out_index[row]
        size = 0
        for item in range(n_items):
            score = scores[row, item]
            # Once the heap is full, most items fail this one comparison with the worst kept.
            if size == width and score < heap_scores[0]:
                continue
            if not score > -np.inf:  # -inf and NaN never enter a list
                continue
            if size < width:
                # Sift up the new entry from the bottom of the heap.
                position = size
                size += 1
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
            elif _better(score, item, heap_scores[0], heap_index[0]):
                heap_scores[0] = score
                heap_index[0] = item
                _sift_down(heap_scores, heap_index, size, 0)

        # Heap sort: moving the worst entry to the end each time leaves the best first.
        for last in range(size - 1, 0, -1):
            heap_scores[0], heap_scores[last] = heap_scores[last], heap_scores[0]
            heap_index[0], heap_index[last] = heap_index[last], heap_index[0]
            _sift_down(heap_scores, heap_index, last, 0)
        for position in range(size, width):
            heap_scores[position] = -np.inf
            heap_index[position] = -1
