"""Accuracy tolerances, set from the error of the naive kernel in the same dtype.

The naive kernel (materialised scores, float32 softmax) run on a small calibration problem
measures what error the dtype itself costs on this device; a kernel may be `tolerance_factor`
times worse than that, and never held to less than the dtype's floor.
"""

from __future__ import annotations

import functools

from attnbench.cases import Budget, Case, MaskChoice, Pass, Shape

#: relative-L2 floors per dtype (TF32 in fp32 kernels on GPUs sits well inside 1e-3)
FLOORS = {"float32": 1e-3, "float16": 1e-2, "bfloat16": 3e-2}
TOLERANCE_FACTOR = 10.0
CALIBRATION_SEQLEN = 256


@functools.lru_cache(maxsize=None)
def tolerances(device: str, dtype: str, head_dim: int) -> dict[str, float]:
    from attnbench.kernels import KERNELS
    from attnbench.masks import build_mask
    from attnbench.measure.accuracy import compare_to_reference
    from attnbench.measure.reference import reference_attention
    from attnbench.inputs import make_tensors

    import torch

    case = Case(
        kernel="naive",
        mask=MaskChoice(name="causal_document"),
        shape=Shape(batch=1, heads_q=4, heads_kv=2, head_dim=head_dim, seqlen=CALIBRATION_SEQLEN),
        dtype=dtype,
        pass_=Pass.forward_backward,
        device=device,
        budget=Budget(),
    )
    tensors = make_tensors(case)
    inputs = tensors.for_pass(True)
    mask = build_mask(case.mask.name, case.shape.seqlen)
    out = KERNELS.get("naive").prepare(inputs, mask)()
    dq, dk, dv = torch.autograd.grad(out.out, (inputs.q, inputs.k, inputs.v), tensors.grad_out)
    reference = reference_attention(tensors.q, tensors.k, tensors.v, mask, grad_out=tensors.grad_out, scale=inputs.scale)
    errors = compare_to_reference({"out": out.out, "lse": out.lse, "dq": dq, "dk": dk, "dv": dv}, reference)
    floor = FLOORS[dtype]
    return {name: max(floor, TOLERANCE_FACTOR * err.rel_l2) for name, err in errors.items()}
