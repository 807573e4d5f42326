"""Peak memory per rank, estimated from what the method's code holds at once.

Counted (B batch, D head dim, e bytes per element; ``hq``, ``hkv`` the heads of one rank's
steps; ``Lr`` the tokens of its ring position, ``L`` its input shard):

- always: the shard of q, k, v (and dO for a backward): ``B L D e (Hq + 2 Hkv [+ Hq])``;
- kept for backward (a pass with one): the ring Function keeps q, k, v, out and the float32
  lse of its steps (``B Lr D e (2 hq + 2 hkv) + 4 B hq Lr``); a one-call method keeps what
  its kernel keeps (the kernel's memory model, below);
- the largest of the phases:
  - an all-to-all: its send buffer, receive buffer and result (3 x its input);
  - an all-gather of K, V: the receive buffer and the concatenation (2 x the whole
    sequence's K, V: O(S) per rank by design); in the backward the same for dK, dV;
  - the local steps: the rank's head-sharded q, k, v; a ring's K/V chunks (the one held,
    the one arriving, the one being sent) and its float32 partial output and lse (forward)
    or its float32 dq and dK/dV accumulators (held, arriving, sent; backward); and the
    kernel's own working memory for the largest step (``Kernel.memory``: bytes per
    score, per dense-mask element of every step (cached for the case) and per token-head).

This is the tensors' bytes, not the allocator's: a caching allocator and the framework add
to it; a rank fits when the estimate is below the device memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnbench.cases import Case
from attnbench.cp.analytic import ACCUMULATOR_BYTES, _elem
from attnbench.cp.schedule import Schedule


@dataclass(frozen=True)
class KernelMemory:
    """Bytes a local call needs beyond its inputs and outputs (attnbench.kernels.base.MemoryModel)."""

    per_score: float = 0.0
    per_mask_element: float = 0.0
    per_token_head: float = 0.0

    @classmethod
    def of(cls, kernel: str) -> "KernelMemory":
        from attnbench.kernels import KERNELS

        if kernel not in KERNELS:  # published figures of a flash kernel: no scores kept
            return cls()
        m = KERNELS.get(kernel).memory
        return cls(m.per_score, m.per_mask_element, m.per_token_head)


def memory_parts(case: Case, schedule: Schedule, pass_name: str, *, ring_tokens: int, q_len: np.ndarray,
                 k_len: np.ndarray, kernel: KernelMemory) -> dict[str, int]:
    """One rank's bytes in ``pass_name`` by part: ``inputs``, ``kept`` (for backward) and
    ``phase`` (the largest phase), and which phase that is (``largest``, in ``phases``)."""
    s, W = case.shape, case.cp.world_size
    B, D, e = s.batch, s.head_dim, _elem(case)
    L, Lr = s.seqlen // W, ring_tokens
    hq, hkv = schedule.heads_q, schedule.heads_kv
    grad = pass_name == "backward"
    inputs = B * L * D * e * (s.heads_q + 2 * s.heads_kv + (s.heads_q if grad else 0))
    biggest = int(np.max(q_len * k_len)) if len(q_len) else 0
    work = (kernel.per_score * B * hq * biggest + kernel.per_token_head * B * hq * int(np.max(q_len, initial=0)) * D
            + kernel.per_mask_element * int(np.sum(q_len * k_len)))
    local = B * Lr * D * e * (hq + 2 * hkv)
    kept = 0  # a one-call method: the kernel's memory model already counts what it keeps
    if schedule.rings:
        if case.pass_.needs_grad:
            kept = B * Lr * D * e * (2 * hq + 2 * hkv) + 4 * B * hq * Lr
        if grad:
            ring = 3 * schedule.chunk_bytes + 3 * schedule.grad_bytes + B * hq * Lr * D * 4
        else:
            ring = 3 * schedule.chunk_bytes + B * hq * Lr * (D + 1) * ACCUMULATOR_BYTES
        steps = local + ring + int(work)
    else:
        steps = local + int(work)
    phases = {"local steps": steps}
    for c in schedule.pre + schedule.post:
        if c.op == "all_to_all":
            phases[f"all-to-all ({c.what})"] = 3 * c.bytes * c.size // max(1, c.size - 1)
        else:  # the gathered K, V (and in the backward dK, dV before the reduce-scatter)
            gathered = c.bytes * c.size // max(1, c.size - 1)
            phases[f"{c.op} ({c.what})"] = 2 * gathered * (2 if grad else 1) + local
    largest = max(phases, key=phases.get)
    return {"inputs": int(inputs), "kept": int(kept), "phase": int(phases[largest]), "largest": largest,
            "phases": phases}


def peak_bytes(case: Case, schedule: Schedule, pass_name: str, **kwargs) -> int:
    """Estimated peak of one rank in ``pass_name``: inputs + kept + the largest phase."""
    parts = memory_parts(case, schedule, pass_name, **kwargs)
    return parts["inputs"] + parts["kept"] + parts["phase"]
