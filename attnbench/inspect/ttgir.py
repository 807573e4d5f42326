"""Reading a TTGIR module (Triton's GPU dialect, as ``CompiledKernel.asm["ttgir"]`` prints it).

What decides a kernel's speed that the TTGIR shows, per op and with its source location:

- each dot and the instruction it lowers to: ``ttng.warp_group_dot`` is wgmma (sm90),
  ``ttng.tc_gen5_mma`` is tcgen05 (sm100), a ``tt.dot`` whose result has an
  ``nvidia_mma`` encoding of major version 2 is mma.sync (sm80 style), any other
  ``tt.dot`` runs on FMA units;
- each ``scf.for`` loop and the multi-buffered shared-memory allocations the software
  pipeliner gave it (``ttg.local_alloc : () -> !ttg.memdesc<3x64x128xbf16, ...>`` indexed
  by ``ttg.memdesc_index`` inside the loop: 3 buffers);
- each atomic (``tt.atomic_rmw``/``tt.atomic_cas``) with its memory semantics and scope.

The parser works line by line on the printed form (one op per line, regions delimited by
braces); it does not need MLIR bindings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Site:
    """A source location: innermost ``file:line`` first, then the call sites that inlined it."""

    chain: tuple[tuple[str, int], ...]

    @property
    def file(self) -> str:
        return Path(self.chain[0][0]).name if self.chain else "?"

    @property
    def line(self) -> int:
        return self.chain[0][1] if self.chain else 0

    def label(self) -> str:
        if not self.chain:
            return "?"
        calls = "".join(f"<{line}" for _, line in self.chain[1:])
        return f"{self.file}:{self.line}{calls}"

    def text(self) -> str:
        """The source line itself (stripped), when the file is readable."""
        if not self.chain:
            return ""
        try:
            lines = Path(self.chain[0][0]).read_text().splitlines()
        except OSError:
            return ""
        return lines[self.line - 1].strip() if 0 < self.line <= len(lines) else ""


@dataclass(frozen=True)
class Dot:
    site: Site
    instruction: str  # wgmma | tcgen05 | mma.sync | fma
    m: int
    n: int
    k: int
    operand: str  # element type of the A operand (bf16, f16, f32, ...)
    loop: int | None  # index of the innermost enclosing loop in Module.loops


@dataclass(frozen=True)
class Buffer:
    name: str  # the SSA name's stem (the source variable: k, v, q, ...)
    shape: tuple[int, ...]  # one buffer
    element: str
    buffers: int


@dataclass
class Loop:
    site: Site
    depth: int
    parent: int | None
    buffers: list[Buffer] = field(default_factory=list)
    dots: int = 0  # dots directly in this loop (not in a nested loop)

    @property
    def tile_buffers(self) -> int:
        """Buffers of the loop's pipelined 2-D tiles (the fewest over them); 1 when none."""
        tiles = [b.buffers for b in self.buffers if len(b.shape) >= 2 and b.element[0] in "fb"]
        return min(tiles) if tiles else 1


@dataclass(frozen=True)
class Atomic:
    site: Site
    op: str  # fadd, add, max, exch, cas, ...
    sem: str  # relaxed, acquire, release, acq_rel
    scope: str  # gpu, cta, sys
    element: str
    loop: int | None


@dataclass
class Module:
    dots: list[Dot]
    loops: list[Loop]
    atomics: list[Atomic]


_LOC_DEF = re.compile(r"^(#loc\d*) = loc\((.*)\)\s*$")
_LOC_REF = re.compile(r"loc\((#loc\d*)\)\s*$")
_LOC_FILE = re.compile(r'^"([^"]+)":(\d+):\d+')
_LOC_CALLSITE = re.compile(r"^callsite\((#loc\d*) at (#loc\d*)\)$")
_LOC_NAMED = re.compile(r'^"[^"]*"\((#loc\d*)\)$')
_LOC_FUSED = re.compile(r"^fused\[(#loc\d*)")
_MMA_DEF = re.compile(r"^#(mma\d*) = #ttg\.nvidia_mma<\{versionMajor = (\d+)")
_RESULT_TENSOR = re.compile(r"->\s*tensor<([\dx]+)x([a-z0-9]+),\s*#(\w+)")
_OPERAND_TYPES = re.compile(r"(?:tensor|!ttg\.memdesc)<([\dx]+)x([a-z][a-z0-9]*)[,>]")
_ALLOC = re.compile(r"^\s*%([\w.$-]+) = ttg\.local_alloc\s*:\s*\(\)\s*->\s*!ttg\.memdesc<([\dx]+)x([a-z0-9]+)")
_INDEX = re.compile(r"ttg\.memdesc_index %([\w.$-]+)\[")
_ATOMIC_RMW = re.compile(r"tt\.atomic_rmw (\w+), (\w+), (\w+),")
_ATOMIC_CAS = re.compile(r"tt\.atomic_cas (\w+), (\w+),")
_VALUE_ELEMENT = re.compile(r"->\s*(?:tensor<[\dx]+x)?([a-z]+\d+)")


def _stem(ssa: str) -> str:
    return re.sub(r"_\d+$", "", ssa)


class _Locations:
    def __init__(self, defs: dict[str, str]) -> None:
        self._defs = defs
        self._cache: dict[str, tuple[tuple[str, int], ...]] = {}

    def chain(self, ref: str, depth: int = 0) -> tuple[tuple[str, int], ...]:
        if ref in self._cache:
            return self._cache[ref]
        body = self._defs.get(ref, "")
        result: tuple[tuple[str, int], ...] = ()
        if depth < 64:
            if m := _LOC_FILE.match(body):
                result = ((m.group(1), int(m.group(2))),)
            elif m := _LOC_CALLSITE.match(body):
                result = self.chain(m.group(1), depth + 1) + self.chain(m.group(2), depth + 1)
            elif (m := _LOC_NAMED.match(body)) or (m := _LOC_FUSED.match(body)):
                result = self.chain(m.group(1), depth + 1)
        self._cache[ref] = result
        return result

    def site(self, line: str) -> Site:
        m = _LOC_REF.search(line)
        return Site(self.chain(m.group(1)) if m else ())


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("x"))


def parse(ttgir: str) -> Module:
    lines = ttgir.splitlines()
    locs = _Locations({m.group(1): m.group(2) for line in lines if (m := _LOC_DEF.match(line))})
    mma_major = {m.group(1): int(m.group(2)) for line in lines if (m := _MMA_DEF.match(line))}
    allocs: dict[str, Buffer] = {}
    loops: list[Loop] = []
    dots: list[Dot] = []
    atomics: list[Atomic] = []
    stack: list[int | None] = []  # per open region: the loop index it opens, or None
    indexed: dict[int, set[str]] = {}

    def current_loop() -> int | None:
        return next((entry for entry in reversed(stack) if entry is not None), None)

    for line in lines:
        body = line.strip()
        if m := _ALLOC.match(line):
            shape = _shape(m.group(2))
            if len(shape) >= 2:
                allocs[m.group(1)] = Buffer(_stem(m.group(1)), shape[1:], m.group(3), shape[0])
        loop = current_loop()
        if loop is not None:
            for name in _INDEX.findall(line):
                indexed.setdefault(loop, set()).add(name)
        dot = _dot(body, mma_major)
        if dot is not None:
            instruction, mnk, operand = dot
            dots.append(Dot(locs.site(body), instruction, *mnk, operand, loop))
        if m := _ATOMIC_RMW.search(body):
            atomics.append(Atomic(locs.site(body), m.group(1), m.group(2), m.group(3), _element(body), loop))
        elif m := _ATOMIC_CAS.search(body):
            atomics.append(Atomic(locs.site(body), "cas", m.group(1), m.group(2), _element(body), loop))
        opened = body.count("{") - body.count("}")
        if "scf.for " in body and body.endswith("{"):
            parent = current_loop()
            depth = sum(1 for entry in stack if entry is not None)
            loops.append(Loop(Site(()), depth, parent))
            stack.append(len(loops) - 1)
            opened -= 1
        for _ in range(max(opened, 0)):
            stack.append(None)
        for _ in range(max(-opened, 0)):
            closed = stack.pop() if stack else None
            if closed is not None:  # an op with regions prints its location after the closing brace
                loops[closed].site = locs.site(body)
    _count_dots(loops, dots)
    # a buffer belongs to the deepest loop that indexes it (an enclosing loop only fills the pipeline)
    deepest: dict[str, int] = {}
    for loop_index, names in indexed.items():
        for name in names:
            if name not in deepest or loops[loop_index].depth > loops[deepest[name]].depth:
                deepest[name] = loop_index
    for name, loop_index in sorted(deepest.items()):
        if name in allocs:
            loops[loop_index].buffers.append(allocs[name])
    return Module(dots, loops, atomics)


def _count_dots(loops: list[Loop], dots: list[Dot]) -> None:
    """Dots directly in each loop, leaving out the copies the pipeliner peeled out of a
    nested loop into its parent (its prologue or epilogue: same source site as a dot inside)."""
    def ancestors(i: int | None):
        while i is not None:
            yield i
            i = loops[i].parent

    nested_sites: dict[int, set[str]] = {}
    for dot in dots:
        if dot.loop is not None:
            for outer in list(ancestors(loops[dot.loop].parent)):
                nested_sites.setdefault(outer, set()).add(dot.site.label())
    for dot in dots:
        if dot.loop is not None and dot.site.label() not in nested_sites.get(dot.loop, set()):
            loops[dot.loop].dots += 1


def _dot(body: str, mma_major: dict[str, int]):
    if " = ttng.warp_group_dot " in body:
        instruction = "wgmma"
    elif "ttng.tc_gen5_mma " in body or "ttng.tc_gen5_mma_scaled " in body:
        instruction = "tcgen05"
    elif " = tt.dot " in body:
        result = _RESULT_TENSOR.search(body)
        encoding = result.group(3) if result else ""
        instruction = "mma.sync" if mma_major.get(encoding) == 2 else ("wgmma" if mma_major.get(encoding) == 3 else "fma")
    else:
        return None
    operands = _OPERAND_TYPES.findall(body.split(" : ", 1)[1] if " : " in body else body)
    if len(operands) < 2:
        return instruction, (0, 0, 0), "?"
    a, b = _shape(operands[0][0]), _shape(operands[1][0])
    return instruction, (a[-2], b[-1], a[-1]), operands[0][1]


def _element(body: str) -> str:
    m = _VALUE_ELEMENT.search(body.rsplit(" : ", 1)[-1])
    return m.group(1) if m else "?"
