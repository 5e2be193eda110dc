"""``python -m bench perf``: how fast the harness is on this machine (README "Performance").

Four measurements, one markdown table each (paste into README):

1. Prior pass throughput, per shipped prior: one *prior pass* is forward + backward of ``log_prob`` w.r.t. x (what
   a solver step costs, README contract 2). Image-steps per second batched (batch 256 and the default grid's largest
   batch of units, :mod:`bench.plan.batches`) against a loop of batch-1 passes over the same images; the ratio is
   the per-image speed-up batching buys (target >= 10× at 16×16). A second table gives each batched pass's FLOP rate
   and its time against its FLOP bound, beside the time it spends inside convolution kernels
   (:func:`bench.perf.flops.conv_kernel_seconds`): the floor the pass would have if everything but its convolutions
   were free.
2. Grid wall time: ``python -m bench run --grid G`` in a child process into a temporary directory (every unit
   computed, nothing reused), smoke and default (targets: 60 s and 12 min on a 2-core CPU machine).
3. Peak memory: the peak RSS of each grid's child process (``os.wait4`` rusage, so each grid is measured on its
   own; target <= 4 GB for the default grid) and of this process after the prior measurements.
4. Where the time goes: each timed grid's FLOP bound (its planned image-passes × FLOPs per image-pass of their
   prior ÷ the whole machine's measured 3×3-convolution rate, every usable core: :func:`machine_conv_rate`) and the
   wall time's ratio to it (target <= 2.5×).

This process and the ones that measure the machine's convolution rate keep freed memory
(:mod:`bench.perf.allocator`), so a rate does not depend on what ran before it; the timed grids run as users run
them. Every timed path reads the clock with :func:`bench.core.device.clock`, which waits for a CUDA device's
queued kernels first (CUDA calls return when the kernels are queued: unsynchronised timing measures launches, not
work).
"""
from __future__ import annotations

import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.core import numerics
from bench.core.device import clock
from bench.core.errors import UserError
from bench.core.schema import Status
from bench.perf.allocator import retain_freed_memory
from bench.perf.flops import (_prior_pass, _rate, conv_kernel_seconds, flops_per_image, grid_flops,
                              machine_conv_rate, reference_rates)

TARGET_RATIO = 10.0
TARGET_WALL_S = {"smoke": 60.0, "default": 12 * 60.0}
TARGET_BOUND_RATIO = 2.5
TARGET_RSS_MB = 4096.0
BATCH_BIG = 256


# ------------------------------------------------------------------------------------------- measurements
def prior_pass_rates(model, batches, device, min_time: float = 1.0, loop_images: int = 32) -> dict:
    """{"batch <B>": image-steps/s for each B in ``batches``, "loop": image-steps/s of batch-1 passes}."""
    gen = torch.Generator().manual_seed(0)
    shape = tuple(model.image_shape)
    out = {}

    for b in batches:
        x = torch.rand((b, *shape), generator=gen).clamp(0.02, 0.98).to(device)
        out[f"batch {b}"] = _rate(lambda: _prior_pass(model, x), b, min_time, device=device)
    xs = torch.rand((loop_images, *shape), generator=gen).clamp(0.02, 0.98).to(device)

    def loop():
        for i in range(loop_images):
            _prior_pass(model, xs[i:i + 1])

    out["loop"] = _rate(loop, loop_images, min_time, min_reps=1, device=device)
    return out


def compile_rates(model, batch: int, device, min_time: float = 1.0) -> dict:
    """torch.compile (inductor) against eager for one prior pass at ``batch``: seconds to the first compiled pass
    (compilation, or loading inductor's on-disk cache), image-steps/s of both (eager timed before and after the
    compiled run, averaged, to even out drift on a shared machine) and the largest relative differences of log p
    and of its gradient."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((batch, *model.image_shape), generator=gen).clamp(0.02, 0.98).to(device)

    def run(f):
        xr = x.detach().requires_grad_(True)
        lp = f(xr)
        (g,) = torch.autograd.grad(lp.sum(), xr)
        return lp.detach(), g

    lp_e, g_e = run(model.log_prob)
    eager = _rate(lambda: run(model.log_prob), batch, min_time, device=device)
    t0 = clock(device)
    compiled = torch.compile(model.log_prob)
    lp_c, g_c = run(compiled)
    first = clock(device) - t0
    fast = _rate(lambda: run(compiled), batch, min_time, device=device)
    eager = (eager + _rate(lambda: run(model.log_prob), batch, min_time, device=device)) / 2
    return {"first_pass_s": first, "eager": eager, "compiled": fast,
            "logp_rel_diff": float((lp_c - lp_e).abs().max() / lp_e.abs().max()),
            "grad_rel_diff": float((g_c - g_e).abs().max() / g_e.abs().max())}


@dataclass
class GridTiming:
    grid: str
    wall_s: float
    peak_rss_mb: float
    exit_code: int
    summary: str = ""
    extra: dict = field(default_factory=dict)


def _maxrss_mb(ru_maxrss: int) -> float:
    # Linux reports kilobytes, macOS bytes
    return ru_maxrss / (1024.0 * 1024.0) if sys.platform == "darwin" else ru_maxrss / 1024.0


def time_grid(grid: str, device: str = "auto", keep=None, extra_args=()) -> GridTiming:
    """Run ``python -m bench run --grid <grid>`` in a child process into a fresh directory (a temporary one, or
    ``keep``, which must not exist yet, kept afterwards); wall time and that child's own peak RSS (``os.wait4``)."""
    with tempfile.TemporaryDirectory(prefix=f"bench-perf-{Path(grid).stem}-") as tmp:
        out = Path(keep) if keep else Path(tmp) / "out"
        cmd = [sys.executable, "-m", "bench", "run", "--grid", grid, "--out", str(out),
               "--device", device, "-q", "--no-report", *extra_args]
        t0 = time.perf_counter()
        proc = subprocess_popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            stdout, stderr = proc.communicate()
        except BaseException:
            proc.kill()
            raise
        wall = time.perf_counter() - t0
        rss = getattr(proc, "_bench_maxrss_mb", float("nan"))
    lines = [ln for ln in (stdout or "").splitlines() if ln.strip()]
    if proc.returncode not in (0, 1):
        err = [ln for ln in (stderr or "").splitlines() if ln.strip()]
        raise UserError(f"grid {grid!r} did not run (exit {proc.returncode}): {err[-1] if err else 'no message'}")
    return GridTiming(grid=grid, wall_s=wall, peak_rss_mb=rss, exit_code=proc.returncode,
                      summary=lines[-1] if lines else "")


class _Popen(subprocess.Popen):
    """Popen that reaps its child with ``os.wait4`` and keeps that child's own peak RSS."""

    def _try_wait(self, wait_flags):
        try:
            pid, sts, ru = os.wait4(self.pid, wait_flags)
        except ChildProcessError:
            pid, sts = self.pid, 0
        else:
            if pid == self.pid:
                self._bench_maxrss_mb = _maxrss_mb(ru.ru_maxrss)
        return pid, sts


if hasattr(os, "wait4"):
    subprocess_popen = _Popen
else:  # pragma: no cover -- Windows
    subprocess_popen = subprocess.Popen


def _cpu_model() -> str:
    """'model name' from /proc/cpuinfo plus the widest AVX (kernels and so float results differ between them)."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read().split("\n\n")[0]
    except OSError:
        return ""
    fields = {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in info.splitlines() if ":" in ln)}
    flags = fields.get("flags", "").split()
    avx = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else ""
    return ", ".join(v for v in (fields.get("model name", ""), avx) if v)


def machine_facts(device: torch.device) -> dict:
    from bench.run.executors import usable_cpus

    facts = {
        "cpu": _cpu_model() or platform.processor() or platform.machine(),
        "cpu count": os.cpu_count(),
        "cpu code path (bench/core/numerics.py)": numerics.describe(),
        "torch threads (passes, per unit)": torch.get_num_threads(),
        "grid workers (--workers auto)": 1 if device.type == "cuda" else max(1, usable_cpus() // torch.get_num_threads()),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        facts["memory"] = f"{kb / 1024 / 1024:.0f} GB"
    except (OSError, ValueError, IndexError):
        pass
    return facts


# ----------------------------------------------------------------------------------------------- the command
def unit_batch(grid_name: str = "default", device: str = "cpu") -> int:
    """Rows of the largest batch of units of a grid (:func:`bench.plan.batches.group_units`): the batch its prior
    passes run at."""
    from bench.plan.batches import default_max_rows, group_units, solve_rows
    from bench.plan.grid import load_grid
    from bench.plan.units import plan_units

    groups = group_units(plan_units(load_grid(grid_name)), default_max_rows(device))
    return max(sum(solve_rows(u) for u in g) for g in groups)


def available_priors(names) -> list[str]:
    from bench.priors.catalog import CHECKPOINT_DIR

    return [n for n in names if (CHECKPOINT_DIR / f"{n}.pt").is_file() or Path(n).is_file()]


def run_perf(grids, priors, device_name: str = "auto", min_time: float = 1.0, out=print, threads: int = 1,
             with_compile: bool = False, keep=None) -> dict:
    """Measure and print the tables; returns the numbers (for tests and --json). Prior passes are measured as
    units compute (:func:`bench.core.device.numerics_mode`: TF32 off on CUDA)."""
    from bench.core.device import numerics_mode, resolve_device

    device = resolve_device(device_name)
    with numerics_mode(device):
        return _run_perf(grids, priors, device, device_name, min_time, out, threads, with_compile, keep)


def _run_perf(grids, priors, device, device_name, min_time, out, threads, with_compile, keep) -> dict:
    from tabulate import tabulate

    from bench.plan.grid import grid_path
    from bench.priors.catalog import load_prior

    retain_freed_memory()  # time kernels, not glibc handing freed buffers back to the kernel (bench/perf/allocator.py)
    torch.set_num_threads(threads)
    for g in grids:
        grid_path(g)  # UserError for an unknown grid, before any measurement
    ub = unit_batch("default", device.type)
    batches = sorted({BATCH_BIG, ub}, reverse=True)
    facts = machine_facts(device)
    out("### Machine\n")
    out(tabulate([[k, v] for k, v in facts.items()], headers=["", "value"], tablefmt="github"))
    result = {"machine": facts, "priors": {}, "grids": {}}

    if priors:
        ref = reference_rates(device, min_time=min_time)
        result["reference_flops"] = ref
        rows, frows = [], []
        for name in priors:
            lp = load_prior(name, device)
            r = prior_pass_rates(lp.model, batches, device, min_time=min_time)
            r["flops_per_image"] = flops_per_image(lp.model)
            result["priors"][name] = r
            for b in batches:
                achieved = r["flops_per_image"] * r[f"batch {b}"]
                bound_s = r["flops_per_image"] / ref["conv"]  # one image-pass at the reference conv rate
                if device.type == "cpu":
                    r[f"conv kernels s/img {b}"] = conv = conv_kernel_seconds(lp.model, b)
                    conv_ratio = f"{conv / bound_s:.2f}×"
                else:
                    conv_ratio = "-"
                frows.append([name, b, f"{r['flops_per_image'] / 1e6:,.2f}", f"{achieved / 1e9:,.2f}",
                              f"{achieved / ref['matmul']:.1%}", f"{ref['conv'] / achieved:.2f}×", conv_ratio])
            for b in batches:
                ratio = r[f"batch {b}"] / r["loop"]
                shown = math.floor(ratio * 100) / 100  # floored: 9.998 must not print as a met 10.00
                rows.append([name, b, f"{r[f'batch {b}']:,.0f}", f"{r['loop']:,.0f}", f"{shown:.2f}×",
                             "yes" if ratio >= TARGET_RATIO else "NO"])
        out("\n### Prior pass (forward + backward of log_prob w.r.t. x), image-steps per second\n")
        out(tabulate(rows, headers=["prior", "batch", "batched img/s", "batch-1 loop img/s", "speed-up",
                                    f"≥ {TARGET_RATIO:.0f}×"], tablefmt="github", disable_numparse=True))
        out(f"(batch {ub} = the largest batch of units of the default grid: the rows its prior passes run at)")
        out(f"\n### Achieved FLOP rate of a batched prior pass against this machine's measured rates "
            f"(conv 3×3 64→64 @ 32×32, batch 64: {ref['conv'] / 1e9:,.1f} GFLOP/s; matmul 2048²: "
            f"{ref['matmul'] / 1e9:,.1f} GFLOP/s)\n")
        out(tabulate(frows, headers=["prior", "batch", "MFLOP per image-pass", "achieved GFLOP/s", "of matmul rate",
                                     "pass / bound", "conv kernels alone / bound"],
                     tablefmt="github", disable_numparse=True))
        out("(pass / bound: a pass's time over its FLOPs at the conv rate, the reciprocal of the share of that rate it "
            "reaches; conv kernels alone: the time the same pass "
            "spends inside its convolutions (torch.profiler), over the same bound — what remains if everything else "
            "in the pass were free, at oneDNN's speed on these layer shapes)")
        if with_compile:
            crows = []
            for name in priors:
                model = load_prior(name, device).model
                for b in batches:
                    c = compile_rates(model, b, device, min_time=min_time)
                    result["priors"][name][f"compile batch {b}"] = c
                    crows.append([name, b, f"{c['first_pass_s']:.1f}", f"{c['eager']:,.0f}", f"{c['compiled']:,.0f}",
                                  f"{c['compiled'] / c['eager']:.2f}×", f"{c['logp_rel_diff']:.1e}",
                                  f"{c['grad_rel_diff']:.1e}"])
            out("\n### torch.compile (inductor) against eager, one prior pass\n")
            out(tabulate(crows, headers=["prior", "batch", "first pass s", "eager img/s", "compiled img/s",
                                         "speed-up", "max rel. diff log p", "max rel. diff ∇"],
                         tablefmt="github", disable_numparse=True))

    if grids:
        rows, bound_rows, fcache = [], [], {}
        machine_conv = machine_conv_rate(device, min_time=min_time)
        result["machine_conv_flops"] = machine_conv
        for g in grids:
            sys.stderr.write(f"perf: running grid {g!r} ...\n")
            t = time_grid(g, device_name, keep=Path(keep) / Path(g).stem if keep else None,
                          extra_args=("--threads", str(threads)))
            fl = grid_flops(g, device, fcache)
            bound = fl["flops"] / machine_conv
            result["grids"][g] = {"wall_s": t.wall_s, "peak_rss_mb": t.peak_rss_mb, "exit_code": t.exit_code,
                                  "summary": t.summary, **fl, "flop_bound_s": bound,
                                  "bound_ratio": t.wall_s / bound if bound > 0 else float("nan")}
            bound_rows.append([g, f"{fl['image_passes']:,}", f"{fl['flops'] / 1e12:,.2f}", f"{bound:,.1f}",
                               f"{t.wall_s:,.1f}", f"{t.wall_s / bound:.2f}×" if bound > 0 else "-",
                               "yes" if 0 < bound and t.wall_s / bound <= TARGET_BOUND_RATIO else "NO",
                               f"{fl['image_passes'] / t.wall_s:,.0f}"])
            target = TARGET_WALL_S.get(g)
            ok_wall = "" if target is None else ("yes" if t.wall_s <= target else "NO")
            rows.append([g, f"{t.wall_s:,.1f}", f"≤ {target:,.0f} s" if target else "-", ok_wall,
                         f"{t.peak_rss_mb:,.0f}", "yes" if t.peak_rss_mb <= TARGET_RSS_MB else "NO",
                         "rows failed" if " 0 failures" not in t.summary else Status.OK])
        out("\n### Grid runs (`python -m bench run --grid G`, fresh output directory, child process)\n")
        out(tabulate(rows, headers=["grid", "wall s", "target", "met", "peak RSS MB", f"≤ {TARGET_RSS_MB:.0f} MB",
                                    "status"], tablefmt="github", disable_numparse=True))
        out(f"\n### Where the time goes: each grid against its FLOP bound (planned image-passes × conv + matmul FLOPs "
            f"per image-pass ÷ this machine's conv rate, {machine_conv / 1e9:,.1f} GFLOP/s on "
            f"{'the GPU' if device.type == 'cuda' else 'every usable core'})\n")
        out(tabulate(bound_rows, headers=["grid", "image-passes", "TFLOP", "FLOP bound s", "wall s", "wall / bound",
                                          f"≤ {TARGET_BOUND_RATIO}×", "image-passes/s"], tablefmt="github",
                     disable_numparse=True))
    self_rss = _maxrss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    result["self_peak_rss_mb"] = self_rss
    out(f"\npeak RSS of this process (prior measurements): {self_rss:,.0f} MB")
    return result
