"""Typed benchmark cases: what one measurement is, and its stable key.

A `Case` is fully resolved (no defaults left to look up) and serialisable, so that it
can be handed to a worker process and stored in the record it produces.
"""

from __future__ import annotations

import hashlib
import json
from enum import Enum
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

ParamValue = Union[int, float, str, bool]


class Pass(str, Enum):
    forward = "forward"
    backward = "backward"
    forward_backward = "forward_backward"

    @property
    def flop_factor(self) -> float:
        """FLOPs relative to the forward pass (masks.md convention)."""
        return {Pass.forward: 1.0, Pass.backward: 2.5, Pass.forward_backward: 3.5}[self]

    @property
    def needs_grad(self) -> bool:
        return self is not Pass.forward


DTYPES = ("float32", "float16", "bfloat16")
DTYPE_ALIASES = {"fp32": "float32", "float": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}


def canonical_dtype(name: str) -> str:
    name = DTYPE_ALIASES.get(name, name)
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)} (or fp32, fp16, bf16)")
    return name


def torch_dtype(name: str):
    import torch

    return getattr(torch, canonical_dtype(name))


class MaskChoice(BaseModel):
    """A mask family and the parameters the suite gave it (defaults are resolved later)."""

    model_config = ConfigDict(frozen=True)

    name: str
    params: dict[str, ParamValue] = Field(default_factory=dict)

    def label(self) -> str:
        if not self.params:
            return self.name
        inner = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.name}({inner})"


#: the most rounds a case may be split into (each costs a prepare and a warm-up)
MAX_ROUNDS = 20


class Budget(BaseModel):
    """How much time a case may spend.

    Warm-up and repeat counts are derived from these times by the timer; the repeat
    count is then clamped to [min_repeats, max_repeats]. A case predicted to need more
    than `case_seconds` is skipped, not attempted; one that runs past `timeout_seconds`
    is killed (it runs in a worker process) and recorded as `timeout`.

    `rounds` splits the repeats over that many visits of the case, spread over the run:
    the runner visits every case once per round, in suite order, so that a disturbance of
    the machine hits one visit of a case, not all of its samples (runner.rounds). The
    repeat count is the total over the rounds; a case never gets more rounds than repeats.
    Context-parallel cases are always measured in one visit (their launch costs more than
    the measurement).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    warmup_seconds: float = Field(0.1, ge=0)
    measure_seconds: float = Field(0.5, gt=0)
    min_repeats: int = Field(3, ge=1)
    max_repeats: int = Field(100, ge=1)
    case_seconds: float = Field(120.0, gt=0)
    #: hard limit: a case still running after this is killed and recorded as `timeout`
    timeout_seconds: float = Field(600.0, gt=0)
    rounds: int = Field(1, ge=1, le=MAX_ROUNDS)


class Shape(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    batch: int = Field(ge=1)
    heads_q: int = Field(ge=1)
    heads_kv: int = Field(ge=1)
    head_dim: int = Field(ge=1)
    seqlen: int = Field(ge=1)

    @property
    def gqa_ratio(self) -> int:
        return self.heads_q // self.heads_kv


class CPSpec(BaseModel):
    """How a context-parallel case splits one sequence over `world_size` ranks.

    The case's `shape.seqlen` is always the GLOBAL length; `scaling` only says how the
    suite chose it (weak: tokens per rank fixed; strong: global length fixed).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: str
    world_size: int = Field(ge=1)
    params: dict[str, ParamValue] = Field(default_factory=dict)  # e.g. ulysses_degree
    scaling: Literal["strong", "weak"] = "strong"
    timeout_seconds: float = Field(600.0, gt=0)
    #: set by the runner from the launch (None: every rank on one node); the methods' default
    #: Ulysses degree stays inside one node
    ranks_per_node: Optional[int] = Field(None, ge=1)
    #: set by the runner from the check's predicted cost: query rows per rank the distributed
    #: accuracy check covers (None: all of them; fewer: a deterministic sample, see cp.check)
    check_rows: Optional[int] = Field(None, ge=1)


class Case(BaseModel):
    """One kernel (or, with `cp`, one CP method whose local step is `kernel`) on one
    mask, shape, dtype and pass."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    kernel: str
    mask: MaskChoice
    shape: Shape
    dtype: str
    pass_: Pass = Field(alias="pass")
    seed: int = 0
    device: str = "cpu"
    check_accuracy: bool = True
    budget: Budget = Field(default_factory=Budget)
    cp: Optional[CPSpec] = None

    def with_timeout(self, seconds: float) -> "Case":
        """This case with its hard time limit replaced (kernel budget and CP launch alike)."""
        update: dict[str, Any] = {"budget": self.budget.model_copy(update={"timeout_seconds": float(seconds)})}
        if self.cp is not None:
            update["cp"] = self.cp.model_copy(update={"timeout_seconds": float(seconds)})
        return self.model_copy(update=update)

    def with_rounds(self, rounds: int) -> "Case":
        """This case split into `rounds` visits (runner.rounds; a CP case keeps one)."""
        return self.model_copy(update={"budget": self.budget.model_copy(update={"rounds": int(rounds)})})

    def key(self) -> dict[str, Any]:
        """The fields that identify this case across runs (compare matches on these)."""
        cp = self.cp
        cp_key = {} if cp is None else {
            "cp_method": cp.method,
            "world_size": cp.world_size,
            "cp_params": dict(sorted(cp.params.items())),
        }
        return {
            **cp_key,
            "kernel": self.kernel,
            "mask": self.mask.name,
            "mask_params": dict(sorted(self.mask.params.items())),
            "batch": self.shape.batch,
            "heads_q": self.shape.heads_q,
            "heads_kv": self.shape.heads_kv,
            "head_dim": self.shape.head_dim,
            "seqlen": self.shape.seqlen,
            "dtype": self.dtype,
            "pass": self.pass_.value,
            "seed": self.seed,
        }

    def key_id(self) -> str:
        blob = json.dumps(self.key(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    def inputs_key(self) -> tuple:
        """Cases with equal inputs_key share inputs and reference results."""
        return (self.mask.name, tuple(sorted(self.mask.params.items())), self.shape, self.dtype, self.seed, self.device)

    def label(self) -> str:
        s = self.shape
        who = self.kernel if self.cp is None else f"{self.cp.method}[W={self.cp.world_size}, {self.kernel}]"
        return (
            f"{who} {self.mask.label()} S={s.seqlen} b={s.batch} h={s.heads_q}:{s.heads_kv} "
            f"d={s.head_dim} {self.dtype} {self.pass_.value}"
        )
