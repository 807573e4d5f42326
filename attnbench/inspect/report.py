"""``attnbench inspect``: what each compiled function of a Triton-based kernel became.

For every launch a kernel declares (:mod:`attnbench.kernels.triton_launch`): registers,
spill bytes, shared memory, resident blocks per SM, the instruction each dot lowers to,
pipeline buffers per loop and the atomics with their semantics, plus findings (spills, a
dot below the target's best MMA, a loop with dots that is not pipelined, a block that does
not fit).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

from attnbench.errors import UserError
from attnbench.inspect.compile import Compiled, compile_launch
from attnbench.inspect.occupancy import occupancy
from attnbench.inspect.ttgir import Module, parse
from attnbench.kernels.triton_launch import LaunchQuery, TritonLaunch, launches_of

#: the MMA instruction each architecture's best path uses (Triton 3.x)
BEST_MMA = {"sm80": "mma.sync", "sm90": "wgmma", "sm100": "tcgen05"}


@dataclass
class DotReport:
    site: str
    source: str
    instruction: str  # one instruction, or "a+b" when copies of the dot differ
    m: int
    n: int
    k: int
    operand: str


@dataclass
class LoopReport:
    site: str
    source: str
    depth: int
    dots: int
    buffers: int  # pipeline buffers of its 2-D tiles (1: not pipelined)
    tiles: list[dict[str, Any]]


@dataclass
class AtomicReport:
    site: str
    source: str
    op: str
    sem: str
    scope: str
    element: str
    count: int  # copies in the compiled code


@dataclass
class FunctionReport:
    label: str
    function: str
    config: dict[str, Any]
    num_warps: int
    num_stages: int
    registers: int
    spill_store_bytes: int
    spill_load_bytes: int
    shared_bytes: int
    blocks_per_sm: int
    blocks_limited_by: str
    dots: list[DotReport]
    loops: list[LoopReport]
    atomics: list[AtomicReport]
    findings: list[str] = field(default_factory=list)


@dataclass
class InspectReport:
    kernel: str
    arch: str
    source: str  # "offline" (compiled for the target here) or "launch" (run on this GPU)
    query: dict[str, Any]
    triton: str
    functions: list[FunctionReport]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _dots(module: Module) -> list[DotReport]:
    by_site: dict[str, DotReport] = {}
    for dot in module.dots:
        key = dot.site.label()
        seen = by_site.get(key)
        if seen is None:
            by_site[key] = DotReport(key, dot.site.text(), dot.instruction, dot.m, dot.n, dot.k, dot.operand)
        elif dot.instruction not in seen.instruction.split("+"):
            seen.instruction = "+".join(sorted({*seen.instruction.split("+"), dot.instruction}))
    return list(by_site.values())


def _loops(module: Module) -> list[LoopReport]:
    return [
        LoopReport(loop.site.label(), loop.site.text(), loop.depth, loop.dots, loop.tile_buffers,
                   [{"name": b.name, "shape": list(b.shape), "element": b.element, "buffers": b.buffers}
                    for b in loop.buffers])
        for loop in module.loops
    ]


def _atomics(module: Module) -> list[AtomicReport]:
    by_key: dict[tuple, AtomicReport] = {}
    for a in module.atomics:
        key = (a.site.label(), a.op, a.sem, a.scope, a.element)
        if key in by_key:
            by_key[key].count += 1
        else:
            by_key[key] = AtomicReport(a.site.label(), a.site.text(), a.op, a.sem, a.scope, a.element, 1)
    return list(by_key.values())


def _findings(arch: str, f: FunctionReport) -> list[str]:
    out = []
    if f.spill_store_bytes or f.spill_load_bytes:
        out.append(f"spills: {f.spill_store_bytes} B stored, {f.spill_load_bytes} B loaded per thread")
    if f.blocks_per_sm == 0:
        out.append(f"does not fit on one SM ({f.blocks_limited_by})")
    best = BEST_MMA[arch]
    for dot in f.dots:
        if dot.instruction != best:
            out.append(f"dot {dot.site} ({dot.m}x{dot.n}x{dot.k}) on {dot.instruction}, not {best}")
    for loop in f.loops:
        if loop.dots and loop.buffers < 2:
            out.append(f"loop {loop.site} has {loop.dots} dots and is not pipelined")
    for a in f.atomics:
        if a.sem != "relaxed":
            out.append(f"atomic {a.op} at {a.site} is {a.sem} (relaxed is enough for a sum)")
    return out


def function_report(launch: TritonLaunch, compiled: Compiled) -> FunctionReport:
    module = parse(compiled.ttgir)
    shared = compiled.dynamic_shared_bytes + compiled.static_shared_bytes
    occ = occupancy(compiled.arch, compiled.cubin_registers, shared, compiled.num_warps)
    report = FunctionReport(
        label=launch.label, function=compiled.name, config=dict(launch.config),
        num_warps=compiled.num_warps, num_stages=compiled.num_stages,
        registers=compiled.cubin_registers, spill_store_bytes=compiled.ptxas.spill_store_bytes,
        spill_load_bytes=compiled.ptxas.spill_load_bytes, shared_bytes=shared,
        blocks_per_sm=occ.blocks_per_sm, blocks_limited_by=occ.limited_by,
        dots=_dots(module), loops=_loops(module), atomics=_atomics(module),
    )
    report.findings = _findings(compiled.arch, report)
    return report


PASS_CHOICES = {"forward": ("forward",), "backward": ("backward",), "both": ("forward", "backward")}


def build_query(*, arch: str | None, dtype: str, head_dim: int, pass_: str, mask: str, seqlen: int, heads: str,
                launch: bool) -> LaunchQuery:
    """The query the CLI's options describe (one-line errors for bad values). With ``launch``
    the arguments are made on the GPU and the architecture is the GPU's."""
    import torch

    from attnbench.cases import canonical_dtype
    from attnbench.masks import MASKS

    try:
        dtype = canonical_dtype(dtype)
    except ValueError as exc:
        raise UserError(f"--dtype: {exc}") from None
    if pass_ not in PASS_CHOICES:
        raise UserError(f"--pass must be one of {', '.join(PASS_CHOICES)} (got {pass_!r})")
    q_heads, _, kv_heads = heads.partition(":")
    try:
        heads_q, heads_kv = int(q_heads), int(kv_heads or q_heads)
    except ValueError:
        raise UserError(f"--heads must be HQ:HKV, e.g. 64:8 (got {heads!r})") from None
    if heads_q < 1 or heads_kv < 1:
        raise UserError(f"--heads must be positive (got {heads!r})")
    if head_dim < 1 or seqlen < 1:
        raise UserError("--head-dim and --seqlen must be positive")
    MASKS.check(mask)
    device = "meta"
    if launch:
        if not torch.cuda.is_available():
            raise UserError("--launch runs the kernels: it needs a CUDA device (without it, inspect compiles offline)")
        from attnbench.kernels.triton_launch import arch_of_capability

        gpu_arch = arch_of_capability(*torch.cuda.get_device_capability())
        if arch is not None and arch != gpu_arch:
            raise UserError(f"--launch compiles for this GPU ({gpu_arch}); drop --arch {arch} or compile offline")
        arch, device = gpu_arch, "cuda"
    return LaunchQuery(arch=arch or "sm90", dtype=dtype, head_dim=head_dim, passes=PASS_CHOICES[pass_], mask=mask,
                       seqlen=seqlen, heads_q=heads_q, heads_kv=heads_kv, device=device)


def inspect_kernels(names: list[str], query: LaunchQuery) -> list[InspectReport]:
    """:func:`inspect_kernel` of each registered kernel named (offline, or by launch on a GPU)."""
    from attnbench.kernels import KERNELS

    kernels = [KERNELS.get(name) for name in names]  # unknown names fail before any compile
    source = "launch" if query.device != "meta" else "offline"
    return [inspect_kernel(kernel, query, source) for kernel in kernels]


def inspect_kernel(kernel, query: LaunchQuery, source: str = "offline") -> InspectReport:
    """Compile (or, with ``source="launch"``, run) every launch ``kernel`` declares for ``query``."""
    import triton

    launches = launches_of(kernel, query)
    functions = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # triton's notices about its own defaults
        for launch in launches:
            functions.append(function_report(launch, compile_launch(launch, query.arch, source)))
    return InspectReport(kernel=kernel.name, arch=query.arch, source=source, query=asdict(query),
                         triton=triton.__version__, functions=functions)
