"""Per-rank cost at 1M tokens on 64 GPUs (8 per node), the paper's shape (64:8 heads, d=128,
bf16), causal, backward pass: each method's analytic bytes (attnbench.cp.analytic, what the
counters are checked against), its estimated memory (attnbench.advise.memory) and the FLOPs
of its busiest rank (exact slice areas, attnbench.cp.slices.pair_areas). Computed, not
measured; `attnbench advise` prices the same figures.

    python benchmarks/cp_paper_cost.py
"""
from attnbench.advise.memory import KernelMemory, memory_parts
from attnbench.cases import Case, CPSpec, MaskChoice, Pass, Shape
from attnbench.cp import CP_METHODS
from attnbench.cp.check import check_flops
from attnbench.cp.slices import pair_areas, runs_length
from attnbench.masks import build_mask

S, W, GiB, MiB = 1 << 20, 64, 2**30, 2**20
mask = build_mask("causal", S, {})


def case(method: str) -> Case:
    return Case(kernel="flex", mask=MaskChoice(name="causal"), dtype="bfloat16", pass_=Pass.backward, device="cuda",
                shape=Shape(batch=1, heads_q=64, heads_kv=8, head_dim=128, seqlen=S),
                cp=CPSpec(method=method, world_size=W, ranks_per_node=8))


for name in ("ring_p2p", "usp", "loongtrain", "ring_allgather", "ulysses"):
    c, method = case(name), CP_METHODS.get(name)
    plan = method.plan(c, mask)
    schedule = method.schedule(c, plan)
    comm = method.expected_comm(c)
    areas = pair_areas(mask.slices, plan.ring.runs)
    lengths = [runs_length(r) for r in plan.ring.runs]
    busiest = max(sum(areas[rank // plan.ulysses, list(src)].sum() for src in method.step_sources(c, plan, rank))
                  for rank in range(W))
    flops = 4 * schedule.heads_q * 128 * busiest
    srcs = method.step_sources(c, plan, 0)
    import numpy as np

    q_len = np.array([lengths[0]] * len(srcs))
    k_len = np.array([sum(lengths[s] for s in src) for src in srcs])
    mem = {p: memory_parts(c, schedule, p, ring_tokens=lengths[0], q_len=q_len, k_len=k_len, kernel=KernelMemory())
           for p in ("forward", "backward")}
    plan_text = f"u={plan.ulysses} rings={list(plan.rings)} {plan.ring.strategy}"
    print(f"{name:15s} {plan_text:32s} fwd {comm['forward'][0] / GiB:6.2f} GiB / {comm['forward'][1]:3d} calls   "
          f"bwd {comm['backward'][0] / GiB:6.2f} GiB / {comm['backward'][1]:3d} calls   "
          f"kept for backward {mem['forward']['kept'] / MiB:5.0f} MiB   peak fwd {sum(mem['forward'][k] for k in ('inputs', 'kept', 'phase')) / GiB:5.2f} GiB "
          f"bwd {sum(mem['backward'][k] for k in ('inputs', 'kept', 'phase')) / GiB:5.2f} GiB ({mem['backward']['largest']})   "
          f"busiest rank fwd {flops:.3g} FLOPs, bwd {2.5 * flops:.3g}")
print(f"distributed check per rank, every row: {check_flops(case('ring_p2p'), S // W):.3g} fp32 FLOPs (fwd+bwd)")
print(f"inputs per rank (q, k, v, dO shard, bf16): {(64 + 8 + 8 + 64) * (S // W) * 128 * 2 / MiB:.0f} MiB")
