"""Tests of attnbench.measure: timing, memory, reference, accuracy, flops, device, environment."""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from attnbench.cases import Budget, Pass
from attnbench.measure import timing
from attnbench.measure.accuracy import TensorError, compare_to_reference, tensor_error
from attnbench.measure.device import calibrate_device, device_name, spec_peak
from attnbench.measure.environment import capture_environment, decode_throttle_reasons, nvml_snapshot
from attnbench.measure.flops import attention_flops, tflops_per_second
from attnbench.measure.memory import (
    MemoryResult,
    available_memory_bytes,
    local_watch,
    measure_peak_memory,
    prepare_watched,
    rss_bytes,
)
from attnbench.measure.reference import Reference, default_chunk, reference_attention
from attnbench.measure.timing import Samples, plan_iterations, time_fn

REPO = Path(__file__).resolve().parent.parent
CUDA = torch.cuda.is_available()


# --- timing ---------------------------------------------------------------------------


def test_plan_iterations_from_budget():
    b = Budget(warmup_seconds=0.05, measure_seconds=0.2, min_repeats=3, max_repeats=100)
    assert plan_iterations(0.01, b) == (5, 20)
    assert plan_iterations(1.0, b) == (1, 3)  # repeats clamped up to min_repeats
    assert plan_iterations(1e-5, b)[1] == 100  # clamped down to max_repeats
    assert plan_iterations(0.01, Budget(warmup_seconds=0, measure_seconds=0.2))[0] == 0


def test_time_fn_counts_follow_budget(monkeypatch):
    # Pin the estimate so that warm-up and repeat counts are exactly predictable.
    monkeypatch.setattr(timing, "estimate_iteration_seconds", lambda *a, **k: 0.01)
    calls = []
    budget = Budget(warmup_seconds=0.04, measure_seconds=0.07, min_repeats=3, max_repeats=50)
    s = time_fn(lambda: calls.append(1), device="cpu", budget=budget)
    assert s.method == "perf_counter"
    assert s.warmup == 4
    assert len(s.times_s) == 7  # every timed sample kept
    assert len(calls) == 1 + 4 + 7  # first call + warm-up + timed
    assert all(t >= 0 for t in s.times_s)

    calls.clear()
    s = time_fn(lambda: calls.append(1), device="cpu", budget=budget.model_copy(update={"max_repeats": 5}))
    assert len(s.times_s) == 5 and len(calls) == 1 + 4 + 5


def test_time_fn_real_estimate_within_bounds():
    budget = Budget(warmup_seconds=0.01, measure_seconds=0.03, min_repeats=3, max_repeats=6)
    s = time_fn(lambda: time.sleep(0.002), device="cpu", budget=budget)
    assert 3 <= len(s.times_s) <= 6
    assert s.warmup >= 1
    assert s.median_s >= 0.0015


def test_time_fn_setup_is_untimed_and_runs_before_every_iteration():
    events = []
    counter = iter(range(10_000))

    def setup():
        time.sleep(0.02)
        token = next(counter)
        events.append(("setup", token))
        return token

    def fn(token):
        events.append(("fn", token))
        time.sleep(0.001)

    budget = Budget(warmup_seconds=0.0, measure_seconds=0.05, min_repeats=3, max_repeats=4)
    s = time_fn(fn, device="cpu", budget=budget, setup=setup)
    assert 3 <= len(s.times_s) <= 4
    assert s.median_s < 0.010  # the 20 ms setup is outside the timed region
    assert s.median_s >= 0.0009
    # strictly alternating: every fn call got the value of the setup call right before it
    assert len(events) % 2 == 0
    for (k1, t1), (k2, t2) in zip(events[0::2], events[1::2]):
        assert (k1, k2) == ("setup", "fn") and t1 == t2


def test_samples_percentiles_and_dict():
    times = [0.005, 0.001, 0.009, 0.003, 0.007, 0.002, 0.010, 0.004, 0.006, 0.008]
    s = Samples(times_s=times, warmup=2, method="perf_counter")
    assert s.median_s == pytest.approx(0.0055)
    assert s.p20_s == pytest.approx(0.0028)
    assert s.p80_s == pytest.approx(0.0082)
    assert s.p20_s == pytest.approx(float(np.percentile(times, 20)))
    d = s.to_dict()
    json.dumps(d)
    assert d["times_s"] == times and d["warmup"] == 2 and d["method"] == "perf_counter"
    assert math.isnan(Samples(times_s=[], warmup=0, method="perf_counter").median_s)


def test_time_fn_cuda_unavailable_raises():
    if CUDA:
        pytest.skip("CUDA present")
    with pytest.raises(RuntimeError):
        time_fn(lambda: None, device="cuda", budget=Budget())


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_time_fn_cuda_events():
    a = torch.randn(1024, 1024, device="cuda")
    budget = Budget(warmup_seconds=0.01, measure_seconds=0.02, min_repeats=3, max_repeats=20)
    s = time_fn(lambda: a @ a, device="cuda", budget=budget)
    assert s.method == "cuda_event" and 3 <= len(s.times_s) <= 20
    assert all(t > 0 for t in s.times_s)

    def setup():
        torch.cuda._sleep(50_000_000)  # long GPU work in setup must not be timed
        return a

    s2 = time_fn(lambda x: x @ x, device="cuda", budget=budget, setup=setup)
    assert s2.median_s < 0.5 * s.median_s + 0.01


# --- memory ---------------------------------------------------------------------------


def test_peak_memory_cpu_sees_allocation():
    big = measure_peak_memory(lambda: torch.ones(50_000_000, dtype=torch.float32), device="cpu")  # 200 MB
    if big.method == "unavailable":
        pytest.skip("cannot read /proc/self/status here")
    assert big.method == "linux_vmhwm_rss_sampled"
    assert big.peak_bytes >= 150e6
    assert big.baseline_bytes > 0 and not big.hwm_reset
    noop = measure_peak_memory(lambda: None, device="cpu")
    assert noop.peak_bytes < 20e6
    assert isinstance(noop, MemoryResult)


def _fill_then_reset_hwm():
    buffer = torch.ones(64_000_000, dtype=torch.float32)  # 256 MB, touched
    time.sleep(0.05)  # held for a while, as by a kernel doing work with it
    del buffer
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def test_peak_memory_reset_of_the_high_water_mark_is_seen():
    """A call that resets VmHWM after filling 256 MB: the samples still saw it, and the reset is flagged."""
    r = measure_peak_memory(_fill_then_reset_hwm, device="cpu")
    assert r.hwm_reset
    assert r.peak_bytes >= 200e6


def test_memory_kept_from_prepare_counts_in_the_peak():
    watch = local_watch("cpu")
    held, mark = prepare_watched(lambda: torch.ones(50_000_000, dtype=torch.float32), watch=watch, device="cpu")
    r = measure_peak_memory(lambda: held[0].item(), device="cpu", watch=watch, mark=mark)
    assert r.peak_bytes >= 150e6 and r.held_bytes >= 150e6
    unprepared = measure_peak_memory(lambda: held[0].item(), device="cpu")
    assert unprepared.peak_bytes < 20e6 and unprepared.held_bytes == 0
    del held


def test_memory_helpers():
    assert rss_bytes() > 0
    assert available_memory_bytes("cpu") > 0


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_peak_memory_cuda():
    r = measure_peak_memory(lambda: torch.ones(50_000_000, device="cuda"), device="cuda")
    assert r.method.startswith("cuda_max_memory_allocated") and r.peak_bytes >= 200e6


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_peak_memory_cuda_survives_a_reset_of_the_allocator_peak():
    def fill_then_reset():
        x = torch.ones(64_000_000, device="cuda")
        torch.cuda.synchronize()
        time.sleep(0.05)
        del x
        torch.cuda.reset_peak_memory_stats()

    r = measure_peak_memory(fill_then_reset, device="cuda")
    assert r.method == "cuda_max_memory_allocated+nvml_used_sampled" and r.peak_bytes >= 200e6


# --- reference ------------------------------------------------------------------------

B, HQ, HKV, S, D = 2, 4, 2, 19, 8


def _dense_mask(kind: str, s: int = S, heads: int = HQ) -> torch.Tensor:
    gen = torch.Generator().manual_seed(7)
    idx = torch.arange(s)
    if kind == "causal":
        return (idx[None, :] <= idx[:, None]).unsqueeze(0)
    if kind == "random":
        m = torch.rand(1, s, s, generator=gen) < 0.4
    elif kind == "random_per_head":
        m = torch.rand(heads, s, s, generator=gen) < 0.4
    else:
        raise ValueError(kind)
    m[:, idx, torch.randint(0, s, (s,), generator=gen)] = True  # >= 1 key per row
    return m


def _rows_fn(dense: torch.Tensor):
    calls = []

    def rows(mask, a, b, *, device="cpu"):
        assert mask.heads == dense.shape[0] and mask.seqlen == dense.shape[-1]
        calls.append((a, b))
        return dense[:, a:b, :].to(device)

    rows.calls = calls
    return rows


def _dense_attention(q, k, v, allowed, scale):
    g = q.shape[1] // k.shape[1]
    kk = k.repeat_interleave(g, dim=1)
    vv = v.repeat_interleave(g, dim=1)
    scores = (q @ kk.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~allowed.unsqueeze(0), float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    out = torch.softmax(scores, dim=-1) @ vv
    return out, lse


def _inputs(seed=0, s=S):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, HQ, s, D, generator=gen)
    k = torch.randn(B, HKV, s, D, generator=gen)
    v = torch.randn(B, HKV, s, D, generator=gen)
    do = torch.randn(B, HQ, s, D, generator=gen)
    return q, k, v, do


def _check_against_dense(q, k, v, do, dense, ref: Reference, scale):
    qd, kd, vd = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    out, lse = _dense_attention(qd, kd, vd, dense, scale)
    dq, dk, dv = torch.autograd.grad(out, (qd, kd, vd), grad_outputs=do.double())
    tol = dict(rtol=1e-10, atol=1e-10)
    assert ref.out.dtype == torch.float64 and ref.out.shape == (B, HQ, q.shape[2], D)
    torch.testing.assert_close(ref.out, out.detach(), **tol)
    torch.testing.assert_close(ref.lse, lse.detach(), **tol)
    assert ref.dk.shape == (B, HKV, q.shape[2], D) and ref.dv.shape == ref.dk.shape
    torch.testing.assert_close(ref.dq, dq, **tol)
    torch.testing.assert_close(ref.dk, dk, **tol)
    torch.testing.assert_close(ref.dv, dv, **tol)


@pytest.mark.parametrize("chunk", [1, 7, S, None])
@pytest.mark.parametrize("kind", ["causal", "random", "random_per_head"])
def test_reference_matches_dense_and_autograd(kind, chunk):
    q, k, v, do = _inputs()
    dense = _dense_mask(kind)
    rows = _rows_fn(dense)
    mask = SimpleNamespace(heads=dense.shape[0], seqlen=S)
    ref = reference_attention(q, k, v, mask, grad_out=do, chunk=chunk, rows_fn=rows)
    _check_against_dense(q, k, v, do, dense, ref, 1.0 / math.sqrt(D))
    expected_chunk = chunk or S
    assert rows.calls[0] == (0, min(S, expected_chunk))
    assert len(rows.calls) == math.ceil(S / expected_chunk)


def test_reference_scale_and_forward_only():
    q, k, v, do = _inputs(seed=3)
    dense = _dense_mask("random")
    mask = SimpleNamespace(heads=1, seqlen=S)
    ref = reference_attention(q, k, v, mask, grad_out=do, scale=0.3, chunk=5, rows_fn=_rows_fn(dense))
    _check_against_dense(q, k, v, do, dense, ref, 0.3)
    fwd = reference_attention(q, k, v, mask, scale=0.3, chunk=4, rows_fn=_rows_fn(dense))
    assert fwd.dq is None and fwd.dk is None and fwd.dv is None
    torch.testing.assert_close(fwd.out, ref.out, rtol=0, atol=1e-12)


def test_reference_empty_row_has_no_nan():
    q, k, v, do = _inputs(seed=1)
    dense = _dense_mask("causal").clone()
    dense[:, 5, :] = False
    ref = reference_attention(q, k, v, SimpleNamespace(heads=1, seqlen=S), grad_out=do, chunk=4, rows_fn=_rows_fn(dense))
    for t in (ref.out, ref.dq, ref.dk, ref.dv):
        assert torch.isfinite(t).all()
    assert torch.isneginf(ref.lse[:, :, 5]).all()
    assert (ref.out[:, :, 5] == 0).all() and (ref.dq[:, :, 5] == 0).all()
    assert torch.isfinite(ref.lse[:, :, :5]).all()


def test_reference_rejects_bad_inputs():
    q, k, v, _ = _inputs()
    dense = _dense_mask("causal")
    with pytest.raises(ValueError):
        reference_attention(q, k, v, SimpleNamespace(heads=3, seqlen=S), rows_fn=_rows_fn(dense))
    with pytest.raises(ValueError):
        reference_attention(q, k, v, SimpleNamespace(heads=1, seqlen=S + 1), rows_fn=_rows_fn(dense))
    with pytest.raises(ValueError):
        reference_attention(q, k[:, :, :-1], v[:, :, :-1], SimpleNamespace(heads=1, seqlen=S), rows_fn=_rows_fn(dense))


def test_default_chunk_bounds_score_memory():
    c = default_chunk(1, 32, 1 << 20, 8)  # 1M tokens, 32 heads, float64
    assert c == 1  # a single row already exceeds the budget: still at least one row
    c = default_chunk(2, 8, 4096, 8)
    assert 2 * 8 * c * 4096 * 8 <= 128 * 1024 * 1024 and c >= 1
    assert default_chunk(1, 1, 16, 8) == 16


def test_reference_with_real_masks_package():
    try:
        from attnbench.masks import build_mask
        from attnbench.masks.convert import dense_rows
    except ImportError as exc:
        pytest.skip(f"attnbench.masks.convert not available yet: {exc}")
    s = 24
    q, k, v, do = _inputs(seed=5, s=s)
    idx = torch.arange(s)
    for name, params, allowed in [
        ("causal", None, idx[None, :] <= idx[:, None]),
        ("sliding_window", {"window": 3}, (idx[None, :] - idx[:, None]).abs() <= 3),
    ]:
        mask = build_mask(name, s, params)
        ref = reference_attention(q, k, v, mask, grad_out=do, chunk=5)  # default rows_fn = dense_rows
        qd, kd, vd = (t.double().requires_grad_(True) for t in (q, k, v))
        out, lse = _dense_attention(qd, kd, vd, allowed.unsqueeze(0), 1.0 / math.sqrt(D))
        dq, dk, dv = torch.autograd.grad(out, (qd, kd, vd), grad_outputs=do.double())
        torch.testing.assert_close(ref.out, out.detach(), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(ref.lse, lse.detach(), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(ref.dk, dk, rtol=1e-10, atol=1e-10)

    # per-head dynamic mask: heads of the rendering line up with the query heads
    s = 128
    q, k, v, do = _inputs(seed=6, s=s)
    mask = build_mask("block_sparse", s, {"block": 64, "density": 0.5}, heads=HQ)
    assert mask.heads == HQ
    allowed = dense_rows(mask, 0, s)
    ref = reference_attention(q, k, v, mask, grad_out=do, chunk=48)
    qd, kd, vd = (t.double().requires_grad_(True) for t in (q, k, v))
    out, lse = _dense_attention(qd, kd, vd, allowed, 1.0 / math.sqrt(D))
    dq, dk, dv = torch.autograd.grad(out, (qd, kd, vd), grad_outputs=do.double())
    torch.testing.assert_close(ref.out, out.detach(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ref.dq, dq, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ref.dv, dv, rtol=1e-10, atol=1e-10)


# --- accuracy -------------------------------------------------------------------------


def test_tensor_error_values():
    e = torch.zeros(4, 5, dtype=torch.float64)
    e[0, 0] = 3.0
    e[1, 1] = 4.0  # ||e|| = 5
    a = e.clone()
    a[2, 2] = 0.5
    err = tensor_error(a.float(), e)
    assert err == TensorError(max_abs=0.5, rel_l2=pytest.approx(0.1), has_nan=False)
    assert tensor_error(e, e) == TensorError(0.0, 0.0, False)
    # computed in expected's dtype: a float16 actual is compared in float64
    assert tensor_error(e.half(), e).max_abs == 0.0


def test_tensor_error_nan_and_inf():
    e = torch.ones(3, 3, dtype=torch.float64)
    a = e.clone()
    a[1, 1] = float("nan")
    err = tensor_error(a, e)
    assert err.has_nan and math.isnan(err.max_abs) and math.isnan(err.rel_l2)
    d = err.to_dict()
    assert d == {"max_abs": None, "rel_l2": None, "has_nan": True}
    json.dumps(d, allow_nan=False)
    a = e.clone()
    a[0, 0] = float("inf")
    err = tensor_error(a, e)
    assert err.has_nan and math.isinf(err.max_abs)
    # an infinity the reference also has (lse of an empty row) is not an error
    e2 = e.clone()
    e2[0, 0] = float("-inf")
    a2 = e2.clone()
    assert tensor_error(a2, e2) == TensorError(0.0, 0.0, False)
    with pytest.raises(ValueError):
        tensor_error(torch.ones(2), torch.ones(3))


def test_compare_to_reference_skips_missing():
    ref = Reference(out=torch.ones(2, 2, dtype=torch.float64), lse=torch.zeros(2, dtype=torch.float64), dq=None)
    res = compare_to_reference({"out": torch.ones(2, 2), "lse": None, "dq": torch.ones(2, 2)}, ref)
    assert set(res) == {"out"} and res["out"].max_abs == 0.0
    with pytest.raises(ValueError):
        compare_to_reference({"output": torch.ones(2, 2)}, ref)


# --- flops ----------------------------------------------------------------------------


def test_flops_convention():
    s = 1024
    area = s * (s + 1) / 2  # causal
    fwd = attention_flops(batch=2, heads_q=8, head_dim=128, area=area, pass_=Pass.forward)
    assert fwd == 4 * 2 * 8 * 128 * 524800
    assert attention_flops(batch=2, heads_q=8, head_dim=128, area=area, pass_=Pass.backward) == 2.5 * fwd
    assert attention_flops(batch=2, heads_q=8, head_dim=128, area=area, pass_="forward_backward") == 3.5 * fwd
    assert tflops_per_second(2e12, 0.5) == pytest.approx(4.0)
    assert tflops_per_second(1e12, 0.0) is None
    assert tflops_per_second(1e12, float("nan")) is None


# --- device ---------------------------------------------------------------------------


def test_calibrate_cpu_positive_and_cached():
    cal = calibrate_device("cpu", dtypes=("float32", "bfloat16"), seconds_per_dtype=0.05)
    assert cal.matmul_tflops and all(r > 0 for r in cal.matmul_tflops.values())
    assert "float32" in cal.matmul_tflops
    rates = cal.matmul_tflops
    assert cal.peak_source == "2x measured matmul"
    assert set(cal.peak_tflops) == {"float32", "bfloat16"}
    # each dtype against its own rate (bf16 may be upcast to float32, never float32 judged by bf16)
    assert cal.peak_tflops["float32"] == pytest.approx(2 * rates["float32"])
    assert cal.peak_tflops["bfloat16"] == pytest.approx(2 * max(rates.get("bfloat16", 0), rates["float32"]))
    assert cal.name == device_name("cpu") and cal.name
    json.dumps(cal.to_dict())
    assert calibrate_device("cpu", dtypes=("float32", "bfloat16"), seconds_per_dtype=0.05) is cal


def test_measured_peak_is_per_dtype_and_a_half_dtype_may_be_upcast():
    from attnbench.measure.device import measured_peaks

    # a CPU with bf16 matrix units (numbers of the issue): bf16 0.9, fp32 0.077, fp16 0.05 TFLOPs/s
    peaks = measured_peaks({"bfloat16": 0.9, "float32": 0.077, "float16": 0.05}, ("float32", "float16", "bfloat16"))
    assert peaks == {"float32": pytest.approx(0.154), "float16": pytest.approx(0.154), "bfloat16": pytest.approx(1.8)}
    # a dtype whose matmul could not be measured still gets a bound
    assert measured_peaks({"float32": 0.1}, ("bfloat16",)) == {"bfloat16": pytest.approx(0.2)}


def test_a_peak_is_measured_again_only_for_a_rate_above_it(monkeypatch):
    import attnbench.measure.device as device

    fresh = device.remeasured_peak("cpu", "float32", seconds=0.05)
    assert fresh is not None and fresh > 0
    calls = []
    monkeypatch.setattr(device, "remeasured_peak", lambda dev, dtype: calls.append(dtype) or 3.0)
    peaks = {"float32": 1.0}
    assert device.checked_peak(peaks, "cpu", "float32", 0.5) == 1.0 and calls == []  # below: no measurement
    assert device.checked_peak(peaks, "cpu", "float32", 2.0) == 3.0 and peaks == {"float32": 3.0}
    monkeypatch.setattr(device, "remeasured_peak", lambda dev, dtype: 0.1)  # a busier moment never lowers it
    assert device.checked_peak(peaks, "cpu", "float32", 5.0) == 3.0


def test_spec_peak_table():
    assert spec_peak("NVIDIA H100 80GB HBM3")["bfloat16"] == 989.4
    assert spec_peak("NVIDIA H100 80GB HBM3")["float32"] == 494.7
    assert spec_peak("NVIDIA H200")["float16"] == 989.4
    assert spec_peak("NVIDIA H100 PCIe")["bfloat16"] == 756.0
    assert spec_peak("NVIDIA A100-SXM4-80GB")["bfloat16"] == 312.0
    assert spec_peak("NVIDIA L40S")["bfloat16"] == 362.05
    assert spec_peak("NVIDIA L4")["bfloat16"] == 121.0
    assert spec_peak("NVIDIA A10")["bfloat16"] == 125.0
    assert spec_peak("Tesla T4") is None
    assert spec_peak("NVIDIA L40") is None


# --- environment ----------------------------------------------------------------------


def test_capture_environment_cpu(capfd):
    env = capture_environment("cpu")
    text = json.dumps(env)
    assert json.loads(text)["torch"]["version"] == torch.__version__
    for key in ("hostname", "captured_at", "python", "platform", "cpu", "memory_total_bytes", "torch",
                "triton", "numpy", "attnbench", "devices", "device_count", "driver_version", "nvml"):
        assert key in env
    assert env["captured_at"].endswith("+00:00")
    assert env["cpu"]["logical_cpus"] >= 1 and env["memory_total_bytes"] > 0
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert env["attnbench"]["git_commit"] == head.stdout.strip()
        assert re.fullmatch(r"[0-9a-f]{40}", env["attnbench"]["git_commit"])
        assert isinstance(env["attnbench"]["git_dirty"], bool)
    if nvml_snapshot() is None:
        assert env["nvml"]["available"] is False and env["nvml"]["reason"]
        out, err = capfd.readouterr()
        assert "Traceback" not in out + err
    else:
        assert isinstance(env["nvml"], list)
    if not CUDA:
        assert env["devices"] == [] and env["device_count"] == 0


def test_decode_throttle_reasons():
    pynvml = pytest.importorskip("pynvml")
    mask = pynvml.nvmlClocksThrottleReasonGpuIdle | pynvml.nvmlClocksThrottleReasonSwPowerCap
    names = decode_throttle_reasons(mask, pynvml)
    assert names == ["GpuIdle", "SwPowerCap"]
    assert decode_throttle_reasons(0, pynvml) == []
