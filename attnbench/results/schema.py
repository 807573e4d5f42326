"""The record schema: one JSON line per case, and run.json per run.

Numbers are numbers or null, never codes: what happened is `status` (+ `reason`).
Bump SCHEMA_VERSION on any incompatible change; readers refuse other versions by name.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from attnbench.cases import Case

SCHEMA_VERSION = 1


class Status(str, Enum):
    ok = "ok"  # measured, accurate, plausible
    unsupported = "unsupported"  # the kernel cannot run this combination (reason says why); not attempted
    skipped = "skipped"  # predicted over the case budget or the free memory; not attempted
    oom = "oom"  # ran out of memory
    timeout = "timeout"  # exceeded the per-case time limit
    error = "error"  # raised or crashed
    invalid = "invalid"  # ran, but the numbers cannot be trusted (accuracy, NaN, above device peak)

    @property
    def attempted(self) -> bool:
        return self not in (Status.unsupported, Status.skipped)


class RoundTiming(BaseModel):
    """One visit of a case (runner.rounds): its samples and the canary around them.

    The canary (measure.canary) is timed right before the visit's warm-up and right after its
    timed loop; CP cases: before and after the launch."""

    round: int  # 0-based
    warmup: int
    samples_s: list[float]
    canary_before_s: list[float] = Field(default_factory=list)
    canary_after_s: list[float] = Field(default_factory=list)
    canary_seconds: Optional[float] = None  # wall time of the two canary probes (their cost)
    #: CPU only: the timing thread's CPU time of each sample (measure.timing), beside samples_s
    cpu_samples_s: Optional[list[float]] = None
    offset_s: Optional[float] = None  # seconds from the start of the run (or of the resume) that made the visit


class Timing(BaseModel):
    method: str  # "cuda_event" or "perf_counter"
    warmup: int
    repeats: int
    median_s: float
    p20_s: float
    p80_s: float
    samples_s: list[float]  # every sample, the rounds' in round order
    threads: Optional[int] = None  # torch's CPU intra-op thread count while timing (measure.threads)
    # Rounds (additive, so the schema version is unchanged; older records have none: one visit).
    # `samples_s` is the rounds' samples in order; a record with fewer rounds than
    # `rounds_planned` was cut short (Ctrl-C, a failing round) and says so in `reason`.
    rounds: Optional[list[RoundTiming]] = None
    rounds_planned: Optional[int] = None
    planned_repeats: Optional[int] = None  # the total over the rounds, planned by the first visit
    #: CPU only: the timing thread's CPU time of each sample, in the order of samples_s
    cpu_samples_s: Optional[list[float]] = None

    def complete(self) -> bool:
        """Every planned round is in."""
        return self.rounds is None or self.rounds_planned is None or len(self.rounds) >= self.rounds_planned


class Memory(BaseModel):
    peak_bytes: Optional[int] = None  # above the level before the kernel's prepare
    # "linux_vmhwm_rss_sampled", "cuda_max_memory_allocated[+nvml_used_sampled]", "unavailable";
    # records made before the watch was outside the kernel's process say "linux_vmhwm"
    method: str
    held_bytes: Optional[int] = None  # of peak_bytes: held when the measured call started (from prepare)
    watched_by: Optional[str] = None  # "the main process" (kernel cases in a worker) or "this process"


class TensorAccuracy(BaseModel):
    max_abs: Optional[float] = None
    rel_l2: Optional[float] = None
    tolerance: Optional[float] = None  # on rel_l2
    has_nan: bool = False
    ok: bool = True


class Coverage(BaseModel):
    """What an accuracy check covered: every query row, or a deterministic sample of them."""

    mode: Literal["full", "sampled"]
    query_rows: int  # rows checked (out, lse); with a backward, the loss's rows
    of_rows: int
    reason: Optional[str] = None


class TimedCallCheck(BaseModel):
    """One timed call of one visit, picked at random and checked against the reference."""

    round: int
    index: int  # 0-based among the visit's timed calls
    tensors: dict[str, TensorAccuracy]
    ok: bool


class Accuracy(BaseModel):
    reference: str  # e.g. "float64 cpu, query chunks"
    tensors: dict[str, TensorAccuracy]  # the first call
    ok: bool  # first call and timed call
    # the outputs of one timed call, picked at random (0-based index among the timed calls)
    timed_call: Optional[dict[str, TensorAccuracy]] = None
    timed_call_index: Optional[int] = None
    # with rounds: one checked timed call per visit (the first visit's is also `timed_call`)
    timed_calls: list["TimedCallCheck"] = Field(default_factory=list)
    coverage: Optional[Coverage] = None  # CP cases; None: every row (single-process references)


class Prediction(BaseModel):
    seconds_per_iteration: Optional[float] = None
    case_seconds: Optional[float] = None
    bytes: Optional[int] = None
    free_bytes: Optional[int] = None


class CommCount(BaseModel):
    bytes_sent: int
    calls: int


class CPOverlap(BaseModel):
    """The same iterations timed with communication skipped (compute only) and with the
    kernel skipped (communication only); medians over iterations of the slowest rank.
    ``exposed_s`` = total median - compute median (what communication adds; noise can make it
    slightly negative); ``efficiency`` = 1 - exposed / communication, clamped to [0, 1]: the
    share of the communication hidden behind compute."""

    compute_s: float
    communication_s: float
    exposed_s: float
    efficiency: Optional[float] = None  # None when the case sends nothing (W = 1): nothing to hide
    compute_samples_s: list[float] = Field(default_factory=list)
    communication_samples_s: list[float] = Field(default_factory=list)


class CPResult(BaseModel):
    """What a context-parallel case measured across its ranks (latency = slowest rank)."""

    world_size: int
    backend: str  # "gloo" or "nccl"
    rank_median_s: list[float]  # per rank, median over iterations
    mean_s: float  # mean of rank_median_s
    imbalance: float  # max / mean of rank_median_s
    rank_area: list[int]  # (query, key) pairs each rank computes, summed over its steps
    area_imbalance: float  # max / mean of rank_area
    comm: dict[str, list[CommCount]]  # pass ("forward", "backward") -> per rank, counted
    comm_expected: dict[str, CommCount]  # pass -> per rank, analytic for the method
    per_gpu_tflops: Optional[float] = None  # total FLOPs / (slowest time x world size)
    rank_peak_bytes: list[Optional[int]] = Field(default_factory=list)
    #: per rank: bytes autograd keeps for backward after the forward (distinct storages), or
    #: None when the pass has no backward
    rank_saved_bytes: list[Optional[int]] = Field(default_factory=list)
    #: False: the method's own collectives are not seen by attnbench (comm then empty: unknown)
    comm_counted: bool = True
    #: the resolved split: dispatch, ulysses_degree, ring sizes (defaults applied)
    plan: dict[str, Any] = Field(default_factory=dict)
    overlap: Optional[CPOverlap] = None


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    run_id: str
    case_id: str
    key: dict[str, Any]
    case: Case
    status: Status
    reason: Optional[str] = None
    mask: Optional[dict[str, Any]] = None  # Mask.info(): area, density, slices, documents, seed, hash
    flops: Optional[float] = None
    tflops: Optional[float] = None
    timing: Optional[Timing] = None
    memory: Optional[Memory] = None
    accuracy: Optional[Accuracy] = None
    prediction: Optional[Prediction] = None
    cp: Optional[CPResult] = None
    # optional per-case NVML snapshot (measure.environment.nvml_snapshot() taken right after
    # timing: clocks, throttle reasons); compare flags throttled samples from it. Additive,
    # so the schema version is unchanged; records without it fall back to run.json's snapshot.
    nvml: Optional[list[dict[str, Any]]] = None
    # optional: how the kernel ran the case (Kernel.configuration: tiles, and whether they were
    # tuned for this device or are an untuned default). Additive, like nvml.
    kernel_config: Optional[dict[str, Any]] = None
    started_at: str
    duration_s: float
    detail: Optional[str] = None  # traceback or stderr tail for error-like statuses

    def to_json_line(self) -> str:
        return self.model_dump_json(by_alias=True)

    @classmethod
    def for_case(cls, case: Case, *, run_id: str, status: Status, reason: Optional[str], started_at: str,
                 duration_s: float, detail: Optional[str] = None, **fields: Any) -> "Record":
        """The record of `case`, its identity (case_id, key) derived from the case."""
        return cls(run_id=run_id, case_id=case.key_id(), key=case.key(), case=case, status=status, reason=reason,
                   started_at=started_at, duration_s=duration_s, detail=detail, **fields)


class SuiteInfo(BaseModel):
    path: Optional[str] = None
    name: str
    profile: Optional[str] = None
    profile_reason: Optional[str] = None
    sha256: str
    document: dict[str, Any]
    filters: dict[str, Any] = Field(default_factory=dict)


class RunInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    run_id: str
    attnbench_version: str
    suite: SuiteInfo
    environment: dict[str, Any]
    calibration: dict[str, Any] = Field(default_factory=dict)
    started_at: str
    ended_at: Optional[str] = None
    state: str = "running"  # running, complete, interrupted, failed
    case_count: int = 0
    status_counts: dict[str, int] = Field(default_factory=dict)
    resumed_at: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)  # worker restarts and the like
    #: the canary's workload (measure.canary) and, once the run ends, what its samples say:
    #: median_s, p20_s, p80_s, samples, seconds (its cost)
    canary: dict[str, Any] = Field(default_factory=dict)
