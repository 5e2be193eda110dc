"""The two halves of a grid's FLOP bound (``python -m bench perf``, README "Performance"): FLOPs of one prior pass
and of a whole grid's planned passes, and the rates this machine reaches on the kinds of work a flow does."""
from __future__ import annotations

import torch

from bench.core.device import clock


def _rate(step, n_images: int, min_time: float, min_reps: int = 2, device="cpu") -> float:
    """Image-steps per second of ``step()`` (which processes ``n_images`` images on ``device``): one warm-up call,
    then repeated until ``min_time`` seconds and ``min_reps`` calls have passed (the clock read after the device
    has finished, :func:`bench.core.device.clock`)."""
    step()
    reps, t0 = 0, clock(device)
    while True:
        step()
        reps += 1
        dt = clock(device) - t0
        if reps >= min_reps and dt >= min_time:
            return n_images * reps / dt


def _pass_input(model, batch: int) -> torch.Tensor:
    """``batch`` fixed images in (0, 1) on the model's device, to count or profile one prior pass on."""
    x = torch.rand((batch, *model.image_shape), generator=torch.Generator().manual_seed(0)).clamp(0.02, 0.98)
    return x.to(next(model.parameters()).device)


def _prior_pass(model, x) -> torch.Tensor:
    """One prior pass: log_prob at ``x`` and its gradient w.r.t. ``x`` (returned)."""
    xr = x.detach().requires_grad_(True)
    return torch.autograd.grad(model.log_prob(xr).sum(), xr)[0]


def flops_per_image(model, batch: int = 64) -> float:
    """FLOPs of one prior pass (forward + backward of log_prob w.r.t. x) per image, as
    ``torch.utils.flop_counter.FlopCounterMode`` counts them (matmuls and convolutions; elementwise ops are free)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = _pass_input(model, batch)
    with FlopCounterMode(display=False) as fc:
        _prior_pass(model, x)
    return fc.get_total_flops() / batch


# CPU convolution kernels: oneDNN's forward and (every) backward, and ATen's fallback for shapes oneDNN does not take
CONV_KERNELS = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_slow_conv2d_forward",
                "aten::_slow_conv2d_backward")


def conv_kernel_seconds(model, batch: int, reps: int = 3) -> float:
    """CPU seconds per image that one prior pass (as :func:`flops_per_image` counts it) spends inside convolution
    kernels, from ``torch.profiler``'s self times of :data:`CONV_KERNELS` at ``batch`` rows: what the pass would
    cost if everything but its convolutions were free, at the speed oneDNN reaches on *these* shapes."""
    from torch.profiler import ProfilerActivity, profile

    x = _pass_input(model, batch)
    _prior_pass(model, x)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(reps):
            _prior_pass(model, x)
    us = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in CONV_KERNELS)
    return us / 1e6 / reps / batch


def reference_rates(device, min_time: float = 1.0) -> dict:
    """FLOP/s of a large float32 matmul (2048²) and of a 3×3 convolution (batch 64, 64 → 64 channels, 32×32) on
    ``device`` with the current thread count: the machine's practical peak for the two kinds of work a flow does."""
    g = torch.Generator().manual_seed(0)
    n = 2048
    a, b = torch.randn(n, n, generator=g).to(device), torch.randn(n, n, generator=g).to(device)
    mm = _rate(lambda: torch.mm(a, b), 1, min_time, device=device) * 2 * n ** 3
    x = torch.randn(64, 64, 32, 32, generator=g).to(device)
    w = torch.randn(64, 64, 3, 3, generator=g).to(device)
    conv = (_rate(lambda: torch.nn.functional.conv2d(x, w, padding=1), 1, min_time, device=device)
            * 2 * 64 * 64 * 32 * 32 * 64 * 9)
    return {"matmul": mm, "conv": conv}


def _conv_rate_one_thread(min_time: float) -> float:
    """:func:`reference_rates`' convolution rate with one torch thread (run in a worker process)."""
    from bench.perf.allocator import retain_freed_memory

    retain_freed_memory()
    torch.set_num_threads(1)
    return reference_rates(torch.device("cpu"), min_time=min_time)["conv"]


def machine_conv_rate(device, min_time: float = 1.0) -> float:
    """FLOP/s of :func:`reference_rates`' convolution on the whole machine, what a grid's FLOP bound divides by: on
    CUDA the GPU's; on CPU the larger of every usable core as torch threads of one process and one single-thread
    process per core, all at once (how ``run --workers auto`` computes; taking the larger keeps the bound a lower
    bound). On a 2-core AMD EPYC, two processes: 205 GFLOP/s; two threads: 187–198 with freed memory kept
    (:mod:`bench.perf.allocator`), 121–188 without, depending on what the process ran before."""
    from concurrent.futures import ProcessPoolExecutor

    from bench.run.executors import usable_cpus

    if device.type == "cuda":
        return reference_rates(device, min_time=min_time)["conv"]
    cores = usable_cpus()
    before = torch.get_num_threads()
    torch.set_num_threads(cores)
    try:
        threads = reference_rates(device, min_time=min_time)["conv"]
    finally:
        torch.set_num_threads(before)
    if cores == 1:
        return threads
    import multiprocessing

    with ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("spawn")) as pool:
        processes = sum(pool.map(_conv_rate_one_thread, [min_time] * cores))
    return max(threads, processes)


def grid_flops(grid_name: str, device, flops_cache: dict | None = None) -> dict:
    """{"image_passes": planned image-passes of the prior (as ``run --dry-run`` counts them), "flops": their conv +
    matmul FLOPs (:func:`flops_per_image` of each unit's prior)} of a whole grid, every unit computed."""
    from bench.plan.estimate import planned_passes
    from bench.plan.grid import load_grid
    from bench.plan.loading import fresh_model
    from bench.plan.units import RunContext, plan_units

    cache = {} if flops_cache is None else flops_cache
    passes = flops = 0
    for u in plan_units(load_grid(grid_name), RunContext(device=str(device))):
        n = planned_passes([u])
        if not n:
            continue
        key = (u.prior, u.prior_sha256)
        if key not in cache:
            cache[key] = flops_per_image(fresh_model(u.prior, device, u.prior_sha256))
        passes, flops = passes + n, flops + n * cache[key]
    return {"image_passes": passes, "flops": flops}


