"""Start the ranks of one context-parallel case with torchrun's machinery, and make sure they all end.

One case = one agent process, ``python -m attnbench.cp.launch --agent ...`` (`agent_main`
below: torchrun's `elastic_launch` with a function entrypoint), started in its own session;
its workers are the ranks, each running `attnbench.cp.rank_main.rank_entry`. On CPU the ranks
are forked from the agent after it imported torch and attnbench (no re-import per rank); on
CUDA they are spawned (no CUDA state may cross a fork).

- **Rendezvous.** On one node, torchrun's standalone mode: a c10d store bound to port 0 on
  localhost, so every case gets a fresh free port from the kernel itself (no probe-then-bind
  race, no collision between consecutive cases) and a fresh rendezvous id. On several nodes,
  the static rendezvous at ``--rdzv-endpoint HOST:PORT`` with ``--node-rank``: node 0 hosts
  the store; consecutive cases take the ports PORT, PORT+1, ..., PORT+3 in turn and a
  per-case rendezvous id, so a node that is already on the next case never talks to the
  previous case's store. Every node runs the same suite in the same order.
- **Timeout and kill.** The launcher polls the agent; when the case's timeout expires it
  first asks every rank for its Python stacks (SIGUSR1: faulthandler writes them, see
  `attnbench.cp.rank_main`), then SIGKILLs the agent's process group, then every process that carries the case's token (an
  environment variable set for the agent and inherited by every rank and anything a rank
  starts, whatever session it is in), until none is left. Ranks also ask Linux to SIGKILL
  them when the agent dies. The same sweep runs after every case, however it ended, so no
  process outlives its case.
- **Jobs.** What the ranks run is a `Case` (the CP worker) or any job of the same shape
  (:class:`RankJob`: ``device``, ``cp.world_size``, ``cp.timeout_seconds``, ``key_id()``,
  JSON), read in each rank by the model its worker names (``job_model``; attnbench.cp.netbench).
- **Failures.** A rank that dies makes the agent stop the others (SIGTERM, SIGKILL after
  ``SHUTDOWN_TIMEOUT_S``) and print torchrun's summary: which rank failed first, with which
  exit code or signal; the launcher reads it and keeps the tail of the agent's and the
  ranks' stderr.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Protocol

from attnbench.cp.rank_main import CASE_TOKEN_ENV, READY_DIR, STACKS_DIR, WORKER_ENV
from attnbench.errors import UserError

DEFAULT_PORT = 29500
PORT_CYCLE = 4  # multi-node: consecutive cases rotate over this many ports
SHUTDOWN_TIMEOUT_S = 5  # torchrun: SIGTERM -> SIGKILL for the surviving ranks of a failed case
OUTCOME_GRACE_S = 30.0  # ranks still running this long after rank 0 wrote its outcome are killed
MAX_CPU_RANKS_ENV = "ATTNBENCH_CP_MAX_CPU_RANKS"
STDERR_TAIL_CHARS = 4000
STACK_CHARS_PER_RANK = 2000
STACK_DUMP_WAIT_S = 3.0  # how long the ranks get to write their stacks at a timeout
INIT_DEADLINE_S = 60.0  # ranks not past init_process_group by then (or a quarter of the timeout): relaunch once
POLL_S = 0.05

_launch_counter = itertools.count()


class RankJob(Protocol):
    """What the launcher reads from the job its ranks run (a `Case`, or a netbench job)."""

    device: str
    cp: Any  # .world_size, .timeout_seconds

    def key_id(self) -> str: ...

    def model_dump_json(self, **kwargs: Any) -> str: ...


# -- where the ranks run ----------------------------------------------------------------
@dataclass(frozen=True)
class LaunchOptions:
    """How this process takes part in each CP case: alone, or as one node of several."""

    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: Optional[str] = None  # HOST:PORT of node 0, for nnodes > 1
    worker: Optional[str] = None  # "module:function" run in every rank (tests); default the CP worker
    source: str = "single node"  # how these options were decided (for the run header)

    @property
    def multi_node(self) -> bool:
        return self.nnodes > 1

    def endpoint(self) -> tuple[str, int]:
        host, _, port = (self.rdzv_endpoint or "").rpartition(":")
        return host, int(port)

    @classmethod
    def resolve(
        cls,
        nnodes: Optional[int] = None,
        node_rank: Optional[int] = None,
        rdzv_endpoint: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> "LaunchOptions":
        """Options from the command line, else from a Slurm step (srun, one task per node),
        else a single node. Bad combinations are a UserError."""
        env = os.environ if env is None else env
        source = "command line"
        if nnodes is None and node_rank is None and rdzv_endpoint is None:
            slurm = _from_slurm(env)
            if slurm is None:
                return cls()
            nnodes, node_rank, rdzv_endpoint = slurm
            source = "Slurm environment"
        nnodes = 1 if nnodes is None else nnodes
        node_rank = 0 if node_rank is None else node_rank
        if nnodes < 1:
            raise UserError(f"--nnodes must be >= 1 (got {nnodes})")
        if not 0 <= node_rank < nnodes:
            raise UserError(f"--node-rank must be in 0..{nnodes - 1} for --nnodes {nnodes} (got {node_rank})")
        if nnodes == 1:
            if rdzv_endpoint is not None:
                raise UserError("--rdzv-endpoint is for several nodes; give --nnodes too, or leave it out on one node")
            return cls()
        if not rdzv_endpoint:
            raise UserError(
                f"--nnodes {nnodes} needs --rdzv-endpoint HOST:PORT (node 0's address, reachable from every node)"
            )
        host, sep, port = rdzv_endpoint.rpartition(":")
        if not sep:
            host, port = rdzv_endpoint, str(DEFAULT_PORT)
        if not host or not port.isdigit() or not 0 < int(port) <= 65535 - PORT_CYCLE:
            raise UserError(f"--rdzv-endpoint must be HOST:PORT with a port below {65536 - PORT_CYCLE} (got {rdzv_endpoint!r})")
        return cls(nnodes=nnodes, node_rank=node_rank, rdzv_endpoint=f"{host}:{int(port)}", source=source)

    def describe(self) -> str:
        if not self.multi_node:
            return "single node (torchrun standalone rendezvous on a free localhost port)"
        host, port = self.endpoint()
        return (
            f"node {self.node_rank} of {self.nnodes} ({self.source}); rendezvous at {host}, "
            f"ports {port}..{port + PORT_CYCLE - 1} in turn"
        )


def _from_slurm(env: Mapping[str, str]) -> Optional[tuple[int, int, str]]:
    """(nnodes, node_rank, endpoint) inside an srun step over several nodes, else None."""
    try:
        nnodes = int(env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_NNODES") or 0)
    except ValueError:
        return None
    if nnodes <= 1 or "SLURM_STEP_ID" not in env or "SLURM_NODEID" not in env:
        return None  # no step (e.g. the batch script itself) or one node: run here alone
    if env.get("SLURM_LOCALID", "0") != "0" or env.get("SLURM_STEP_TASKS_PER_NODE", "1").split("(")[0] not in ("1", ""):
        raise UserError(
            "under Slurm, start one attnbench per node (srun --ntasks-per-node=1 attnbench run ...); "
            "it starts the ranks of each case itself"
        )
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or ""
    host = first_host(nodelist)
    if not host:
        raise UserError("Slurm step without a node list; give --nnodes, --node-rank and --rdzv-endpoint yourself")
    port = int(env.get("MASTER_PORT") or DEFAULT_PORT)
    return nnodes, int(env["SLURM_NODEID"]), f"{host}:{port}"


def first_host(nodelist: str) -> str:
    """The first host of a Slurm host list: ``gpu[03-05,9],cpu1`` -> ``gpu03``."""
    depth, end = 0, len(nodelist)
    for i, ch in enumerate(nodelist):
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            end = i
            break
    first = nodelist[:end].strip()
    # each bracket group: its first entry, zero padding kept
    return re.sub(r"\[([^\]]*)\]", lambda m: re.split(r"[-,]", m.group(1))[0], first)


# -- can this case run here ----------------------------------------------------------------
def cuda_device_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # pragma: no cover
        return 0


def max_cpu_ranks() -> int:
    """Most gloo ranks started on one CPU node: 4 per core, at least 8, unless the env says."""
    raw = os.environ.get(MAX_CPU_RANKS_ENV)
    if raw and raw.strip().isdigit() and int(raw) > 0:
        return int(raw)
    return max(8, 4 * (os.cpu_count() or 1))


def placement_problem(case: RankJob, options: LaunchOptions) -> Optional[str]:
    """Why this case cannot be placed on these nodes (-> skipped), or None."""
    assert case.cp is not None
    world = case.cp.world_size
    if world % options.nnodes:
        return f"world size {world} is not a multiple of the {options.nnodes} nodes"
    per_node = world // options.nnodes
    where = "this node" if options.multi_node else "this machine"
    if case.device.startswith("cuda"):
        gpus = cuda_device_count()
        if per_node > gpus:
            nodes = f" on each of {options.nnodes} nodes" if options.multi_node else ""
            return f"world size {world} needs {per_node} GPUs{nodes} (one per rank); {where} has {gpus}"
        return None
    cap = max_cpu_ranks()
    if per_node > cap:
        return (
            f"world size {world} would start {per_node} gloo ranks on {where}; the cap is {cap} "
            f"(4 per CPU core, at least 8; {MAX_CPU_RANKS_ENV} changes it)"
        )
    return None


# -- one launch -----------------------------------------------------------------------------
@dataclass
class RankFailure:
    rank: int
    exitcode: int

    def describe(self) -> str:
        if self.exitcode < 0:
            try:
                name = signal.Signals(-self.exitcode).name
            except ValueError:
                name = f"signal {-self.exitcode}"
            return f"rank {self.rank} killed by {name}"
        return f"rank {self.rank} exited with code {self.exitcode}"


@dataclass
class LaunchResult:
    outcome_text: Optional[str]  # rank 0's RankOutcome JSON, if it wrote one (on this node)
    returncode: Optional[int]  # torchrun's exit status (negative: killed by that signal)
    timed_out: bool
    timeout_s: float
    elapsed_s: float
    stderr_tail: str
    failures: list[RankFailure] = field(default_factory=list)  # from torchrun's summary, root cause first
    killed: int = 0  # processes of the case still alive at the end, killed by the sweep
    note: Optional[str] = None  # e.g. ranks killed after the outcome was written
    stacks: str = ""  # the ranks' Python stacks (at a timeout, or when torchrun stopped them)
    stuck_in_init: Optional[str] = None  # why this launch was given up before its ranks had initialised
    relaunched: Optional[str] = None  # a first launch stuck in init: what happened to it


_FAILURE_RE = re.compile(r"rank\s*:\s*(-?\d+)\s*\(local_rank:\s*-?\d+\)\s*\n\s*exitcode\s*:\s*(-?\d+)")


def parse_failures(stderr: str) -> list[RankFailure]:
    """torchrun's ChildFailedError summary -> the failed ranks, root cause first."""
    root_at = stderr.rfind("Root Cause")
    found: list[RankFailure] = []
    ordered = []
    for match in _FAILURE_RE.finditer(stderr):
        ordered.append((0 if root_at >= 0 and match.start() > root_at else 1, match.start(), match))
    for _, _, match in sorted(ordered, key=lambda t: (t[0], t[1])):
        failure = RankFailure(int(match.group(1)), int(match.group(2)))
        if all(f.rank != failure.rank for f in found):
            found.append(failure)
    return found


def start_method(case: RankJob) -> str:
    """fork on CPU (ranks start warm from the agent, no re-import); spawn on CUDA (no CUDA
    state may cross a fork)."""
    return "spawn" if case.device.startswith("cuda") else "fork"


def agent_command(case: RankJob, options: LaunchOptions, case_file: Path, outcome_file: Path, seq: int) -> list[str]:
    """The command line of this case's agent process (`agent_main` below)."""
    assert case.cp is not None
    per_node = case.cp.world_size // options.nnodes
    rdzv_timeout = int(max(60, case.cp.timeout_seconds))
    cmd = [sys.executable, "-m", "attnbench.cp.launch", "--agent", f"--nproc-per-node={per_node}"]
    if options.multi_node:
        host, port = options.endpoint()
        cmd += [
            f"--nnodes={options.nnodes}",
            f"--node-rank={options.node_rank}",
            "--rdzv-backend=static",
            f"--rdzv-endpoint={host}:{port + seq % PORT_CYCLE}",
            f"--rdzv-id=attnbench-{seq}-{case.key_id()}",
        ]
    else:  # torchrun --standalone: a c10d store on a port the kernel picks
        cmd += ["--nnodes=1", "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", f"--rdzv-id={uuid.uuid4()}"]
    cmd += [f"--rdzv-timeout={rdzv_timeout}", f"--start-method={start_method(case)}"]
    cmd += ["--case", str(case_file), "--outcome", str(outcome_file)]
    if options.worker:
        cmd += ["--worker", options.worker]
    return cmd


def _child_env(case: RankJob, options: LaunchOptions, token: str) -> dict[str, str]:
    env = dict(os.environ)
    env[CASE_TOKEN_ENV] = token
    package_root = str(Path(__file__).resolve().parents[2])  # so the ranks import this attnbench
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if not case.device.startswith("cuda") and "OMP_NUM_THREADS" not in os.environ:
        # one thread per rank, as CPU runs measure (attnbench.measure.threads): a rank with two
        # threads waits at every operator for the one a busy core holds back (benchmarks/threads.md)
        env["OMP_NUM_THREADS"] = "1"
    if options.worker:
        env[WORKER_ENV] = options.worker
    return env


def init_deadline(timeout_s: float) -> float:
    """Seconds after the start by which every rank of this node must be past
    init_process_group (else the launch is retried once, single node only)."""
    return min(INIT_DEADLINE_S, timeout_s / 4)


def launch_case(case: RankJob, options: LaunchOptions | None = None, *, timeout_s: float | None = None) -> LaunchResult:
    """Run every rank of `case` on this node; return when they have all ended (or been killed).

    On one node, a launch whose ranks are not all past init_process_group by
    :func:`init_deadline` (gloo's full-mesh connect can hang on a loaded machine, see
    benchmarks/cp.md) is killed, with every rank's stacks, and started once more; the result
    says so in ``relaunched``. Several nodes cannot retry alone: there the case times out."""
    if case.cp is None:
        raise ValueError("launch_case needs a case with `cp`")
    options = options or LaunchOptions()
    timeout = float(timeout_s if timeout_s is not None else case.cp.timeout_seconds)
    result = _launch_once(case, options, timeout, init_deadline(timeout) if not options.multi_node else None)
    if result.stuck_in_init is None:
        return result
    again = _launch_once(case, options, timeout, None)
    again.relaunched = (f"first launch: {result.stuck_in_init}; killed and started again. Its stacks:\n"
                        f"{result.stacks}")
    return again


def _launch_once(case: RankJob, options: LaunchOptions, timeout: float, init_by: float | None) -> LaunchResult:
    """One agent and its ranks; with ``init_by``, give up (stuck_in_init) when the ranks are not
    all past init_process_group that many seconds after the start."""
    seq = next(_launch_counter)
    token = uuid.uuid4().hex
    workdir = Path(tempfile.mkdtemp(prefix="attnbench-cp-"))
    case_file, outcome_file = workdir / "case.json", workdir / "outcome.json"
    stdout_path, stderr_path = workdir / "stdout.txt", workdir / "stderr.txt"
    case_file.write_text(case.model_dump_json(by_alias=True), encoding="utf-8")
    cmd = agent_command(case, options, case_file, outcome_file, seq)
    local_ranks = case.cp.world_size // options.nnodes
    start = time.monotonic()
    timed_out, note, outcome_seen_at, stuck = False, None, None, None
    proc = None
    try:
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=_child_env(case, options, token),
                start_new_session=True, cwd=os.getcwd(),
            )
        while proc.poll() is None:
            now = time.monotonic()
            if now - start > timeout:
                timed_out = True
                break
            if init_by is not None and now - start > init_by:
                ready = ready_ranks(workdir / READY_DIR)
                if len(ready) >= local_ranks:
                    init_by = None
                else:
                    missing = sorted(set(range(local_ranks)) - {r % local_ranks for r in ready})
                    stuck = (f"local rank(s) {', '.join(map(str, missing))} not past init_process_group "
                             f"{now - start:.0f} s after the start")
                    break
            if outcome_seen_at is None and outcome_file.exists():
                outcome_seen_at = now
            if outcome_seen_at is not None and now - outcome_seen_at > min(OUTCOME_GRACE_S, timeout):
                note = f"ranks still running {min(OUTCOME_GRACE_S, timeout):.0f}s after rank 0 wrote its outcome; killed"
                break
            time.sleep(POLL_S)
        if timed_out or stuck:
            request_stacks(workdir / STACKS_DIR)
        killed = kill_case(proc, token)
        returncode = proc.wait()
        elapsed = time.monotonic() - start
        stderr_text = _read_tail(stderr_path, 200_000)
        outcome_text = outcome_file.read_text(encoding="utf-8") if outcome_file.exists() else None
        return LaunchResult(
            outcome_text=outcome_text,
            returncode=None if timed_out else returncode,
            timed_out=timed_out,
            timeout_s=timeout,
            elapsed_s=elapsed,
            stderr_tail=tail(stderr_text),
            failures=parse_failures(stderr_text),
            killed=killed,
            note=note,
            stacks=read_stacks(workdir / STACKS_DIR),
            stuck_in_init=stuck,
        )
    finally:
        if proc is not None and proc.poll() is None:  # interrupted: leave nothing behind
            kill_case(proc, token)
            proc.wait()
        elif proc is not None:
            kill_case(None, token)
        shutil.rmtree(workdir, ignore_errors=True)


def ready_ranks(directory: Path) -> set[int]:
    """The ranks that wrote their marker after init_process_group (rank_main)."""
    return {int(p.name[4:]) for p in directory.glob("rank*") if p.name[4:].isdigit()} if directory.is_dir() else set()


# -- stacks -----------------------------------------------------------------------------------
def _stack_files(directory: Path) -> list[tuple[int, int, Path]]:
    """(rank, pid, file) of every rank that armed its stack dump (rank<R>-<pid>.txt)."""
    found = []
    for path in directory.glob("rank*-*.txt") if directory.is_dir() else ():
        rank, _, pid = path.stem[4:].partition("-")
        if rank.isdigit() and pid.isdigit():
            found.append((int(rank), int(pid), path))
    return sorted(found)


def request_stacks(directory: Path, wait_s: float = STACK_DUMP_WAIT_S) -> None:
    """SIGUSR1 to every live rank, then wait until each has written its stacks (or wait_s)."""
    asked = []
    for _, pid, path in _stack_files(directory):
        try:
            os.kill(pid, signal.SIGUSR1)
            asked.append(path)
        except OSError:
            pass
    end = time.monotonic() + wait_s
    while asked and time.monotonic() < end:
        sizes = [p.stat().st_size for p in asked]
        time.sleep(0.2)
        if all(size > 0 for size in sizes) and sizes == [p.stat().st_size for p in asked]:
            break


def read_stacks(directory: Path) -> str:
    """Every rank's dumped stacks, rank by rank (each cut to its first STACK_CHARS_PER_RANK)."""
    parts = []
    for rank, pid, path in _stack_files(directory):
        try:
            text = path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            continue
        if text:
            # most recent call first: the rank's own frames lead, the forked agent's follow
            text = text if len(text) <= STACK_CHARS_PER_RANK else text[:STACK_CHARS_PER_RANK] + "\n..."
            parts.append(f"--- rank {rank} (pid {pid}) ---\n{text}")
    return "\n".join(parts)


# -- killing --------------------------------------------------------------------------------
def case_processes(token: str) -> list[int]:
    """Live processes (of this user, Linux /proc) whose environment carries `token`."""
    needle = f"{CASE_TOKEN_ENV}={token}".encode()
    me = os.getpid()
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:  # pragma: no cover - not Linux
        return []
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                env = handle.read()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            found.append(int(entry))
    return found


def kill_case(proc: subprocess.Popen | None, token: str, deadline_s: float = 10.0) -> int:
    """SIGKILL the agent's process group and every process with the case's token.

    Returns how many token-carrying processes were found alive and killed."""
    if proc is not None and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    killed: set[int] = set()
    end = time.monotonic() + deadline_s
    while True:
        alive = [pid for pid in case_processes(token) if not _is_zombie(pid)]
        if not alive or time.monotonic() > end:
            break
        for pid in alive:
            killed.add(pid)
            try:
                if os.getpgid(pid) == pid:  # a rank leads its own session: take its children too
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.02)
    return len(killed)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
        return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] in (b"Z", b"X")
    except OSError:
        return True


# -- stderr ---------------------------------------------------------------------------------
def _read_tail(path: Path, limit: int) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - limit))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


# torch's own log lines (glog style: "E1121 07:11:22.330000 20258 site-packages/torch/...")
_TORCH_LOG = re.compile(r"^[EWI]\d{4} \d\d:\d\d:\d\d\.\d+ \d+ \S*torch/")
_NOISE = ("Setting OMP_NUM_THREADS environment variable for each process", "*" * 40)
# faulthandler's dump after a fatal signal: every thread's stack, then "Extension modules: ..."
_FAULT_START = re.compile(r"^(Current thread|Thread) 0x[0-9a-f]+ \(most recent call first\):")


def tail(text: str, limit: int = STDERR_TAIL_CHARS) -> str:
    """The end of the ranks' stderr without the launcher's log noise and faulthandler's stack
    dumps (the "Fatal Python error" line stays), at most `limit` characters."""
    lines: list[str] = []
    in_dump = False
    for line in text.splitlines():
        if in_dump:
            in_dump = not line.startswith("Extension modules:")
            continue
        if _FAULT_START.match(line):
            in_dump = True
            continue
        if _TORCH_LOG.match(line) or any(n in line for n in _NOISE):
            continue
        lines.append(line)
    out = "\n".join(lines).strip()
    return out if len(out) <= limit else "..." + out[-(limit - 3):]


# -- the agent ------------------------------------------------------------------------------
def agent_main(argv: list[str] | None = None) -> int:
    """``python -m attnbench.cp.launch --agent ...``: torchrun's elastic agent for one case.

    Runs `attnbench.cp.rank_main.rank_entry` in every local rank through
    `torch.distributed.launcher.api.elastic_launch` (the machinery behind torchrun). On a
    failure it prints torchrun's summary (which rank, exit code or signal) to stderr and
    exits 1. It leaves with os._exit: nothing of it is needed after its ranks are done.
    """
    import argparse
    import traceback

    parser = argparse.ArgumentParser(prog="attnbench.cp.launch --agent")
    parser.add_argument("--agent", action="store_true", required=True)
    parser.add_argument("--nproc-per-node", type=int, required=True)
    parser.add_argument("--nnodes", type=int, default=1)
    parser.add_argument("--node-rank", type=int, default=0)
    parser.add_argument("--rdzv-backend", default="c10d")
    parser.add_argument("--rdzv-endpoint", default="localhost:0")
    parser.add_argument("--rdzv-id", default=str(uuid.uuid4()))
    parser.add_argument("--rdzv-timeout", type=int, default=900)
    parser.add_argument("--start-method", default="spawn", choices=("spawn", "fork", "forkserver"))
    parser.add_argument("--case", required=True)
    parser.add_argument("--outcome", required=True)
    parser.add_argument("--worker", default=None)
    args = parser.parse_args(argv)

    code = 2
    try:
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
        from torch.distributed.launcher.api import LaunchConfig, elastic_launch

        from attnbench.cp import rank_main

        worker = args.worker or os.environ.get(WORKER_ENV) or rank_main.DEFAULT_WORKER
        if args.start_method == "fork":
            rank_main.preload(worker)  # imported once here; every forked rank starts with it
        rdzv_configs: dict = {"timeout": args.rdzv_timeout}
        if args.rdzv_backend == "static":
            rdzv_configs["rank"] = args.node_rank
        config = LaunchConfig(
            min_nodes=args.nnodes,
            max_nodes=args.nnodes,
            nproc_per_node=args.nproc_per_node,
            run_id=args.rdzv_id,
            rdzv_backend=args.rdzv_backend,
            rdzv_endpoint=args.rdzv_endpoint,
            rdzv_configs=rdzv_configs,
            max_restarts=0,
            monitor_interval=0.1,
            start_method=args.start_method,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        )
        try:
            elastic_launch(config, rank_main.rank_entry)(args.case, args.outcome, worker)
            code = 0
        except ChildFailedError as exc:
            print(exc.format_msg(), file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - the launcher reads stderr and the exit code
        traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    agent_main()
