"""Run a loaded suite: environment once, then the cases in rounds, one record each.

Each case is visited once per round (runner.rounds; one round unless its budget asks for
more), the suite order kept in every round, with the canary (measure.canary) timed around
every visit. Every visit is journalled in visits.jsonl and every record appended to
records.jsonl as soon as its case's last round ends; run.json is rewritten at the start and
at the end (state complete / interrupted / failed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from attnbench import __version__
from attnbench.cases import DTYPES
from attnbench.cp.execute import execute_cp_case
from attnbench.errors import UserError
from attnbench.measure.canary import workload_for
from attnbench.results.schema import Record, RoundTiming, RunInfo, SuiteInfo
from attnbench.results.store import VISITS_FILE, RunWriter, load_run, new_run_id, read_records, utc_now
from attnbench.runner.execute import CaseContext, execute_case
from attnbench.runner.rounds import OpenCase, canary_summary, reopened_cases, visits_in_rounds
from attnbench.runner.worker import CaseWorker, WorkerConfig


@dataclass
class RunEvents:
    """Callbacks for a front end (progress bars); all optional."""

    on_start: Callable[[RunInfo, int], None] | None = None
    on_case_start: Callable[[int, object], None] | None = None
    on_record: Callable[[int, Record], None] | None = None
    #: after every visit of a case (runner.rounds.Visit), before its record if that was the last
    on_visit: Callable[[int, object, Record], None] | None = None
    on_notice: Callable[[str], None] | None = None
    #: predicted seconds of each visit still to make, by (case index, round): a case's
    #: prediction (runner.plan.planned_seconds) shared by its rounds
    on_plan: Callable[[dict[tuple[int, int], float]], None] | None = None


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C: the case in flight was recorded, the run's end state and tables written."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(str(run_dir))
        self.run_dir = run_dir


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


def run_suite(
    suite,
    out_root: Path,
    events: RunEvents | None = None,
    cp_launch=None,
    *,
    isolate: bool = True,
    timeout: float | None = None,
    resume: Path | None = None,
    threads: int | None = None,
) -> Path | None:
    """Run `suite` into `out_root/<run-id>/` (or continue the run at `resume`).

    `cp_launch` (attnbench.cp.launch.LaunchOptions) says how CP cases start their ranks.
    On several nodes, node 0 runs and records as below and tells the other nodes which cases
    to take part in (attnbench.cp.nodes); any other node follows it, writes nothing and
    returns None (its `resume` is node 0's business).
    With `isolate` (the default) kernel cases run in a worker process (runner.worker);
    `timeout` overrides every case's `budget.timeout_seconds`. Ctrl-C finishes the current
    case, writes the run's end state and tables, then raises KeyboardInterrupt.
    `threads` pins torch's CPU thread count (measure.threads: default 1 on CPU).
    """
    from attnbench.measure.threads import choose_threads, pinned_threads

    events = events or RunEvents()
    cases = list(suite.cases)
    devices = sorted({case.device for case in cases}) or ["cpu"]
    choice = choose_threads(threads, devices[0])
    with pinned_threads(choice.count):  # the worker pins the same count
        if cp_launch is not None and cp_launch.multi_node and cp_launch.node_rank != 0:
            _follow(suite, cp_launch, events)
            return None
        return _run_pinned(suite, cases, devices, Path(out_root), events, cp_launch=cp_launch,
                           isolate=isolate, timeout=timeout, resume=resume, threads=choice)


def _run_pinned(suite, cases: list, devices: list[str], out_root: Path, events: RunEvents, *, cp_launch, isolate: bool,
                timeout: float | None, resume: Path | None, threads) -> Path:
    """`run_suite` once torch's thread count is pinned to `threads` (a measure.threads.ThreadChoice)."""
    from attnbench.measure.environment import capture_environment

    if resume is not None:
        writer, started, recorded = _resume(suite, Path(resume), cases)
    else:
        info = RunInfo(
            run_id=new_run_id(),
            attnbench_version=__version__,
            suite=suite_info(suite),
            environment={**capture_environment(devices[0]), "threads": threads.to_dict()},
            started_at=utc_now(),
            case_count=len(cases),
        )
        writer, started, recorded = RunWriter(out_root, info), {}, set()
    run_id = writer.info.run_id
    ctx = CaseContext(
        run_id=run_id,
        grad_inputs={case.inputs_key() for case in cases if case.pass_.needs_grad and case.check_accuracy},
        cp_launch=cp_launch,
    )
    writer.info.canary = {"workload": workload_for(devices[0]).to_dict(), "device": devices[0]}
    workers = _Workers(writer, ctx, devices[0], events, threads.count) if isolate else None
    leader = None
    if not isolate or not any(case.cp is None for case in cases) or (cp_launch is not None and cp_launch.multi_node):
        _calibrate_here(writer, ctx, devices[0])
    if workers is None or not any(case.cp is None for case in cases):  # no worker to time it in
        from attnbench.measure.canary import Canary

        ctx.canary = Canary(devices[0])
    if cp_launch is not None and cp_launch.multi_node:
        from attnbench.cp import nodes

        leader = nodes.Leader(cp_launch)
    todo = [(i, c) for i, c in enumerate(cases) if i in started or c.key_id() not in recorded]
    if leader is not None:  # the other nodes take part in the cases still to run (a resume: not the done ones)
        leader.publish(nodes.RunPlan(run_id, [case.key_id() for _, case in todo], dict(ctx.matmul_tflops)))
    if events.on_start:
        events.on_start(writer.info, len(todo))
    state = "failed"
    open_cases: dict[int, OpenCase] = {}
    clock = time.perf_counter()
    try:
        if events.on_plan and todo:
            if workers is not None and not ctx.matmul_tflops and any(c.cp is None for _, c in todo):
                workers.start()  # its calibration feeds the predictions
            _announce_plan(todo, started, ctx, cp_launch, events.on_plan)
        for open_case, visit in visits_in_rounds(todo, started, open_cases):
            index, case = open_case.index, open_case.case
            if events.on_case_start:
                events.on_case_start(index, case)
            offset = time.perf_counter() - clock
            if case.cp is not None:
                record = _cp_measured(case, ctx, workers)
            elif workers is None:
                record = execute_case(case, ctx, visit)
            else:
                record = workers.run(case, timeout or case.budget.timeout_seconds, visit)
            record = _stamped(record, offset)
            writer.append_visit(record)
            open_case.visits.append(record)
            if events.on_visit:
                events.on_visit(index, visit, record)
            if open_case.done:
                del open_cases[index]
                merged = open_case.record()
                writer.append(merged)
                if events.on_record:
                    events.on_record(index, merged)
            if workers is not None and workers.interrupted:
                raise KeyboardInterrupt
        state = "complete"
    except KeyboardInterrupt:
        state = "interrupted"
        raise RunInterrupted(writer.dir) from None
    finally:
        for open_case in open_cases.values():  # cut short between rounds: what they have
            if open_case.visits:
                writer.append(open_case.record())
        if workers is not None:
            workers.close()
        writer.info.canary.update(canary_summary(read_records(writer.dir / VISITS_FILE)[0]))
        writer.finish(state)
        from attnbench.results.tables import write_tables

        write_tables(writer.dir)
    return writer.dir


def _cp_measured(case, ctx: CaseContext, workers) -> Record:
    """A CP case, with the canary timed before and after its launch (in the worker where the
    run has one, else here)."""
    probe = workers.canary if workers is not None and workers.has_canary() else ctx.probe_canary
    start = time.perf_counter()
    before = probe()
    spent = time.perf_counter() - start
    record = execute_cp_case(case, ctx)
    start = time.perf_counter()
    after = probe()
    spent += time.perf_counter() - start
    timing = record.timing
    if timing is None:
        return record
    entry = RoundTiming(round=0, warmup=timing.warmup, samples_s=list(timing.samples_s), canary_before_s=before,
                        canary_after_s=after, canary_seconds=spent if before or after else None)
    return record.model_copy(update={"timing": timing.model_copy(update={"rounds": [entry], "rounds_planned": 1})})


def _stamped(record: Record, offset: float) -> Record:
    """The visit's start, in seconds from the run's start, on its round entry."""
    timing = record.timing
    if timing is None or not timing.rounds:
        return record
    last = timing.rounds[-1].model_copy(update={"offset_s": round(offset, 3)})
    return record.model_copy(update={"timing": timing.model_copy(update={"rounds": [*timing.rounds[:-1], last]})})


def _follow(suite, cp_launch, events: RunEvents) -> None:
    """A node other than 0: take part in the CP cases node 0 announces, in its order."""
    from attnbench.cp import nodes

    plan = nodes.follow(cp_launch)
    by_id = {case.key_id(): case for case in suite.cases}
    unknown = [case_id for case_id in plan.case_ids if case_id not in by_id]
    if unknown:
        raise UserError(
            f"node {cp_launch.node_rank}: node 0 runs {len(unknown)} case(s) this suite does not have "
            "(every node must run the same suite, profile and filters)"
        )
    cases = [by_id[case_id] for case_id in plan.case_ids if by_id[case_id].cp is not None]
    ctx = CaseContext(run_id=plan.run_id, matmul_tflops=plan.matmul_tflops, cp_launch=cp_launch)
    if events.on_start:
        events.on_start(None, len(cases))
    for index, case in enumerate(cases):
        if events.on_case_start:
            events.on_case_start(index, case)
        record = execute_cp_case(case, ctx)  # this node's view of the case; node 0 records it
        if events.on_record:
            events.on_record(index, record)


def _announce_plan(todo: list[tuple[int, object]], started: dict[int, OpenCase], ctx: CaseContext, cp_launch,
                   on_plan) -> None:
    """Predicted seconds of the visits still to make, for an ETA; a case that cannot be
    predicted costs nothing here (its own run says what is wrong with it)."""
    from attnbench.runner.plan import PlannedCase, plan_case, planned_seconds
    from attnbench.runner.rounds import rounds_asked

    plan = []
    for _, case in todo:
        try:
            plan.append(plan_case(case, ctx.matmul_tflops, cp_launch))
        except Exception as exc:  # noqa: BLE001 - the prediction must never stop a run
            plan.append(PlannedCase(case, "unsupported", str(exc), None))
    visits = {}
    for (index, case), seconds in zip(todo, planned_seconds(plan)):
        begun = started.get(index)
        rounds = begun.rounds_planned if begun is not None else rounds_asked(case)
        for number in range(len(begun.visits) if begun is not None else 0, rounds):
            visits[(index, number)] = seconds / rounds
    on_plan(visits)


def _calibrate_here(writer: RunWriter, ctx: CaseContext, device: str) -> None:
    from attnbench.measure.device import calibrate_device

    # every dtype: each has its own peak (measure.device.measured_peaks)
    calibration = calibrate_device(device, DTYPES)
    ctx.matmul_tflops, ctx.peak_tflops = dict(calibration.matmul_tflops), dict(calibration.peak_tflops)
    writer.info.calibration = calibration.to_dict()
    writer.write_info()


def _resume(suite, run_dir: Path, cases: list) -> tuple[RunWriter, dict[int, OpenCase], set[str]]:
    """Reopen a run. The cases still to do are those without a record, and those cut short
    between rounds: their visits come back from the journal (returned by case index) and
    only their missing rounds run."""
    from attnbench.runner.resume import resume_refusal

    run = load_run(run_dir, visits=True)
    refusal = resume_refusal(run.info.suite, suite)
    if refusal:
        raise UserError(f"{run_dir}: {refusal}")
    started = reopened_cases(cases, run.records, run.visits)
    reopen = {cases[i].key_id() for i in started}
    writer = RunWriter.resume(run, reopen=reopen)
    return writer, started, {r.case_id for r in run.records} - reopen


class _Workers:
    """The run's worker process: started on first use, replaced after a fatal case."""

    def __init__(self, writer: RunWriter, ctx: CaseContext, device: str, events: RunEvents, threads: int) -> None:
        self.writer, self.ctx, self.device, self.threads = writer, ctx, device, threads
        self.worker: CaseWorker | None = None
        self.interrupted = False
        self.restarts = 0
        notice = events.on_notice or (lambda text: None)
        self.notice = notice

    def _start(self) -> CaseWorker:
        config = WorkerConfig(
            run_id=self.ctx.run_id,
            device=self.device,
            stderr_path=str(self.writer.dir / "worker.stderr"),
            grad_inputs=self.ctx.grad_inputs,
            threads=self.threads,
        )
        worker = CaseWorker(config, on_notice=self.notice)
        known = (self.ctx.matmul_tflops, self.ctx.peak_tflops) if self.ctx.matmul_tflops else None
        ready = worker.start(calibration=known)
        if known is None:
            calibration = ready["calibration"]
            self.ctx.matmul_tflops, self.ctx.peak_tflops = calibration["matmul_tflops"], calibration["peak_tflops"]
            self.writer.info.calibration = calibration
            self.writer.write_info()
        return worker

    def start(self) -> None:
        if self.worker is None or not self.worker.alive:
            self.worker = self._start()

    def run(self, case, timeout: float, visit=None):
        self.start()
        record, replace = self.worker.run(case, timeout, visit)
        self.interrupted = self.interrupted or self.worker.interrupted
        if replace:
            self.worker.kill()
            self.worker = None
            if not self.interrupted:
                self.restarts += 1
                self.worker = self._start()
                memory = self.worker.ready.get("memory", {})
                self.writer.note(
                    f"worker replaced after {case.label()} ({record.status.value}); the new one starts with "
                    f"{memory.get('allocated_bytes', 0)} bytes allocated, {memory.get('free_bytes', 0)} bytes free"
                )
        return record

    def has_canary(self) -> bool:
        """Whether a worker is up to time the canary (a CP case does not start one)."""
        return self.worker is not None and self.worker.alive

    def canary(self) -> list[float]:
        return self.worker.canary()

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
