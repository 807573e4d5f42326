"""Kernel cases in a persistent worker process: a crash, abort or hang ends only that case.

The main process keeps one worker per run (spawned, so no CUDA or OpenMP state is
inherited) and sends it one serialised `Case` at a time; the worker answers with the
serialised `Record` of `execute_case`. When the worker dies (signal, abort, host OOM
kill) or outlives the case's `timeout_seconds` (then it is killed), the main process
writes the case's record itself, with the tail of the worker's stderr, and starts a new
worker for the next case. After an `oom` record the worker is replaced too, so the next
case starts from a clean device; the new worker reports the memory it starts with.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from attnbench.cases import Case
from attnbench.measure.memory import ProcessWatch, WatchView
from attnbench.results.schema import Record, Status
from attnbench.results.store import utc_now

#: how long a new worker may take to import torch and calibrate before it counts as broken
START_TIMEOUT = 300.0
STDERR_TAIL = 4000


@dataclass
class WorkerConfig:
    """Everything a worker needs, picklable (it crosses a spawn)."""

    run_id: str
    device: str
    stderr_path: str
    grad_inputs: set = field(default_factory=set)
    calibrate: bool = True
    threads: Optional[int] = None  # torch's CPU thread count (measure.threads); None: torch's default
    canary: bool = True  # time the canary around every visit (measure.canary)
    #: environment variables set (value) or removed (None) for this worker only, and a source
    #: tree whose attnbench it imports instead of this one: how `compare --confirm` runs a
    #: base's code beside the current code (runner.confirm)
    env: dict = field(default_factory=dict)
    source_dir: Optional[str] = None


def _die_with_parent() -> None:
    """Linux: the worker gets SIGKILL when the main process dies (even by kill -9)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # not Linux: the worker notices the closed pipe instead
        pass


def _redirect_stderr(path: str) -> None:
    """fd 2 to the log file, so C-level crash messages are kept too."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)


def _device_memory(device: str) -> dict[str, Any]:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        return {"allocated_bytes": int(torch.cuda.memory_allocated()), "free_bytes": int(free), "total_bytes": int(total)}
    from attnbench.measure.memory import available_memory_bytes

    return {"allocated_bytes": 0, "free_bytes": available_memory_bytes(device)}


class ParentWatch:
    """The worker's end of the memory watch: the main process watches this process.

    The kernel runs in the worker, so it could reset anything the worker measures about
    itself; the main process samples the worker's memory from outside (measure.memory).
    """

    watched_by = "the main process"

    def __init__(self, conn) -> None:
        self.conn = conn

    def _ask(self, what: str) -> dict:
        self.conn.send({"memory": what})
        return self.conn.recv()["memory"]

    def mark(self) -> None:
        self._ask("mark")

    def after_prepare(self) -> None:
        self._ask("after_prepare")

    def begin(self) -> None:
        self._ask("begin")

    def end(self) -> WatchView:
        return WatchView(**self._ask("end"))


def _gpu_uuid(device: str) -> str | None:
    if not device.startswith("cuda"):
        return None
    from attnbench.measure.memory import cuda_device_uuid

    return cuda_device_uuid(device)


def worker_main(conn, config: WorkerConfig) -> None:
    """The worker's loop: receive a case, send its record, until told to stop."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's decision
    _redirect_stderr(config.stderr_path)
    faulthandler.enable()  # a segfault or abort leaves its Python stack in the stderr tail
    if config.threads is not None:
        import torch

        torch.set_num_threads(config.threads)  # before calibration: it is measured with the same count
    from attnbench.cases import DTYPES
    from attnbench.runner.execute import CaseContext, execute_case

    calibration: dict[str, Any] = {}
    ctx = CaseContext(run_id=config.run_id, grad_inputs=config.grad_inputs, memory_watch=ParentWatch(conn))
    if getattr(config, "canary", False):
        from attnbench.measure.canary import Canary

        ctx.canary = Canary(config.device)
    if config.calibrate:
        from attnbench.measure.device import calibrate_device

        # every dtype: each has its own peak (measure.device.measured_peaks)
        cal = calibrate_device(config.device, DTYPES)
        calibration = cal.to_dict()
        ctx.matmul_tflops, ctx.peak_tflops = dict(cal.matmul_tflops), dict(cal.peak_tflops)
    conn.send({"ready": True, "calibration": calibration, "memory": _device_memory(config.device), "pid": os.getpid(),
               "gpu_uuid": _gpu_uuid(config.device)})
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        if "calibration" in message:  # a replacement worker reuses the run's calibration
            ctx.matmul_tflops, ctx.peak_tflops = message["calibration"]
            continue
        if "canary" in message:  # around a case that runs elsewhere (CP ranks)
            conn.send({"canary": ctx.probe_canary()})
            continue
        from attnbench.runner.rounds import Visit

        visit = Visit.from_dict(message["visit"]) if message.get("visit") else None
        record = execute_case(Case.model_validate_json(message["case"]), ctx, visit)
        conn.send({"record": record.to_json_line()})


def host_oom_kills() -> Optional[int]:
    """The cgroup's count of processes killed by the kernel's OOM killer, where readable."""
    for path, key in (("/sys/fs/cgroup/memory.events", "oom_kill"), ("/sys/fs/cgroup/memory/memory.oom_control", "oom_kill")):
        try:
            for line in Path(path).read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


def death_status(exitcode: Optional[int], oom_kills_before: Optional[int], oom_kills_after: Optional[int]) -> tuple[Status, str]:
    """What a dead worker's exit code says about the case it was running."""
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else f"signal {-exitcode}"
        if -exitcode == signal.SIGKILL and None not in (oom_kills_before, oom_kills_after) and oom_kills_after > oom_kills_before:
            return Status.oom, "worker killed by the kernel's out-of-memory killer (host memory exhausted)"
        return Status.error, f"worker killed by {name}"
    return Status.error, f"worker exited with code {exitcode} while running the case"


class CaseWorker:
    """One worker process and the pipe to it."""

    def __init__(self, config: WorkerConfig, on_notice: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.notice = on_notice or (lambda text: None)
        self.process = None
        self.conn = None
        self.ready: dict[str, Any] = {}
        self.interrupted = False

    # -- lifecycle ----------------------------------------------------------------
    def start(self, calibration: tuple[dict, dict] | None = None) -> dict[str, Any]:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        config = self.config
        if calibration is not None:
            config = WorkerConfig(**{**config.__dict__, "calibrate": False})
        self.process = context.Process(target=worker_main, args=(child, config), name="attnbench-worker", daemon=True)
        with _child_environment(config.env, config.source_dir):
            self.process.start()
        child.close()
        self.conn = parent
        if not parent.poll(START_TIMEOUT):
            self.kill()
            raise RuntimeError(f"the worker process did not start within {START_TIMEOUT:.0f} s; see {config.stderr_path}")
        try:
            self.ready = parent.recv()
        except EOFError:
            code = self.process.exitcode
            raise RuntimeError(f"the worker process died while starting (exit code {code}); see {config.stderr_path}") from None
        if calibration is not None:
            parent.send({"calibration": calibration})
        return self.ready

    def kill(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()
        if self.process is not None:
            self.process.join(10)
        if self.conn is not None:
            self.conn.close()
        self.process = self.conn = None

    def close(self) -> None:
        if self.conn is not None and self.process is not None and self.process.is_alive():
            try:
                self.conn.send(None)
                self.process.join(10)
            except (OSError, BrokenPipeError):
                pass
        self.kill()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    # -- one case -----------------------------------------------------------------
    def canary(self) -> list[float]:
        """The canary's samples, timed in the worker now ([] where it has none)."""
        self.conn.send({"canary": True})
        return list(self.conn.recv()["canary"])

    def run(self, case: Case, timeout: float, visit=None) -> tuple[Record, bool]:
        """The record of the case (or of one visit of it, runner.rounds), and whether the worker
        must be replaced before the next case."""
        started_at, start = utc_now(), time.perf_counter()
        offset = _size(self.config.stderr_path)
        oom_before = host_oom_kills()
        self.conn.send({"case": case.model_dump_json(by_alias=True), "visit": visit.to_dict() if visit else None})
        watch = ProcessWatch(self.process.pid, device=case.device, gpu_uuid=self.ready.get("gpu_uuid"),
                             watched_by=ParentWatch.watched_by)
        deadline = start + timeout
        while True:
            try:
                if self.conn.poll(min(0.2, max(0.0, deadline - time.perf_counter()))):
                    message = self.conn.recv()
                    if "memory" in message:  # the worker asks us to watch its memory
                        self.conn.send({"memory": _watch_step(watch, message["memory"])})
                        continue
                    record = Record.model_validate_json(message["record"])
                    return record, record.status is Status.oom
                if not self.process.is_alive():
                    status, reason = death_status(self.process.exitcode, oom_before, host_oom_kills())
                    break
                if time.perf_counter() >= deadline:
                    self.kill()
                    status, reason = Status.timeout, f"still running after {timeout:g} s; worker killed"
                    break
            except EOFError:  # the pipe closed: the worker died mid-answer
                self.process.join(5)
                status, reason = death_status(self.process.exitcode, oom_before, host_oom_kills())
                break
            except KeyboardInterrupt:
                if self.interrupted:  # second Ctrl-C: abandon the case
                    self.kill()
                    status, reason = Status.error, "interrupted by the user (Ctrl-C twice)"
                    break
                self.interrupted = True
                self.notice("Ctrl-C: finishing the current case, then stopping (Ctrl-C again to abandon it)")
        self.kill()
        record = Record.for_case(
            case,
            run_id=self.config.run_id,
            status=status,
            reason=reason,
            started_at=started_at,
            duration_s=time.perf_counter() - start,
            detail=_tail(self.config.stderr_path, offset),
        )
        return record, True


@contextmanager
def _child_environment(env: dict, source_dir: Optional[str]):
    """What a worker starting now inherits: `env` over this process's environment, and
    `source_dir` first on the module path (a spawned child takes its parent's sys.path)."""
    import sys

    saved_env = {name: os.environ.get(name) for name in env}
    saved_path = list(sys.path)
    try:
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = str(value)
        if source_dir is not None:
            sys.path.insert(0, str(source_dir))
        yield
    finally:
        sys.path[:] = saved_path
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _watch_step(watch: ProcessWatch, step: str) -> dict:
    if step == "mark":
        watch.mark()
    elif step == "after_prepare":
        watch.after_prepare()
    elif step == "begin":
        watch.begin()
    elif step == "end":
        return watch.end().to_dict()
    return {}


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _tail(path: str, offset: int) -> Optional[str]:
    """What the worker wrote to stderr since `offset`, last STDERR_TAIL characters."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    text = text.strip()
    return text[-STDERR_TAIL:] if text else None
