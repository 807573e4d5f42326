"""Load a suite file: safe YAML, profile selection and merge, validation, cases.

Every problem with a suite file raises `attnbench.errors.UserError` with one line::

    <file>:<line>: <dotted.path>: <what is wrong>; <how to fix>

where the line is the one in the file where the offending value (or its nearest written
ancestor, for a missing key) was written — inside the profile when a profile supplied it.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from pathlib import Path as FsPath
from typing import Any, Iterable, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from attnbench.cases import Case
from attnbench.errors import UserError
from attnbench.suite.expand import cuda_is_available, expand_cases
from attnbench.suite.schema import (
    MAX_SEQLEN,
    NAME_RE,
    SECTION_MODELS,
    Profile,
    Suite,
    allowed_keys,
    canonical_pass,
    parse_seqlen,
)
from attnbench.suite.yamlsource import SourceMap, YamlSourceError, dotted, parse_yaml

Path = tuple
AUTO_PROFILE = "cpu"
NO_PROFILE = "none"
MAX_CASES = 1_000_000


# -- registries (indirection so that tests can substitute them) ---------------------------
def _kernels():
    from attnbench.kernels import KERNELS

    return KERNELS


def _masks():
    from attnbench.masks import MASKS

    return MASKS


def _cp_methods():
    from attnbench.cp import CP_METHODS

    return CP_METHODS


# -- loaded suite -----------------------------------------------------------------------
class LoadedSuite(BaseModel):
    """A suite file after profile selection, validation and expansion."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    path: str
    name: str
    description: Optional[str] = None
    profile: Optional[str] = None
    profile_reason: str = ""
    resolved: dict[str, Any]  # the merged document (no `profiles`), JSON-serialisable
    sha256: str  # of `resolved` as canonical JSON
    source_text: str
    suite: Suite  # the validated model of `resolved`
    cases: list[Case]
    filters: dict[str, list[Any]] = Field(default_factory=dict)  # what `filter` kept

    def filter(
        self,
        kernels: Union[str, Iterable[str], None] = None,
        masks: Union[str, Iterable[str], None] = None,
        seqlens: Union[str, int, Iterable[Union[str, int]], None] = None,
    ) -> "LoadedSuite":
        """Keep only the given kernels / masks (names or labels) / seqlens (ints or 4K).

        Each argument may be a list or a comma-separated string; None keeps everything.
        A value that the suite does not contain is a UserError with did-you-mean.
        """
        cases = list(self.cases)
        filters = dict(self.filters)
        for what, value in (("kernels", kernels), ("masks", masks), ("seqlens", seqlens)):
            if value is not None and not isinstance(value, int) and not _split(value):
                raise UserError(f"the {what} filter is empty; give at least one value (e.g. --{what} a,b)")
        if kernels is not None:
            wanted = _split(kernels)
            known = list(dict.fromkeys(c.kernel for c in self.cases))
            for k in wanted:
                if k not in known:
                    raise UserError(_kernel_not_in_suite(k, known, self.name))
            cases = [c for c in cases if c.kernel in wanted]
            filters["kernels"] = wanted
        if masks is not None:
            wanted = _split(masks)
            names = list(dict.fromkeys(c.mask.name for c in self.cases))
            labels = list(dict.fromkeys(c.mask.label() for c in self.cases))
            for m in wanted:
                if m not in names and m not in labels:
                    raise UserError(_not_in_suite("mask", m, names + [x for x in labels if x not in names], self.name))
            cases = [c for c in cases if c.mask.name in wanted or c.mask.label() in wanted]
            filters["masks"] = wanted
        if seqlens is not None:
            raw = [seqlens] if isinstance(seqlens, int) else _split(seqlens)
            wanted_s = [parse_seqlen(s) for s in raw]
            known_s = list(dict.fromkeys(c.shape.seqlen for c in self.cases))
            for s in wanted_s:
                if s not in known_s:
                    raise UserError(
                        f"seqlen {s} is not in suite {self.name!r}; use one of {', '.join(map(str, known_s))}"
                    )
            cases = [c for c in cases if c.shape.seqlen in wanted_s]
            filters["seqlens"] = wanted_s
        return self.model_copy(update={"cases": cases, "filters": filters})


def _split(value: Any) -> list:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [v.strip() if isinstance(v, str) else v for v in value]


def _kernel_not_in_suite(kernel: str, known: list, suite: str) -> str:
    """As `_not_in_suite`, knowing the kernels' aliases: 'fa' means fa2 or fa3, even when the
    suite runs neither (then the message says so instead of guessing a spelling)."""
    registry = _kernels()
    meant = registry.meant_by(kernel)
    inside = [name for name in meant if name in known]
    if meant and not inside:
        which = " or ".join(repr(name) for name in meant)
        return (f"kernel {kernel!r} is {which}, which suite {suite!r} does not run "
                f"(suite has: {', '.join(map(str, known))}; add it to the suite's sweep.kernels)")
    return _not_in_suite("kernel", kernel, known, suite, inside or registry.suggest(kernel, among=known))


def _not_in_suite(kind: str, value: Any, known: list, suite: str, close: list | None = None) -> str:
    if close is None:
        close = difflib.get_close_matches(str(value), [str(k) for k in known], n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"{kind} {value!r} is not in suite {suite!r}{hint} (suite has: {', '.join(map(str, known))})"


# -- error context ----------------------------------------------------------------------
def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


class _Ctx:
    """Turns a path into the merged document into `<file>:<line>: <source path>: ...`."""

    def __init__(self, source: str, lines: SourceMap, origin: dict[Path, Path]) -> None:
        self.source = source
        self.lines = lines
        self.origin = origin

    def src(self, path: Path) -> Path:
        path = tuple(path)
        for n in range(len(path), -1, -1):
            if path[:n] in self.origin:
                return self.origin[path[:n]] + path[n:]
        return path  # pragma: no cover - () is always in origin

    def line(self, path: Path) -> int:
        return self.lines.line(self.src(path))

    def message(self, path: Path, what: str) -> str:
        src = self.src(path)
        where = dotted(src)
        line = self.lines.line(src)
        return _one_line(f"{self.source}:{line}: {where}: {what}" if where else f"{self.source}:{line}: {what}")

    def error(self, path: Path, what: str) -> UserError:
        return UserError(self.message(path, what))


class _Problems:
    """Collects (path, message); raises the one written earliest in the file."""

    def __init__(self, ctx: _Ctx) -> None:
        self.ctx = ctx
        self.items: list[tuple[Path, str]] = []

    def add(self, path: Path, what: str) -> None:
        self.items.append((tuple(path), what))

    def raise_first(self) -> None:
        if not self.items:
            return
        order = sorted(range(len(self.items)), key=lambda i: (self.ctx.line(self.items[i][0]), i))
        path, what = self.items[order[0]]
        raise self.ctx.error(path, what)


# -- pydantic errors --------------------------------------------------------------------
def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _sanitize_loc(loc: tuple, data: Any, keep_last: bool) -> Path:
    """Drop pydantic's internal loc parts (union tags, validator names, `params`)."""
    out: list = []
    cur = data
    for i, part in enumerate(loc):
        if isinstance(cur, dict) and part in cur:
            out.append(part)
            cur = cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            out.append(part)
            cur = cur[part]
        elif keep_last and i == len(loc) - 1 and isinstance(cur, dict):
            out.append(part)
            cur = None
    return tuple(out)


def _describe(err: dict, path: Path) -> str:
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    value = err.get("input")
    got = f" (got {_shown(value)})"
    last = path[-1] if path else ""
    if kind == "missing":
        return f"required key missing; add `{last}: ...`"
    if kind == "extra_forbidden":
        return f"unknown key {last!r}; remove it"
    if kind in ("value_error", "assertion_error"):
        error = ctx.get("error")
        return str(error) if error is not None else str(err.get("msg", "")).removeprefix("Value error, ")
    if kind == "greater_than_equal":
        return f"must be >= {ctx.get('ge')}{got}; use a value of at least {ctx.get('ge')}"
    if kind == "greater_than":
        return f"must be > {ctx.get('gt')}{got}; use a value above {ctx.get('gt')}"
    if kind == "less_than_equal":
        return f"must be <= {ctx.get('le')}{got}; use a smaller value"
    if kind == "too_short":
        return "must not be empty; list at least one value"
    if kind in ("int_type", "int_from_float", "int_parsing"):
        return f"must be an integer{got}; write a whole number without quotes"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number{got}; write a number without quotes"
    if kind == "finite_number":
        return f"must be a finite number{got}; write an ordinary number"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false{got}"
    if kind == "string_type":
        return f"must be a string{got}; write text (quote it if it looks like a number)"
    if kind == "list_type":
        return f"must be a list{got}; write a YAML list such as [a, b]"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping{got}; write `key: value` entries"
    if kind == "literal_error":
        return f"must be {ctx.get('expected')}{got}"
    msg = str(err.get("msg", "invalid value")).replace("Input should be", "must be")
    return f"{msg}{got}"


def _add_pydantic(problems: _Problems, exc: ValidationError, data: Any, prefix: Path = ()) -> None:
    for err in exc.errors(include_url=False):
        keep_last = err.get("type") in ("missing", "extra_forbidden")
        path = _sanitize_loc(tuple(err.get("loc", ())), data, keep_last)
        problems.add(prefix + path, _describe(err, path))


# -- raw-document checks ----------------------------------------------------------------
def _find_sections(data: Any, pattern: tuple) -> list[tuple[Path, dict]]:
    found: list[tuple[Path, Any]] = [((), data)]
    for part in pattern:
        nxt: list[tuple[Path, Any]] = []
        for path, value in found:
            if not isinstance(value, dict):
                continue
            if part == "*":
                nxt.extend((path + (k,), v) for k, v in value.items())
            elif part in value:
                nxt.append((path + (part,), value[part]))
        found = nxt
    return [(p, v) for p, v in found if isinstance(v, dict)]


def _check_unknown_keys(data: dict, problems: _Problems) -> None:
    for pattern, model in SECTION_MODELS.items():
        allowed = allowed_keys(model)
        for path, section in _find_sections(data, pattern):
            for key in section:
                if key in allowed:
                    continue
                close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                if close:
                    what = f"unknown key {key!r}; did you mean {close[0]!r}? (allowed: {', '.join(allowed)})"
                else:
                    what = f"unknown key {key!r}; remove it or use one of: {', '.join(allowed)}"
                problems.add(path + (key,), what)


def _check_profiles(data: dict, problems: _Problems) -> None:
    if "profiles" not in data:
        return
    profiles = data["profiles"]
    if not isinstance(profiles, dict):
        problems.add(("profiles",), f"must be a mapping of profile name to overrides (got {_shown(profiles)})")
        return
    for name, body in profiles.items():
        path = ("profiles", name)
        if not isinstance(name, str) or not NAME_RE.match(name):
            problems.add(path, f"bad profile name {name!r}; use letters, digits, '_', '.' and '-'")
            continue
        if name.lower() == NO_PROFILE:
            problems.add(path, f"profile name {name!r} is reserved (--profile none means no profile); rename it")
            continue
        if body is None:
            continue
        if not isinstance(body, dict):
            problems.add(path, f"a profile must be a mapping with description, defaults and/or sweep (got {_shown(body)})")
            continue
        try:
            Profile.model_validate({k: v for k, v in body.items() if k in allowed_keys(Profile)})
        except ValidationError as exc:
            _add_pydantic(problems, exc, body, path)


# -- profile selection and merge --------------------------------------------------------
def select_profile(suite_doc: Any, requested: Optional[str], cuda_available: bool) -> tuple[Optional[str], str]:
    """Which profile to apply, and why (for the run header).

    An explicit name wins (an unknown one is a UserError with did-you-mean); ``"none"``
    means no profile; otherwise, without CUDA, a ``cpu`` profile is taken automatically.
    """
    if isinstance(suite_doc, dict):
        profiles = suite_doc.get("profiles")
    else:
        profiles = getattr(suite_doc, "profiles", None)
    names = [n for n in profiles if isinstance(n, str)] if isinstance(profiles, dict) else []
    if requested is not None:
        if requested.strip().lower() == NO_PROFILE:
            return None, "--profile none: the suite as written"
        if requested in names:
            return requested, f"profile {requested!r} requested"
        close = difflib.get_close_matches(requested, names, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        listing = f"profiles: {', '.join(names)}, or none" if names else "this suite has no profiles; use --profile none"
        raise UserError(f"unknown profile {requested!r}{hint} ({listing})")
    if not cuda_available:
        if AUTO_PROFILE in names:
            return AUTO_PROFILE, f"no CUDA device: profile {AUTO_PROFILE!r} selected automatically"
        return None, "no CUDA device and no 'cpu' profile: the suite as written"
    return None, "no profile requested"


def _merge(base: Any, over: Any, over_src: Path, out_path: Path, origin: dict[Path, Path]) -> Any:
    """Deep merge: mappings merge key by key; lists and scalars from `over` replace."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            if key in out:
                out[key] = _merge(out[key], value, over_src + (key,), out_path + (key,), origin)
            else:
                out[key] = copy.deepcopy(value)
                origin[out_path + (key,)] = over_src + (key,)
        return out
    origin[out_path] = over_src
    return copy.deepcopy(over)


def apply_profile(data: dict, profile: Optional[str]) -> tuple[dict, dict[Path, Path]]:
    """The document without `profiles`, with `profile` merged in; and merged path -> source path."""
    merged = copy.deepcopy({k: v for k, v in data.items() if k != "profiles"})
    origin: dict[Path, Path] = {(): ()}
    if profile is None:
        return merged, origin
    body = (data.get("profiles") or {}).get(profile) or {}
    for section, value in body.items():
        if value is None:
            continue
        src = ("profiles", profile, section)
        if section in merged:
            merged[section] = _merge(merged[section], value, src, (section,), origin)
        else:
            merged[section] = copy.deepcopy(value)
            origin[(section,)] = src
    return merged, origin


# -- semantic checks ----------------------------------------------------------------------
def _check_duplicates(problems: _Problems, path: Path, values: list, what: str) -> None:
    seen: dict[Any, int] = {}
    for i, value in enumerate(values):
        key = json.dumps(value, sort_keys=True, default=str) if isinstance(value, dict) else (type(value).__name__, value)
        if key in seen:
            shown = value if not isinstance(value, dict) else "the same mask"
            problems.add(path + (i,), f"duplicate {what} {shown} (same as item {seen[key]}); list each value once")
        else:
            seen[key] = i


def _locate_param(message: str, params: dict) -> Optional[str]:
    import re

    for key in params:
        if re.search(rf"(?<![A-Za-z0-9_]){re.escape(str(key))}(?![A-Za-z0-9_])", message):
            return key
    return None


def _check_semantics(suite: Suite, merged: dict, problems: _Problems) -> None:
    d = suite.defaults
    sw = suite.sweep
    if d.heads_q is None:
        problems.add(("defaults", "heads_q"), "required; set defaults.heads_q (the number of query heads)")
    if d.head_dim is None and not sw.head_dims:
        problems.add(("defaults", "head_dim"), "required unless sweep.head_dims is given; set e.g. head_dim: 128")
    if d.dtype is None and not sw.dtypes:
        problems.add(("defaults", "dtype"), "required unless sweep.dtypes is given; set e.g. dtype: bf16")
    b = d.budget
    if b.min_repeats > b.max_repeats:
        path = ("defaults", "budget", "min_repeats")
        problems.add(
            path, f"min_repeats ({b.min_repeats}) must be <= max_repeats ({b.max_repeats}); lower min_repeats or raise max_repeats"
        )
    _check_duplicates(problems, ("defaults", "passes"), list(d.passes), "pass")
    _check_duplicates(problems, ("sweep", "kernels"), list(sw.kernels), "kernel")
    _check_duplicates(problems, ("sweep", "seqlens"), list(sw.seqlens or []), "seqlen")
    _check_duplicates(problems, ("sweep", "masks"), [m.model_dump() for m in sw.masks], "mask")
    _check_cp_shape(suite, problems)
    for axis, label in (("dtypes", "dtype"), ("passes", "pass"), ("heads_kv", "heads_kv"), ("head_dims", "head_dim"),
                        ("world_sizes", "world size")):
        values = getattr(sw, axis)
        if values:
            _check_duplicates(problems, ("sweep", axis), list(values), label)
    if d.heads_q is not None:
        if sw.heads_kv:
            kv_paths = [(("sweep", "heads_kv", i), hkv) for i, hkv in enumerate(sw.heads_kv)]
        elif d.heads_kv is not None:
            kv_paths = [(("defaults", "heads_kv"), d.heads_kv)]
        else:
            kv_paths = []
        for path, hkv in kv_paths:
            if d.heads_q % hkv:
                problems.add(
                    path,
                    f"heads_q ({d.heads_q}) must be a multiple of heads_kv ({hkv}); use a heads_kv that divides {d.heads_q}",
                )
    if problems.items:
        return  # names next, once the shape of the document is right

    kernels = _kernels()
    for i, name in enumerate(sw.kernels):
        try:
            kernels.check(name)
        except UserError as exc:
            problems.add(("sweep", "kernels", i), f"{exc}")
    masks = _masks()
    raw_masks = merged.get("sweep", {}).get("masks", [])
    for i, spec in enumerate(sw.masks):
        entry_path: Path = ("sweep", "masks", i)
        is_mapping = i < len(raw_masks) and isinstance(raw_masks[i], dict)
        try:
            masks.check(spec.name)
        except UserError as exc:
            problems.add(entry_path + (("name",) if is_mapping else ()), f"{exc}")
            continue
        family = masks.get(spec.name)
        for n, seqlen in enumerate(_all_seqlens(suite)):
            try:
                family.resolve(dict(spec.params), seqlen)
            except (UserError, ValueError, TypeError, KeyError) as exc:
                msg = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
                key = _locate_param(msg, spec.params)
                where = f"at seqlen {seqlen}: " if n > 0 else ""
                msg = msg or type(exc).__name__
                if ";" not in msg:
                    msg += "; fix the parameter (see the mask table in masks.md)"
                problems.add(entry_path + ((key,) if key is not None else ()), f"{where}{msg}")
                break
    if suite.is_cp:
        _check_cp_methods(suite, merged, problems)


# -- context parallelism ----------------------------------------------------------------
_CP_ONLY = ("scaling", "tokens_per_rank", "cp_timeout_seconds")


def _all_seqlens(suite: Suite) -> list[int]:
    """Every global sequence length the suite's cases will have."""
    if not suite.is_cp:
        return list(suite.sweep.seqlens or [])
    return list(dict.fromkeys(s for w in suite.sweep.world_sizes or [] for s in suite.seqlens_for(w)))


def _check_cp_shape(suite: Suite, problems: _Problems) -> None:
    """The sections a (non-)CP suite must (not) have; scaling against seqlens."""
    d, sw = suite.defaults, suite.sweep
    if not suite.is_cp:
        if sw.world_sizes is not None:
            problems.add(("sweep", "world_sizes"), "only for context-parallel suites; add sweep.cp_methods or remove it")
        for key in _CP_ONLY:
            if getattr(d, key) is not None:
                problems.add(("defaults", key), "only for context-parallel suites; add sweep.cp_methods or remove it")
        if sw.seqlens is None:
            problems.add(("sweep", "seqlens"), "required key missing; add `seqlens: ...` (e.g. [1K, 2K])")
        return
    if sw.world_sizes is None:
        problems.add(("sweep", "world_sizes"), "required with cp_methods; add e.g. `world_sizes: [1, 2, 4]` (ranks per case)")
    scaling = suite.scaling()
    if scaling == "weak":
        for i, world in enumerate(sw.world_sizes or []):
            if d.tokens_per_rank is not None and d.tokens_per_rank * world > MAX_SEQLEN:
                problems.add(
                    ("sweep", "world_sizes", i),
                    f"tokens_per_rank x world size = {d.tokens_per_rank * world} is above the longest supported "
                    f"global length, {MAX_SEQLEN}; use fewer ranks or fewer tokens per rank",
                )
                break
        if d.tokens_per_rank is None:
            problems.add(("defaults", "scaling"), "weak scaling needs defaults.tokens_per_rank (e.g. tokens_per_rank: 8K)")
        if sw.seqlens is not None:
            problems.add(
                ("sweep", "seqlens"),
                "with weak scaling the global length is tokens_per_rank x world size; remove sweep.seqlens "
                "(or set scaling: strong)",
            )
    else:
        if d.tokens_per_rank is not None:
            problems.add(
                ("defaults", "tokens_per_rank"),
                "only for weak scaling; remove it, or set scaling: weak (strong scaling takes sweep.seqlens as global lengths)",
            )
        if sw.seqlens is None:
            problems.add(("sweep", "seqlens"), "required for strong scaling (the global lengths); add e.g. `seqlens: [8K]`")


def _seqlen_multiple(method: Any, world_size: int, params: dict) -> int:
    """What the global length must be a multiple of: the method's own rule if it has one
    (`seqlen_multiple(world_size, params)`), else the world size (one chunk per rank)."""
    rule = getattr(method, "seqlen_multiple", None)
    if callable(rule):
        try:
            return max(1, int(rule(world_size, dict(params))))
        except Exception:  # a parameter it cannot take: the method says so at run time
            return world_size
    return world_size


def _check_cp_methods(suite: Suite, merged: dict, problems: _Problems) -> None:
    sw = suite.sweep
    registry = _cp_methods()
    raw = merged.get("sweep", {}).get("cp_methods", [])
    _check_duplicates(problems, ("sweep", "cp_methods"), [m.model_dump() for m in sw.cp_methods or []], "CP method")
    for i, spec in enumerate(sw.cp_methods or []):
        path: Path = ("sweep", "cp_methods", i)
        if i < len(raw) and isinstance(raw[i], dict):
            path += ("name",)
        try:
            registry.check(spec.name)
        except UserError as exc:
            problems.add(path, f"{exc}")
            continue
        method = registry.get(spec.name)
        for w_index, world in enumerate(sw.world_sizes or []):
            for s_index, seqlen in enumerate(suite.seqlens_for(world)):
                need = _seqlen_multiple(method, world, spec.params)
                if seqlen % need:
                    where = ("defaults", "tokens_per_rank") if suite.scaling() == "weak" else ("sweep", "seqlens", s_index)
                    problems.add(
                        where,
                        f"global seqlen {seqlen} is not a multiple of {need}, which {spec.name} needs at world size "
                        f"{world}; use a length that is",
                    )
                    return


# -- loading ----------------------------------------------------------------------------
def canonical_json(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def load_suite(
    path: Union[str, FsPath],
    profile: Optional[str] = None,
    *,
    cuda_available: Optional[bool] = None,
) -> LoadedSuite:
    """Read, validate and expand a suite file. Any problem is a one-line UserError."""
    source = str(path)
    fs_path = FsPath(path)
    try:
        raw = fs_path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{source}: no such suite file; check the path (the shipped suites are in suites/)") from None
    except IsADirectoryError:
        raise UserError(f"{source}: is a directory, not a suite file; give the path of a .yaml file") from None
    except OSError as exc:
        raise UserError(f"{source}: cannot read the suite file: {_one_line(exc.strerror or exc)}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise UserError(f"{source}:{line}: not UTF-8 text ({exc.reason}); save the file as UTF-8") from None
    return load_suite_text(text, source=source, profile=profile, cuda_available=cuda_available)


def load_suite_text(
    text: str,
    *,
    source: str = "<suite>",
    profile: Optional[str] = None,
    cuda_available: Optional[bool] = None,
) -> LoadedSuite:
    """`load_suite` for text already in memory; `source` names it in messages."""
    try:
        data, lines = parse_yaml(text)
    except YamlSourceError as exc:
        raise UserError(_one_line(f"{source}:{exc.line}: {exc.message}")) from None
    if data is None:
        raise UserError(f"{source}:1: the suite is empty; write a mapping with name, defaults and sweep")
    if not isinstance(data, dict):
        raise UserError(
            f"{source}:{lines.line(())}: the suite must be a YAML mapping (name:, defaults:, sweep:), "
            f"got {_shown(data) if isinstance(data, (list, dict)) else type(data).__name__ + ' ' + _shown(data)}"
        )

    problems = _Problems(_Ctx(source, lines, {(): ()}))
    _check_unknown_keys(data, problems)
    _check_profiles(data, problems)
    problems.raise_first()

    if cuda_available is None:
        cuda_available = cuda_is_available()
    try:
        profile_name, reason = select_profile(data, profile, cuda_available)
    except UserError as exc:
        raise UserError(_one_line(f"{source}: {exc}")) from None

    merged, origin = apply_profile(data, profile_name)
    ctx = _Ctx(source, lines, origin)
    problems = _Problems(ctx)
    try:
        suite = Suite.model_validate(merged)
    except ValidationError as exc:
        _add_pydantic(problems, exc, merged)
        problems.raise_first()
        raise UserError(f"{source}: invalid suite") from None  # pragma: no cover
    _check_semantics(suite, merged, problems)
    problems.raise_first()

    n_lengths = (
        sum(len(suite.seqlens_for(w)) for w in suite.sweep.world_sizes or []) * len(suite.sweep.cp_methods or [])
        if suite.is_cp
        else len(suite.sweep.seqlens or [])
    )
    n_cases = (
        len(suite.dtypes()) * len(suite.passes()) * len(suite.heads_kv()) * len(suite.head_dims())
        * len(suite.sweep.masks) * n_lengths * len(suite.sweep.kernels)
    )
    if n_cases > MAX_CASES:
        raise ctx.error(("sweep",), f"expands to {n_cases} cases (more than {MAX_CASES}); shorten the axes")
    cases = expand_cases(suite, cuda_available=cuda_available)
    try:
        blob = canonical_json(merged)
    except (TypeError, ValueError) as exc:  # pragma: no cover - validation keeps it JSON-safe
        raise UserError(f"{source}: the suite cannot be written as JSON: {_one_line(exc)}") from None
    return LoadedSuite(
        path=source,
        name=suite.name,
        description=suite.description,
        profile=profile_name,
        profile_reason=reason,
        resolved=merged,
        sha256=hashlib.sha256(blob.encode("utf-8")).hexdigest(),
        source_text=text,
        suite=suite,
        cases=cases,
    )


__all__ = [
    "LoadedSuite",
    "apply_profile",
    "canonical_json",
    "canonical_pass",
    "load_suite",
    "load_suite_text",
    "select_profile",
]
