"""Exact fingerprints of tensors: did anything change a kernel's inputs in place?

A fingerprint is two wrapping 64-bit sums over the tensor's raw bits (read as integers of
the element's width): a plain one and one weighted by position, so that a changed element
and two swapped elements both change it. Integer sums wrap the same way in any order, so
the fingerprint is exact and deterministic on CPU and GPU alike. It is computed in chunks:
the extra memory is bounded (two int64 buffers of CHUNK elements) at any sequence length.
"""

from __future__ import annotations

import torch

CHUNK = 1 << 22
_WEIGHT_PERIOD = 65521  # the largest prime below 2**16
_INTS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def fingerprint(tensor: torch.Tensor) -> tuple[int, int]:
    """(sum, position-weighted sum) of the tensor's bits, each wrapping at 64 bits."""
    with torch.no_grad():
        flat = tensor.detach().contiguous().view(-1)
        words = flat.view(_INTS[flat.element_size()])
        total = torch.zeros((), dtype=torch.int64, device=flat.device)
        weighted = torch.zeros((), dtype=torch.int64, device=flat.device)
        for start in range(0, words.numel(), CHUNK):
            chunk = words[start : start + CHUNK].to(torch.int64)
            weights = torch.arange(start, start + chunk.numel(), dtype=torch.int64, device=flat.device)
            weights.remainder_(_WEIGHT_PERIOD).add_(1)
            total += chunk.sum()
            weighted += (chunk * weights).sum()
        return int(total), int(weighted)


def fingerprints(tensors: dict[str, torch.Tensor]) -> dict[str, tuple[int, int]]:
    return {name: fingerprint(t) for name, t in tensors.items()}


def changed(tensors: dict[str, torch.Tensor], expected: dict[str, tuple[int, int]]) -> list[str]:
    """Names of the tensors whose fingerprint is no longer the expected one."""
    return [name for name, t in tensors.items() if fingerprint(t) != expected.get(name)]
