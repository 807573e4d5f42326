"""Turn a validated suite into its list of cases (the cartesian product of its axes)."""

from __future__ import annotations

import itertools

from attnbench.cases import Case, CPSpec, Pass, Shape
from attnbench.errors import UserError
from attnbench.suite.schema import Suite


def cuda_is_available() -> bool:
    try:
        import torch
    except Exception:  # pragma: no cover - torch is a dependency
        return False
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover
        return False


def resolve_device(device: str, cuda_available: bool) -> str:
    if device == "auto":
        return "cuda" if cuda_available else "cpu"
    if device == "cuda" and not cuda_available:
        raise UserError("the suite asks for defaults.device: cuda, but no CUDA device is available here "
                        "(run it on a GPU machine, or use device: auto)")
    return device


def _case_maker(suite: Suite, cuda_available: bool):
    """A function building one Case from the axes that vary; the suite's defaults fill the rest."""
    d = suite.defaults
    device = resolve_device(d.device, cuda_available)
    budget = d.budget.to_budget()

    def make(*, kernel, mask, dtype, heads_kv, head_dim, seqlen, pass_name, cp=None) -> Case:
        return Case(
            kernel=kernel,
            mask=mask,
            shape=Shape(batch=d.batch, heads_q=d.heads_q, heads_kv=heads_kv, head_dim=head_dim, seqlen=seqlen),
            dtype=dtype,
            pass_=Pass(pass_name),
            seed=d.seed,
            device=device,
            check_accuracy=d.check_accuracy,
            budget=budget,
            cp=cp,
        )

    return make


def expand_cases(suite: Suite, *, cuda_available: bool | None = None) -> list[Case]:
    """All cases of `suite`, in run order.

    Order: for dtype, for heads_kv, for head_dim, for mask, for seqlen, for pass, for
    kernel. The kernel is innermost, so the kernels on the same inputs run one after the
    other (interleaved); all passes of one problem follow each other too, so the inputs
    and the accuracy reference are made once per problem.
    """
    if cuda_available is None:
        cuda_available = cuda_is_available()
    if suite.is_cp:
        return expand_cp_cases(suite, cuda_available=cuda_available)
    make = _case_maker(suite, cuda_available)
    masks = [m.choice() for m in suite.sweep.masks]
    return [
        make(kernel=kernel, mask=mask, dtype=dtype, heads_kv=heads_kv, head_dim=head_dim, seqlen=seqlen, pass_name=pass_name)
        for dtype, heads_kv, head_dim, mask, seqlen, pass_name, kernel in itertools.product(
            suite.dtypes(),
            suite.heads_kv(),
            suite.head_dims(),
            masks,
            suite.sweep.seqlens or [],
            suite.passes(),
            suite.sweep.kernels,
        )
    ]


def expand_cp_cases(suite: Suite, *, cuda_available: bool) -> list[Case]:
    """The cases of a context-parallel suite (`sweep.cp_methods`).

    Order: for dtype, heads_kv, head_dim, mask, world size, seqlen (the global length:
    tokens_per_rank x world size with weak scaling), pass, CP method, kernel (the local
    step). The methods of one problem are measured one after the other, as a kernel suite
    interleaves its kernels: a load change on a shared machine shifts the methods compared
    with each other alike, not the cases of the one method that happened to run then.
    """
    d = suite.defaults
    make = _case_maker(suite, cuda_available)
    masks = [m.choice() for m in suite.sweep.masks]
    scaling = suite.scaling()
    timeout = {} if d.cp_timeout_seconds is None else {"timeout_seconds": float(d.cp_timeout_seconds)}
    cases: list[Case] = []
    for dtype, heads_kv, head_dim, mask, world in itertools.product(
        suite.dtypes(), suite.heads_kv(), suite.head_dims(), masks, suite.sweep.world_sizes or []
    ):
        for seqlen, pass_name, method, kernel in itertools.product(
            suite.seqlens_for(world), suite.passes(), suite.sweep.cp_methods or [], suite.sweep.kernels
        ):
            cp = CPSpec(method=method.name, world_size=world, params=dict(method.params), scaling=scaling, **timeout)
            cases.append(
                make(kernel=kernel, mask=mask, dtype=dtype, heads_kv=heads_kv, head_dim=head_dim, seqlen=seqlen,
                     pass_name=pass_name, cp=cp)
            )
    return cases
