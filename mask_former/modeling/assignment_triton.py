"""The Hungarian assignment of many small problems at once, as one Triton kernel on the GPU.

`linear_sum_assignment` of scipy solves a (Q, M) problem on the host by the shortest augmenting
path method (Crouse 2016, scipy's rectangular_lsap.cpp). This kernel runs the same algorithm,
step for step, in float64, one program per (decoder layer, image) problem: the same comparisons
on the same numbers, the same tie-breaking (the order in which scipy scans its list of remaining
columns and removes from it), so it returns scipy's assignment exactly, ties included
(tests/test_triton_matching.py checks it against scipy in Triton's interpreter). What it saves is not
arithmetic but the round trip: the costs need not reach the host, so a training step never waits
for the GPU and the host runs ahead launching the losses and the backward pass.

As scipy does, a problem with more columns than rows is solved as given and one with more rows
is transposed: the matcher's (Q queries, M targets) blocks with M < Q are solved as (M, Q), every
target getting a query; square blocks as (Q, Q). Blocks with M > Q (more targets than queries)
are the caller's to solve on the host.

Kernels run on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1.
"""
from typing import List

import torch
import triton
import triton.language as tl


@triton.jit
def _assignment_kernel(cost_ptr, problem_ptr, out_ptr, BLOCK_R: tl.constexpr,
                       BLOCK_C: tl.constexpr):
    """Program p solves problem p. Its 7 int64 entries in the problem table: offset of its
    (0, 0) cost, rows, columns (at least as many), row stride, column stride, offset of its first
    output, whether rows are targets (1) or queries (0)."""
    entry = problem_ptr + tl.program_id(0) * 7
    base = tl.load(entry)
    nr = tl.load(entry + 1).to(tl.int32)
    nc = tl.load(entry + 2).to(tl.int32)
    row_stride = tl.load(entry + 3)
    col_stride = tl.load(entry + 4)
    out_base = tl.load(entry + 5)
    rows_are_targets = tl.load(entry + 6)

    rows = tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_C)
    col_ok = cols < nc
    zero = nr * 0  # scalar tensors, so that loop-carried values keep one type
    u = tl.zeros([BLOCK_R], dtype=tl.float64)  # dual variables of rows
    v = tl.zeros([BLOCK_C], dtype=tl.float64)  # and of columns
    path = tl.full([BLOCK_C], -1, tl.int32)  # row from which the shortest path reaches a column
    row4col = tl.full([BLOCK_C], -1, tl.int32)
    col4row = tl.full([BLOCK_R], -1, tl.int32)
    for cur in range(0, nr):
        # The shortest augmenting path from row `cur` (scipy's augmenting_path). scipy keeps the
        # columns not yet reached in a list, filled in reverse order, scanned front to back, an
        # entry removed by moving the last one into its place; `position` is each column's place
        # in that list (-1: reached), so that ties are broken as scipy's scan breaks them.
        position = tl.where(col_ok, nc - 1 - cols, -1)
        num_remaining = nc
        shortest = tl.full([BLOCK_C], float("inf"), tl.float64)
        col_reached = cols < 0
        row_reached = rows < 0
        reached_at = tl.zeros([BLOCK_R], dtype=tl.float64)  # path cost of the column into a row
        min_val = zero.to(tl.float64)
        i = zero + cur
        sink = zero - 1
        while sink < 0:  # ends: each pass reaches a column, and a free one ends the path
            row_reached = row_reached | (rows == i)
            cost = tl.load(cost_ptr + base + i.to(tl.int64) * row_stride
                           + cols.to(tl.int64) * col_stride, mask=col_ok, other=0.0)
            u_i = tl.sum(tl.where(rows == i, u, 0.0), axis=0)
            remaining = position >= 0
            # scipy's order of operations: ((minVal + cost) - u[i]) - v[j]
            r = min_val + cost.to(tl.float64) - u_i - v
            shorter = remaining & (r < shortest)
            path = tl.where(shorter, i, path)
            shortest = tl.where(shorter, r, shortest)
            lowest = tl.min(tl.where(remaining, shortest, float("inf")), axis=0)
            # scipy's scan keeps the first column at the lowest cost, unless a later one at the
            # same cost is free, which it then takes (the last such one).
            tied = remaining & (shortest == lowest)
            last_free = tl.max(tl.where(tied & (row4col < 0), position, -1), axis=0)
            first = tl.min(tl.where(tied, position, BLOCK_C), axis=0)
            chosen = tl.where(last_free >= 0, last_free, first)
            j = tl.sum(tl.where(remaining & (position == chosen), cols, 0), axis=0)
            min_val = lowest
            row_of_j = tl.sum(tl.where(cols == j, row4col, 0), axis=0)
            col_reached = col_reached | (cols == j)
            num_remaining -= 1
            position = tl.where(position == num_remaining, chosen, position)
            position = tl.where(cols == j, -1, position)
            reached_at = tl.where(rows == row_of_j, lowest, reached_at)  # shortest[j] == lowest
            sink = tl.where(row_of_j < 0, j, sink)
            i = tl.where(row_of_j < 0, i, row_of_j)
        # Dual update, as scipy: u[cur] += minVal; u[i] += minVal - shortest[col4row[i]] for the
        # other reached rows (their column is the one that reached them); v[j] -= minVal -
        # shortest[j] for the reached columns.
        u = tl.where(rows == cur, u + min_val, u)
        u = tl.where(row_reached & (rows != cur), u + (min_val - reached_at), u)
        v = tl.where(col_reached, v - (min_val - shortest), v)
        # Augment along the path back from the sink (at most cur + 1 rows; the bound also ends
        # the loop on NaN costs, whose assignment is then arbitrary, as are their losses).
        j = sink
        done = zero
        steps = zero
        while (done == 0) & (steps <= cur):
            row = tl.sum(tl.where(cols == j, path, 0), axis=0)
            row4col = tl.where(cols == j, row, row4col)
            previous = tl.sum(tl.where(rows == row, col4row, 0), axis=0)
            col4row = tl.where(rows == row, j, col4row)
            j = previous
            done = (row == cur).to(tl.int32)
            steps += 1
    # Query of every target: col4row where rows are targets, its inverse where rows are queries.
    keep = (rows < nr) & (col4row >= 0)
    where = tl.where(rows_are_targets != 0, rows, col4row)
    what = tl.where(rows_are_targets != 0, col4row, rows)
    tl.store(out_ptr + out_base + where, what.to(tl.int64), mask=keep)


def queries_of_targets(cost: torch.Tensor, sizes: List[int]) -> torch.Tensor:
    """The assigned query of every target in every layer: (L, T) int64 on cost's device.

    cost: (L, B, Q, T) float32, the matcher's costs of every query against every target of the
        batch (T = sum of sizes); only each image's own (Q, M_b) block is read.
    sizes: M_b, the number of targets of each image; each at most Q.
    """
    num_layers, batch_size, num_queries, num_targets = cost.shape
    if len(sizes) != batch_size or sum(sizes) != num_targets:
        raise ValueError(f"queries_of_targets: sizes {sizes} do not fit costs {tuple(cost.shape)}")
    if max(sizes, default=0) > num_queries:
        raise ValueError(f"queries_of_targets: an image has more targets ({max(sizes)}) than "
                         f"queries ({num_queries}); solve it on the host")
    out = torch.empty(num_layers, num_targets, dtype=torch.int64, device=cost.device)
    s_layer, s_image, s_query, s_target = cost.stride()
    problems = []
    offset = 0
    for b, size in enumerate(sizes):
        if size:
            # As scipy: rows are the smaller side, so targets unless the block is square.
            by_target = size < num_queries
            rows, row_stride, col_stride = ((size, s_target, s_query) if by_target
                                            else (num_queries, s_query, s_target))
            for layer in range(num_layers):
                problems.append((layer * s_layer + b * s_image + offset * s_target, rows,
                                 num_queries if by_target else size, row_stride, col_stride,
                                 layer * num_targets + offset, int(by_target)))
        offset += size
    if not problems:
        return out
    table = torch.tensor(problems, dtype=torch.int64)
    if cost.is_cuda:
        table = table.pin_memory()  # queued with the kernel, never waited for
    table = table.to(cost.device, non_blocking=True)
    block_r = max(16, triton.next_power_of_2(max(p[1] for p in problems)))
    block_c = max(16, triton.next_power_of_2(max(p[2] for p in problems)))
    _assignment_kernel[(len(problems),)](cost, table, out, BLOCK_R=block_r, BLOCK_C=block_c,
                                        num_warps=1 if block_c <= 256 else 4)
    return out
