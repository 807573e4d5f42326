"""Mask families (the 15 patterns of masks.md, one file each under ``families/``) and masks.

A :class:`MaskFamily` is a named pattern with typed parameters; :func:`build_mask` turns a
family, a sequence length and parameters into a :class:`Mask`: the slices, the document
partition (if any), every drawn value, and the exact area used by the FLOP count.

A new family is one new file in ``attnbench/masks/families/`` (or a plugin module)::

    @register_mask("my_mask", description="...", params=[ParamSpec("window", int, 1024, "...", min=0)])
    def my_mask(seqlen, params, heads) -> MaskParts:
        return MaskParts(band(0, seqlen, 0, seqlen, -params["window"], 0))
"""

from __future__ import annotations

import difflib
import functools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import numpy as np

from attnbench.errors import UserError
from attnbench.masks.slices import SliceTable
from attnbench.registry import Registry

if TYPE_CHECKING:
    from attnbench.masks.convert import VarlenForm

ParamValue = int | float | str | bool

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a mask family.

    ``default`` None means "drawn from the seed at build time" (e.g. ``prefix``).
    Numeric bounds are inclusive unless ``min_exclusive``; ``max_seqlen`` bounds the value
    by the sequence length; ``choices`` restricts a string.
    """

    name: str
    type: type
    default: ParamValue | None
    help: str = ""
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    max_seqlen: bool = False
    choices: tuple[str, ...] | None = None

    def coerce(self, value: Any, where: str) -> ParamValue:
        name = f"{where}: {self.name}"
        t = self.type
        if t is bool:
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
            if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                return value.strip().lower() in _TRUE
            if isinstance(value, (int, np.integer)) and int(value) in (0, 1):
                return bool(value)
            raise UserError(f"{name} must be a boolean, got {value!r}")
        if t is int:
            if isinstance(value, (bool, np.bool_)):
                raise UserError(f"{name} must be an integer, got {value!r}")
            if isinstance(value, (int, np.integer)):
                return int(value)
            if isinstance(value, (float, np.floating)) and float(value).is_integer():
                return int(value)
            if isinstance(value, str):
                try:
                    return int(value.strip().replace("_", ""))
                except ValueError:
                    pass
            raise UserError(f"{name} must be an integer, got {value!r}")
        if t is float:
            if isinstance(value, (bool, np.bool_)):
                raise UserError(f"{name} must be a number, got {value!r}")
            if isinstance(value, (int, float, np.integer, np.floating)):
                out = float(value)
            elif isinstance(value, str):
                try:
                    out = float(value.strip())
                except ValueError:
                    raise UserError(f"{name} must be a number, got {value!r}") from None
            else:
                raise UserError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(out):
                raise UserError(f"{name} must be a finite number, got {value!r}")
            return out
        if t is str:
            if not isinstance(value, str):
                raise UserError(f"{name} must be a string, got {value!r}")
            return value
        raise TypeError(f"unsupported parameter type {t!r}")  # a family definition bug

    def check(self, value: ParamValue, seqlen: int, where: str) -> None:
        name = f"{where}: {self.name}"
        if self.choices is not None and value not in self.choices:
            close = difflib.get_close_matches(str(value), self.choices, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"{name} must be one of {', '.join(self.choices)}, got {value!r}{hint}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        if self.min is not None:
            if self.min_exclusive and not value > self.min:
                raise UserError(f"{name} must be > {self.min:g}, got {value!r}")
            if not self.min_exclusive and not value >= self.min:
                raise UserError(f"{name} must be >= {self.min:g}, got {value!r}")
        if self.max is not None and not value <= self.max:
            raise UserError(f"{name} must be <= {self.max:g}, got {value!r}")
        if self.max_seqlen and not value <= seqlen:
            raise UserError(f"{name} must be <= seqlen ({seqlen}), got {value!r}")


@dataclass
class MaskParts:
    """What a family's builder returns."""

    slices: SliceTable
    doc_starts: np.ndarray | None = None
    drawn: dict[str, ParamValue] = field(default_factory=dict)  # values drawn or resolved at build
    varlen: "VarlenForm | None" = None


Builder = Callable[[int, dict, int], MaskParts]


@dataclass(frozen=True, eq=False)
class MaskFamily:
    name: str
    description: str
    params: dict[str, ParamSpec]
    builder: Builder
    dynamic: bool = False
    uses_documents: bool = False  # the mask has a document partition (Mask.doc_starts)

    def resolve(self, params: Mapping[str, Any] | None, seqlen: int) -> dict[str, ParamValue | None]:
        """Defaults filled, types coerced, values validated; raises UserError (one line)."""
        check_seqlen(seqlen)
        params = dict(params or {})
        where = f"mask {self.name!r}"
        unknown = [k for k in params if k not in self.params]
        if unknown:
            key = unknown[0]
            valid = sorted(self.params)
            close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(
                f"{where} has no parameter {key!r}{hint} (valid: {', '.join(valid) if valid else 'none'})"
            )
        out: dict[str, ParamValue | None] = {}
        for name, spec in self.params.items():
            value = params.get(name, spec.default)
            if value is None:
                out[name] = None
                continue
            value = spec.coerce(value, where)
            spec.check(value, seqlen, where)
            out[name] = value
        return out

    def build(self, seqlen: int, params: Mapping[str, Any] | None = None, *, heads: int = 1) -> "Mask":
        """Build uncached (see :func:`build_mask` for the cached entry point)."""
        check_heads(heads)
        resolved = self.resolve(params, seqlen)
        heads = heads if self.dynamic else 1
        parts = self.builder(seqlen, dict(resolved), heads)
        return Mask.from_parts(self, seqlen, heads, resolved, parts)


def check_seqlen(seqlen: Any) -> None:
    if isinstance(seqlen, bool) or not isinstance(seqlen, (int, np.integer)) or seqlen < 1:
        raise UserError(f"seqlen must be an integer >= 1, got {seqlen!r}")


def check_heads(heads: Any) -> None:
    if isinstance(heads, bool) or not isinstance(heads, (int, np.integer)) or heads < 1:
        raise UserError(f"heads must be an integer >= 1, got {heads!r}")


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


@dataclass(frozen=True, eq=False)
class Mask:
    """One built mask: slices for a sequence length (and, for dynamic masks, every head)."""

    name: str
    seqlen: int
    heads: int
    params: dict[str, ParamValue]
    slices: SliceTable
    doc_starts: np.ndarray | None
    area_total: int
    varlen: "VarlenForm | None" = None
    dynamic: bool = False

    @classmethod
    def from_parts(cls, family: MaskFamily, seqlen: int, heads: int, resolved: Mapping, parts: MaskParts) -> "Mask":
        table = parts.slices
        if family.dynamic and table.head is None:
            raise RuntimeError(f"mask {family.name!r}: a dynamic mask needs per-head slices")
        if not family.dynamic and table.head is not None:
            raise RuntimeError(f"mask {family.name!r}: a static mask has head-shared slices")
        areas = table.areas()
        keep = np.nonzero(areas > 0)[0]
        table = table.select(keep)
        order = np.lexsort((table.k0, table.q0) if table.head is None else (table.k0, table.q0, table.head))
        table, areas = table.select(order), areas[keep][order]
        if len(table) and (
            int(table.q0.min()) < 0 or int(table.k0.min()) < 0
            or int(table.q1.max()) > seqlen or int(table.k1.max()) > seqlen
        ):
            raise RuntimeError(f"mask {family.name!r}: a slice lies outside [0, {seqlen})")
        table.freeze()
        params = {k: _plain(v) for k, v in resolved.items()}
        params.update({k: _plain(v) for k, v in parts.drawn.items()})
        doc_starts = parts.doc_starts
        if doc_starts is not None:
            doc_starts = np.ascontiguousarray(doc_starts, dtype=np.int64)
            doc_starts.setflags(write=False)
        return cls(
            name=family.name, seqlen=int(seqlen), heads=int(heads), params=params, slices=table,
            doc_starts=doc_starts, area_total=int(areas.sum()), varlen=parts.varlen,
            dynamic=family.dynamic,
        )

    @property
    def area(self) -> float:
        """Allowed pairs per head (what the FLOP count uses): ``area_total / heads``."""
        return self.area_total / self.heads

    @property
    def density(self) -> float:
        return self.area / (self.seqlen * self.seqlen)

    @property
    def num_slices(self) -> int:
        return len(self.slices)

    @property
    def num_documents(self) -> int | None:
        return None if self.doc_starts is None else len(self.doc_starts) - 1

    @functools.cached_property
    def slices_hash(self) -> str:
        return self.slices.digest()

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seqlen": self.seqlen,
            "heads": self.heads,
            "params": dict(self.params),
            "num_slices": self.num_slices,
            "area": self.area,
            "density": self.density,
            "num_documents": self.num_documents,
            "slices_hash": self.slices_hash,
        }

    def __repr__(self) -> str:
        return (f"Mask({self.name!r}, seqlen={self.seqlen}, heads={self.heads}, params={self.params}, "
                f"slices={self.num_slices}, density={self.density:.4f})")


MASKS: Registry[MaskFamily] = Registry("mask", builtin_packages=("attnbench.masks.families",))


def register_mask(
    name: str,
    *,
    description: str,
    params: Iterable[ParamSpec] = (),
    dynamic: bool = False,
    uses_documents: bool = False,
) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(seqlen, params, heads) -> MaskParts`` as a family."""

    def decorator(builder: Builder) -> Builder:
        specs = {p.name: p for p in params}
        MASKS.add(name, MaskFamily(name=name, description=description, params=specs, builder=builder,
                                   dynamic=dynamic, uses_documents=uses_documents))
        return builder

    return decorator


@functools.lru_cache(maxsize=64)
def _build_cached(name: str, seqlen: int, params: tuple, heads: int) -> Mask:
    return MASKS.get(name).build(seqlen, dict(params), heads=heads)


def build_mask(name: str, seqlen: int, params: Mapping[str, ParamValue] | None = None, *, heads: int = 1) -> Mask:
    """Build (or fetch from the cache) mask ``name`` for ``seqlen``; heads matter only for dynamic masks."""
    family = MASKS.get(name)
    check_heads(heads)
    resolved = family.resolve(params, seqlen)
    key = tuple(sorted(resolved.items()))
    return _build_cached(name, int(seqlen), key, int(heads) if family.dynamic else 1)
