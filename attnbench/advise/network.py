"""The network model: a latency + bandwidth fit per collective and link, and the profiles.

Per link ("intra": a group inside one node; "inter": a group that spans nodes) and
collective (``all_to_all``, ``all_gather``, ``reduce_scatter``, ``p2p``), the time of one
call is

    t = latency_s + hop_latency_s * hops + bytes / bandwidth_Bps

``bytes`` is what one rank sends (attnbench.cp.comm's convention, which is also the "bus
bandwidth" convention of nccl-tests), ``hops`` the steps a ring algorithm takes over ``n``
ranks: ``n - 1`` for the collectives, 1 for one p2p exchange (NCCL's own tuning model has
this shape: a base latency plus a latency per ring step, src/graph/tuning.cc).

A profile is a JSON file (:class:`NetworkProfile`): written by ``attnbench netbench`` from
measurements (its points kept), or shipped in ``attnbench/advise/data/networks/`` with a
named source for every number. A profile may hold one section per world size (gloo ranks
sharing CPU cores slow down as the world grows, so the check prices each world with its
own measurements); a section without a world size applies to any.

Fitting (:func:`fit_link`): non-negative least squares on the relative residuals
(``scipy.optimize.nnls``: every point counts by its share of error, small messages too).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from attnbench.errors import UserError

LINKS = ("intra", "inter")
OPS = ("all_to_all", "all_gather", "reduce_scatter", "p2p")
PROFILE_DIR = Path(__file__).resolve().parent / "data" / "networks"


def hops(op: str, n: int) -> int:
    """Latency steps of one call of ``op`` over ``n`` ranks (0 for a group of one)."""
    if n <= 1:
        return 0
    return 1 if op == "p2p" else n - 1


class Point(BaseModel):
    """One measured (group size, bytes sent per rank) -> seconds (the slowest rank's median)."""

    model_config = ConfigDict(extra="forbid")

    size: int
    bytes: int
    seconds: float


class LinkFit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    latency_s: float = Field(ge=0)
    hop_latency_s: float = Field(0.0, ge=0)
    bandwidth_Bps: float = Field(gt=0)
    #: median |fit - measured| / measured over the points (None: not fitted)
    fit_error: Optional[float] = None
    points: list[Point] = Field(default_factory=list)
    source: Optional[str] = None  # where the numbers come from (published profiles)

    def line(self, op: str, nbytes: float, n: int) -> float:
        """The fitted model's seconds for one call."""
        if n <= 1 or nbytes <= 0:
            return 0.0
        return self.latency_s + self.hop_latency_s * hops(op, n) + float(nbytes) / self.bandwidth_Bps

    def seconds(self, op: str, nbytes: float, n: int) -> float:
        """One call: between measured sizes (of this group size, else the nearest measured
        one) the measurements themselves, interpolated log-log; above the largest, that point
        plus the extra bytes at the fitted bandwidth; below the smallest, the smallest's time
        (latency-bound). Without points (a published profile), the fitted line.

        The measurements rather than the line where there are some: a backend's time is not
        always latency + bytes / bandwidth (gloo's p2p jumps by milliseconds between 16 and
        64 KiB on a shared CPU, a line through it misses both sides)."""
        if n <= 1 or nbytes <= 0:
            return 0.0
        pts = self._points_near(n)
        if len(pts) < 2:
            return self.line(op, nbytes, n)
        b = np.array([p.bytes for p in pts], dtype=float)
        t = np.array([p.seconds for p in pts], dtype=float)
        x = float(nbytes)
        if x >= b[-1]:
            return float(t[-1] + (x - b[-1]) / self.bandwidth_Bps)
        if x <= b[0]:
            return float(t[0])
        return float(np.exp(np.interp(np.log(x), np.log(b), np.log(t))))

    def _points_near(self, n: int) -> list["Point"]:
        """The points of the measured group size nearest ``n`` (larger first), by bytes; one
        median per size when several were measured."""
        if not self.points:
            return []
        sizes = {p.size for p in self.points}
        best = min(sizes, key=lambda m: (abs(m - n), -m))
        by_bytes: dict[int, list[float]] = {}
        for p in self.points:
            if p.size == best and p.seconds > 0:
                by_bytes.setdefault(p.bytes, []).append(p.seconds)
        return [Point(size=best, bytes=k, seconds=float(np.median(v))) for k, v in sorted(by_bytes.items())]


class Overlap(BaseModel):
    """How much of a transfer in flight is hidden behind compute (1: all; 0: serialised;
    below 0: the two slow each other down beyond serialising, measured on shared CPU cores)."""

    model_config = ConfigDict(extra="forbid")

    hidden: float = Field(ge=-10, le=1)
    source: str


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    world_size: Optional[int] = None  # None: any world size
    ranks_per_node: Optional[int] = None  # of the measurement
    links: dict[str, dict[str, LinkFit]]
    overlap: Overlap
    #: measured: how much slower a rank computes while every rank of the node computes (ranks
    #: sharing CPU cores); None: not measured (GPUs, one per rank: 1)
    compute_slowdown: Optional[float] = Field(None, ge=1)


class NetworkProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str
    backend: str  # nccl, gloo
    device: str  # cuda, cpu
    sources: list[str] = Field(default_factory=list)
    measured: Optional[dict] = None  # command, host, date, versions (netbench profiles)
    sections: list[Section]

    def section(self, world_size: int) -> Section:
        """The section measured at ``world_size``; else one for any world; else the nearest
        measured world size (larger first)."""
        exact = [s for s in self.sections if s.world_size == world_size]
        if exact:
            return exact[0]
        generic = [s for s in self.sections if s.world_size is None]
        if generic:
            return generic[0]
        return min(self.sections, key=lambda s: (abs(s.world_size - world_size), -s.world_size))

    def link(self, world_size: int, spans_nodes: bool, op: str) -> LinkFit:
        """The fit for ``op`` on the link a group uses (inter when it spans nodes; a profile
        measured on one node prices every group with its intra figures)."""
        links = self.section(world_size).links
        name = "inter" if spans_nodes and "inter" in links else "intra"
        fits = links.get(name, {})
        if op in fits:
            return fits[op]
        if "p2p" in fits:  # a collective not measured: its bytes at the p2p figures
            return fits["p2p"]
        raise UserError(f"network profile {self.name!r} has no figures for {op} on the {name} link")

    def seconds(self, op: str, nbytes: float, members: list[int], ranks_per_node: int, world_size: int) -> float:
        """One call of ``op`` by the group ``members`` (global ranks, ``ranks_per_node`` per
        node). An all-to-all that spans nodes sends the share of its bytes meant for the
        group's ranks on other nodes over the inter link and the rest over the intra link,
        at once; every other collective over a spanning group runs at the inter link's pace
        (a ring through the nodes is as fast as its slowest hop)."""
        n = len(members)
        if n <= 1 or nbytes <= 0:
            return 0.0
        nodes = [m // ranks_per_node for m in members]
        spans = len(set(nodes)) > 1
        if op == "all_to_all" and spans:
            inter, intra = self.link(world_size, True, op), self.link(world_size, False, op)
            local = nodes.count(nodes[0])
            off = float(nbytes) * (n - local) / (n - 1)
            return (inter.latency_s + inter.hop_latency_s * hops(op, n)
                    + max(off / inter.bandwidth_Bps, (float(nbytes) - off) / intra.bandwidth_Bps))
        return self.link(world_size, spans, op).seconds(op, nbytes, n)

    def overlap(self, world_size: int) -> float:
        return self.section(world_size).overlap.hidden

    def compute_slowdown(self, world_size: int) -> Optional[float]:
        """Measured slowdown of a rank's compute in a world of this size (None: not measured).
        Only the section measured at exactly this world size says; one rank alone has none."""
        if world_size <= 1:
            return 1.0
        exact = [s for s in self.sections if s.world_size == world_size]
        return exact[0].compute_slowdown if exact else None


def fit_link(op: str, points: Iterable[Point]) -> LinkFit:
    """``latency + hop_latency * hops + bytes / bandwidth`` fitted to ``points`` (non-negative
    least squares on relative residuals). With one group size the hop term is not separable
    from the latency and is left at 0."""
    from scipy.optimize import nnls

    pts = [p for p in points if p.seconds > 0]
    if len(pts) < 2:
        raise ValueError(f"{op}: at least two measured points are needed to fit latency and bandwidth")
    t = np.array([p.seconds for p in pts])
    h = np.array([hops(op, p.size) for p in pts], dtype=float)
    b = np.array([p.bytes for p in pts], dtype=float)
    columns = [np.ones_like(t), b]
    separable = len(set(h.tolist())) > 1
    if separable:
        columns.insert(1, h)
    A = np.stack(columns, axis=1) / t[:, None]
    coef, _ = nnls(A, np.ones_like(t))
    latency = float(coef[0])
    hop = float(coef[1]) if separable else 0.0
    inv_bw = float(coef[-1])
    if inv_bw <= 0:  # time did not grow with size: bandwidth beyond what the points resolve
        inv_bw = 1e-15
    fit = LinkFit(latency_s=latency, hop_latency_s=hop, bandwidth_Bps=1.0 / inv_bw, points=pts)
    predicted = np.array([fit.line(op, p.bytes, p.size) for p in pts])
    fit.fit_error = float(np.median(np.abs(predicted - t) / t))
    return fit


def load_profile(ref: str | Path) -> NetworkProfile:
    """A profile by shipped name (``attnbench/advise/data/networks/NAME.json``) or file path."""
    path = Path(ref)
    if not path.suffix:
        shipped = PROFILE_DIR / f"{ref}.json"
        if shipped.exists():
            path = shipped
    if not path.exists():
        names = ", ".join(shipped_profiles()) or "none"
        raise UserError(f"network profile {str(ref)!r} not found: give a file written by `attnbench netbench` "
                        f"or a shipped profile ({names})")
    try:
        return NetworkProfile.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, ValidationError) as exc:
        first = exc.errors()[0] if isinstance(exc, ValidationError) else None
        where = f" at {'.'.join(map(str, first['loc']))}: {first['msg']}" if first else f": {exc}"
        raise UserError(f"{path}: not a network profile{where}") from None


def shipped_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.json"))


def profile_from_measurements(outcomes, *, name: str, description: str, measured: dict) -> NetworkProfile:
    """One section per netbench outcome (world size): a fit per (link, collective) with at
    least two points, and the measured overlap."""
    sections = []
    for outcome in outcomes:
        grouped: dict[tuple[str, str], list[Point]] = {}
        for p in outcome.points:
            link = "inter" if p.spans_nodes else "intra"
            grouped.setdefault((link, p.op), []).append(Point(size=p.size, bytes=p.bytes, seconds=p.median_s))
        links: dict[str, dict[str, LinkFit]] = {}
        for (link, op), pts in sorted(grouped.items()):
            if len(pts) >= 2:
                links.setdefault(link, {})[op] = fit_link(op, pts)
        o = outcome.overlap
        overlap = (Overlap(hidden=o.hidden, source=f"measured: a {o.bytes} B p2p exchange beside a matmul loop: "
                                                   f"{o.transfer_s * 1e3:.3g} ms + {o.compute_s * 1e3:.3g} ms alone, "
                                                   f"{o.both_s * 1e3:.3g} ms together")
                   if o else Overlap(hidden=0.0, source="not measured (one rank): serialised"))
        sections.append(Section(world_size=outcome.world_size, ranks_per_node=outcome.ranks_per_node,
                                links=links, overlap=overlap, compute_slowdown=o.compute_slowdown if o else None))
    backend = outcomes[0].backend if outcomes else "unknown"
    device = outcomes[0].device if outcomes else "cpu"
    return NetworkProfile(name=name, description=description, backend=backend, device=device,
                          sources=["measured by attnbench netbench (see `measured`)"], measured=measured,
                          sections=sections)


def parse_bytes(text: str) -> int:
    """``4096``, ``4K`` (4096), ``16M``, ``1G`` -> bytes. Raises UserError."""
    raw = text.strip()
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(raw[-1:].lower(), 1)
    digits = raw[:-1] if scale > 1 else raw
    if not digits.isdigit() or int(digits) < 1:
        raise UserError(f"cannot read message size {text!r}; write a positive integer of bytes or one with K, M or G (1K = 1024)")
    return int(digits) * scale


DEFAULT_SIZES = {"cpu": "1K,4K,16K,64K,256K,1M,4M", "cuda": "64K,256K,1M,4M,16M,64M,256M,1G"}


def measure_profile(*, world_sizes: list[int], sizes: list[int], ops: list[str], repeats: int, device: str,
                    options, timeout_s: float, name: str, description: str, command: str,
                    progress=None) -> Optional[NetworkProfile]:
    """Run netbench at each world size (attnbench.cp.netbench) and fit the profile; None on a
    node other than node 0 (node 0 writes the profile)."""
    from attnbench.cp.netbench import OPS as BENCH_OPS, LaunchSpec, NetbenchJob, default_layouts, measure
    from attnbench.measure.environment import capture_environment
    from attnbench.results.store import utc_now

    unknown = sorted(set(ops) - set(BENCH_OPS))
    if unknown:
        raise UserError(f"unknown collective {unknown[0]!r} (known: {', '.join(BENCH_OPS)})")
    outcomes = []
    for world in world_sizes:
        if world < 2:
            raise UserError(f"--world-sizes: {world}: a collective needs at least 2 ranks")
        if world % options.nnodes:
            raise UserError(f"--world-sizes: {world} is not a multiple of the {options.nnodes} nodes")
        per_node = world // options.nnodes
        job = NetbenchJob(device=device, cp=LaunchSpec(world_size=world, timeout_seconds=timeout_s, ranks_per_node=per_node),
                          layouts=default_layouts(world, per_node), ops=list(ops), sizes=list(sizes), repeats=repeats)
        if progress:
            progress(world, job)
        outcome = measure(job, options)
        if outcome is not None:
            outcomes.append(outcome)
    if not outcomes:
        return None
    env = capture_environment(device)
    measured = {"command": command, "date": utc_now(), "host": env.get("hostname"),
                "device": (env.get("device") or {}).get("name"), "torch": (env.get("torch") or {}).get("version"),
                "attnbench": env.get("attnbench"), "nnodes": options.nnodes, "repeats": repeats, "sizes": list(sizes)}
    return profile_from_measurements(outcomes, name=name, description=description, measured=measured)
