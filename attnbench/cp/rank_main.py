"""The entry point of one rank of a context-parallel case.

    python -m attnbench.cp.rank_main --case CASE.json --outcome OUTCOME.json [--worker MOD:FN]

`attnbench.cp.launch` runs `rank_entry` (the same as this command line) in every rank
through torchrun's machinery (`elastic_launch`), which sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT (env:// rendezvous); plain ``torchrun -m attnbench.cp.rank_main
...`` works too. Each
rank initialises torch.distributed (gloo on CPU; NCCL with one GPU per rank, the GPU of
its LOCAL_RANK, on CUDA), calls the worker (`attnbench.cp.worker:run_rank` unless
``--worker`` or ATTNBENCH_CP_WORKER names another), and rank 0 writes the `RankOutcome`
it returns to ``--outcome`` atomically (a temporary file, then a rename).

The rank marks ``ready/rank<R>`` once init_process_group returned: the launcher retries a
launch whose ranks never got there (gloo's connect can hang on a loaded machine).

Hangs speak: collectives time out well before the case does (:func:`collective_timeout`:
half the case timeout, or ATTNBENCH_CP_COLLECTIVE_TIMEOUT_S; the rendezvous keeps the whole), so a stuck collective raises in
the rank that waits, naming itself, instead of the case just running out of time. And every
rank arms faulthandler to write its Python stacks to ``stacks/rank<R>-<pid>.txt`` beside the
outcome file on SIGUSR1 (the launcher sends it at a timeout) and on SIGTERM (torchrun's stop
of the survivors when a rank failed); the launcher puts them in the record's detail.

A rank whose worker raises prints the traceback to stderr and exits 1 at once, without
tearing the process group down (its peers may be blocked in a collective with it);
torchrun then stops the other ranks and the launcher records `error` with the stderr
tail. Rank 0 writes an error outcome first, so the record keeps the exception's message,
unless its exception is a communication failure: then a peer died first, and that rank
(reported by torchrun) is the story. A rank failing that way also waits `PEER_FAILURE_DELAY_S`
before it exits, so that torchrun sees the rank that died first as the root cause.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import os
import re
import signal
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path

DEFAULT_WORKER = "attnbench.cp.worker:run_rank"
WORKER_ENV = "ATTNBENCH_CP_WORKER"
#: the launcher marks every process of one case with this variable, to find them all
CASE_TOKEN_ENV = "ATTNBENCH_CP_CASE_TOKEN"
PEER_FAILURE_DELAY_S = 1.0
#: collectives time out after this share of the case timeout (or ATTNBENCH_CP_COLLECTIVE_TIMEOUT_S seconds)
COLLECTIVE_TIMEOUT_SHARE = 0.5
COLLECTIVE_TIMEOUT_ENV = "ATTNBENCH_CP_COLLECTIVE_TIMEOUT_S"
STACKS_DIR = "stacks"
READY_DIR = "ready"  # a rank's marker file here says it is past init_process_group
_PEER_FAILURE = re.compile(r"peer|connection|closed|reset|broken pipe|aborted|timed? ?out", re.I)


def die_with_parent() -> None:
    """Linux: get SIGKILL when torchrun's agent (our parent) dies, so no rank outlives it."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)
    except Exception:  # pragma: no cover - best effort; the launcher sweeps leftovers anyway
        pass


def collective_timeout(case_timeout_s: float, env=os.environ) -> timedelta:
    """How long one collective may block: half the case's timeout (at least 1 s), or the
    seconds in ATTNBENCH_CP_COLLECTIVE_TIMEOUT_S (never more than the case timeout)."""
    raw = env.get(COLLECTIVE_TIMEOUT_ENV, "").strip()
    try:
        seconds = float(raw) if raw else COLLECTIVE_TIMEOUT_SHARE * case_timeout_s
    except ValueError:
        seconds = COLLECTIVE_TIMEOUT_SHARE * case_timeout_s
    return timedelta(seconds=max(1.0, min(seconds, case_timeout_s)))


def arm_stack_dumps(directory: Path, rank: int) -> None:
    """Write every thread's Python stack to ``directory/rank<R>-<pid>.txt`` on SIGUSR1 (and
    go on) and on SIGTERM (then terminate as before)."""
    try:
        directory.mkdir(exist_ok=True)
        handle = open(directory / f"rank{rank}-{os.getpid()}.txt", "w")  # noqa: SIM115 - open for the process's life
    except OSError:
        return
    faulthandler.register(signal.SIGUSR1, file=handle, all_threads=True, chain=False)
    faulthandler.register(signal.SIGTERM, file=handle, all_threads=True, chain=True)


def mark_ready(directory: Path, rank: int) -> None:
    """Tell the launcher this rank got through init_process_group."""
    try:
        directory.mkdir(exist_ok=True)
        (directory / f"rank{rank}").touch()
    except OSError:
        pass


def load_worker(spec: str):
    """``"package.module:function"`` (function defaults to run_rank) -> the callable."""
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr or "run_rank")


#: what a rank imports on its way (imported in the agent before it forks the ranks)
_WARM_MODULES = (
    "attnbench.cp.base", "attnbench.cp.check", "attnbench.cp.comm", "attnbench.cp.dispatch", "attnbench.cp.ring",
    "attnbench.cases", "attnbench.inputs", "attnbench.measure.accuracy", "attnbench.measure.blocks",
    "attnbench.measure.flops", "attnbench.measure.memory", "attnbench.measure.reference", "attnbench.measure.timing",
    "attnbench.tolerance",
)


def preload(worker: str) -> None:
    """Import the worker (and torch.distributed) now: ranks forked afterwards start warm.
    A worker that fails to import is left for the ranks to report."""
    import torch.distributed  # noqa: F401

    try:
        load_worker(worker)
        from attnbench.cp import CP_METHODS
        from attnbench.kernels import KERNELS
        from attnbench.masks import MASKS

        for registry in (CP_METHODS, KERNELS, MASKS):
            registry.names()  # imports every built-in entry and plugin
        for module in _WARM_MODULES:
            importlib.import_module(module)
    except Exception:  # noqa: BLE001
        pass


def rank_entry(case_file: str, outcome_file: str, worker: str) -> int:
    """What each rank runs under `elastic_launch` (a function entrypoint)."""
    return main(["--case", str(case_file), "--outcome", str(outcome_file), "--worker", worker])


def is_peer_failure(exc: BaseException) -> bool:
    """A collective or store operation failed: most likely another rank died or hung."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {"DistBackendError", "DistNetworkError", "DistStoreError"}:
        return True
    return isinstance(exc, RuntimeError) and bool(_PEER_FAILURE.search(str(exc)))


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _error_outcome(exc: BaseException):
    from attnbench.cp.protocol import RankOutcome
    from attnbench.results.schema import Status
    from attnbench.errors import first_line, is_out_of_memory

    status = Status.oom if is_out_of_memory(exc) else Status.error
    return RankOutcome(status=status, reason=f"rank 0: {first_line(exc)}", detail=traceback.format_exc()[-4000:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="attnbench.cp.rank_main", description=__doc__.splitlines()[0])
    parser.add_argument("--case", required=True, type=Path, help="the Case as JSON")
    parser.add_argument("--outcome", required=True, type=Path, help="where rank 0 writes its RankOutcome JSON")
    parser.add_argument("--worker", default=os.environ.get(WORKER_ENV) or DEFAULT_WORKER, help="module:function")
    args = parser.parse_args(argv)
    die_with_parent()
    arm_stack_dumps(args.outcome.parent / STACKS_DIR, int(os.environ.get("RANK", "0")))

    import torch
    import torch.distributed as dist

    from attnbench.cases import Case

    try:  # a worker may run another job than a Case (its `job_model`: attnbench.cp.netbench)
        job_model = getattr(load_worker(args.worker), "job_model", Case)
    except Exception:  # noqa: BLE001 - a worker that cannot be imported is reported below, as before
        job_model = Case
    case = job_model.model_validate_json(args.case.read_text(encoding="utf-8"))
    rank = int(os.environ.get("RANK", "0"))
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if not case.device.startswith("cuda") and threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))
    case_timeout = case.cp.timeout_seconds if case.cp else 600.0
    timeout = timedelta(seconds=case_timeout)
    try:
        if case.device.startswith("cuda"):
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local_rank)
            dist.init_process_group("nccl", init_method="env://", timeout=timeout, device_id=torch.device("cuda", local_rank))
        else:
            dist.init_process_group("gloo", init_method="env://", timeout=timeout)
        from attnbench.cp import comm

        comm.set_collective_timeout(collective_timeout(case_timeout))
        rank = dist.get_rank()
        mark_ready(args.outcome.parent / READY_DIR, rank)
        run_rank = load_worker(args.worker)
        outcome = run_rank(case)
    except BaseException as exc:  # noqa: BLE001 - report, then leave at once (peers may be blocked)
        print(f"[attnbench rank {rank}] {type(exc).__name__}: {exc}", file=sys.stderr)
        traceback.print_exc()
        peer_failure = is_peer_failure(exc)
        if rank == 0 and not peer_failure and not isinstance(exc, KeyboardInterrupt):
            try:
                write_atomically(args.outcome, _error_outcome(exc).model_dump_json())
            except Exception:  # pragma: no cover
                traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        if peer_failure:
            time.sleep(PEER_FAILURE_DELAY_S)
        os._exit(1)

    if rank == 0:
        if outcome is None:
            print("[attnbench rank 0] the worker returned no outcome on rank 0", file=sys.stderr)
        else:
            write_atomically(args.outcome, outcome.model_dump_json())
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
