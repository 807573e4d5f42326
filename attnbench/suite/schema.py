"""The suite file format: pydantic models (unknown keys are refused).

A suite is a YAML mapping::

    name: longctx                      # required, letters, digits, '_', '.', '-'
    description: "..."                 # optional
    defaults:                          # values applied to every case
      batch: 1                         # default 1
      heads_q: 64                      # required
      heads_kv: 8                      # default: heads_q; or the sweep.heads_kv axis
      head_dim: 128                    # required unless sweep.head_dims is given
      dtype: bf16                      # float32|float16|bfloat16 or fp32|fp16|bf16;
                                       #   required unless sweep.dtypes is given
      passes: [forward, backward]      # forward|backward|forward_backward (or fwd, bwd,
                                       #   fwd_bwd); default [forward]
      seed: 0                          # input tensor seed, default 0
      device: auto                     # auto|cpu|cuda; auto = cuda if available
      check_accuracy: true             # default true
      budget: {warmup_seconds: 0.2, measure_seconds: 1.0, min_repeats: 3,
               max_repeats: 100, case_seconds: 300,
               rounds: 3}                # visits per case, spread over the run (default 1)
    sweep:                             # axes; the cases are their cartesian product
      kernels: [naive, sdpa, flex]     # required, registered kernel names
      masks:                           # required: a name, or a mapping with `name`
        - full                         #   and the mask's parameters (masks.md)
        - {name: sliding_window, window: 1024}
      seqlens: [1K, 2K, 4K]            # required: ints or K/M strings (1K = 1024,
                                       #   1M = 1048576), case-insensitive
      dtypes: [bf16]                   # optional axis; overrides defaults.dtype
      passes: [forward, backward]      # optional axis; overrides defaults.passes
      heads_kv: [8]                    # optional axis; overrides defaults.heads_kv
      head_dims: [128]                 # optional axis; overrides defaults.head_dim
      cp_methods:                      # optional: makes it a context-parallel suite; a name
        - ring_p2p                     #   or a mapping with `name` and the method's
        - {name: usp, ulysses_degree: 2}  # parameters; the kernels are the local step
      world_sizes: [8, 16]             # with cp_methods: ranks per case (ints >= 1)
    profiles:                          # optional named overrides, deep-merged onto the
      cpu:                             #   document: mappings merge, lists and scalars
        description: "..."             #   replace. Without CUDA a `cpu` profile is
        defaults: {heads_q: 8}         #   selected automatically.
        sweep: {seqlens: [256, 512]}

Context-parallel suites add to `defaults`: ``scaling: weak|strong`` (default weak when
``tokens_per_rank`` is given, else strong), ``tokens_per_rank: 8K`` (weak scaling: the global
length is tokens_per_rank x world size, and ``sweep.seqlens`` is left out; strong scaling:
``sweep.seqlens`` are global lengths) and ``cp_timeout_seconds: 600`` (per case; on expiry
every rank is killed and the case is recorded as timeout).

Types are strict: ``heads_q: "8"`` or ``heads_q: 8.0`` are errors, not conversions.
The models here check one value at a time; checks across values (kernel and mask names,
mask parameters, duplicates, heads_q divisible by heads_kv, min_repeats <= max_repeats)
live in `attnbench.suite.load`.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from attnbench.cases import MAX_ROUNDS, Budget, MaskChoice, canonical_dtype
from attnbench.errors import UserError

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")

PASS_ALIASES = {
    "forward": "forward",
    "fwd": "forward",
    "backward": "backward",
    "bwd": "backward",
    "forward_backward": "forward_backward",
    "fwd_bwd": "forward_backward",
}
DEVICES = ("auto", "cpu", "cuda")

#: the largest integer any field takes: records, the history database (SQLite) and torch's
#: generator seeds are 64-bit signed integers
INT64_MAX = 2**63 - 1
#: the longest sequence a suite or option may name: 1G tokens, a thousand times the
#: longest context the tool is built for; a mask's area (up to S^2) then fits in int64
MAX_SEQLEN = 2**30
#: the most timed iterations a case may ask for (every sample is kept in its record)
MAX_REPEATS = 100_000

_SEQLEN_RE = re.compile(r"^\s*(\d+)\s*([kKmM]?)\s*$")
_SUFFIX = {"": 1, "k": 1024, "m": 1024 * 1024}


def parse_seqlen(value: Any) -> int:
    """``1024``, ``"1K"`` / ``"1k"`` (1024), ``"2M"`` (2097152) -> int. Raises UserError."""
    if isinstance(value, bool):
        raise UserError(f"seqlen must be an integer or a K/M string like 4K (got {value!r})")
    if isinstance(value, int):
        return _bounded_seqlen(value)
    if isinstance(value, str):
        match = _SEQLEN_RE.match(value)
        if match:
            return _bounded_seqlen(int(match.group(1)) * _SUFFIX[match.group(2).lower()])
        raise UserError(f"cannot read seqlen {_shown_value(value)}; write an integer or a number with a K or M suffix (1K = 1024)")
    raise UserError(f"seqlen must be an integer or a K/M string like 4K (got {_shown_value(value)})")


def _bounded_seqlen(value: int) -> int:
    if value > MAX_SEQLEN:
        raise UserError(f"seqlen {_shown_value(value)} is above the longest supported, {MAX_SEQLEN} (1024M); use a shorter one")
    return value


def _shown_value(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def canonical_pass(name: str) -> str:
    try:
        return PASS_ALIASES[name]
    except KeyError:
        raise ValueError(
            f"unknown pass {name!r}; use forward, backward or forward_backward (or fwd, bwd, fwd_bwd)"
        ) from None


def _seqlen_before(value: Any) -> Any:
    try:
        return parse_seqlen(value)
    except UserError as exc:
        raise ValueError(str(exc)) from None


def _dtype_after(value: str) -> str:
    return canonical_dtype(value)  # ValueError with a hint


def _name_after(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(f"must use only letters, digits, '_', '.' and '-' (got {value!r})")
    return value


def _nonempty(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


def _mask_before(value: Any) -> Any:
    """``"causal"`` or ``{name: sliding_window, window: 64}`` -> ``{name, params}``."""
    if isinstance(value, MaskSpec):
        return value
    if isinstance(value, str):
        return {"name": value, "params": {}}
    if isinstance(value, dict):
        if "name" not in value:
            raise ValueError("a mask mapping needs a `name` key; write e.g. {name: sliding_window, window: 1024}")
        return {"name": value["name"], "params": {k: v for k, v in value.items() if k != "name"}}
    raise ValueError(f"a mask is a name or a mapping with `name` and parameters (got {value!r})")


def _param_before(value: Any) -> Any:
    if not isinstance(value, (bool, int, float, str)):
        raise ValueError(f"a mask parameter must be a number, string or boolean (got {_kind(value)})")
    return value


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "null" if value is None else repr(value)


def _param_after(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number (got {value!r})")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT64_MAX:
        raise ValueError(f"must be a 64-bit integer, at most {INT64_MAX} in size (got {_shown_value(value)}); use a smaller value")
    return value


PositiveInt = Annotated[int, Field(ge=1, le=INT64_MAX)]
Seqlen = Annotated[int, BeforeValidator(_seqlen_before), Field(ge=1, le=MAX_SEQLEN)]
DType = Annotated[str, AfterValidator(_dtype_after)]
PassName = Annotated[str, AfterValidator(canonical_pass)]
KernelName = Annotated[str, AfterValidator(_nonempty)]
ParamScalar = Annotated[Union[bool, int, float, str], BeforeValidator(_param_before), AfterValidator(_param_after)]

_B = Budget.model_fields


class BudgetSpec(BaseModel):
    """Time allowed per case (see `attnbench.cases.Budget`); min_repeats <= max_repeats."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    warmup_seconds: float = Field(_B["warmup_seconds"].default, ge=0)
    measure_seconds: float = Field(_B["measure_seconds"].default, gt=0)
    min_repeats: int = Field(_B["min_repeats"].default, ge=1, le=MAX_REPEATS)
    max_repeats: int = Field(_B["max_repeats"].default, ge=1, le=MAX_REPEATS)
    case_seconds: float = Field(_B["case_seconds"].default, gt=0)
    timeout_seconds: float = Field(_B["timeout_seconds"].default, gt=0)
    rounds: int = Field(_B["rounds"].default, ge=1, le=MAX_ROUNDS)

    def to_budget(self) -> Budget:
        return Budget(**self.model_dump())


class Defaults(BaseModel):
    """Values shared by every case. A sweep axis (dtypes, passes, heads_kv, head_dims)
    overrides the matching default."""

    model_config = ConfigDict(extra="forbid", strict=True)

    batch: PositiveInt = 1
    heads_q: Optional[PositiveInt] = None  # required (checked in load)
    heads_kv: Optional[PositiveInt] = None  # None: same as heads_q
    head_dim: Optional[PositiveInt] = None  # required unless sweep.head_dims
    dtype: Optional[DType] = None  # required unless sweep.dtypes
    passes: list[PassName] = Field(default_factory=lambda: ["forward"], min_length=1)
    seed: int = Field(0, ge=0, le=INT64_MAX)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    check_accuracy: bool = True
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    # context-parallel suites only (sweep.cp_methods)
    scaling: Optional[Literal["weak", "strong"]] = None  # None: weak if tokens_per_rank, else strong
    tokens_per_rank: Optional[Seqlen] = None  # weak scaling: global seqlen = this x world size
    cp_timeout_seconds: Optional[float] = Field(None, gt=0)  # per CP case; None: 600


class MaskSpec(BaseModel):
    """One entry of ``sweep.masks``: a name, or ``{name: ..., <param>: <value>, ...}``.
    Parameters are kept as written (defaults are resolved by the mask family later)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: Annotated[str, AfterValidator(_nonempty)]
    params: dict[str, ParamScalar] = Field(default_factory=dict)

    def choice(self) -> MaskChoice:
        return MaskChoice(name=self.name, params=dict(self.params))


MaskEntry = Annotated[MaskSpec, BeforeValidator(_mask_before)]


class CPMethodSpec(BaseModel):
    """One entry of ``sweep.cp_methods``: a name, or ``{name: usp, ulysses_degree: 2}``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: Annotated[str, AfterValidator(_nonempty)]
    params: dict[str, ParamScalar] = Field(default_factory=dict)

    def label(self) -> str:
        return MaskChoice(name=self.name, params=dict(self.params)).label()


def _method_before(value: Any) -> Any:
    """``"ring_p2p"`` or ``{name: usp, ulysses_degree: 2}`` -> ``{name, params}``."""
    if isinstance(value, CPMethodSpec):
        return value
    if isinstance(value, str):
        return {"name": value, "params": {}}
    if isinstance(value, dict):
        if "name" not in value:
            raise ValueError("a CP method mapping needs a `name` key; write e.g. {name: usp, ulysses_degree: 2}")
        return {"name": value["name"], "params": {k: v for k, v in value.items() if k != "name"}}
    raise ValueError(f"a CP method is a name or a mapping with `name` and parameters (got {_kind(value)})")


CPMethodEntry = Annotated[CPMethodSpec, BeforeValidator(_method_before)]


class Sweep(BaseModel):
    """Axes of the cartesian product. kernels, masks and seqlens are required; the others
    are optional and replace the matching `defaults` value when given."""

    model_config = ConfigDict(extra="forbid", strict=True)

    kernels: list[KernelName] = Field(min_length=1)
    masks: list[MaskEntry] = Field(min_length=1)
    seqlens: Optional[list[Seqlen]] = Field(None, min_length=1)  # required unless weak CP scaling
    dtypes: Optional[list[DType]] = Field(None, min_length=1)
    passes: Optional[list[PassName]] = Field(None, min_length=1)
    heads_kv: Optional[list[PositiveInt]] = Field(None, min_length=1)
    head_dims: Optional[list[PositiveInt]] = Field(None, min_length=1)
    cp_methods: Optional[list[CPMethodEntry]] = Field(None, min_length=1)
    world_sizes: Optional[list[PositiveInt]] = Field(None, min_length=1)


class Suite(BaseModel):
    """A resolved suite document (after a profile, if any, was merged in; no `profiles`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Annotated[str, AfterValidator(_name_after)]
    description: Optional[str] = None
    defaults: Defaults = Field(default_factory=Defaults)
    sweep: Sweep

    # -- the axes, with defaults applied ------------------------------------------------
    def dtypes(self) -> list[str]:
        return list(self.sweep.dtypes) if self.sweep.dtypes else [self.defaults.dtype]  # type: ignore[list-item]

    def passes(self) -> list[str]:
        return list(self.sweep.passes) if self.sweep.passes else list(self.defaults.passes)

    def heads_kv(self) -> list[int]:
        if self.sweep.heads_kv:
            return list(self.sweep.heads_kv)
        return [self.defaults.heads_kv or self.defaults.heads_q]  # type: ignore[list-item]

    def head_dims(self) -> list[int]:
        return list(self.sweep.head_dims) if self.sweep.head_dims else [self.defaults.head_dim]  # type: ignore[list-item]

    # -- context parallelism ---------------------------------------------------------------
    @property
    def is_cp(self) -> bool:
        return bool(self.sweep.cp_methods)

    def scaling(self) -> str:
        d = self.defaults
        return d.scaling or ("weak" if d.tokens_per_rank is not None else "strong")

    def seqlens_for(self, world_size: int) -> list[int]:
        """Global sequence lengths of the cases at `world_size` (weak: tokens_per_rank x W)."""
        if self.is_cp and self.scaling() == "weak" and self.defaults.tokens_per_rank is not None:
            return [self.defaults.tokens_per_rank * world_size]
        return list(self.sweep.seqlens or [])


class Profile(BaseModel):
    """One entry of ``profiles``: partial `description`, `defaults` and `sweep` sections,
    deep-merged onto the document (mappings merge; lists and scalars replace)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    description: Optional[str] = None
    defaults: Optional[dict[str, Any]] = None
    sweep: Optional[dict[str, Any]] = None


class SuiteFile(Suite):
    """The document as written: a `Suite` plus its `profiles`."""

    profiles: dict[str, Profile] = Field(default_factory=dict)


# Which model describes the mapping at a (wildcarded) path of the raw document.
SECTION_MODELS: dict[tuple, type[BaseModel]] = {
    (): SuiteFile,
    ("defaults",): Defaults,
    ("defaults", "budget"): BudgetSpec,
    ("sweep",): Sweep,
    ("profiles", "*"): Profile,
    ("profiles", "*", "defaults"): Defaults,
    ("profiles", "*", "defaults", "budget"): BudgetSpec,
    ("profiles", "*", "sweep"): Sweep,
}


def allowed_keys(model: type[BaseModel]) -> list[str]:
    return [name for name, info in model.model_fields.items() if info.alias is None] + [
        info.alias for info in model.model_fields.values() if info.alias
    ]
