"""Resident blocks per SM from registers, shared memory and warps, per architecture.

Limits from the CUDA C++ Programming Guide, "Compute Capabilities" table (8.0 = A100,
9.0 = H100/H200, 10.0 = B200): 64K 32-bit registers per SM allocated per warp in units of
256, at most 64 resident warps and 32 resident blocks per SM, shared memory per SM of 164 KB
(8.0) or 228 KB (9.0, 10.0) of which one block may use 163 KB / 227 KB, and 1 KB reserved
by the system per resident block.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SMLimits:
    registers: int = 65536
    register_unit: int = 256  # per warp
    max_warps: int = 64
    max_blocks: int = 32
    shared_per_sm: int = 228 * 1024
    shared_per_block: int = 227 * 1024
    shared_reserved_per_block: int = 1024


LIMITS = {
    "sm80": SMLimits(shared_per_sm=164 * 1024, shared_per_block=163 * 1024),
    "sm90": SMLimits(),
    "sm100": SMLimits(),
}


@dataclass(frozen=True)
class Occupancy:
    blocks_per_sm: int
    limited_by: str  # registers | shared memory | warps | blocks

    def to_dict(self) -> dict:
        return {"blocks_per_sm": self.blocks_per_sm, "limited_by": self.limited_by}


def occupancy(arch: str, registers: int, shared_bytes: int, num_warps: int) -> Occupancy:
    lim = LIMITS[arch]
    per_warp = -(-max(registers, 1) * 32 // lim.register_unit) * lim.register_unit
    by = {
        "registers": (lim.registers // per_warp) // num_warps,
        "shared memory": 0 if shared_bytes > lim.shared_per_block
        else lim.shared_per_sm // (shared_bytes + lim.shared_reserved_per_block),
        "warps": lim.max_warps // num_warps,
        "blocks": lim.max_blocks,
    }
    limiter = min(by, key=by.__getitem__)
    return Occupancy(by[limiter], limiter)
