"""`attnbench advise`: every CP method and parameter set for one question, ranked, with reasons.

The question is a mask, a global length, a cluster (GPUs, GPUs per node), a shape and the
passes of a training step (forward and backward). Every candidate of every method
(attnbench.advise.candidates) is predicted (attnbench.advise.predict); those that cannot
run say why, those whose estimated peak exceeds the device memory do not fit, and the rest
are ranked by the predicted time of the passes. Each ranked option carries its reason:

- the fastest: what bounds it (compute-bound when its exposed communication and its
  imbalance are each under 10% of its time; otherwise the larger of the two);
- every other: the largest of the three parts of its gap to the fastest, compared with it:
  its balanced compute (the ranks' mean: kernel efficiency at its step sizes and heads),
  its imbalance (slowest rank's compute over the mean) and its exposed communication.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from attnbench.advise.candidates import label, parameter_sets
from attnbench.advise.predict import CasePrediction, Predictor, plan_identity
from attnbench.cases import Budget, Case, CPSpec, MaskChoice, Pass, Shape

#: a part of the time at least this share of it is worth naming
NOTABLE = 0.10


@dataclass(frozen=True)
class Question:
    mask: str
    mask_params: dict
    seqlen: int
    gpus: int
    gpus_per_node: int
    heads_q: int
    heads_kv: int
    head_dim: int
    dtype: str
    kernel: str
    device: str = "cuda"
    batch: int = 1
    passes: tuple[str, ...] = ("forward", "backward")

    def case(self, method: str, params: dict, pass_: str) -> Case:
        return Case(
            kernel=self.kernel, mask=MaskChoice(name=self.mask, params=self.mask_params),
            shape=Shape(batch=self.batch, heads_q=self.heads_q, heads_kv=self.heads_kv, head_dim=self.head_dim,
                        seqlen=self.seqlen),
            dtype=self.dtype, pass_=Pass(pass_), device=self.device, check_accuracy=False, budget=Budget(),
            cp=CPSpec(method=method, world_size=self.gpus, params=params, ranks_per_node=self.gpus_per_node),
        )


@dataclass
class Option:
    method: str
    params: dict
    status: str  # ranked | does not fit | cannot run | not modelled | same plan
    reason: str = ""
    predictions: dict[str, CasePrediction] = field(default_factory=dict)  # pass -> prediction
    rank: Optional[int] = None

    @property
    def label(self) -> str:
        return label(self.method, self.params)

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.predictions.values())

    def part(self, name: str) -> float:
        """Summed over the passes: compute (slowest rank), mean_compute, exposed, communication."""
        return sum(getattr(c, name) for p in self.predictions.values() for c in p.passes.values())

    @property
    def peak_bytes(self) -> Optional[int]:
        return max((p.peak_bytes for p in self.predictions.values()), default=None)

    @property
    def plan(self) -> dict:
        return next(iter(self.predictions.values())).plan if self.predictions else {}


@dataclass
class Advice:
    question: Question
    compute_source: str
    network_source: str
    memory_bytes: Optional[int]
    options: list[Option]
    notes: list[str] = field(default_factory=list)

    @property
    def ranked(self) -> list[Option]:
        return [o for o in self.options if o.status == "ranked"]


def advise(question: Question, predictor: Predictor, memory_bytes: Optional[int]) -> Advice:
    from attnbench.cp import CP_METHODS
    from attnbench.masks import build_mask

    mask = build_mask(question.mask, question.seqlen, question.mask_params)
    options: list[Option] = []
    seen: dict = {}  # what a plan does -> the first option with it (usp at degree 1 is ring_p2p)
    for name in CP_METHODS.names():
        method = CP_METHODS.get(name)
        probe = question.case(name, {}, question.passes[0])
        for params in parameter_sets(method, probe, mask):
            option = Option(method=name, params=params, status="ranked")
            cases = {p: question.case(name, params, p) for p in question.passes}
            reason = method.model_unsupported_reason(cases[question.passes[0]])
            if reason:
                option.status, option.reason = "cannot run", reason
                options.append(option)
                continue
            try:
                identity = plan_identity(method, cases[question.passes[0]], mask)
                if identity in seen:
                    option.status, option.reason = "same plan", f"the same steps and collectives as {seen[identity]}"
                    options.append(option)
                    continue
                option.predictions = {p: predictor.predict(c, mask, method) for p, c in cases.items()}
            except NotImplementedError as exc:
                option.status, option.reason = "not modelled", f"{exc}: its collectives are not attnbench's to describe"
                options.append(option)
                continue
            seen[identity] = option.label
            if memory_bytes and option.peak_bytes > memory_bytes:
                option.status = "does not fit"
                option.reason = f"does not fit: {_gib(option.peak_bytes)} per rank > {_gib(memory_bytes)}"
            options.append(option)
    _rank(options)
    order = {"ranked": 0, "does not fit": 1, "same plan": 2, "cannot run": 3, "not modelled": 4}
    options.sort(key=lambda o: (order[o.status], o.seconds if o.status in ("ranked", "does not fit") else 0.0, o.label))
    return Advice(question=question, compute_source=predictor.compute.source, network_source=predictor.network.name,
                  memory_bytes=memory_bytes, options=options, notes=list(predictor.compute.notes))


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def _ms(s: float) -> str:
    return f"{s * 1e3:.3g} ms"


def _rank(options: list[Option]) -> None:
    ranked = sorted((o for o in options if o.status == "ranked"), key=lambda o: o.seconds)
    if not ranked:
        return
    best = ranked[0]
    for i, o in enumerate(ranked, start=1):
        o.rank = i
        o.reason = _best_reason(o) if o is best else _gap_reason(o, best)


def _best_reason(o: Option) -> str:
    total = o.seconds
    exposed = o.part("exposed_s")
    imbalance = o.part("compute_s") - o.part("mean_compute_s")
    comm = o.part("communication_s")
    hidden = (f"{100 * min(1.0, max(0.0, 1 - exposed / comm)):.0f}% of its communication hidden" if comm > 0
              else "nothing to send")
    if exposed < NOTABLE * total and imbalance < NOTABLE * total:
        return f"fastest: compute-bound ({hidden}; slowest rank's compute {o.part('compute_s') / o.part('mean_compute_s'):.2f}x the mean)"
    if exposed >= imbalance:
        return f"fastest, though {_ms(exposed)} of communication is exposed ({hidden})"
    return f"fastest, though imbalance costs {_ms(imbalance)} (slowest rank's compute {o.part('compute_s') / o.part('mean_compute_s'):.2f}x the mean)"


def _gap_reason(o: Option, best: Option) -> str:
    gap = o.seconds - best.seconds
    share = gap / best.seconds if best.seconds > 0 else 0.0
    parts = {
        "compute": o.part("mean_compute_s") - best.part("mean_compute_s"),
        "imbalance": (o.part("compute_s") - o.part("mean_compute_s")) - (best.part("compute_s") - best.part("mean_compute_s")),
        "exposed communication": o.part("exposed_s") - best.part("exposed_s"),
    }
    what, amount = max(parts.items(), key=lambda kv: kv[1])
    detail = {
        "compute": "its local steps take longer (step sizes, heads per rank, kernel throughput there)",
        "imbalance": f"slowest rank's compute {o.part('compute_s') / max(o.part('mean_compute_s'), 1e-30):.2f}x the mean",
        "exposed communication": f"{_ms(o.part('exposed_s'))} of {_ms(o.part('communication_s'))} communication exposed",
    }[what]
    return f"+{100 * share:.{1 if share < 0.1 else 0}f}% vs the fastest: {what} (+{_ms(amount)}; {detail})"


def pass_dict(cost) -> dict:
    return {"seconds": cost.seconds, "compute_s": cost.compute_s, "mean_compute_s": cost.mean_compute_s,
            "communication_s": cost.communication_s, "exposed_s": cost.exposed_s, "hidden": cost.hidden,
            "imbalance": cost.imbalance, "bytes_sent": cost.bytes_sent}


def advice_dict(advice: Advice) -> dict:
    """Everything the table shows, as data (``--json``)."""
    from dataclasses import asdict

    options = []
    for o in advice.options:
        passes = {name: pass_dict(c) for p in o.predictions.values() for name, c in p.passes.items()}
        options.append({
            "rank": o.rank, "method": o.method, "params": o.params, "label": o.label, "status": o.status,
            "reason": o.reason, "plan": o.plan, "seconds": o.seconds if o.predictions else None, "passes": passes,
            "peak_bytes": o.peak_bytes,
        })
    return {"question": asdict(advice.question), "compute": advice.compute_source, "network": advice.network_source,
            "memory_bytes": advice.memory_bytes, "notes": advice.notes, "options": options}
