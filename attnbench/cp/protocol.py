"""What crosses the process boundary of a context-parallel case.

The launcher (attnbench.cp.launch) writes the `Case` as JSON, starts `world_size` rank
processes with torchrun's machinery, and each rank runs `attnbench.cp.rank_main`, which
initialises torch.distributed and calls `attnbench.cp.worker.run_rank`. Rank 0 gathers
every rank's measurements and writes ONE `RankOutcome` JSON file; the launcher turns it
into the case's `Record` (adding run id, case, key, times), or records `timeout` / `error`
(with the tail of the ranks' stderr) when no outcome arrives.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict

from attnbench.results.schema import Accuracy, CPResult, Memory, Status, Timing


class RankOutcome(BaseModel):
    """The measured part of a CP case's Record, as rank 0 writes it."""

    model_config = ConfigDict(extra="forbid")

    status: Status
    reason: Optional[str] = None
    mask: Optional[dict[str, Any]] = None
    flops: Optional[float] = None
    tflops: Optional[float] = None  # per-GPU TFLOPs/s (total FLOPs / (slowest time x world size))
    timing: Optional[Timing] = None  # samples = per-iteration time of the slowest rank
    memory: Optional[Memory] = None  # the largest rank's peak
    accuracy: Optional[Accuracy] = None
    cp: Optional[CPResult] = None
    detail: Optional[str] = None
