"""Compute pricing: the time of one local attention call, from measured (or published) calls.

A :class:`Curve` maps the work of a call (FLOPs under the masks.md convention: ``4 * batch *
heads_q * head_dim * pairs * pass factor``, where a "dense" kernel's pairs are the whole
``q_len x k_len`` rectangle and a "sparse" kernel's are the mask's area) to seconds, by
piecewise-linear interpolation in log-log space between measured calls. Beyond the largest
call it keeps that call's throughput (time grows with the work); below the smallest it
follows the first segment's log-log slope, clipped to [0, 1] (small calls are overhead).

Curves come from

- a run (:func:`from_run`, ``--kernel-run RUN``): one curve per (kernel, dtype, pass, mask,
  path) and one per (kernel, dtype, pass, path) over all masks (for a mask the run did not
  measure), from its ok records' median times. Kernel records (the kernel benchmark, e.g.
  suites/longctx.yaml) give path ``None``. CP records at world size 1 (suites/cp_local.yaml:
  one rank, no communication) give the local step as the CP code calls it: path ``ring``
  (a ring method's step: the lse merge, and in the backward the step's recompute) or
  ``call`` (a method's one attention call under autograd). A step is priced with its own
  path's curve when the run has one, else with the kernel's; a ring backward step priced
  from kernel records adds the kernel's forward when the kernel has no slice backward of
  its own (attnbench.cp.local: the step's forward is recomputed under autograd);
- published figures (:func:`from_figures`, ``attnbench/advise/data/kernels/NAME.json``):
  TFLOPs/s at a stated shape per pass and mask class (``full``, or ``causal`` for masks
  with diagonal slices), each figure turned into a call of that shape.

A curve prices a call on a device of its own; on a CPU the ranks of a node share its
``cores`` (recorded from the kernel run's environment), which attnbench.advise.cores plays out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from attnbench.errors import UserError
from attnbench.masks.slices import SliceKind

FIGURES_DIR = Path(__file__).resolve().parent / "data" / "kernels"
PASS_FACTOR = {"forward": 1.0, "backward": 2.5}


def work_flops(*, batch: int, heads_q: int, head_dim: int, pairs, pass_: str):
    return 4.0 * batch * heads_q * head_dim * np.asarray(pairs, dtype=float) * PASS_FACTOR[pass_]


@dataclass(frozen=True)
class Curve:
    work: tuple[float, ...]  # ascending, distinct
    seconds: tuple[float, ...]
    label: str

    @classmethod
    def of(cls, points: list[tuple[float, float]], label: str) -> "Curve":
        """From (work, seconds) points; several at one work are merged by their median."""
        by_work: dict[float, list[float]] = {}
        for w, t in points:
            if w > 0 and t > 0:
                by_work.setdefault(float(w), []).append(float(t))
        if not by_work:
            raise ValueError(f"{label}: no positive points")
        work = sorted(by_work)
        return cls(tuple(work), tuple(float(np.median(by_work[w])) for w in work), label)

    def time(self, work):
        """Seconds of calls of ``work`` FLOPs (a number or an array; 0 work costs 0)."""
        x = np.asarray(work, dtype=float)
        out = np.zeros_like(x)
        live = x > 0
        if live.any():
            out[live] = self._time(x[live])
        return float(out) if out.ndim == 0 else out

    def _time(self, x: np.ndarray) -> np.ndarray:
        w, t = np.log(self.work), np.log(self.seconds)
        lx = np.log(x)
        if len(w) == 1:
            return self.seconds[0] * x / self.work[0]
        slope = float(np.clip((t[1] - t[0]) / (w[1] - w[0]), 0.0, 1.0))
        inside = np.exp(np.interp(lx, w, t))
        above = self.seconds[-1] * x / self.work[-1]
        below = np.exp(t[0] + slope * (lx - w[0]))
        return np.where(lx >= w[-1], above, np.where(lx <= w[0], below, inside))

    def describe(self) -> str:
        lo, hi = self.work[0], self.work[-1]
        return (f"{self.label}: {len(self.work)} sizes, {lo / self.seconds[0] / 1e12:.3g} to "
                f"{hi / self.seconds[-1] / 1e12:.3g} TFLOPs/s")


@dataclass
class ComputeModel:
    """Seconds of one local call, per (kernel, dtype, pass, mask key)."""

    source: str  # what the figures are ("kernel run <id> on <host>", "published: ...")
    device: str  # cpu | cuda
    device_name: str
    memory_bytes: Optional[int]  # per rank's device (the host's RAM on a CPU)
    curves: dict[tuple, Curve]  # (kernel, dtype, pass, mask key or None, path or None) -> curve
    dense: dict[str, bool]  # kernel -> computes the whole rectangle (Kernel.work == "dense")
    mask_key: Callable[[object], str]  # a Mask -> its curve key (name, or class for figures)
    cores: Optional[int] = None  # CPU cores of a node (None on GPUs)
    kernels: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    published: bool = False
    #: kernel -> a ring step's backward recomputes its forward under autograd (a registered
    #: kernel without ``attend_slices_backward``, attnbench.cp.local); a flash kernel's
    #: published backward works from the lse and recomputes nothing beyond its own figure
    ring_recomputes: dict[str, bool] = field(default_factory=dict)

    def curve(self, kernel: str, dtype: str, pass_: str, mask, path: Optional[str] = None) -> Curve:
        """The curve of a step on ``path`` ("ring", "call"), else the kernel's own."""
        return self.curve_of(kernel, dtype, pass_, self.mask_key(mask), path)

    def curve_of(self, kernel: str, dtype: str, pass_: str, key, path: Optional[str] = None) -> Curve:
        for k in ((kernel, dtype, pass_, key, path), (kernel, dtype, pass_, None, path),
                  (kernel, dtype, pass_, key, None), (kernel, dtype, pass_, None, None)):
            if k in self.curves:
                return self.curves[k]
        have = sorted({f"{k[0]} {k[1]} {k[2]}" for k in self.curves})
        raise UserError(f"the compute figures ({self.source}) have no {kernel} {dtype} {pass_} calls "
                        f"(they have: {', '.join(have) or 'none'}); measure that kernel, dtype and pass")

    def has_path(self, kernel: str, dtype: str, pass_: str, path: str) -> bool:
        return any(k[0] == kernel and k[1] == dtype and k[2] == pass_ and k[4] == path for k in self.curves)

    def seconds(self, kernel: str, dtype: str, pass_: str, mask, *, batch: int, heads_q: int, head_dim: int,
                area, q_len, k_len, path: Optional[str] = None):
        """Local calls on ``path`` (arrays broadcast): 0 for an empty step (no kernel is called).
        A step whose local mask is its whole rectangle is priced as the full mask (when the
        figures have it): what it computes is a full block whatever the global mask."""
        area = np.asarray(area, dtype=float)
        rect = np.asarray(q_len, dtype=float) * np.asarray(k_len, dtype=float)
        pairs = np.where(area > 0, rect if self.dense.get(kernel, False) else area, 0.0)
        whole = (area >= rect) & (area > 0)
        key = self.mask_key(mask)

        def priced(p: str):
            work = work_flops(batch=batch, heads_q=heads_q, head_dim=head_dim, pairs=pairs, pass_=p)
            out = np.asarray(self.curve_of(kernel, dtype, p, key, path).time(work), dtype=float)
            if whole.any() and key != "full" and any(k[3] == "full" and k[0] == kernel for k in self.curves):
                out = np.where(whole, self.curve_of(kernel, dtype, p, "full", path).time(work), out)
            return out

        out = priced(pass_)
        if (path == "ring" and pass_ == "backward" and not self.has_path(kernel, dtype, pass_, "ring")
                and self.ring_recomputes.get(kernel, False)):
            out = out + priced("forward")  # the ring backward recomputes the step's forward
        return out if out.ndim else float(out)


def _has_slice_backward(name: str) -> bool:
    from attnbench.kernels import KERNELS

    return name in KERNELS and bool(getattr(KERNELS.get(name), "has_slice_backward", False))


def _kernel_is_dense(name: str) -> bool:
    from attnbench.kernels import KERNELS

    return name in KERNELS and getattr(KERNELS.get(name), "work", "sparse") == "dense"


def from_run(run) -> ComputeModel:
    """Curves from the ok kernel records of a loaded run (attnbench.results.store.LoadedRun)."""
    from attnbench.cp import CP_METHODS

    points: dict[tuple, list[tuple[float, float]]] = {}
    kernels: dict[str, bool] = {}
    for r in run.records:
        if r.status.value != "ok" or r.timing is None or not r.flops:
            continue
        case = r.case
        if case.cp is None:
            path = None
        elif case.cp.world_size == 1 and case.cp.method in CP_METHODS:
            path = "ring" if CP_METHODS.get(case.cp.method).ring_sizes(case) else "call"
        else:  # a CP case with communication is not a local step alone
            continue
        if case.pass_.value not in PASS_FACTOR:  # forward_backward records price neither pass alone
            continue
        pass_ = case.pass_.value
        dense = kernels.setdefault(case.kernel, _kernel_is_dense(case.kernel))
        area = float((r.mask or {}).get("area") or 0.0)
        s = case.shape
        pairs = float(s.seqlen) ** 2 if dense else area
        work = work_flops(batch=s.batch, heads_q=s.heads_q, head_dim=s.head_dim, pairs=pairs, pass_=pass_)
        for key in ((case.kernel, case.dtype, pass_, case.mask.name, path), (case.kernel, case.dtype, pass_, None, path)):
            points.setdefault(key, []).append((work, r.timing.median_s))
    if not points:
        raise UserError(f"{run.path}: no ok kernel records or one-rank CP records to price compute with "
                        "(e.g. `attnbench run suites/cp_local.yaml`)")
    curves = {k: Curve.of(v, f"{k[0]} {k[1]} {k[2]} {k[3] or 'all masks'} {k[4] or 'kernel'}") for k, v in points.items()}
    env = run.info.environment
    device = str((env.get("device") or {}).get("requested") or "cpu")
    device = "cuda" if device.startswith("cuda") else "cpu"
    gpus = env.get("devices") or []
    memory = gpus[0].get("total_memory_bytes") if device == "cuda" and gpus else env.get("memory_total_bytes")
    cpu = env.get("cpu") or {}
    return ComputeModel(
        source=f"kernel run {run.info.run_id} on {env.get('hostname', '?')} ({(env.get('device') or {}).get('name', device)})",
        device=device, device_name=str((env.get("device") or {}).get("name") or device), memory_bytes=memory,
        curves=curves, dense=kernels, mask_key=lambda mask: mask.name,
        cores=(cpu.get("affinity_cpus") or cpu.get("logical_cpus")) if device == "cpu" else None,
        kernels=tuple(sorted(kernels)), ring_recomputes={k: not _has_slice_backward(k) for k in kernels},
    )


def mask_class(mask) -> str:
    """``causal`` for a mask with a diagonal slice anywhere, else ``full`` (published figures)."""
    kinds = np.asarray(mask.slices.kind)
    return "full" if len(kinds) and bool((kinds == SliceKind.FULL).all()) else "causal"


def from_figures(ref: str | Path) -> ComputeModel:
    """Curves from a published-figures file (a shipped name or a path)."""
    path = Path(ref)
    if not path.suffix:
        path = FIGURES_DIR / f"{ref}.json"
    if not path.exists():
        names = ", ".join(sorted(p.stem for p in FIGURES_DIR.glob("*.json")))
        raise UserError(f"kernel figures {str(ref)!r} not found (shipped: {names}; or give a kernel run with --kernel-run)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        shape = data["shape"]
        tokens, heads, head_dim = int(shape["tokens"]), int(shape["heads"]), int(shape["head_dim"])
        kernel, dtype = str(data["kernel"]), str(data["dtype"])
        curves, notes = {}, list(data.get("notes", []))
        for pass_, classes in data["throughput"].items():
            for cls in ("full", "causal"):
                figures = classes.get(cls) or classes.get("full")
                pts = []
                for seqlen, tflops in figures:
                    seqlen = int(seqlen)
                    batch = max(1, tokens // seqlen)
                    pairs = seqlen * seqlen if cls == "full" else seqlen * (seqlen + 1) / 2
                    work = work_flops(batch=batch, heads_q=heads, head_dim=head_dim, pairs=pairs, pass_=pass_)
                    pts.append((work, work / (float(tflops) * 1e12)))
                curves[(kernel, dtype, pass_, cls, None)] = Curve.of(pts, f"{kernel} {dtype} {pass_} {cls} (published)")
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a kernel-figures file ({exc})") from None
    return ComputeModel(
        source=f"published: {data.get('description', path.stem)}", device=str(data.get("device", "cuda")),
        device_name=str(data.get("device_name", "")), memory_bytes=data.get("memory_bytes"), curves=curves,
        dense={kernel: False}, mask_key=mask_class, kernels=(kernel,), notes=notes + list(data.get("sources", [])),
        published=True,
    )
