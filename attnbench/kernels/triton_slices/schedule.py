"""Host-side schedule of the slice-driven kernel: which blocks each program visits.

Built with numpy from a mask's slices in O(blocks touched) time and memory (never from a
dense mask). For block sizes ``(bm, bn)`` every (slice, query block, key block) triple whose
intersection is non-empty is enumerated (only the key blocks the slice's diagonal band can
reach from the rows of the query block), its exact area computed in closed form
(:func:`attnbench.masks.slices.band_area`), and the triples grouped by
``(mask head, query block, key block)``:

- a block whose allowed pairs add up to its whole (edge-cut) area is FULL: the kernel runs it
  without any element-wise mask. Consecutive full blocks of a row form a *run* ``[lo, hi)``,
  walked with affine addresses (which the software pipeliner can prefetch);
- any other block is PARTIAL: it gets one *entry per slice touching it*, carrying that
  slice's rule inline (``q0 <= i < q1``, ``k0 <= j < k1``, ``lo <= j - i <= hi``). A block
  touched by two slices is visited twice; slices are disjoint, so each visit adds a disjoint
  set of pairs and the online softmax and the gradient sums stay exact.

Two orientations: per query block (forward, dq: the key blocks to visit) and per key block
(dk/dv: the query blocks that touch it). Per-head (block-sparse) masks have one row per head:
row ``head * n_blocks + block``.

:func:`build_programs` turns an orientation into the launch's *programs*: one per output
block (and kv head for dk/dv, whose program sums the GQA group's query heads), ordered
heaviest first (longest-processing-time order, so the long rows of causal-like masks start
first), and rows much heavier than the rest (a sink or global-token key block that every
query block touches) split into segments whose float32 partial sums a reduction kernel adds.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np

from attnbench.masks.slices import band_area

#: fields of one program (int32): owner head, block, its runs [run0, run1), its partial
#: entries [part0, part1), the partial-sum slot (-1: writes its output directly), work
PROG_FIELDS = ("owner", "block", "run0", "run1", "part0", "part1", "slot", "work")
#: fields of one run: query-head offset in the GQA group, first block, end block (exclusive)
RUN_FIELDS = ("g", "lo", "hi", "pad")
#: fields of one partial entry: query-head offset, block, the slice's rule
PART_FIELDS = ("g", "block", "q0", "q1", "k0", "k1", "lo", "hi")


@dataclass(frozen=True, eq=False)
class Orientation:
    """CSR lists for one orientation. Row ``r = head * n_rows + block``.

    ``run_lo/run_hi[run_ptr[r]:run_ptr[r+1]]``: runs of other-axis blocks visited unmasked;
    ``part_block/part_slice[part_ptr[r]:part_ptr[r+1]]``: partial entries, one per
    (block, touching slice), ordered by block."""

    run_ptr: np.ndarray
    run_lo: np.ndarray
    run_hi: np.ndarray
    part_ptr: np.ndarray
    part_block: np.ndarray
    part_slice: np.ndarray

    def row_work(self) -> np.ndarray:
        """Blocks visited per row (full blocks + partial entries)."""
        cum = np.r_[0, np.cumsum(self.run_hi.astype(np.int64) - self.run_lo)]
        return cum[self.run_ptr[1:]] - cum[self.run_ptr[:-1]] + np.diff(self.part_ptr)


@dataclass(frozen=True, eq=False)
class Schedule:
    seqlen: int
    heads: int  # mask heads: 1 (shared) or heads_q (per-head masks)
    block_m: int
    block_n: int
    n_qblocks: int
    n_kblocks: int
    rules: np.ndarray  # int32 [n_slices, 6]: q0, q1, k0, k1, lo, hi (lo/hi clipped to +-(S+1))
    by_q: Orientation  # per query block: key blocks (forward, dq)
    by_k: Orientation  # per key block: query blocks (dk, dv)
    n_full: int
    n_partial: int  # partial entries: one per (partial block, touching slice)

    @property
    def blocks_visited(self) -> int:
        return self.n_full + self.n_partial

    def density(self) -> float:
        """Fraction of the ``heads x nqb x nkb`` block grid that is visited."""
        return self.blocks_visited / max(1, self.heads * self.n_qblocks * self.n_kblocks)


def _expand(start: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, value) of every integer of the ranges ``[start, stop)``."""
    counts = np.maximum(stop - start, 0)
    owner = np.repeat(np.arange(len(start)), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    return owner, start[owner] + (np.arange(len(owner)) - first)


def _csr(rows: np.ndarray, n_rows: int) -> np.ndarray:
    ptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=ptr[1:])
    return ptr


def _i32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.int32)


def _orientation(r0, r1, c0, c1, lo, hi, head, S: int, bm: int, bn: int, heads: int) -> Orientation:
    """Rows of ``bm`` along the first axis, blocks of ``bn`` along the other, for slices
    ``{(i, j): r0 <= i < r1, c0 <= j < c1, lo <= j - i <= hi}`` (vectorised over slices).

    Per (slice, row block) the blocks it reaches form one range; inside it, the blocks the
    slice covers entirely (all rows of the row block are the slice's, every key of the block
    lies in the band for every row) are a contiguous sub-range found in closed form: a run.
    The blocks on either side are partial entries (kept where their exact area is > 0)."""
    n_rows, n_cols = -(-S // bm), -(-S // bn)
    own, rb = _expand(r0 // bm, (r1 - 1) // bm + 1)
    a = np.maximum(r0[own], rb * bm)
    b = np.minimum(r1[own], (rb + 1) * bm)
    c0o, c1o, loo, hio = c0[own], c1[own], lo[own], hi[own]
    cl = np.maximum(c0o, a + loo)  # keys reachable from rows [a, b)
    cr = np.minimum(c1o, b + hio)  # exclusive: (b - 1) + hi + 1
    first = cl // bn
    stop = np.where(cr > cl, (cr - 1) // bn + 1, first)
    whole = (a == rb * bm) & (b == np.minimum(S, (rb + 1) * bm))
    left = np.maximum(c0o, loo + b - 1)  # every row allows keys >= left ...
    right = np.minimum(c1o, hio + a + 1)  # ... and < right
    f_lo = np.maximum(first, -(-left // bn))
    f_hi = np.minimum(stop, np.where(right >= S, n_cols, right // bn))
    full = whole & (f_hi > f_lo)
    f_lo = np.where(full, f_lo, first)
    f_hi = np.where(full, f_hi, first)
    row = head[own] * n_rows + rb

    # runs: one per (slice, row block) with full blocks; touching runs of a row merged
    order = np.lexsort((f_lo[full], row[full]))
    r_row, r_lo, r_hi = row[full][order], f_lo[full][order], f_hi[full][order]
    if len(r_row):
        new = np.r_[True, (r_row[1:] != r_row[:-1]) | (r_lo[1:] != r_hi[:-1])]
        starts = np.flatnonzero(new)
        ends = np.r_[starts[1:], len(r_row)] - 1
        r_row, r_lo, r_hi = r_row[starts], r_lo[starts], r_hi[ends]

    # partial entries: [first, f_lo) and [f_hi, stop) of every pair
    pair = np.arange(len(own))
    o1, c1s = _expand(first, f_lo)
    o2, c2s = _expand(f_hi, stop)
    p_pair = np.concatenate([pair[o1], pair[o2]])
    p_col = np.concatenate([c1s, c2s])
    area = band_area(a[p_pair], b[p_pair], np.maximum(c0o[p_pair], p_col * bn),
                     np.minimum(c1o[p_pair], (p_col + 1) * bn), loo[p_pair], hio[p_pair])
    keep = area > 0
    p_pair, p_col = p_pair[keep], p_col[keep]
    p_row, p_slice = row[p_pair], own[p_pair]
    order = np.lexsort((p_slice, p_col, p_row))
    p_row, p_col, p_slice = p_row[order], p_col[order], p_slice[order]
    return Orientation(
        run_ptr=_csr(r_row, heads * n_rows), run_lo=_i32(r_lo), run_hi=_i32(r_hi),
        part_ptr=_csr(p_row, heads * n_rows), part_block=_i32(p_col), part_slice=_i32(p_slice),
    )


def build_schedule(slices, seqlen: int, heads: int, block_m: int, block_n: int) -> Schedule:
    """Schedule of a slice table (``attnbench.masks.SliceTable``) for blocks ``block_m x block_n``."""
    S = int(seqlen)
    if block_m < 1 or block_n < 1:
        raise ValueError("block sizes must be >= 1")
    if S >= 2**30:
        raise ValueError("triton_slices keeps token indices in int32: seqlen must be < 2**30")
    t = slices
    n = len(t)
    head = np.zeros(n, dtype=np.int64) if t.head is None else t.head.astype(np.int64)
    if n and (head.min() < 0 or head.max() >= heads):
        raise ValueError(f"slice heads outside [0, {heads})")
    big = S + 1
    lo = np.clip(t.lo, -big, big)
    hi = np.clip(t.hi, -big, big)
    q0, q1, k0, k1 = t.q0, t.q1, t.k0, t.k1
    by_q = _orientation(q0, q1, k0, k1, lo, hi, head, S, block_m, block_n, heads)
    # per key block: the same slices transposed (i <-> j turns lo <= j - i <= hi into -hi <= i - j <= -lo)
    by_k = _orientation(k0, k1, q0, q1, -hi, -lo, head, S, block_n, block_m, heads)
    rules = np.stack([q0, q1, k0, k1, lo, hi], axis=1) if n else np.zeros((0, 6), dtype=np.int64)
    n_full = int((by_q.run_hi.astype(np.int64) - by_q.run_lo).sum())
    return Schedule(
        seqlen=S, heads=heads, block_m=block_m, block_n=block_n, n_qblocks=-(-S // block_m),
        n_kblocks=-(-S // block_n), rules=_i32(rules.reshape(-1, 6)), by_q=by_q, by_k=by_k,
        n_full=n_full, n_partial=len(by_q.part_block),
    )


@functools.lru_cache(maxsize=16)
def _cached(digest: str, seqlen: int, heads: int, block_m: int, block_n: int, mask_ref) -> Schedule:
    return build_schedule(mask_ref.slices, seqlen, heads, block_m, block_n)


class _Ref:
    """Hashes as the mask's slice digest, so the cache key does not hold the mask's arrays twice."""

    def __init__(self, mask) -> None:
        self.slices = mask.slices
        self._key = (mask.slices_hash, mask.seqlen, mask.heads)

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Ref) and other._key == self._key


def mask_schedule(mask, block_m: int, block_n: int) -> Schedule:
    """:func:`build_schedule` of a built :class:`attnbench.masks.Mask`, cached by its slice hash."""
    return _cached(mask.slices_hash, mask.seqlen, mask.heads, block_m, block_n, _Ref(mask))


# -- programs ------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Programs:
    """What one launch's programs do (int32 arrays, fields as named above).

    ``prog[p]`` for program ``p`` (heaviest first), its runs ``runs[run0:run1]`` and
    partial entries ``parts[part0:part1]``; ``splits[i] = (owner, block, slot0, slot1)`` for
    every output block computed by several programs (slots ``slot0..slot1-1`` of the
    float32 partial-sum buffer, added in that order). ``owner`` is the head the program
    belongs to when heads have their own rows (per-head masks), else 0 (the launch's grid
    then covers every head with the same programs)."""

    prog: np.ndarray
    runs: np.ndarray
    parts: np.ndarray
    splits: np.ndarray
    n_slots: int

    @property
    def count(self) -> int:
        return len(self.prog)

    def work(self) -> np.ndarray:
        return self.prog[:, PROG_FIELDS.index("work")].astype(np.int64)

    def select(self, keep: np.ndarray) -> "Programs":
        """Only the programs ``keep`` (a boolean mask or indices), e.g. to run or profile a few
        blocks of a very long sequence; items are shared, splits of dropped programs dropped."""
        prog = self.prog[keep]
        slots = set(prog[:, PROG_FIELDS.index("slot")].tolist())
        splits = self.splits[[int(r[2]) in slots for r in self.splits]] if len(self.splits) else self.splits
        return replace(self, prog=np.ascontiguousarray(prog), splits=np.ascontiguousarray(splits.reshape(-1, 4)))


def split_cap(total_work: int, slots: int, minimum: int = 8) -> int:
    """Most blocks one program visits before its row is split: the balanced share of one
    resident program slot (``total_work / slots``, slots = SMs x resident programs). With
    the programs started heaviest first, the launch then ends no later than a balanced
    schedule would for want of one long row (a sink or global key block that every query
    block touches); rows below the share (causal ones, long documents among many) stay whole."""
    return max(minimum, -(-int(total_work) // max(1, slots)))


def build_programs(schedule: Schedule, orientation: str, owners: int, group: int, *, replicas: int = 1,
                   split_slots: int | None = None) -> Programs:
    """Programs over ``o``: one per (owner, block); ``group`` query heads per program.

    Forward and dq: ``owners`` = mask heads, ``group`` = 1. dk/dv: ``owners`` = kv heads when
    the mask is per head (each program gathers the rows of its ``group`` query heads), 1 when
    it is shared (the shared row, once per query head of the group). ``orientation``: ``by_q``
    or ``by_k``. ``replicas``: how many times the grid runs every program (batch x heads that
    share the rows). ``split_slots``: resident program slots of the device (SMs x programs
    per SM) to split heavy rows for; None splits nothing."""
    o: Orientation = getattr(schedule, orientation)
    n_blocks = schedule.n_qblocks if orientation == "by_q" else schedule.n_kblocks
    mask_heads = schedule.heads
    n_prog = owners * n_blocks
    owner = np.repeat(np.arange(owners), n_blocks)
    block = np.tile(np.arange(n_blocks), owners)
    g = np.tile(np.arange(group), n_prog)
    src_prog = np.repeat(np.arange(n_prog), group)
    mask_head = (owner[src_prog] * group + g) if mask_heads > 1 else np.zeros_like(g)
    src_row = mask_head * n_blocks + block[src_prog]

    def gather(ptr: np.ndarray):
        item_src, item = _expand(ptr[src_row], ptr[src_row + 1])
        return src_prog[item_src], g[item_src], item

    run_prog, run_g, run_item = gather(o.run_ptr)
    part_prog, part_g, part_item = gather(o.part_ptr)
    runs = np.stack([run_g, o.run_lo[run_item], o.run_hi[run_item], np.zeros_like(run_g)], axis=1)
    parts = np.concatenate([np.stack([part_g, o.part_block[part_item]], axis=1),
                            schedule.rules[o.part_slice[part_item]]], axis=1).astype(np.int64)
    run_len = (o.run_hi[run_item] - o.run_lo[run_item]).astype(np.int64)
    work = np.bincount(run_prog, weights=run_len, minlength=n_prog) + np.bincount(part_prog, minlength=n_prog)
    work = work.astype(np.int64)
    # runs and entries of a program are contiguous (gathered in program order)
    run_ptr, part_ptr = _csr(run_prog, n_prog), _csr(part_prog, n_prog)
    prog = np.stack([owner, block, run_ptr[:-1], run_ptr[1:], part_ptr[:-1], part_ptr[1:],
                     np.full(n_prog, -1), work], axis=1).astype(np.int64)
    splits = np.zeros((0, 4), dtype=np.int64)
    n_slots = 0
    if split_slots and n_prog:
        cap = split_cap(int(work.sum()) * replicas, split_slots)
        heavy = np.flatnonzero(work > cap)
        if len(heavy):
            prog, runs, parts, splits, n_slots = _split(prog, runs, parts, heavy, cap)
    order = np.argsort(-prog[:, 7], kind="stable")
    return Programs(prog=_i32(prog[order]), runs=_i32(runs.reshape(-1, 4)), parts=_i32(parts.reshape(-1, 8)),
                    splits=_i32(splits), n_slots=n_slots)


def _split(prog, runs, parts, heavy, cap):
    """Cut each heavy program into segments of at most ``cap`` blocks; new runs and entries
    are appended (a run cut at a segment edge becomes two)."""
    new_prog, new_runs, new_parts, splits = [], [], [], []
    n_runs, n_parts = len(runs), len(parts)
    slot = 0
    for p in heavy:
        owner, block, r0, r1, e0, e1 = (int(x) for x in prog[p, :6])
        pieces = [("run", runs[r, 0], lo, min(lo + cap, runs[r, 2]))
                  for r in range(r0, r1) for lo in range(int(runs[r, 1]), int(runs[r, 2]), cap)]
        pieces += [("part", e) for e in range(e0, e1)]
        first_slot = slot
        segment: list = []
        filled = 0

        def close():
            nonlocal n_runs, n_parts, slot
            seg_runs = [(g, lo, hi, 0) for kind, g, lo, hi in (x for x in segment if x[0] == "run")]
            seg_parts = [parts[x[1]] for x in segment if x[0] == "part"]
            work = sum(hi - lo for _, lo, hi, _ in seg_runs) + len(seg_parts)
            new_prog.append((owner, block, n_runs, n_runs + len(seg_runs), n_parts, n_parts + len(seg_parts), slot,
                             work))
            new_runs.extend(seg_runs)
            new_parts.extend(seg_parts)
            n_runs += len(seg_runs)
            n_parts += len(seg_parts)
            slot += 1

        for piece in pieces:
            size = piece[3] - piece[2] if piece[0] == "run" else 1
            if piece[0] == "run" and size > cap - filled and filled:
                close()
                segment, filled = [], 0
            while piece[0] == "run" and size > cap - filled:  # a long run: cut it
                take = cap - filled
                segment.append(("run", piece[1], piece[2], piece[2] + take))
                close()
                segment, filled = [], 0
                piece = ("run", piece[1], piece[2] + take, piece[3])
                size -= take
            if size:
                segment.append(piece)
                filled += size
            if filled >= cap:
                close()
                segment, filled = [], 0
        if segment:
            close()
        splits.append((owner, block, first_slot, slot))
    keep = np.ones(len(prog), dtype=bool)
    keep[heavy] = False
    prog = np.concatenate([prog[keep], np.asarray(new_prog, dtype=np.int64).reshape(-1, 8)])
    runs = np.concatenate([runs, np.asarray(new_runs, dtype=np.int64).reshape(-1, 4)])
    parts = np.concatenate([parts, np.asarray(new_parts, dtype=np.int64).reshape(-1, 8)])
    return prog, runs, parts, np.asarray(splits, dtype=np.int64).reshape(-1, 4), slot


def render_dense(schedule: Schedule) -> np.ndarray:
    """``[heads, S, S]`` bool of what the schedule allows (tests only: small S)."""
    S, H = schedule.seqlen, schedule.heads
    out = np.zeros((H, S, S), dtype=bool)
    i = np.arange(S)[:, None]
    j = np.arange(S)[None, :]
    o = schedule.by_q
    bm, bn = schedule.block_m, schedule.block_n
    for h in range(H):
        for qb in range(schedule.n_qblocks):
            r = h * schedule.n_qblocks + qb
            rs = slice(qb * bm, min(S, (qb + 1) * bm))
            for e in range(o.run_ptr[r], o.run_ptr[r + 1]):
                out[h, rs, o.run_lo[e] * bn:min(S, o.run_hi[e] * bn)] = True
            for e in range(o.part_ptr[r], o.part_ptr[r + 1]):
                kb = o.part_block[e]
                cs = slice(kb * bn, min(S, (kb + 1) * bn))
                q0, q1, k0, k1, lo, hi = schedule.rules[o.part_slice[e]]
                ii, jj = i[rs], j[:, cs]
                out[h, rs, cs] |= (ii >= q0) & (ii < q1) & (jj >= k0) & (jj < k1) & (jj - ii >= lo) & (jj - ii <= hi)
    return out
