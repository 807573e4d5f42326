"""Run a loaded suite: environment once, then one case at a time, one record each.

Every record is appended to records.jsonl as soon as its case ends; run.json is
rewritten at the start and at the end (state complete / interrupted / failed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from attnbench import __version__
from attnbench.cases import DTYPES
from attnbench.results.schema import Record, RunInfo, SuiteInfo
from attnbench.results.store import RunWriter, new_run_id, utc_now
from attnbench.runner.execute import CaseContext, execute_case


@dataclass
class RunEvents:
    """Callbacks for a front end (progress bars); all optional."""

    on_start: Callable[[RunInfo, int], None] | None = None
    on_case_start: Callable[[int, object], None] | None = None
    on_record: Callable[[int, Record], None] | None = None


def suite_info(suite) -> SuiteInfo:
    return SuiteInfo(
        path=str(suite.path) if suite.path else None,
        name=suite.name,
        profile=suite.profile,
        profile_reason=suite.profile_reason,
        sha256=suite.sha256,
        document=suite.resolved,
        filters=getattr(suite, "filters", {}) or {},
    )


def run_suite(suite, out_root: Path, events: RunEvents | None = None) -> Path:
    from attnbench.measure.device import calibrate_device
    from attnbench.measure.environment import capture_environment

    events = events or RunEvents()
    cases = list(suite.cases)
    devices = sorted({case.device for case in cases}) or ["cpu"]
    # every dtype: the peak bound takes the best of them (a kernel may compute internally in another)
    calibration = calibrate_device(devices[0], DTYPES)
    run_id = new_run_id()
    info = RunInfo(
        run_id=run_id,
        attnbench_version=__version__,
        suite=suite_info(suite),
        environment=capture_environment(devices[0]),
        calibration=calibration.to_dict(),
        started_at=utc_now(),
        case_count=len(cases),
    )
    writer = RunWriter(Path(out_root), info)
    if events.on_start:
        events.on_start(info, len(cases))
    ctx = CaseContext(
        run_id=run_id,
        matmul_tflops=dict(calibration.matmul_tflops),
        peak_tflops=dict(calibration.peak_tflops),
        grad_inputs={case.inputs_key() for case in cases if case.pass_.needs_grad and case.check_accuracy},
    )
    state = "failed"
    try:
        for index, case in enumerate(cases):
            if events.on_case_start:
                events.on_case_start(index, case)
            record = execute_case(case, ctx)
            writer.append(record)
            if events.on_record:
                events.on_record(index, record)
        state = "complete"
    except KeyboardInterrupt:
        state = "interrupted"
        raise
    finally:
        writer.finish(state)
        from attnbench.results.tables import write_tables

        write_tables(writer.dir)
    return writer.dir
