"""Per-rank cost at 1M tokens on 64 GPUs (8 per node), the paper's shape (64:8 heads, d=128,
bf16), causal: analytic bytes (attnbench.cp.analytic), memory kept for backward, FLOPs.
Computed, not measured.

    python benchmarks/cp_paper_cost.py
"""
from attnbench.cases import Case, CPSpec, MaskChoice, Pass, Shape
from attnbench.cp import CP_METHODS
from attnbench.cp.check import check_flops
S, W = 1 << 20, 64
def case(m, **p):
    return Case(kernel="flex", mask=MaskChoice(name="causal"), shape=Shape(batch=1, heads_q=64, heads_kv=8, head_dim=128, seqlen=S),
                dtype="bfloat16", pass_=Pass.backward, device="cuda", cp=CPSpec(method=m, world_size=W, params=p, ranks_per_node=8))
GiB = 2**30
L = S // W
for m, p in [("ring_p2p", {}), ("usp", {}), ("loongtrain", {}), ("ring_allgather", {}), ("ulysses", {})]:
    c = case(m, **p); meth = CP_METHODS.get(m)
    e = meth.expected_comm(c)
    extra = ""
    if hasattr(meth, "degree"): extra = f"u={meth.degree(c)} rings={meth.ring_sizes(c)}"
    print(f"{m:15s} {extra:28s} fwd {e['forward'][0]/GiB:6.2f} GiB / {e['forward'][1]:3d} calls   bwd {e['backward'][0]/GiB:6.2f} GiB / {e['backward'][1]:3d} calls")
own = (2*64 + 2*8) * L * 128 * 2 + 64 * L * 4
print("kept for backward by the rings per rank (q, k, v, out bf16 + lse fp32):", f"{own/2**20:.0f} MiB")
old_extra = (W - 1) * 2 * 8 * L * 128 * 2 + (W - 1) * 64 * L * 128 * 4
print("the old autograd ring would also have kept (received K/V chunks + fp32 per-step partials):", f"{old_extra/GiB:.1f} GiB")
area = S * (S + 1) / 2
fwd = 4 * 64 * 128 * area
print(f"attention FLOPs per rank (causal, balanced): fwd {fwd / W:.3g}, bwd {2.5 * fwd / W:.3g}")
c = case("ring_p2p")
print(f"distributed check per rank, every row: {check_flops(c, L):.3g} fp32 FLOPs (fwd+bwd)")
inputs = (64 + 8 + 8 + 64) * L * 128 * 2
print(f"inputs per rank (q, k, v, dO shard, bf16): {inputs/2**20:.0f} MiB; the old global tensors per rank (float32 on the host): {(64+8+8+64)*S*128*4/GiB:.0f} GiB")
