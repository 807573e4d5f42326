"""Suite files: YAML with line numbers, schema, profiles, expansion, errors, filters."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnbench.cases import Case, MaskChoice, Pass
from attnbench.errors import UserError
from attnbench.registry import Registry
from attnbench.suite import LoadedSuite, Suite, expand_cases, load_suite, parse_seqlen, select_profile
from attnbench.suite import load as load_mod
from attnbench.suite.yamlsource import parse_yaml

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "suites" / "smoke.yaml"
LONGCTX = ROOT / "suites" / "longctx.yaml"

# -- stand-in registries, so these tests do not depend on the kernels/masks being written --
FAKE_KERNELS = ["naive", "sdpa", "sdpa_math", "sdpa_flash", "sdpa_efficient", "sdpa_cudnn", "flex"]
FAKE_MASK_PARAMS = {
    "full": {},
    "causal": {},
    "sliding_window": {"window": 1024},
    "sliding_window_causal": {"window": 1024},
    "full_document": {"distribution": "auto", "seed": 42, "lengths_at": None},
    "causal_document": {"distribution": "auto", "seed": 42, "lengths_at": None},
    "share_question": {"distribution": "auto", "seed": 42, "lengths_at": None},
    "causal_blockwise": {"distribution": "auto", "seed": 42, "lengths_at": None},
    "prefix_lm_causal": {"prefix": None, "seed": 42},
    "prefix_lm_document": {"distribution": "auto", "seed": 42, "lengths_at": None},
    "global_sliding_window": {"global_tokens": 256, "window": 1024},
    "block_causal_document": {"block": 1024, "seed": 42},
    "causal_sink_window": {"sink": 4, "window": 1024},
}


class FakeFamily:
    def __init__(self, name: str, params: dict) -> None:
        self.name = name
        self.params = params

    def resolve(self, params: dict, seqlen: int) -> dict:
        for key in params:
            if key not in self.params:
                raise UserError(f"mask {self.name!r} has no parameter {key!r} (valid: {', '.join(self.params) or 'none'})")
        out = dict(self.params)
        for key, value in params.items():
            if key == "distribution":
                if not isinstance(value, str):
                    raise UserError(f"distribution must be a name (got {value!r}); use pile, prolong64k or prolong512k")
            elif isinstance(value, bool) or not isinstance(value, int):
                raise UserError(f"{key} must be an integer (got {value!r}); write a whole number")
            elif value < 0:
                raise UserError(f"{key} must be >= 0 (got {value}); use a non-negative {key}")
            elif key == "prefix" and value > seqlen:
                raise UserError(f"prefix must be <= seqlen {seqlen} (got {value}); use a shorter prefix")
            out[key] = value
        return out


@pytest.fixture
def fake_registries(monkeypatch):
    kernels: Registry = Registry("kernel")
    for name in FAKE_KERNELS:
        kernels.add(name, object())
    masks: Registry = Registry("mask")
    for name, params in FAKE_MASK_PARAMS.items():
        masks.add(name, FakeFamily(name, params))
    monkeypatch.setattr(load_mod, "_kernels", lambda: kernels)
    monkeypatch.setattr(load_mod, "_masks", lambda: masks)
    return kernels, masks


BASE = """\
name: t
description: a test suite
defaults:
  batch: 1
  heads_q: 4
  heads_kv: 2
  head_dim: 32
  dtype: fp32
  passes: [forward, backward]
  budget: {warmup_seconds: 0.0, measure_seconds: 0.05, min_repeats: 3, max_repeats: 10}
sweep:
  kernels: [naive, sdpa]
  masks:
    - full
    - causal
    - {name: sliding_window, window: 4}
  seqlens: [64, 1K]
profiles:
  cpu:
    description: cpu version
    defaults:
      heads_q: 8
      budget: {measure_seconds: 0.01}
    sweep:
      seqlens: [32]
"""
# Line numbers of BASE:       1 name, 5 heads_q, 6 heads_kv, 8 dtype, 9 passes, 10 budget,
# 12 kernels, 14-16 masks, 17 seqlens, 20 cpu description, 22 cpu heads_q, 23 cpu budget, 25 cpu seqlens


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path, **kwargs) -> str:
    kwargs.setdefault("cuda_available", True)
    with pytest.raises(UserError) as info:
        load_suite(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- the shipped suites -------------------------------------------------------------------
def test_smoke_suite(fake_registries):
    s = load_suite(SMOKE, cuda_available=False)
    assert isinstance(s, LoadedSuite)
    assert s.name == "smoke" and s.profile is None
    assert len(s.cases) == 4 * 4 * 2 * 2
    assert {c.kernel for c in s.cases} == {"naive", "sdpa", "sdpa_math", "flex"}
    assert {c.shape.seqlen for c in s.cases} == {128, 256}
    c = s.cases[0]
    assert (c.shape.heads_q, c.shape.heads_kv, c.shape.head_dim, c.dtype) == (4, 2, 32, "float32")
    assert c.device == "cpu" and c.budget.measure_seconds == 0.05 and c.budget.max_repeats == 10
    assert {c.pass_ for c in s.cases} == {Pass.forward, Pass.backward}
    # parameters as written, not the family's resolved defaults
    masks = {(c.mask.name, json.dumps(c.mask.params, sort_keys=True)) for c in s.cases}
    assert masks == {("full", "{}"), ("causal", "{}"), ("causal_document", '{"lengths_at": 8192}'),
                     ("sliding_window_causal", '{"window": 64}')}


def test_longctx_suite_without_profile(fake_registries):
    s = load_suite(LONGCTX, "none", cuda_available=False)
    assert s.profile is None and "none" in s.profile_reason
    assert len(s.cases) == 7 * 13 * 9 * 2
    assert sorted({c.shape.seqlen for c in s.cases}) == [k * 1024 for k in (1, 2, 4, 8, 16, 24, 32, 40, 48)]
    assert {c.mask.name for c in s.cases} == set(FAKE_MASK_PARAMS)
    shapes = {(c.shape.batch, c.shape.heads_q, c.shape.heads_kv, c.shape.head_dim, c.dtype) for c in s.cases}
    assert shapes == {(1, 64, 8, 128, "bfloat16")}
    windows = {c.mask.params["window"] for c in s.cases if "window" in c.mask.params}
    assert windows == {1024}
    assert {c.device for c in s.cases} == {"cpu"}  # device: auto without CUDA


def test_longctx_cpu_profile_automatic_and_explicit(fake_registries):
    auto = load_suite(LONGCTX, cuda_available=False)
    assert auto.profile == "cpu"
    assert auto.profile_reason == "no CUDA device: profile 'cpu' selected automatically"
    assert len(auto.cases) == 7 * 13 * 2 * 2
    assert {c.shape.seqlen for c in auto.cases} == {512, 1024}
    assert {(c.shape.heads_q, c.shape.heads_kv, c.shape.head_dim, c.dtype) for c in auto.cases} == {(8, 1, 64, "float32")}
    assert {c.mask.params.get("window") for c in auto.cases} == {None, 256}
    assert {c.mask.name for c in auto.cases} == set(FAKE_MASK_PARAMS)
    explicit = load_suite(LONGCTX, "cpu", cuda_available=True)
    assert explicit.profile == "cpu" and explicit.sha256 == auto.sha256
    assert {c.device for c in explicit.cases} == {"cuda"}
    full = load_suite(LONGCTX, cuda_available=True)
    assert full.profile is None and len(full.cases) == 1638


def test_shipped_suites_against_real_registries():
    """The real kernels and masks packages accept every name and parameter shipped."""
    from attnbench.kernels import KERNELS
    from attnbench.masks import MASKS

    for path, profile, count in ((SMOKE, None, 64), (LONGCTX, "none", 1638), (LONGCTX, "cpu", 364)):
        s = load_suite(path, profile, cuda_available=False)
        assert len(s.cases) == count
        for case in s.cases[:: max(1, len(s.cases) // 50)]:
            KERNELS.check(case.kernel)
            MASKS.get(case.mask.name).resolve(dict(case.mask.params), case.shape.seqlen)


def test_real_masks_parameter_error(tmp_path):
    path = write(tmp_path, BASE.replace("window: 4", "window: -5"))
    msg = load_error(path)
    assert msg.startswith(f"{path}:16: sweep.masks[2].window: ")
    assert "-5" in msg
    path = write(tmp_path, BASE.replace("window: 4", "windw: 4"))
    msg = load_error(path)
    assert msg.startswith(f"{path}:16: sweep.masks[2].windw: ") and "window" in msg


# -- expansion -------------------------------------------------------------------------------
def test_case_count_is_product_and_kernel_innermost(fake_registries, tmp_path):
    text = BASE.replace(
        "  seqlens: [64, 1K]\n",
        "  seqlens: [64, 1K]\n  dtypes: [fp32, bf16]\n  heads_kv: [1, 4]\n  head_dims: [16, 32]\n  passes: [fwd, fwd_bwd]\n",
    )
    s = load_suite(write(tmp_path, text), "none", cuda_available=False)
    assert len(s.cases) == 2 * 2 * 2 * 2 * 3 * 2 * 2
    expected = [
        (dt, p, hkv, hd, m, sl, k)
        for dt, hkv, hd, m, sl, p, k in itertools.product(
            ["float32", "bfloat16"],
            [1, 4],
            [16, 32],
            ["full", "causal", "sliding_window"],
            [64, 1024],
            ["forward", "forward_backward"],
            ["naive", "sdpa"],
        )
    ]
    got = [
        (c.dtype, c.pass_.value, c.shape.heads_kv, c.shape.head_dim, c.mask.name, c.shape.seqlen, c.kernel)
        for c in s.cases
    ]
    assert got == expected
    # consecutive pairs share inputs: kernel is the innermost loop
    for a, b in zip(s.cases[::2], s.cases[1::2]):
        assert a.inputs_key() == b.inputs_key() and a.pass_ == b.pass_ and a.kernel != b.kernel
    # and the passes of one problem follow each other: one set of inputs per problem
    for group in (s.cases[i : i + 4] for i in range(0, len(s.cases), 4)):
        assert len({c.inputs_key() for c in group}) == 1 and len({c.pass_ for c in group}) == 2


def test_expand_cases_directly_and_device():
    doc = {
        "name": "x",
        "defaults": {"heads_q": 2, "head_dim": 8, "dtype": "fp16", "device": "auto", "seed": 7, "check_accuracy": False},
        "sweep": {"kernels": ["a", "b", "c"], "masks": ["full", {"name": "w", "window": 3}], "seqlens": ["1k", 16]},
    }
    suite = Suite.model_validate(doc)
    cases = expand_cases(suite, cuda_available=True)
    assert len(cases) == 3 * 2 * 2
    assert all(isinstance(c, Case) for c in cases)
    assert [c.kernel for c in cases[:6]] == ["a", "b", "c"] * 2
    assert [c.shape.seqlen for c in cases[:6]] == [1024] * 3 + [16] * 3
    c = cases[-1]
    assert c.device == "cuda" and c.seed == 7 and c.check_accuracy is False and c.dtype == "float16"
    assert c.shape.heads_kv == 2  # heads_kv defaults to heads_q
    assert c.pass_ is Pass.forward  # passes default to [forward]
    assert c.mask == MaskChoice(name="w", params={"window": 3})
    assert expand_cases(suite, cuda_available=False)[0].device == "cpu"
    doc["defaults"]["device"] = "cpu"
    assert {c.device for c in expand_cases(Suite.model_validate(doc), cuda_available=True)} == {"cpu"}


@pytest.mark.parametrize(
    "text, value",
    [(512, 512), ("512", 512), ("1K", 1024), ("1k", 1024), ("48K", 49152), (" 2k ", 2048), ("1M", 1048576), ("3m", 3 << 20)],
)
def test_parse_seqlen(text, value):
    assert parse_seqlen(text) == value


@pytest.mark.parametrize("bad", ["1.5K", "K", "-1", "1G", "", "1 K B", True, 1.0, None, [1]])
def test_parse_seqlen_rejects(bad):
    with pytest.raises(UserError):
        parse_seqlen(bad)


# -- profiles -------------------------------------------------------------------------------
def test_profile_deep_merge(fake_registries, tmp_path):
    path = write(tmp_path, BASE)
    s = load_suite(path, "cpu", cuda_available=True)
    r = s.resolved
    assert "profiles" not in r
    assert r["description"] == "cpu version" == s.description  # scalar replaced
    assert r["defaults"]["heads_q"] == 8  # mapping merged key by key ...
    assert r["defaults"]["heads_kv"] == 2 and r["defaults"]["dtype"] == "fp32"  # ... others kept
    assert r["defaults"]["budget"] == {"warmup_seconds": 0.0, "measure_seconds": 0.01, "min_repeats": 3, "max_repeats": 10}
    assert r["sweep"]["seqlens"] == [32]  # lists replace
    assert r["sweep"]["kernels"] == ["naive", "sdpa"]
    assert {c.shape.heads_q for c in s.cases} == {8} and {c.shape.seqlen for c in s.cases} == {32}
    assert {c.budget.measure_seconds for c in s.cases} == {0.01}
    plain = load_suite(path, None, cuda_available=True)
    assert plain.profile is None and plain.resolved["defaults"]["heads_q"] == 4
    assert plain.resolved["sweep"]["seqlens"] == [64, "1K"]
    json.dumps(s.resolved)  # JSON-serialisable


def test_select_profile():
    doc = {"profiles": {"cpu": {}, "big": {}}}
    assert select_profile(doc, "big", cuda_available=False) == ("big", "profile 'big' requested")
    assert select_profile(doc, "cpu", cuda_available=True)[0] == "cpu"
    assert select_profile(doc, "none", cuda_available=False)[0] is None
    assert select_profile(doc, None, cuda_available=False) == ("cpu", "no CUDA device: profile 'cpu' selected automatically")
    assert select_profile(doc, None, cuda_available=True)[0] is None
    assert select_profile({"profiles": {"big": {}}}, None, cuda_available=False)[0] is None
    assert select_profile({}, None, cuda_available=False)[0] is None
    with pytest.raises(UserError, match=r"unknown profile 'bgi'; did you mean 'big'\?.*cpu"):
        select_profile(doc, "bgi", cuda_available=False)
    with pytest.raises(UserError, match="no profiles"):
        select_profile({}, "cpu", cuda_available=False)


def test_unknown_profile_in_load(fake_registries, tmp_path):
    path = write(tmp_path, BASE)
    msg = load_error(path, profile="cpuu")
    assert msg.startswith(f"{path}: unknown profile 'cpuu'; did you mean 'cpu'?")


def test_cuda_detection_used_when_not_given(fake_registries, tmp_path, monkeypatch):
    path = write(tmp_path, BASE)
    monkeypatch.setattr(load_mod, "cuda_is_available", lambda: False)
    assert load_suite(path).profile == "cpu"
    monkeypatch.setattr(load_mod, "cuda_is_available", lambda: True)
    s = load_suite(path)
    assert s.profile is None and s.cases[0].device == "cuda"


# -- sha256 -----------------------------------------------------------------------------------
def test_sha256_stable_and_profile_sensitive(fake_registries, tmp_path):
    path = write(tmp_path, BASE)
    a = load_suite(path, "none", cuda_available=False)
    b = load_suite(path, "none", cuda_available=False)
    assert a.sha256 == b.sha256 and len(a.sha256) == 64
    canonical = json.dumps(a.resolved, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert a.sha256 == hashlib.sha256(canonical.encode()).hexdigest()
    # formatting, comments and key order do not matter
    reformatted = yaml.safe_dump(yaml.safe_load(BASE), default_flow_style=True, sort_keys=True)
    c = load_suite(write(tmp_path, "# a comment\n" + reformatted, "r.yaml"), "none", cuda_available=False)
    assert c.sha256 == a.sha256
    cpu = load_suite(path, "cpu", cuda_available=False)
    assert cpu.sha256 != a.sha256
    changed = load_suite(write(tmp_path, BASE.replace("seed: 0", "").replace("batch: 1", "batch: 2"), "c.yaml"), "none", cuda_available=False)
    assert changed.sha256 != a.sha256
    assert a.source_text == BASE


# -- filters ----------------------------------------------------------------------------------
def test_filters(fake_registries, tmp_path):
    s = load_suite(write(tmp_path, BASE), "none", cuda_available=False)
    assert len(s.cases) == 2 * 3 * 2 * 2
    only = s.filter(kernels=["sdpa"])
    assert {c.kernel for c in only.cases} == {"sdpa"} and len(only.cases) == len(s.cases) // 2
    assert len(s.cases) == 24  # the original is unchanged
    both = s.filter(kernels="naive,sdpa", masks="causal,sliding_window(window=4)", seqlens=["1K"])
    assert {c.mask.name for c in both.cases} == {"causal", "sliding_window"}
    assert {c.shape.seqlen for c in both.cases} == {1024}
    assert len(both.cases) == 2 * 2 * 1 * 2
    assert both.filters == {"kernels": ["naive", "sdpa"], "masks": ["causal", "sliding_window(window=4)"], "seqlens": [1024]}
    assert len(s.filter(seqlens=64).cases) == 12
    with pytest.raises(UserError, match=r"kernel 'spda' is not in suite 't'; did you mean 'sdpa'\?"):
        s.filter(kernels=["spda"])
    with pytest.raises(UserError, match=r"mask 'casual'.*did you mean 'causal'\?"):
        s.filter(masks="casual")
    with pytest.raises(UserError, match=r"seqlen 2048 is not in suite"):
        s.filter(seqlens="2K")
    with pytest.raises(UserError):
        s.filter(seqlens="lots")


# -- errors: file, line, path ---------------------------------------------------------------
ERRORS = [
    # (old, new, line, path, fragment)
    ("heads_q: 4", "heads_q: 0", 5, "defaults.heads_q", "must be >= 1 (got 0)"),
    ("heads_q: 4", "heads_q: '4'", 5, "defaults.heads_q", "must be an integer"),
    ("heads_q: 4", "heads_q: 4.0", 5, "defaults.heads_q", "must be an integer"),
    ("heads_kv: 2", "heads_kv: 3", 6, "defaults.heads_kv", "heads_q (4) must be a multiple of heads_kv (3)"),
    ("dtype: fp32", "dtype: fp8", 8, "defaults.dtype", "unknown dtype 'fp8'"),
    ("passes: [forward, backward]", "passes: [forward, backwards]", 9, "defaults.passes[1]", "unknown pass 'backwards'"),
    ("passes: [forward, backward]", "passes: [fwd, forward]", 9, "defaults.passes[1]", "duplicate pass"),
    ("min_repeats: 3", "min_repeats: 30", 10, "defaults.budget.min_repeats", "must be <= max_repeats"),
    ("measure_seconds: 0.05", "measure_seconds: 0", 10, "defaults.budget.measure_seconds", "must be > 0"),
    ("measure_seconds: 0.05", "measure_seconds: .inf", 10, "defaults.budget.measure_seconds", "finite"),
    ("max_repeats: 10}", "max_repeats: 10, repeats: 3}", 10, "defaults.budget.repeats", "unknown key 'repeats'"),
    ("  batch: 1\n", "  batch: 1\n  device: gpu\n", 5, "defaults.device", "must be 'auto', 'cpu' or 'cuda'"),
    ("kernels: [naive, sdpa]", "kernels: [naive, spda]", 12, "sweep.kernels[1]", "did you mean 'sdpa'"),
    ("kernels: [naive, sdpa]", "kernels: []", 12, "sweep.kernels", "must not be empty"),
    ("kernels: [naive, sdpa]", "kernels: [sdpa, sdpa]", 12, "sweep.kernels[1]", "duplicate kernel"),
    ("kernels: [naive, sdpa]", "kernels: sdpa", 12, "sweep.kernels", "must be a list"),
    ("    - causal\n", "    - casual\n", 15, "sweep.masks[1]", "did you mean 'causal'"),
    ("{name: sliding_window, window: 4}", "{name: slidingwindow, window: 4}", 16, "sweep.masks[2].name", "unknown mask"),
    ("window: 4", "window: -5", 16, "sweep.masks[2].window", "must be >= 0 (got -5)"),
    ("window: 4", "windw: 4", 16, "sweep.masks[2].windw", "no parameter 'windw'"),
    ("window: 4", "window: [4]", 16, "sweep.masks[2].window", "number, string or boolean"),
    ("{name: sliding_window, window: 4}", "{window: 4}", 16, "sweep.masks[2]", "needs a `name`"),
    ("    - causal\n", "    - 7\n", 15, "sweep.masks[1]", "a mask is a name or a mapping"),
    ("    - causal\n", "    - full\n", 15, "sweep.masks[1]", "duplicate mask"),
    ("seqlens: [64, 1K]", "seqlens: [64, 1Q]", 17, "sweep.seqlens[1]", "cannot read seqlen '1Q'"),
    ("seqlens: [64, 1K]", "seqlens: [64, 0]", 17, "sweep.seqlens[1]", "must be >= 1"),
    ("seqlens: [64, 1K]", "seqlens: [1024, 1K]", 17, "sweep.seqlens[1]", "duplicate seqlen 1024"),
    ("seqlens: [64, 1K]", "seqlens: [64, 1K]\n  heads_kv: [1, 2, 3]", 18, "sweep.heads_kv[2]", "multiple of heads_kv (3)"),
    ("seqlens: [64, 1K]", "seqlens: [64, 1K]\n  head_dims: [8, -8]", 18, "sweep.head_dims[1]", "must be >= 1"),
    ("seqlens: [64, 1K]", "seqlens: [64, 1K]\n  dtypes: [bf16, bfloat16]", 18, "sweep.dtypes[1]", "duplicate dtype"),
    ("  seqlens: [64, 1K]\n", "  seqlen: [64, 1K]\n", 17, "sweep.seqlen", "unknown key 'seqlen'; did you mean 'seqlens'?"),
    ("  kernels: [naive, sdpa]\n", "", 11, "sweep.kernels", "required key missing"),
    ("  heads_q: 4\n", "", 3, "defaults.heads_q", "required"),
    ("  dtype: fp32\n", "", 3, "defaults.dtype", "required unless sweep.dtypes"),
    ("name: t\n", "", 1, "name", "required key missing"),
    ("name: t\n", "name: 'a b'\n", 1, "name", "letters, digits"),
    ("description: a test suite", "description: [a]", 2, "description", "must be a string"),
    ("sweep:\n", "swep:\n", 11, "swep", "did you mean 'sweep'?"),
    ("budget: {warmup_seconds: 0.0, measure_seconds: 0.05, min_repeats: 3, max_repeats: 10}", "budget: 3", 10, "defaults.budget", "must be a mapping"),
]
# With --profile cpu: problems inside the profile point at the profile's lines.
PROFILE_ERRORS = [
    ("    sweep:\n      seqlens: [32]", "    sweep:\n      seqlens: [-32]", 25, "profiles.cpu.sweep.seqlens[0]", "must be >= 1"),
    ("      heads_q: 8", "      heads_q: 5", 6, "defaults.heads_kv", "heads_q (5) must be a multiple of heads_kv (2)"),
    ("      heads_q: 8", "      heads_q: 0", 22, "profiles.cpu.defaults.heads_q", "must be >= 1"),
    ("budget: {measure_seconds: 0.01}", "budget: {measure_seconds: -1}", 23, "profiles.cpu.defaults.budget.measure_seconds", "must be > 0"),
    ("budget: {measure_seconds: 0.01}", "budget: {min_repeats: 11}", 23, "profiles.cpu.defaults.budget.min_repeats", "must be <= max_repeats (10)"),
    ("    sweep:\n      seqlens: [32]", "    sweep:\n      masks: [{name: causal_sink_window, sink: -1}]", 25, "profiles.cpu.sweep.masks[0].sink", "must be >= 0"),
    ("    sweep:\n      seqlens: [32]", "    sweep:\n      kernels: [flx]", 25, "profiles.cpu.sweep.kernels[0]", "did you mean 'flex'"),
    ("      heads_q: 8", "      heads_kv: 3", 22, "profiles.cpu.defaults.heads_kv", "multiple of heads_kv (3)"),
    ("budget: {measure_seconds: 0.01}", "budget: {measure_second: 0.01}", 23, "profiles.cpu.defaults.budget.measure_second", "did you mean 'measure_seconds'"),
    ("    description: cpu version", "    descripton: cpu version", 20, "profiles.cpu.descripton", "did you mean 'description'"),
    ("  cpu:\n", "  'c p':\n", 19, "profiles.c p", "bad profile name"),
    ("  cpu:\n", "  none:\n", 19, "profiles.none", "reserved"),
]


CASES = [row + ("none",) for row in ERRORS] + [row + ("cpu",) for row in PROFILE_ERRORS]


@pytest.mark.parametrize(
    "old, new, line, path, fragment, profile", CASES, ids=[f"{c[5]}-{c[3]}:{c[4][:20]}" for c in CASES]
)
def test_error_file_line_path(fake_registries, tmp_path, old, new, line, path, fragment, profile):
    assert old in BASE
    text = BASE.replace(old, new, 1)
    file = write(tmp_path, text)
    msg = load_error(file, profile=profile)
    assert msg.startswith(f"{file}:{line}: {path}: "), msg
    assert fragment in msg, msg
    assert ";" in msg or "(got" in msg or "did you mean" in msg  # says how to fix


def test_error_in_unselected_profile_is_still_reported(fake_registries, tmp_path):
    text = BASE + "  big:\n    sweep: {kernel: [flex]}\n"
    file = write(tmp_path, text)
    msg = load_error(file, profile="none")
    assert msg.startswith(f"{file}:27: profiles.big.sweep.kernel: unknown key 'kernel'; did you mean 'kernels'?")


def test_earliest_problem_is_reported(fake_registries, tmp_path):
    text = BASE.replace("heads_q: 4", "heads_q: 0").replace("seqlens: [64, 1K]", "seqlens: [64, 0]")
    file = write(tmp_path, text)
    assert load_error(file, profile="none").startswith(f"{file}:5: defaults.heads_q")


def test_malformed_yaml(tmp_path):
    file = write(tmp_path, BASE.replace("seqlens: [64, 1K]", "seqlens: [64, 1K"))
    msg = load_error(file)
    assert re.match(rf"{re.escape(str(file))}:(17|18): invalid YAML: ", msg), msg
    file = write(tmp_path, "name: t\ndefaults:\n  heads_q: 4\n   bad: indent\n")
    msg = load_error(file)
    assert re.match(rf"{re.escape(str(file))}:4: invalid YAML: ", msg), msg
    file = write(tmp_path, "name: t\n---\nname: u\n")
    assert load_error(file).startswith(f"{file}:")


def test_duplicate_keys(tmp_path):
    file = write(tmp_path, BASE.replace("  heads_kv: 2\n", "  heads_kv: 2\n  heads_q: 8\n"))
    msg = load_error(file)
    assert msg.startswith(f"{file}:7: defaults.heads_q: duplicate key 'heads_q' (first written on line 5)"), msg
    file = write(tmp_path, BASE + "name: u\n")
    assert load_error(file).startswith(f"{file}:26: name: duplicate key 'name'")


@pytest.mark.parametrize(
    "text, line",
    [
        ("!!python/object/apply:os.system ['touch {marker}']\n", 1),
        ("name: !!python/object/apply:os.system ['touch {marker}']\n", 1),
        ("name: t\ndefaults: !!python/object:collections.OrderedDict {{}}\n", 2),
        ("name: t\ndescription: !!python/name:os.system\n", 2),
        ("name: t\nx: !!python/tuple [1, 2]\n", 2),
        ("name: t\nx: !!set {{a}}\n", 2),
        ("name: t\nx: !!binary aGVsbG8=\n", 2),
        ("name: t\nx: !custom 3\n", 2),
    ],
)
def test_unsafe_tags_refused(tmp_path, text, line):
    marker = tmp_path / "executed"
    file = write(tmp_path, text.format(marker=marker))
    msg = load_error(file)
    assert msg.startswith(f"{file}:{line}: unsupported YAML tag"), msg
    assert not marker.exists()


def test_file_level_errors(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert load_error(missing) == f"{missing}: no such suite file; check the path (the shipped suites are in suites/)"
    assert load_error(tmp_path).startswith(f"{tmp_path}: is a directory")
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"name: t\n\xff\xfe\n")
    assert load_error(bad).startswith(f"{bad}:2: not UTF-8 text")
    assert load_error(write(tmp_path, "")).startswith(f"{tmp_path / 's.yaml'}:1: the suite is empty")
    assert "must be a YAML mapping" in load_error(write(tmp_path, "- a\n- b\n"))
    assert "must be a YAML mapping" in load_error(write(tmp_path, "just text\n"))
    msg = load_error(write(tmp_path, "a: &x [*x]\n"))
    assert "recursive alias" in msg


def test_yaml_source_lines_and_aliases():
    data, lines = parse_yaml("a: 1\nb:\n  - x\n  -\n    name: y\n    w: 3\nc: &base {p: 1, q: 2}\nd: {<<: *base, q: 5}\n")
    assert data == {"a": 1, "b": ["x", {"name": "y", "w": 3}], "c": {"p": 1, "q": 2}, "d": {"p": 1, "q": 5}}
    assert lines.line(("b", 0)) == 3 and lines.line(("b", 1)) == 5  # where the item's content starts
    assert lines.line(("b", 1, "w")) == 6 and lines.line(("b", 1, "w", "deeper")) == 6
    assert lines.line(("d", "q")) == 8
    assert lines.line(("nowhere",)) == 1


# -- junk never escapes as anything but UserError ---------------------------------------------
KEYS = [
    "name", "description", "defaults", "sweep", "profiles", "cpu", "batch", "heads_q", "heads_kv", "head_dim",
    "dtype", "passes", "seed", "device", "check_accuracy", "budget", "warmup_seconds", "measure_seconds",
    "min_repeats", "max_repeats", "case_seconds", "kernels", "masks", "seqlens", "dtypes", "head_dims",
    "window", "prefix", "distribution",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["1K", "bf16", "fwd", "causal", "sdpa", "auto", "cpu", "sliding_window", "0", "-1", "48K"]),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8), st.integers(-3, 3), st.booleans())
junk = st.recursive(
    scalars, lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5), max_leaves=25
)
VALID = yaml.safe_load(BASE)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


VALID_PATHS = [p for p in _paths(VALID) if p]


def _replace(doc, path, value):
    doc = json.loads(json.dumps(doc))
    cur = doc
    for part in path[:-1]:
        cur = cur[part]
    cur[path[-1]] = value
    return doc


def _check_only_user_error(tmp_path, text: str, profile=None) -> None:
    file = tmp_path / "junk.yaml"
    file.write_bytes(text.encode("utf-8", errors="replace"))
    try:
        load_suite(file, profile, cuda_available=False)
    except UserError as exc:
        assert "\n" not in str(exc)
        assert str(exc).startswith(str(file))


JUNK_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@JUNK_SETTINGS
@given(doc=junk)
def test_junk_documents_raise_only_user_error(fake_registries, tmp_path, doc):
    _check_only_user_error(tmp_path, yaml.safe_dump(doc, allow_unicode=True))


@JUNK_SETTINGS
@given(text=st.text(alphabet=st.sampled_from(list(string.printable) + ["-", ":", "[", "{", "&", "*", "!", "é"]), max_size=120))
def test_junk_text_raises_only_user_error(fake_registries, tmp_path, text):
    _check_only_user_error(tmp_path, text)


@JUNK_SETTINGS
@given(
    path=st.sampled_from(VALID_PATHS),
    value=junk,
    profile=st.sampled_from([None, "none", "cpu", "nope"]),
)
def test_mutated_suites_raise_only_user_error(tmp_path, path, value, profile):
    """One value of a valid suite replaced by junk, against the real kernels and masks."""
    doc = _replace(VALID, path, value)
    _check_only_user_error(tmp_path, yaml.safe_dump(doc, allow_unicode=True), profile)
