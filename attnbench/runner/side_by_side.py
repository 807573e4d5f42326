"""Two code paths measured side by side: one worker process each, every case visited by both in
every round, so that both see the same machine (what `compare --confirm` does with the base's
code, runner.confirm).

A side is a worker that imports attnbench from a source tree of its own and/or runs with some
environment variables changed (runner.worker.WorkerConfig). Each round visits the cases in
suite order; for each case both sides make their visit back to back, the first side
alternating from round to round so that neither always runs right after the other. Each side
writes an ordinary run directory (`<run-id>-<side>`): records, visits journal, canary.
With `fresh_workers` (the default) every round starts a new worker process per side, so that
the rounds are independent (compare.paired): a process's own speed (memory layout, allocator
state) differs from the next one's by several percent on the same code.
A case whose visit does not end ok ends there for that side (runner.rounds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from attnbench import __version__
from attnbench.results.schema import RunInfo
from attnbench.results.store import VISITS_FILE, RunWriter, new_run_id, read_records, utc_now
from attnbench.runner.rounds import OpenCase, Visit, canary_summary, rounds_asked


@dataclass(frozen=True)
class Side:
    name: str
    source_dir: Optional[str] = None
    env: dict[str, Optional[str]] = field(default_factory=dict)


def run_side_by_side(suite, out_root: Path, sides: list[Side], events=None, *, threads: Optional[int] = None,
                     timeout: Optional[float] = None, fresh_workers: bool = True) -> list[Path]:
    """Measure `suite`'s kernel cases with every side (see the module docstring); the run
    directories, in the order of `sides`."""
    from attnbench.measure.canary import workload_for
    from attnbench.measure.environment import capture_environment
    from attnbench.measure.threads import choose_threads, pinned_threads
    from attnbench.runner.run import suite_info
    from attnbench.runner.worker import CaseWorker, WorkerConfig

    cases = [c for c in suite.cases if c.cp is None]
    device = cases[0].device if cases else "cpu"
    choice = choose_threads(threads, device)
    run_id = new_run_id()
    environment = {**capture_environment(device), "threads": choice.to_dict()}
    writers, workers, opens = [], [], []
    calibration, state = None, "failed"
    with pinned_threads(choice.count):
        try:
            for side in sides:
                info = RunInfo(run_id=f"{run_id}-{side.name}", attnbench_version=__version__, suite=suite_info(suite),
                               environment={**environment, "side": {"name": side.name, "source_dir": side.source_dir,
                                                                    "env": side.env}},
                               started_at=utc_now(), case_count=len(cases),
                               canary={"workload": workload_for(device).to_dict(), "device": device})
                writer = RunWriter(Path(out_root), info)
                writers.append(writer)
                config = WorkerConfig(run_id=info.run_id, device=device, stderr_path=str(writer.dir / "worker.stderr"),
                                      grad_inputs={c.inputs_key() for c in cases if c.pass_.needs_grad and c.check_accuracy},
                                      threads=choice.count, env=dict(side.env), source_dir=side.source_dir)
                worker = CaseWorker(config)
                ready = worker.start(calibration=calibration)
                if calibration is None:
                    calibration = (ready["calibration"]["matmul_tflops"], ready["calibration"]["peak_tflops"])
                    writer.info.calibration = ready["calibration"]
                workers.append(worker)
                opens.append({i: OpenCase(i, case) for i, case in enumerate(cases)})
            rounds = max((rounds_asked(c) for c in cases), default=1)
            for number in range(rounds):
                if number and fresh_workers:  # a new process per side and round (compare.paired)
                    for s, worker in enumerate(workers):
                        worker.close()
                        workers[s] = CaseWorker(worker.config)
                        workers[s].start(calibration=calibration)
                order = list(range(len(sides))) if number % 2 == 0 else list(reversed(range(len(sides))))
                for i, case in enumerate(cases):
                    for s in order:
                        open_case = opens[s].get(i)
                        if open_case is None or (open_case.visits and open_case.done):
                            continue
                        visit = Visit(0, rounds_asked(case)) if not open_case.visits else open_case.next_visit()
                        if not workers[s].alive:  # replaced after a fatal case
                            workers[s] = CaseWorker(workers[s].config)
                            workers[s].start(calibration=calibration)
                        record, replace = workers[s].run(case, timeout or case.budget.timeout_seconds, visit)
                        if replace:
                            workers[s].kill()
                        writers[s].append_visit(record)
                        open_case.visits.append(record)
                        if events is not None and events.on_visit:
                            events.on_visit(i, visit, record)
                        if open_case.done:
                            writers[s].append(opens[s].pop(i).record())
                        if workers[s].interrupted:
                            raise KeyboardInterrupt
            state = "complete"
        except KeyboardInterrupt:
            from attnbench.runner.run import RunInterrupted

            state = "interrupted"
            raise RunInterrupted(writers[-1].dir if writers else Path(out_root)) from None
        finally:
            for s, writer in enumerate(writers):
                for open_case in (opens[s].values() if s < len(opens) else []):
                    if open_case.visits:
                        writer.append(open_case.record())
                if s < len(workers):
                    workers[s].close()
                writer.info.canary.update(canary_summary(read_records(writer.dir / VISITS_FILE)[0]))
                writer.finish(state)
    return [w.dir for w in writers]
