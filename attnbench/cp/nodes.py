"""Several nodes, one run: node 0 decides what runs and records it; the others follow.

Every node runs the same ``attnbench run`` command. Node 0 owns the run (records, run.json,
``--resume``); before the first case it publishes, on a TCP store at its control port
(``--rdzv-endpoint`` port + PORT_CYCLE), the ids of the cases still to run, in order, and
its device calibration (so every node resolves each case, its accuracy-check sample
included, exactly as node 0 does). The other nodes fetch that plan and take part in exactly
those cases, in that order: their case counters, hence the rendezvous ports of the cases,
stay in step with node 0's, after a ``--resume`` too. They write no records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

from attnbench.cp.launch import PORT_CYCLE, LaunchOptions
from attnbench.errors import UserError

#: how long node 0 waits for every other node to fetch the plan, and they for the plan
JOIN_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class RunPlan:
    run_id: str
    case_ids: list[str]
    matmul_tflops: dict[str, float]


def control_port(options: LaunchOptions) -> int:
    return options.endpoint()[1] + PORT_CYCLE


def _store(options: LaunchOptions, *, master: bool, timeout_s: float):
    from torch.distributed import TCPStore

    host, _ = options.endpoint()
    try:
        return TCPStore(host, control_port(options), options.nnodes, master, timedelta(seconds=timeout_s),
                        wait_for_workers=False)
    except Exception as exc:  # noqa: BLE001 - torch raises several kinds for a bad host or a port in use
        role = "host the run's control store on" if master else "reach node 0's control store at"
        raise UserError(f"node {options.node_rank}: cannot {role} {host}:{control_port(options)} ({exc})") from None


class Leader:
    """Node 0's side: publish the plan, wait until every node has it."""

    def __init__(self, options: LaunchOptions, timeout_s: float = JOIN_TIMEOUT_S) -> None:
        self.options, self.timeout_s = options, timeout_s
        self.store = _store(options, master=True, timeout_s=timeout_s)

    def publish(self, plan: RunPlan) -> None:
        self.store.set("plan", json.dumps({"run_id": plan.run_id, "case_ids": plan.case_ids,
                                           "matmul_tflops": plan.matmul_tflops}))
        others = [f"joined/{i}" for i in range(1, self.options.nnodes)]
        try:
            self.store.wait(others, timedelta(seconds=self.timeout_s))
        except Exception:  # noqa: BLE001
            missing = [k.split("/")[1] for k in others if not self.store.check([k])]
            raise UserError(f"node(s) {', '.join(missing)} did not join within {self.timeout_s:g} s "
                            "(run the same command with their --node-rank)") from None


def follow(options: LaunchOptions, timeout_s: float = JOIN_TIMEOUT_S) -> RunPlan:
    """A node other than 0: the plan node 0 published (waits for it)."""
    store = _store(options, master=False, timeout_s=timeout_s)
    try:
        blob = json.loads(store.get("plan"))
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"node {options.node_rank}: no plan from node 0 within {timeout_s:g} s ({exc})") from None
    store.set(f"joined/{options.node_rank}", "1")
    return RunPlan(blob["run_id"], list(blob["case_ids"]), dict(blob["matmul_tflops"]))
