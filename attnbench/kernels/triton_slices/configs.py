"""Launch configurations of ``triton_slices``: one per (arch, head dim, dtype, pass).

``tuned.json`` (next to this file) holds the rows a GPU sweep measured (``attnbench tune
triton_slices``): the fastest configuration per key, with the machine and the command.
Where no row exists the *default rule* below gives the configuration, chosen so that an
offline compile (``attnbench inspect triton_slices``) shows no spills, every dot on the
architecture's best MMA and at least 3 pipeline buffers per loop; such a configuration is
marked untuned, and the record of every case says so.

Passes: ``forward``, ``dkdv`` (the dk/dv kernel, with the atomic dq when not deterministic)
and ``dq`` (the deterministic dq kernel). ``block_m`` is always the query tile, ``block_n``
the key tile.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

TABLE = Path(__file__).with_name("tuned.json")
PASSES = ("forward", "dkdv", "dq")


@dataclass(frozen=True)
class Tiles:
    block_m: int  # query rows per tile
    block_n: int  # key rows per tile
    num_warps: int = 4
    stages: int = 3  # pipeline stages of the full-block loop
    part_stages: int = 3  # ... and of the partial-entry loop (its block index is one load more away)
    tuned: bool = False
    source: str = "default rule (untuned)"

    def with_(self, **changes) -> "Tiles":
        return replace(self, **changes)

    def describe(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Config:
    """Tiles of the three kernels. ``deterministic``: dq by its own kernel over query blocks
    (no atomics; bitwise reproducible) instead of atomic adds from the dk/dv kernel.
    ``split``: split heavy key-block rows of the dk/dv launch across programs. ``tma``: load
    tiles through tensor descriptors (TMA, sm90 and later); pointers otherwise (sm80, where
    Triton's rewrite of descriptors into pointers spills heavily). ``fp32_precision``: how
    float32 operands are multiplied: ``tf32x3`` (three TF32 products on the tensor cores,
    about float32's accuracy) on a GPU, ``ieee`` in the interpreter."""

    forward: Tiles = field(default_factory=lambda: Tiles(128, 64, 8))
    dkdv: Tiles = field(default_factory=lambda: Tiles(32, 128, 8))
    dq: Tiles = field(default_factory=lambda: Tiles(128, 64, 8))
    deterministic: bool = False
    split: bool = True
    tma: bool = True
    fp32_precision: str = "tf32x3"

    @classmethod
    def uniform(cls, block_m: int, block_n: int, **kwargs) -> "Config":
        """The same ``block_m x block_n`` tiles (4 warps) for every kernel (tests, the interpreter:
        float32 products in IEEE precision unless told otherwise)."""
        tiles = Tiles(block_m, block_n, 4, 2, 2)
        return cls(tiles, tiles, tiles, **{"fp32_precision": "ieee", **kwargs})

    def with_(self, **changes) -> "Config":
        return replace(self, **changes)

    def describe(self) -> dict:
        passes = ("forward", "dkdv") + (("dq",) if self.deterministic else ())
        return {"deterministic": self.deterministic, "split": self.split, "tma": self.tma,
                "tuned": all(getattr(self, p).tuned for p in passes),
                **{p: getattr(self, p).describe() for p in passes}}


def default_tiles(arch: str, head_dim: int, dtype: str, pass_: str) -> Tiles:
    """The untuned rule, checked with ``attnbench inspect`` (no spills, every dot on the
    architecture's MMA, 3 pipeline buffers per loop where shared memory allows).

    Forward and dq: 128 query rows (wgmma needs M >= 64 per warpgroup) x 64 keys. dk/dv on
    sm90: 128 keys x 32 queries, so that the dk and dv accumulators (128 x D float32 each)
    fit in registers beside the score tiles (dq^T is computed with M = D); its partial-entry
    loop needs 5 stages for 3 buffers (an entry's query head and block are loads the
    prefetch waits on). sm100 (accumulators in tensor memory): 64 x 64. sm80 (mma.sync,
    164 KB of shared memory, pointer loads): a 4th stage for 3 buffers in the forward, 2 in
    dq (3 spill) and a 16-row query tile for dk/dv. float32 operands take twice the shared memory: half the key
    tile. Head dim 256: half the tiles."""
    fp32 = dtype == "float32"
    warps = 8
    if head_dim > 128:
        return {"forward": Tiles(64, 32, 8, 2, 2), "dkdv": Tiles(16, 64, 8, 2, 3), "dq": Tiles(64, 32, 8, 2, 2)}[pass_]
    if pass_ == "dkdv":
        if arch == "sm80":
            return Tiles(16, 128 if not fp32 else 64, warps, 3, 4)
        if arch == "sm100":
            return Tiles(64, 64 if not fp32 else 32, 8, 3, 5)
        return Tiles(32 if not fp32 else 16, 128 if not fp32 else 64, warps, 3, 5)
    stages = {"sm80": {"forward": 4, "dq": 2}}.get(arch, {}).get(pass_, 3)
    return Tiles(128, 64 if not fp32 else 32, warps, stages, stages)


def _table() -> dict[tuple, Tiles]:
    if not TABLE.exists():
        return {}
    rows = json.loads(TABLE.read_text()).get("rows", [])
    out = {}
    for row in rows:
        key = (row["arch"], int(row["head_dim"]), row["dtype"], row["pass"])
        out[key] = Tiles(int(row["block_m"]), int(row["block_n"]), int(row["num_warps"]), int(row["stages"]),
                         int(row["part_stages"]), tuned=True,
                         source=f"tuned on {row.get('machine', '?')} ({row.get('date', '?')}, triton {row.get('triton', '?')})")
    return out


def tiles_for(arch: str, head_dim: int, dtype: str, pass_: str) -> Tiles:
    return _table().get((arch, head_dim, dtype, pass_)) or default_tiles(arch, head_dim, dtype, pass_)


def config_for(arch: str, head_dim: int, dtype: str, *, deterministic: bool = False) -> Config:
    """The configuration of a GPU launch: the table's rows where tuned, else the default rule."""
    return Config(*(tiles_for(arch, head_dim, dtype, p) for p in PASSES), deterministic=deterministic,
                  tma=arch != "sm80")


def interpreter_config(*, deterministic: bool = False) -> Config:
    """Small tiles in Triton's interpreter: each program runs in Python, and small tiles waste
    fewer elements on partial blocks."""
    return Config.uniform(32, 32, deterministic=deterministic)
