"""Compile a :class:`~attnbench.kernels.triton_launch.TritonLaunch` and collect what it became.

Two sources, one result (:class:`Compiled`: TTGIR, PTX, cubin, dynamic shared memory, the
ptxas report):

- ``offline``: ``triton.compile`` for a chosen target (``GPUTarget("cuda", 90, 32)``) on any
  machine, GPU or not. The signature, constexprs and divisibility attributes are derived
  from the launch's arguments by Triton's own binder, exactly as ``fn[grid](...)`` does at
  run time (so a ``meta`` tensor with the right dtype and strides compiles what a real
  launch of that shape would);
- ``launch``: on a GPU, the launch itself is run and the kernel Triton compiled for it is read.

Registers and shared memory come from the cubin (``cuobjdump``), spill bytes from ``ptxas
-v`` run on the PTX with the options Triton uses (Triton's cache keeps no ptxas log), both
tools from the Triton wheel.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from attnbench.errors import UserError
from attnbench.kernels.triton_launch import ARCHS, TritonLaunch


@dataclass(frozen=True)
class PtxasReport:
    registers: int
    spill_store_bytes: int
    spill_load_bytes: int
    stack_frame_bytes: int


@dataclass(frozen=True)
class Compiled:
    name: str  # the jit function's name
    arch: str
    source: str  # "offline" or "launch"
    num_warps: int
    num_stages: int
    ttgir: str
    ptx: str
    dynamic_shared_bytes: int
    cubin_registers: int
    static_shared_bytes: int
    ptxas: PtxasReport


def _nvidia_tool(name: str) -> str:
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    if not path.exists():
        raise UserError(f"{name} not found in the triton wheel ({path}); inspect needs triton's NVIDIA tools")
    return str(path)


def _target(arch: str):
    from triton.backends.compiler import GPUTarget

    return GPUTarget("cuda", ARCHS[arch], 32)


def _bind(launch: TritonLaunch, backend):
    """(signature, constexprs, attrs, options) as ``JITFunction.run`` computes them (Triton 3.x)."""
    from triton.runtime.jit import create_function_from_signature

    fn = launch.fn
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    kwargs = dict(launch.constexprs, num_warps=launch.num_warps, num_stages=launch.num_stages)
    bound, specialization, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    return signature, constexprs, attrs, options


def compile_offline(launch: TritonLaunch, arch: str):
    """The CompiledKernel of ``launch`` for ``arch``, compiled on this machine (no GPU needed)."""
    import triton
    from triton.compiler import ASTSource, make_backend

    target = _target(arch)
    backend = make_backend(target)
    signature, constexprs, attrs, options = _bind(launch, backend)
    return triton.compile(ASTSource(launch.fn, signature, constexprs, attrs), target=target, options=options.__dict__)


def compile_by_launch(launch: TritonLaunch):
    """Run the launch (arguments on the GPU) and return the kernel Triton compiled for it."""
    kernel = launch()
    if kernel is None:
        raise UserError(f"launch {launch.label!r} returned no compiled kernel")
    return kernel


_PTXAS_USED = re.compile(r"Used (\d+) registers")
_PTXAS_STACK = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def parse_ptxas_log(log: str) -> PtxasReport:
    used = _PTXAS_USED.search(log)
    stack = _PTXAS_STACK.search(log)
    if not used or not stack:
        raise UserError(f"unexpected ptxas output: {log.strip()[:200]!r}")
    return PtxasReport(int(used.group(1)), int(stack.group(2)), int(stack.group(3)), int(stack.group(1)))


def run_ptxas(ptx: str, arch: str, enable_fp_fusion: bool = True) -> PtxasReport:
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    capability = ARCHS[arch]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        cmd = [get_ptxas(capability).path, "-v", "--regAllocOptLevel=2", f"--gpu-name={sm_arch_from_capability(capability)}",
               *([] if enable_fp_fusion else ["--fmad=false"]), str(src), "-o", str(Path(tmp) / "k.cubin")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise UserError(f"ptxas failed: {proc.stderr.strip()[:300]}")
    return parse_ptxas_log(proc.stderr + proc.stdout)


_RESOURCE = re.compile(r"Function (\S+):\s*\n\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def cubin_resources(cubin: bytes) -> tuple[int, int]:
    """(registers, static shared bytes) of the cubin's kernel, read by ``cuobjdump``."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        proc = subprocess.run([_nvidia_tool("cuobjdump"), "--dump-resource-usage", f.name], capture_output=True, text=True)
    if proc.returncode:
        raise UserError(f"cuobjdump failed: {proc.stderr.strip()[:300]}")
    match = _RESOURCE.search(proc.stdout)
    if not match:
        raise UserError(f"unexpected cuobjdump output: {proc.stdout.strip()[:200]!r}")
    return int(match.group(2)), int(match.group(4))


def collect(kernel, arch: str, source: str, launch: TritonLaunch) -> Compiled:
    """What :func:`compile_offline` or :func:`compile_by_launch` produced, read into a :class:`Compiled`."""
    meta = kernel.metadata
    registers, static_shared = cubin_resources(kernel.asm["cubin"])
    return Compiled(
        name=launch.fn.__name__, arch=arch, source=source, num_warps=meta.num_warps, num_stages=meta.num_stages,
        ttgir=kernel.asm["ttgir"], ptx=kernel.asm["ptx"], dynamic_shared_bytes=int(meta.shared),
        cubin_registers=registers, static_shared_bytes=static_shared,
        ptxas=run_ptxas(kernel.asm["ptx"], arch, bool(getattr(meta, "enable_fp_fusion", True))),
    )


def compile_launch(launch: TritonLaunch, arch: str, source: str = "offline") -> Compiled:
    kernel = compile_offline(launch, arch) if source == "offline" else compile_by_launch(launch)
    return collect(kernel, arch, source, launch)
