"""numba kernels for the row half-steps of ALS and the squared-error sum.

A half-step solves, for every row r of one side (users or items) with the other side fixed,

    minimise  1/2 sum_{c in row r} (y_rc - b_r - w_c . x_r)^2 + gamma/2 b_r^2 + tau_r/2 |x_r - p_r|^2

where y_rc = rating - global_mean - (bias of column c), w_c are the other side's factors, and
p_r is the row's prior (the genre prior for items, zero for users). The factor penalty
tau_r = tau * max(n_r, 1)^e grows with the row's rating count n_r when the exponent e is
positive (e = 1 is the count-weighted penalty of ALS-WR; e = 0 gives one tau for all). Appending a constant 1 to
w_c turns bias and factors into one unknown z_r = (x_r, b_r) of size K + 1 with the normal
equations

    (sum_c [w_c; 1][w_c; 1]^T + diag(tau_r, ..., tau_r, gamma)) z_r = sum_c [w_c; 1] y_rc + [tau_r p_r; 0]

which are symmetric positive definite whenever tau, gamma > 0, so Cholesky always applies.
A row without ratings gets z_r = (p_r, 0), its exact minimiser.

Each solve also returns the row's sum of squared errors sum_c (y_rc - w_c . z_r)^2 for the
stored (float32) z_r, so the training loop gets the data term of the loss without another pass
over the ratings.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from als.memory import huge_page_zeros


@njit(cache=True, nogil=True)
def cholesky_solve(A, x, n):
    """Solve A z = x in place for the symmetric positive definite leading n x n block of A.

    Reads only the lower triangle of A and overwrites it with the Cholesky factor L. Writes
    the solution z into x. Returns False when a pivot is not positive or z is not finite,
    which leaves x undefined.
    """
    for j in range(n):
        pivot = A[j, j]
        for p in range(j):
            pivot -= A[j, p] * A[j, p]
        # `not (pivot > 0)` also catches NaN.
        if not (pivot > 0.0) or not np.isfinite(pivot):
            return False
        diagonal = np.sqrt(pivot)
        A[j, j] = diagonal
        for i in range(j + 1, n):
            s = A[i, j]
            for p in range(j):
                s -= A[i, p] * A[j, p]
            A[i, j] = s / diagonal

    return cholesky_substitute(A, x, n)


@njit(cache=True, nogil=True)
def cholesky_substitute(A, x, n):
    """Solve L L^T z = x in place, with the Cholesky factor L in the lower triangle of A.

    Writes z into x. Returns False when z is not finite.
    """
    # Forward substitution L y = x, one dot product with a row of L per unknown.
    for i in range(n):
        Ai = A[i]
        s = x[i]
        for p in range(i):
            s -= Ai[p] * x[p]
        x[i] = s / Ai[i]
    # Back substitution L^T z = y. Column i of L^T is row i of L, so once z_i is known it is
    # removed from the unknowns above it with one pass along a contiguous row.
    for i in range(n - 1, -1, -1):
        Ai = A[i]
        zi = x[i] / Ai[i]
        x[i] = zi
        for p in range(i):
            x[p] -= zi * Ai[p]
    for i in range(n):
        if not np.isfinite(x[i]):
            return False
    return True


@njit(cache=True, nogil=True)
def add_penalties(A, x, K, count, reg_factors, reg_exponent, reg_bias, prior, row):
    """Add a row's penalties to its (K+1) system A [factors, bias] = x, in place.

    The factor penalty is reg_factors * count^reg_exponent (count = the row's ratings, at least
    1), the bias penalty reg_bias. With a prior (items), the factor penalty pulls towards
    prior[row], which adds tau * prior[row] to the right-hand side. Returns tau.
    """
    tau = reg_factors
    if reg_exponent != 0.0 and count > 1:
        tau = reg_factors * np.float64(count) ** reg_exponent
    for k in range(K):
        A[k, k] += tau
    A[K, K] += reg_bias
    if prior.shape[0] > 0:
        for k in range(K):
            x[k] += tau * prior[row, k]
    return tau


@njit(cache=True, nogil=True)
def solve_row(
    row, indptr, columns, ratings, other_factors, other_bias, global_mean, prior,
    reg_bias, reg_factors, reg_exponent, A, x, w, out_factors, out_bias,
):
    """Write the exact minimiser (bias and factors) of one row into out_factors and out_bias.

    other_factors: float32 (C, K). other_bias: float32 (C,). prior: float64 (R, K), or shape
    (0, K) for a zero prior. reg_exponent: e in tau_r = reg_factors * max(n_r, 1)^e. A: float64 (K+1, K+1), x and w: float64 (K+1,) scratch. Returns
    the row's sum of squared errors with the stored result, or -1.0 when the Cholesky solve
    fails, which leaves the row unchanged.
    """
    K = other_factors.shape[1]
    n = K + 1
    for i in range(n):
        x[i] = 0.0
        for j in range(i + 1):
            A[i, j] = 0.0

    # Accumulate the lower triangle of sum w w^T and the right-hand side sum w y in float64,
    # where w is the other side's factors with a trailing 1 for the bias.
    w[K] = 1.0
    for p in range(indptr[row], indptr[row + 1]):
        column = columns[p]
        y = ratings[p] - global_mean - other_bias[column]
        for k in range(K):
            w[k] = other_factors[column, k]
        for i in range(n):
            wi = w[i]
            x[i] += wi * y
            for j in range(i + 1):
                A[i, j] += wi * w[j]

    add_penalties(A, x, K, indptr[row + 1] - indptr[row], reg_factors, reg_exponent, reg_bias, prior, row)

    if not cholesky_solve(A, x, n):
        return -1.0
    for k in range(K):
        out_factors[row, k] = x[k]
    out_bias[row] = x[K]

    # These rows have at most K + 1 ratings, so a second pass costs less than the solve.
    squared_error = 0.0
    for p in range(indptr[row], indptr[row + 1]):
        column = columns[p]
        error = ratings[p] - global_mean - other_bias[column] - np.float64(out_bias[row])
        for k in range(K):
            error -= np.float64(other_factors[column, k]) * out_factors[row, k]
        squared_error += error * error
    return squared_error


def solve_rows(
    indptr, columns, ratings, other_factors, other_bias, global_mean, prior,
    reg_bias, reg_factors, reg_exponent, chunk_bounds, out_factors, out_bias,
):
    """Solve every row as solve_padded_rows does, padding other_factors first."""
    return solve_padded_rows(
        indptr, columns, ratings, other_factors, pad_factors(other_factors, other_bias), other_bias,
        global_mean, prior, reg_bias, reg_factors, reg_exponent, chunk_bounds, out_factors,
        out_bias,
    )


@njit(cache=True, nogil=True, parallel=True)
def solve_padded_rows(
    indptr, columns, ratings, other_factors, padded, other_bias, global_mean, prior,
    reg_bias, reg_factors, reg_exponent, chunk_bounds, out_factors, out_bias,
):
    """Solve every row, in parallel over chunks of consecutive rows.

    padded is pad_factors(other_factors, other_bias). Fold-in keeps it between calls, because
    padding a whole item table costs more than folding in a few hundred users.

    Rows go through solve_row_fast (float32 sums). With a penalty below TINY_PENALTY, a row with
    at most K + 1 ratings goes through solve_row instead, which sums in float64: its sum of
    w w^T has rank below K + 1, and float32 rounding could then make the system indefinite.

    chunk_bounds: int64 (C+1,), ascending row boundaries covering all rows. Each chunk owns its
    scratch, so nothing is allocated per row. Returns (failed, squared_errors): int64 (C,)
    holding, per chunk, the first row whose solve failed or -1 when all rows of the chunk
    succeeded, and float64 (C,) holding each chunk's sum of squared errors after its solves.
    """
    n_chunks = chunk_bounds.shape[0] - 1
    K = other_factors.shape[1]
    tiny_penalty = min(reg_factors, reg_bias) < TINY_PENALTY
    Q = tile_row_width(K)
    tile = tile_width(Q)
    failed = np.full(n_chunks, -1, np.int64)
    squared_errors = np.zeros(n_chunks, np.float64)
    for chunk in prange(n_chunks):
        G = np.empty((Q, Q), np.float32)
        g = np.empty(K + 1, np.float32)
        T = np.empty((tile, Q), np.float32)
        A = np.empty((K + 1, K + 1), np.float64)
        x = np.empty(K + 1, np.float64)
        w = np.empty(K + 1, np.float64)
        for row in range(chunk_bounds[chunk], chunk_bounds[chunk + 1]):
            if tiny_penalty and indptr[row + 1] - indptr[row] <= K + 1:
                squared_error = solve_row(
                    row, indptr, columns, ratings, other_factors, other_bias, global_mean, prior,
                    reg_bias, reg_factors, reg_exponent, A, x, w, out_factors, out_bias,
                )
            else:
                squared_error = solve_row_fast(
                    row, indptr, columns, ratings, padded, global_mean, prior,
                    reg_bias, reg_factors, reg_exponent, G, g, T, A, x, out_factors, out_bias,
                )
            if squared_error < 0.0:
                if failed[chunk] < 0:
                    failed[chunk] = row
            else:
                squared_errors[chunk] += squared_error
    return failed, squared_errors


@njit(cache=True, nogil=True, parallel=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
def squared_error_sum(
    indptr, columns, ratings, row_factors, row_bias, column_factors, column_bias, global_mean,
):
    """Return sum over stored ratings of (r - global_mean - b_row - c_col - u_row . v_col)^2.

    Accumulates in float64. Reassociation lets the dot products run as vector code instead of one
    chain of K dependent additions; NaN and inf still propagate. Any CSR layout works (rows by user or rows by item) as long as the
    row and column arrays match it.
    """
    n_rows = indptr.shape[0] - 1
    K = row_factors.shape[1]
    total = 0.0
    for row in prange(n_rows):
        row_sum = 0.0
        for p in range(indptr[row], indptr[row + 1]):
            column = columns[p]
            prediction = global_mean + row_bias[row] + column_bias[column]
            for k in range(K):
                prediction += np.float64(row_factors[row, k]) * column_factors[column, k]
            error = ratings[p] - prediction
            row_sum += error * error
        total += row_sum
    return total



# Ratings per parallel chunk of clipped_squared_error_sum: large enough that the per-chunk float64
# partial sums cost nothing, small enough that the threads get many chunks each.
ERROR_CHUNK = 65536


@njit(cache=True, nogil=True, parallel=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
def clipped_squared_error_sum(
    user_idx, item_idx, ratings, user_factors, user_bias, item_factors, item_bias, global_mean,
    low, high,
):
    """Return sum over ratings of (r - clip(global_mean + b_m + c_n + u_m . v_n, low, high))^2.

    The ratings come as coordinates: rating p is user_idx[p]'s rating of item_idx[p], with the
    indices already checked to lie inside the factor tables. The prediction and the sums are in
    float64, so the result matches numpy's float64 predictions to rounding.
    """
    n = ratings.shape[0]
    K = user_factors.shape[1]
    n_chunks = (n + ERROR_CHUNK - 1) // ERROR_CHUNK
    partial = np.zeros(n_chunks, np.float64)
    for chunk in prange(n_chunks):
        chunk_sum = 0.0
        for p in range(chunk * ERROR_CHUNK, min(n, (chunk + 1) * ERROR_CHUNK)):
            user = user_idx[p]
            item = item_idx[p]
            dot = 0.0
            for k in range(K):
                dot += np.float64(user_factors[user, k]) * np.float64(item_factors[item, k])
            prediction = global_mean + np.float64(user_bias[user]) + np.float64(item_bias[item]) + dot
            prediction = min(max(prediction, low), high)
            error = np.float64(ratings[p]) - prediction
            chunk_sum += error * error
        partial[chunk] = chunk_sum
    return partial.sum()


# Reassociation lets LLVM vectorise the sums below. The flags that assume no NaN or inf are left
# out on purpose, so a NaN in the data still reaches the pivot check and fails the solve.
FAST_MATH = {"reassoc", "contract", "nsz", "arcp"}
# Ratings copied per tile when a row's Gram matrix is built, at most.
TILE = 128
# Bytes of a tile, which stays in the L1 cache beside the Gram matrix while the register blocks
# sweep it. A K=64 tile of 72 floats per entry then has 71 entries; 128 entries (36 KB) ran no
# faster on 32M synthetic ratings (2-core Xeon, 48 KB L1d).
TILE_BYTES = 20 * 1024
# Penalties below this send rank-deficient rows (at most K + 1 ratings) to the float64 solver:
# float32 sums are off by about 1e-7 of their size, which a penalty this large still outweighs.
TINY_PENALTY = 1e-3
# Padded width of a factor row is a multiple of this many float32 lanes (one AVX register).
LANES = 8
# Rows of G whose sums stay in registers while a tile is swept, and vectors of LANES columns
# each. 4 x 2 accumulators, 2 column vectors and 1 broadcast need 11 vector registers, within
# the 16 of AVX2. The assembly on an AVX-512 Xeon keeps all of them in registers; AVX2-only
# machines were not checked.
BLOCK_ROWS = 4
BLOCK_VECTORS = 2


# Item and user tables do not fit the caches at full scale, so accumulate_gram prefetches the
# factor rows of the next tile, one cache line at a time, while it sums the current one.
CACHE_LINE = 64


@intrinsic
def prefetch(typingctx, address):
    """Hint the CPU to load the cache line at `address` (an integer) for reading."""
    signature = types.void(types.uintp)

    def codegen(context, builder, sig, args):
        byte_pointer = ir.IntType(8).as_pointer()
        int32 = ir.IntType(32)
        function = builder.module.declare_intrinsic(
            "llvm.prefetch", fnty=ir.FunctionType(ir.VoidType(), [byte_pointer, int32, int32, int32])
        )
        # Arguments: read (0), keep in all cache levels (3), data cache (1).
        builder.call(function, [builder.inttoptr(args[0], byte_pointer), int32(0), int32(3), int32(1)])
        return context.get_dummy_value()

    return signature, codegen


def make_gram_block(rows, vectors):
    """Return an intrinsic gram_block(T, m, i, j, G) for one register block of G.

    It adds sum_{q < m} T[q, i + u] T[q, j + v] to G[i + u, j + v] for u < rows and
    v < vectors * LANES, keeping the rows x vectors partial sums in vector registers for the
    whole sweep over the m entries, so no sum needs a horizontal reduction. T and G are
    C-contiguous float32 2-D arrays and nothing is bounds-checked.
    """

    @intrinsic
    def gram_block(typingctx, T, m, i, j, G):
        signature = types.void(T, types.intp, types.intp, types.intp, G)

        def codegen(context, builder, sig, args):
            tile_array = context.make_array(sig.args[0])(context, builder, args[0])
            gram_array = context.make_array(sig.args[4])(context, builder, args[4])
            m_value, i_value, j_value = args[1], args[2], args[3]
            tile_stride = cgutils.unpack_tuple(builder, tile_array.shape, 2)[1]
            gram_stride = cgutils.unpack_tuple(builder, gram_array.shape, 2)[1]
            intp = context.get_value_type(types.intp)
            float32 = ir.FloatType()
            int32 = ir.IntType(32)
            vector = ir.VectorType(float32, LANES)
            vector_pointer = vector.as_pointer()
            multiply_add = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vector, [vector, vector, vector]), f"llvm.fmuladd.v{LANES}f32"
            )
            splat_mask = ir.Constant(ir.VectorType(int32, LANES), [0] * LANES)
            undefined = ir.Constant(vector, ir.Undefined)

            # The accumulators live in allocas of the entry block, which LLVM promotes to registers.
            accumulators = [
                [cgutils.alloca_once_value(builder, ir.Constant(vector, [0.0] * LANES)) for _ in range(vectors)]
                for _ in range(rows)
            ]
            with cgutils.for_range(builder, m_value) as loop:
                entry = builder.gep(tile_array.data, [builder.mul(loop.index, tile_stride)])
                column_vectors = []
                for v in range(vectors):
                    offset = builder.add(j_value, ir.Constant(intp, v * LANES))
                    address = builder.bitcast(builder.gep(entry, [offset]), vector_pointer)
                    column_vectors.append(builder.load(address, align=4))
                for u in range(rows):
                    scalar = builder.load(builder.gep(entry, [builder.add(i_value, ir.Constant(intp, u))]))
                    broadcast = builder.shuffle_vector(
                        builder.insert_element(undefined, scalar, int32(0)), undefined, splat_mask
                    )
                    for v in range(vectors):
                        total = builder.call(
                            multiply_add, [broadcast, column_vectors[v], builder.load(accumulators[u][v])]
                        )
                        builder.store(total, accumulators[u][v])

            for u in range(rows):
                row_start = builder.mul(builder.add(i_value, ir.Constant(intp, u)), gram_stride)
                for v in range(vectors):
                    offset = builder.add(builder.add(row_start, j_value), ir.Constant(intp, v * LANES))
                    address = builder.bitcast(builder.gep(gram_array.data, [offset]), vector_pointer)
                    total = builder.fadd(builder.load(address, align=4), builder.load(accumulators[u][v]))
                    builder.store(total, address, align=4)
            return context.get_dummy_value()

        return signature, codegen

    return gram_block


gram_block_4x2 = make_gram_block(BLOCK_ROWS, BLOCK_VECTORS)
gram_block_4x1 = make_gram_block(BLOCK_ROWS, 1)
gram_block_2x4 = make_gram_block(2, 4)
gram_block_2x1 = make_gram_block(2, 1)


@njit(cache=True, nogil=True)
def tile_width(Q):
    """Return the entries per tile for tile rows of Q floats: as many as fit TILE_BYTES, 16 to TILE."""
    return max(16, min(TILE, TILE_BYTES // (4 * Q)))


@njit(cache=True, nogil=True)
def tile_row_width(K):
    """Return K + 2 (factors, bias column and y) rounded up to a multiple of LANES."""
    return ((K + 2 + LANES - 1) // LANES) * LANES


def pad_factors(factors, bias):
    """Return float32 (C, Q) rows [w_c, 1, b_c, 0, ...] with Q = tile_row_width(K).

    Fixed-width rows let the Gram loop run on whole vector registers with no remainder. The
    bias b_c sits where the Gram loop's tile row keeps y, so one gather brings a column's
    factors and bias: a separate bias table cost the item step at 32M ratings about 7%.
    """
    C, K = factors.shape
    padded = huge_page_zeros((C, tile_row_width(K)), np.float32)
    fill_padded(factors, bias, padded)
    return padded


@njit(cache=True, nogil=True, parallel=True)
def fill_padded(factors, bias, padded):
    """Write rows [w_c, 1, b_c] into the first K + 2 columns of padded, as pad_factors describes."""
    C, K = factors.shape
    for c in prange(C):
        for k in range(K):
            padded[c, k] = factors[c, k]
        padded[c, K] = 1.0
        padded[c, K + 1] = bias[c]


@njit(cache=True, nogil=True)
def accumulate_gram(start, stop, columns, ratings, padded, global_mean, K, G, T):
    """Set G to the Gram sums of t = (w, 1, y) over the entries start..stop of one row; return sum y^2.

    w is the column's factor row, 1 the bias column and y = rating - global_mean - bias of the
    column, whose padded row holds the bias where t holds y. G[a, b] for b <= a <= K + 1 is sum t_a t_b, so G[:K+1, :K+1] contains the lower
    triangle of sum w w^T with the bias row sum w, and G[K + 1, :K+1] contains g = sum (w, 1) y.
    Only sum y^2 (a = b = K + 1) is left out of G: it is summed in float64 across tiles and
    returned.

    The entries are copied in tiles into T, one row t per entry. Each register block of G then
    sweeps a whole tile with its partial sums in registers (outer products of t with itself), and
    adds them to G once per tile. A block of rows i..i+3 covers the columns up to the vector that
    contains its diagonal, so it computes a few unread sums above the diagonal.
    G: float32 (Q, Q) with Q = tile_row_width(K). T: float32 (tile, Q) scratch. padded:
    float32 (C, Q) from pad_factors.
    """
    Q = T.shape[1]
    tile = T.shape[0]
    y_index = K + 1
    for i in range(Q):
        for j in range(Q):
            G[i, j] = 0.0
    base = padded.ctypes.data
    row_bytes = Q * 4
    n_entries = columns.shape[0]
    n_block_rows = (K + 2 + BLOCK_ROWS - 1) // BLOCK_ROWS
    sum_y2 = 0.0

    for first in range(start, stop, tile):
        m = min(first + tile, stop) - first
        for q in range(m):
            column = columns[first + q]
            row = padded[column]
            Tq = T[q]
            for k in range(Q):
                Tq[k] = row[k]
            Tq[y_index] = np.float32(ratings[first + q] - global_mean - row[y_index])

        # The next tile's factor rows are prefetched while this tile's sums run, a share after
        # each row of blocks. Past this row's end they are the next row's: rows are solved in
        # order within a chunk. Prefetching while the tile was filled, 16 entries ahead, left
        # the item step 38% slower than with a user table that fits the L2 cache (32M ratings,
        # K=32, 2-core AMD EPYC); this leaves it about 12% slower.
        next_first = first + m
        next_count = min(tile, n_entries - next_first)
        share = (next_count + n_block_rows - 1) // n_block_rows
        for i in range(0, K + 2, BLOCK_ROWS):
            ahead_stop = min(next_first + share, first + m + next_count)
            for ahead in range(next_first, ahead_stop):
                address = base + columns[ahead] * row_bytes
                for offset in range(0, row_bytes, CACHE_LINE):
                    prefetch(address + offset)
            next_first = ahead_stop
            stop_column = (i + BLOCK_ROWS + LANES - 1) // LANES * LANES
            j = 0
            if K + 2 - i > 2:
                while j + BLOCK_VECTORS * LANES <= stop_column:
                    gram_block_4x2(T, m, i, j, G)
                    j += BLOCK_VECTORS * LANES
                while j < stop_column:
                    gram_block_4x1(T, m, i, j, G)
                    j += LANES
            else:
                # The last one or two rows go in blocks of two, so the zero rows past K + 1 cost
                # no sums.
                while j + 4 * LANES <= stop_column:
                    gram_block_2x4(T, m, i, j, G)
                    j += 4 * LANES
                while j < stop_column:
                    gram_block_2x1(T, m, i, j, G)
                    j += LANES

        # sum y^2 goes to float64 per tile, because the squared error subtracts nearly equal
        # terms from it.
        sum_y2 += G[y_index, y_index]
        G[y_index, y_index] = 0.0
    return sum_y2


@njit(cache=True, nogil=True, fastmath=FAST_MATH)
def cholesky_factor(A, n):
    """Overwrite the lower triangle of A's leading n x n block with its Cholesky factor L.

    Returns False when a pivot is not positive (NaN included).

    L_ij = (A_ij - sum_{p<j} L_ip L_jp) / L_jj is computed for columns j and j + 1 together,
    so each load of L_ip serves both sums. Rows go four at a time, so each load of L_jp and
    L_(j+1)p serves four rows. Column j + 1 then subtracts the term p = j, which its shared
    sum leaves out.
    """
    j = 0
    while j < n:
        Lj = A[j]
        pivot = Lj[j]
        for p in range(j):
            pivot -= Lj[p] * Lj[p]
        if not (pivot > 0.0):
            return False
        diagonal_j = np.sqrt(pivot)
        Lj[j] = diagonal_j
        inverse_j = 1.0 / diagonal_j
        if j + 1 == n:
            return True

        Lk = A[j + 1]
        s = Lk[j]
        for p in range(j):
            s -= Lk[p] * Lj[p]
        Lk[j] = s * inverse_j
        pivot = Lk[j + 1]
        for p in range(j + 1):
            pivot -= Lk[p] * Lk[p]
        if not (pivot > 0.0):
            return False
        diagonal_k = np.sqrt(pivot)
        Lk[j + 1] = diagonal_k
        inverse_k = 1.0 / diagonal_k
        l_kj = Lk[j]

        i = j + 2
        while i + 4 <= n:
            L0 = A[i]
            L1 = A[i + 1]
            L2 = A[i + 2]
            L3 = A[i + 3]
            s0 = L0[j]
            s1 = L1[j]
            s2 = L2[j]
            s3 = L3[j]
            t0 = L0[j + 1]
            t1 = L1[j + 1]
            t2 = L2[j + 1]
            t3 = L3[j + 1]
            for p in range(j):
                b = Lj[p]
                c = Lk[p]
                a0 = L0[p]
                a1 = L1[p]
                a2 = L2[p]
                a3 = L3[p]
                s0 -= a0 * b
                s1 -= a1 * b
                s2 -= a2 * b
                s3 -= a3 * b
                t0 -= a0 * c
                t1 -= a1 * c
                t2 -= a2 * c
                t3 -= a3 * c
            s0 *= inverse_j
            s1 *= inverse_j
            s2 *= inverse_j
            s3 *= inverse_j
            L0[j] = s0
            L1[j] = s1
            L2[j] = s2
            L3[j] = s3
            L0[j + 1] = (t0 - s0 * l_kj) * inverse_k
            L1[j + 1] = (t1 - s1 * l_kj) * inverse_k
            L2[j + 1] = (t2 - s2 * l_kj) * inverse_k
            L3[j + 1] = (t3 - s3 * l_kj) * inverse_k
            i += 4
        while i < n:
            Li = A[i]
            s = Li[j]
            t = Li[j + 1]
            for p in range(j):
                a = Li[p]
                s -= a * Lj[p]
                t -= a * Lk[p]
            s *= inverse_j
            Li[j] = s
            Li[j + 1] = (t - s * l_kj) * inverse_k
            i += 1
        j += 2
    return True


@njit(cache=True, nogil=True)
def solve_row_fast(
    row, indptr, columns, ratings, padded, global_mean, prior,
    reg_bias, reg_factors, reg_exponent, G, g, T, A, x, out_factors, out_bias,
):
    """The same minimiser as solve_row, with the Gram matrix built in float32 on padded rows.

    The sums are accumulated in float32 and the (K+1) system is then solved in float64.
    G: float32 (Q, Q) and T: float32 (tile, Q) as in accumulate_gram, g: float32 (K+1,),
    A: float64 (K+1, K+1), x: float64 (K+1,) scratch. Returns the row's sum of squared errors
    with the stored result, or -1.0 when the solve fails, which leaves the row unchanged.
    """
    K = out_factors.shape[1]
    n = K + 1
    start = indptr[row]
    stop = indptr[row + 1]
    sum_y2 = accumulate_gram(start, stop, columns, ratings, padded, global_mean, K, G, T)

    # A gets the lower triangle of sum w w^T, and g and x get sum w y (row K + 1 of G).
    for i in range(n):
        g[i] = G[K + 1, i]
        x[i] = g[i]
        Gi = G[i]
        Ai = A[i]
        for j in range(i + 1):
            Ai[j] = Gi[j]

    tau = add_penalties(A, x, K, stop - start, reg_factors, reg_exponent, reg_bias, prior, row)

    if not cholesky_factor(A, n):
        return -1.0
    if not cholesky_substitute(A, x, n):
        return -1.0

    for k in range(K):
        out_factors[row, k] = x[k]
    out_bias[row] = x[K]
    return squared_error_at_solution(x, g, sum_y2, tau, reg_bias, prior, row)


@njit(cache=True, nogil=True)
def squared_error_at_solution(z, g, sum_y2, tau, reg_bias, prior, row):
    """Return a row's sum of squared errors sum (y - w . z)^2 at the solution z of its system.

    The sum is sum y^2 - 2 z . g + z^T G z with G = sum w w^T and g = sum w y, and the normal
    equations G z = g + tau (p - x) - gamma b e_K (z = (x, b), p the prior) turn it into
    sum y^2 - z . g + tau x . (p - x) - gamma b^2, which costs O(K) instead of O(K^2).
    z: float64 (K+1,), g: float32 (K+1,). The stored float32 z differs by rounding, which moves
    the result by about 1e-8 relative (measured on 10M synthetic ratings). Rounding can leave a
    perfect fit slightly below zero, so the result is clamped at 0.
    """
    K = z.shape[0] - 1
    total = sum_y2 - reg_bias * z[K] * z[K] - z[K] * g[K]
    for k in range(K):
        pull = -z[k]
        if prior.shape[0] > 0:
            pull += prior[row, k]
        total += tau * z[k] * pull - z[k] * g[k]
    return max(total, 0.0)
