"""Every CP method with every value of its parameters that makes sense at a world size.

Values per parameter name (the methods share these names, attnbench.cp.base):

- ``dispatch``: contiguous, zigzag, and documents for a mask with documents;
- ``ulysses_degree``: the divisors of the world size that divide heads_q, below the world
  size (a degree equal to it leaves a ring of one: that is ``ulysses``);
- ``window``: the divisors of the ring (W / degree) strictly between 1 and the ring (else
  the double ring is a single ring);
- ``rotate``: the values the method lists (torch_cp's).

Combinations a method refuses (its shape rules) are dropped by the caller with the reason.
"""

from __future__ import annotations

from typing import Callable, Iterator

from attnbench.cases import Case


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _dispatch(case: Case, mask, chosen: dict) -> list:
    return ["contiguous", "zigzag"] + (["documents"] if mask.doc_starts is not None else [])


def _ulysses_degree(case: Case, mask, chosen: dict) -> list:
    W = case.cp.world_size
    return [d for d in _divisors(W) if d < W and case.shape.heads_q % d == 0] or [1]


def _window(case: Case, mask, chosen: dict) -> list:
    ring = case.cp.world_size // int(chosen.get("ulysses_degree", 1))
    return [w for w in _divisors(ring) if 1 < w < ring]


def _rotate(case: Case, mask, chosen: dict) -> list:
    from attnbench.cp.methods.torch_cp import ROTATE

    return list(ROTATE)


#: parameter name -> its values for a case (given the values chosen before it)
VALUES: dict[str, Callable[[Case, object, dict], list]] = {
    "dispatch": _dispatch,
    "ulysses_degree": _ulysses_degree,
    "window": _window,
    "rotate": _rotate,
}
#: the order parameters are chosen in (a window depends on the degree)
ORDER = ("ulysses_degree", "window", "dispatch", "rotate")


def parameter_sets(method, case: Case, mask) -> Iterator[dict]:
    """Every combination of ``method``'s parameters for ``case`` (``{}`` for none)."""
    names = [n for n in ORDER if n in method.params] + sorted(set(method.params) - set(ORDER))
    if not names:
        yield {}
        return

    def expand(i: int, chosen: dict) -> Iterator[dict]:
        if i == len(names):
            yield dict(chosen)
            return
        values = VALUES[names[i]](case, mask, chosen) if names[i] in VALUES else [None]
        if not values:  # e.g. no window strictly inside a ring of 2: the method has no such variant
            return
        for value in values:
            if value is None:
                yield from expand(i + 1, chosen)
            else:
                yield from expand(i + 1, {**chosen, names[i]: value})

    yield from expand(0, {})


def label(method_name: str, params: dict) -> str:
    if not params:
        return method_name
    return f"{method_name}(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")"

