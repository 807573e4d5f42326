"""User text that must not break the screen, integers past int64, and a fuzz of every command.

Whatever a user types (options with markup, huge integers, wrong types, paths that are
files, folders, missing or unwritable) and whatever a suite or a plugin says, the CLI
answers with its output or one line `error: ...` and exit 2, never a traceback, and
prints every string as written. The fuzz is seeded and bounded in time
(ATTNBENCH_FUZZ_SECONDS, default 30; ATTNBENCH_FUZZ_SEED).

Commands run in this process (`attnbench.cli.app.main` with its output captured), so that
hundreds of invocations fit in the time; `run` always gets `--inline` and a one-case suite.
"""

from __future__ import annotations

import importlib
import io
import os
import random
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

import pytest
import yaml

from attnbench.cli.app import main
from attnbench.measure.threads import pinned_threads

MARKUP = ["[/]", "[bold]naive", "[red]x[/red]", "[/bold]", "[link=file:///etc]x", ":smile:", "[", "]", "\\[b]"]
HUGE = [str(2**63), str(2**64), str(10**30), str(-(2**63) - 1), "9" * 60, "1e400", "-1e400"]
WRONG = ["", " ", "abc", "1.5", "nan", "inf", "-1", "0", "1,2", "=", "k=", "=v", "é", "\x1b[31m", "--", "-x"]
HOSTILE = "tests.plugins.hostile_kernels"

TINY = {
    "name": "tiny",
    "defaults": {"batch": 1, "heads_q": 2, "heads_kv": 1, "head_dim": 16, "dtype": "float32", "passes": ["forward"],
                 "budget": {"warmup_seconds": 0, "measure_seconds": 0.005, "min_repeats": 2, "max_repeats": 2}},
    "sweep": {"kernels": ["naive", "[/]adv"], "masks": ["causal", {"name": "sliding_window", "window": 8}],
              "seqlens": [64]},
    "profiles": {"cpu": {"sweep": {"kernels": ["naive"]}}},
}


@pytest.fixture(scope="module")
def hostile_registered():
    remove = importlib.import_module(HOSTILE).registered()  # "[/]adv" among them, in this process
    yield
    remove()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with pinned_threads(1):
        yield


def invoke(*args: str) -> tuple[int, str, str]:
    """`attnbench ARGS` in this process: (exit code, stdout, stderr). Any exception escaping main fails."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with mock.patch.object(sys, "argv", ["attnbench", *args]), redirect_stdout(out), redirect_stderr(err):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def assert_answered(args, code: int, out: str, err: str, allowed=(0, 2)) -> None:
    shown = f"attnbench {' '.join(map(repr, args))} -> {code}\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}"
    assert code in allowed, shown
    assert "Traceback" not in out + err, shown
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), shown


@pytest.fixture(scope="module")
def world(tmp_path_factory, hostile_registered):
    """Files and folders the fuzz points options at, and one real run to show and compare."""
    base = tmp_path_factory.mktemp("fuzz")
    suite = base / "tiny.yaml"
    suite.write_text(yaml.safe_dump(TINY))
    a_file = base / "a_file.txt"
    a_file.write_text("not a suite\n")
    a_dir = base / "a_dir"
    a_dir.mkdir()
    results = base / "results"
    code, out, err = invoke("run", str(suite), "--out", str(results), "--inline", "--profile", "none")
    assert code == 0, err
    [real] = list(results.iterdir())
    empty = results / "20000101-000000-000000"  # latest~1: a run killed before its first record
    empty.mkdir()
    (empty / "run.json").write_text((real / "run.json").read_text())
    (empty / "records.jsonl").write_text("")
    return {"suite": suite, "file": a_file, "dir": a_dir, "results": results, "base": base}


# -- markup: the cases, each printed as written -------------------------------------
def _suite_with(tmp_path: Path, edit) -> Path:
    doc = yaml.safe_load(yaml.safe_dump(TINY))
    edit(doc)
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return path


MARKUP_SUITES = {
    "kernel [/]": (lambda d: d["sweep"].update(kernels=["[/]"]), "unknown kernel '[/]'"),
    "kernel [bold]naive": (lambda d: d["sweep"].update(kernels=["[bold]naive"]), "unknown kernel '[bold]naive'; did you mean 'naive'"),
    "unknown key [/]": (lambda d: d["defaults"].update({"[/]": 1}), "unknown key '[/]'"),
    "window [/]": (lambda d: d["sweep"].update(masks=[{"name": "sliding_window", "window": "[/]"}]), "'[/]'"),
    "mask [red]causal": (lambda d: d["sweep"].update(masks=["[red]causal"]), "unknown mask '[red]causal'"),
    "name [/]": (lambda d: d.update(name="[/]"), "'[/]'"),
}


def _paths_of(value, prefix=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths_of(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths_of(v, prefix + (i,))
    else:
        yield prefix


def _set_path(doc, path, value):
    for part in path[:-1]:
        doc = doc[part]
    doc[path[-1]] = value


@pytest.mark.parametrize("path", list(_paths_of(TINY)), ids=lambda p: ".".join(map(str, p)))
def test_markup_in_every_suite_value_is_printed_as_written(hostile_registered, tmp_path, path):
    """Every value of the suite replaced by '[/]x': a one-line error that quotes it, or a run plan."""
    suite = _suite_with(tmp_path, lambda d: _set_path(d, path, "[/]x"))
    args = ("validate", str(suite), "--profile", "none")
    code, out, err = invoke(*args)
    assert_answered(args, code, out, err)
    assert code == 0 or "[/]x" in err, err


@pytest.mark.parametrize("what", sorted(MARKUP_SUITES))
def test_markup_in_a_suite_field_is_printed_as_written(hostile_registered, tmp_path, what):
    edit, expected = MARKUP_SUITES[what]
    args = ("validate", str(_suite_with(tmp_path, edit)), "--profile", "none")
    code, out, err = invoke(*args)
    assert_answered(args, code, out, err)
    assert code == 2 and expected in err, err


def test_markup_in_options_and_plugin_names_is_printed_as_written(world):
    suite = str(world["suite"])
    for args, expected in [
        (("validate", suite, "--profile", "[/]"), "unknown profile '[/]'"),
        (("run", suite, "--out", str(world["base"] / "unused"), "--inline", "--profile", "none", "--kernels", "[bold]naive"),
         "'[bold]naive'"),
        (("masks", "info", "[/]causal", "--seqlen", "64"), "unknown mask '[/]causal'"),
        (("show", "[/]", "--root", str(world["results"])), "no run '[/]'"),
    ]:
        code, out, err = invoke(*args)
        assert_answered(args, code, out, err)
        assert code == 2 and expected in err, err
    for args in [("list",), ("show", "latest", "--root", str(world["results"]))]:
        code, out, err = invoke(*args)
        assert_answered(args, code, out, err)
        assert code == 0 and "[/]adv" in out, out  # the plugin kernel's name, as written


# -- integers past int64: every integer field of a suite ------------------------------------
INTEGER_FIELDS = {
    "defaults.batch": lambda d, v: d["defaults"].update(batch=v),
    "defaults.heads_q": lambda d, v: d["defaults"].update(heads_q=v, heads_kv=1),
    "defaults.heads_kv": lambda d, v: d["defaults"].update(heads_kv=v),
    "defaults.head_dim": lambda d, v: d["defaults"].update(head_dim=v),
    "defaults.seed": lambda d, v: d["defaults"].update(seed=v),
    "budget.min_repeats": lambda d, v: d["defaults"]["budget"].update(min_repeats=v),
    "budget.max_repeats": lambda d, v: d["defaults"]["budget"].update(max_repeats=v),
    "sweep.seqlens": lambda d, v: d["sweep"].update(seqlens=[v]),
    "sweep.heads_kv": lambda d, v: d["sweep"].update(heads_kv=[v]),
    "sweep.head_dims": lambda d, v: d["sweep"].update(head_dims=[v]),
    "mask window": lambda d, v: d["sweep"].update(masks=[{"name": "sliding_window", "window": v}]),
    "mask seed": lambda d, v: d["sweep"].update(masks=[{"name": "causal_document", "seed": v}]),
    "cp world_sizes": lambda d, v: d["sweep"].update(cp_methods=["ulysses"], world_sizes=[v]),
    "cp tokens_per_rank": lambda d, v: (d["sweep"].pop("seqlens"), d["sweep"].update(cp_methods=["ulysses"], world_sizes=[1]),
                                        d["defaults"].update(tokens_per_rank=v)),
    "cp ulysses_degree": lambda d, v: d["sweep"].update(cp_methods=[{"name": "usp", "ulysses_degree": v}], world_sizes=[1]),
}


@pytest.mark.parametrize("field", sorted(INTEGER_FIELDS))
@pytest.mark.parametrize("value", [2**63, 2**64, -(2**64)])
def test_integers_past_int64_get_a_one_line_error(hostile_registered, tmp_path, field, value):
    path = _suite_with(tmp_path, lambda d: INTEGER_FIELDS[field](d, value))
    args = ("validate", str(path), "--profile", "none")
    code, out, err = invoke(*args)
    assert_answered(args, code, out, err)
    assert code == 2, (field, out)


# -- what the fuzz found ----------------------------------------------------------------------
def test_what_the_fuzz_found(world, tmp_path):
    suite, results = str(world["suite"]), str(world["results"])
    for args, expected in [
        (("run", suite, "--out", str(world["file"]), "--inline"), "cannot create the run folder"),  # a file
        (("run", suite, "--out", "/proc/attnbench-nope", "--inline"), "cannot create the run folder"),
        (("run", suite, "--out", str(tmp_path), "--inline", "--seqlens", " "), "filter is empty"),
        (("show", "latest~-1", "--root", results), "bad run reference"),
    ]:
        code, out, err = invoke(*args)
        assert_answered(args, code, out, err)
        assert code == 2 and expected in err, err
    # a run killed before its first record shows, compares and reports without tables
    code, out, err = invoke("show", "latest~1", "--root", results)
    assert_answered(("show",), code, out, err)
    assert code == 0 and "0 records" in out


def test_block_sparse_too_large_to_build_is_skipped_not_hung(tmp_path):
    doc = yaml.safe_load(yaml.safe_dump(TINY))
    doc["defaults"].update(heads_q=64, heads_kv=8, head_dim=128, dtype="bf16")
    doc["sweep"].update(kernels=["sdpa"], masks=["block_sparse"], seqlens=["1M"])
    path = tmp_path / "huge.yaml"
    path.write_text(yaml.safe_dump(doc))
    code, out, err = invoke("validate", str(path), "--profile", "none")
    assert_answered(("validate",), code, out, err)
    assert code == 0 and "block pairs" in " ".join(out.split())


# -- the fuzz -------------------------------------------------------------------------------
def _paths(world) -> list[str]:
    """Paths that are files, folders, missing, below a file, unwritable (even for root), empty, markup."""
    base = world["base"]
    return [str(world["file"]), str(world["dir"]), str(base / "missing" / "x"), str(world["file"] / "under"),
            "/proc/attnbench-nope/x", "/proc/version", "", "[/]"]


def _good(rng: random.Random, kind: str, world) -> str:
    """A value the option takes (so that the bad one next to it is what gets answered)."""
    fresh = world["base"] / f"fresh{rng.randrange(10**9)}"
    return rng.choice({
        "int": ["1", "2", "3", "8"],
        "float": ["0.05", "0.5", "30"],
        "seqlen": ["64", "128", "1K"],
        "names": ["naive", "causal", "64", "forward"],
        "set": ["window=8", "seed=3"],
        "run": ["latest", "latest~1", str(world["results"] / "20000101-000000-000000")],
        "resume": ["latest"],
        "root": [str(world["results"])],
        "out": [str(fresh / "picture.png"), str(fresh / "report.html"), str(fresh / "history.sqlite")],
        "results": [str(fresh)],
        "suite": [str(world["suite"])],
        "mask": ["causal", "sliding_window", "causal_document"],
        "device": ["cpu", "cuda"],
        "profile": ["none", "cpu"],
        "fail_on": ["regression", "failure", "never"],
        "format": ["table", "markdown", "json"],
        "endpoint": ["localhost:29500"],
    }[kind])


def _bad(rng: random.Random, kind: str, world) -> str:
    pools = [MARKUP, HUGE, WRONG]
    if kind in ("run", "resume", "root", "out", "results", "suite"):
        pools += [_paths(world)] * 3
    if kind == "set":
        pools.append(["window=" + str(2**70), "seed=-1", "span=[/]", "window=abc", "window=" + str(2**63)])
    if kind == "seqlen":
        pools.append(["1G", "2048M", str(2**31), "0", "-64"])
    if kind == "run":
        pools.append(["latest~" + str(2**64), "latest~-1", "latest~1"])
    return rng.choice(rng.choice(pools))


# command -> (positional kinds, {option: kind}); "flag" options take no value
COMMANDS = {
    ("list",): ([], {"--json": "flag", "--device": "device"}),
    ("env",): ([], {"--json": "flag"}),
    ("masks", "info"): (["mask"], {"--seqlen": "seqlen", "--seed": "int", "--heads": "int", "--set": "set", "--json": "flag"}),
    ("masks", "show"): (["mask"], {"--seqlen": "seqlen", "--out": "out", "--seed": "int", "--set": "set", "--heads": "int",
                                   "--head": "int", "--blocks": "int"}),
    ("validate",): (["suite"], {"--profile": "profile", "--kernels": "names", "--masks": "names", "--seqlens": "seqlen"}),
    ("run",): (["suite"], {"--out": "results", "--profile": "profile", "--kernels": "names", "--masks": "names",
                           "--seqlens": "seqlen", "--nnodes": "int", "--node-rank": "int", "--rdzv-endpoint": "endpoint",
                           "--timeout": "float", "--resume": "resume", "--threads": "int", "--rounds": "int"}),
    ("show",): (["run"], {"--root": "root"}),
    # (--confirm measures; its option checks are fuzzed through --base-env / --base-source without it)
    ("compare",): (["run", "run"], {"--root": "root", "--threshold": "float", "--fail-on": "fail_on", "--format": "format",
                                    "--allow-env-change": "flag", "--canary-threshold": "float", "--normalise-drift": "flag",
                                    "--wall-time": "flag", "--confirm-rounds": "int", "--base-env": "set",
                                    "--base-source": "root"}),
    ("history",): ([], {"--root": "root", "--db": "out", "--kernel": "names", "--mask": "names", "--seqlen": "seqlen",
                        "--pass": "names", "--last": "int", "--json": "flag"}),
    ("report",): (["run"], {"--out": "out", "--root": "root"}),
}
REQUIRED = {("masks", "info"): ["--seqlen"], ("masks", "show"): ["--seqlen", "--out"], ("report",): ["--out"],
            ("run",): ["--out"], ("history",): ["--root"], ("show",): ["--root"], ("compare",): ["--root"]}


def _invocation(rng: random.Random, world) -> list[str]:
    """One command with good values except, usually, one or two bad ones (never all of them)."""
    command = rng.choice(sorted(COMMANDS))
    positional, options = COMMANDS[command]
    chosen = sorted(set(rng.sample(sorted(options), rng.randint(0, min(3, len(options)))) + REQUIRED.get(command, [])))
    slots = [("positional", kind) for kind in positional] + [(o, options[o]) for o in chosen if options[o] != "flag"]
    bad = set(rng.sample(range(len(slots)), min(len(slots), rng.choice([0, 1, 1, 1, 2])))) if slots else set()
    values = [_bad(rng, kind, world) if i in bad else _good(rng, kind, world) for i, (_, kind) in enumerate(slots)]
    args = list(command) + values[: len(positional)]
    named = dict(zip([o for o, _ in slots[len(positional):]], values[len(positional):]))
    for option in chosen:
        args += [option] if options[option] == "flag" else [option, named[option]]
    if command == ("run",):
        args += ["--inline"]  # kernel cases in this process: fast, and the fuzz stays in one process
    if rng.random() < 0.03:
        args.insert(rng.randrange(len(args) + 1), rng.choice(MARKUP + WRONG))  # a stray word anywhere
    return args


def test_fuzz_every_command(world, monkeypatch):
    seconds = float(os.environ.get("ATTNBENCH_FUZZ_SECONDS", "30"))
    rng = random.Random(int(os.environ.get("ATTNBENCH_FUZZ_SEED", "20261201")))
    cwd = world["base"] / "cwd"  # relative paths (junk values, the default results/) land here, not in the checkout
    cwd.mkdir(exist_ok=True)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("COLUMNS", "80")
    deadline = time.monotonic() + seconds
    seen: dict[int, int] = {}
    while time.monotonic() < deadline:
        args = _invocation(rng, world)
        code, out, err = invoke(*args)
        assert_answered(args, code, out, err, allowed=(0, 1, 2) if args[0] == "compare" else (0, 2))
        seen[code] = seen.get(code, 0) + 1
    assert seen.get(2, 0) >= 10 and seen.get(0, 0) >= 3, seen  # both kinds of answer were exercised
