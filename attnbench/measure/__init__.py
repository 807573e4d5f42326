"""Measurement: the only place in attnbench that times, measures memory or checks accuracy.

Modules:
    timing       time_fn (zero-arg closure, optional untimed setup), Samples
    memory       measure_peak_memory, rss_bytes, available_memory_bytes
    reference    reference_attention: chunked float64/float32 attention with analytic backward
    accuracy     tensor_error, compare_to_reference
    flops        attention_flops, tflops_per_second (masks.md convention)
    device       calibrate_device (matmul rate, peak TFLOPs/s), device_name
    environment  capture_environment, nvml_snapshot
    predict      predict, skip_reason: a case's time and memory before it runs

Nothing here imports attnbench.kernels, attnbench.runner or attnbench.cli.
"""
