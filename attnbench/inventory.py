"""What is registered here: kernels (with availability and support), masks, CP methods."""

from __future__ import annotations


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def inventory(device: str | None = None) -> dict:
    from attnbench.cp import CP_METHODS
    from attnbench.kernels import KERNELS
    from attnbench.masks import MASKS

    device = device or default_device()
    kernels = [kernel.describe(device) for _, kernel in KERNELS.items()]
    masks = []
    for name, family in MASKS.items():
        masks.append(
            {
                "name": name,
                "description": family.description,
                "dynamic": family.dynamic,
                "documents": family.uses_documents,
                "params": {p: spec.default for p, spec in family.params.items()},
            }
        )
    cp = [method.describe(device) if hasattr(method, "describe") else {"name": name} for name, method in CP_METHODS.items()]
    return {"device": device, "kernels": kernels, "masks": masks, "cp_methods": cp}
