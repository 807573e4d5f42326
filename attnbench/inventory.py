"""What is registered here: kernels (with availability and support), masks, CP methods."""

from __future__ import annotations

import re

from attnbench.errors import UserError

#: device types attnbench runs on (what kernels declare support for), with an optional index
DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?")


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str) -> str:
    """`device` if attnbench can run on it ("cpu", "cuda", "cuda:N"); else a UserError."""
    text = device.strip().lower()
    if not DEVICE_PATTERN.fullmatch(text):
        raise UserError(f"device {device!r}: attnbench runs on cpu or cuda (cuda:N for one GPU)")
    return text


def inventory(device: str | None = None) -> dict:
    from attnbench.cp import CP_METHODS
    from attnbench.kernels import KERNELS
    from attnbench.masks import MASKS

    device = default_device() if device is None else check_device(device)
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
