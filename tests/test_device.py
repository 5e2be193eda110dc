"""GPU-true timing and numerics (bench/core/device.py), exercised on CPU: the tests fake only the device query
(``bench.core.device.is_cuda``) and the CUDA calls it guards, and check that every timed path synchronises, that TF32
and ``--deterministic`` are set and restored, and that rows, run.json and the last line record them."""
from __future__ import annotations

import importlib
import json
import math
import os
import sys
import textwrap

import numpy as np
import pytest
import torch

from bench.core import device as dev
from bench.core import schema
from bench.perf import measure as perf
from kit.runs import make_grid, rows_of, run


@pytest.fixture
def fake_cuda(monkeypatch):
    """Every device counts as CUDA; ``torch.cuda.synchronize`` records its calls instead of needing a GPU."""
    calls = []
    monkeypatch.setattr(dev, "is_cuda", lambda d: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: calls.append(d))
    return calls


# ------------------------------------------------------------------------------------------------- timing
def test_clock_synchronises_only_on_cuda(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: calls.append(d))
    dev.clock("cpu")
    dev.clock(torch.zeros(1))
    assert calls == []
    dev.clock("cuda:0")   # the real device query: a CUDA device synchronises (faked here)
    dev.clock(torch.device("cuda"))
    assert calls == [torch.device("cuda:0"), torch.device("cuda")]


def test_rate_synchronises_before_every_clock_read(fake_cuda):
    steps = []
    rate = perf._rate(lambda: steps.append(len(fake_cuda)), 4, min_time=0.0, min_reps=3, device="cuda")
    assert rate > 0 and len(steps) == 4            # one warm-up + three timed calls
    assert len(fake_cuda) == 4                     # the start and after each timed call
    assert steps[1:] == [1, 2, 3]                  # each timed call ran after a synchronised clock read


def _tiny_prior():
    from bench.priors.gaussian import GaussianLogitPrior

    return GaussianLogitPrior((1, 8, 8))


def test_prior_pass_and_reference_rates_synchronise(fake_cuda):
    model = _tiny_prior()
    r = perf.prior_pass_rates(model, [4], torch.device("cpu"), min_time=0.0, loop_images=2)
    assert set(r) == {"batch 4", "loop"} and len(fake_cuda) >= 4
    n = len(fake_cuda)
    ref = perf.reference_rates(torch.device("cpu"), min_time=0.0)
    assert ref["conv"] > 0 and len(fake_cuda) >= n + 6


def test_compile_rates_synchronise(fake_cuda, monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda f: f)   # no inductor build in a unit test
    c = perf.compile_rates(_tiny_prior(), 4, torch.device("cpu"), min_time=0.0)
    assert c["first_pass_s"] >= 0 and c["logp_rel_diff"] == 0
    assert len(fake_cuda) >= 2 + 3 * 3   # the first compiled pass, and three _rate measurements


def test_estimate_synchronises(fake_cuda, priors, test_solvers):
    from bench.plan.batches import plan_batches
    from bench.plan.estimate import estimate_wall
    from bench.plan.units import plan_units

    units = plan_units(make_grid(priors[:1], tasks=["denoise"], splits=["id"]))
    passes, secs = estimate_wall(plan_batches(units, units, 256), 1)
    assert passes == 2 * 2 * 10 and secs > 0 and len(fake_cuda) == 2


# ----------------------------------------------------------------------------------------------- numerics
def _state():
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.get_float32_matmul_precision(), torch.are_deterministic_algorithms_enabled(),
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
            os.environ.get("CUBLAS_WORKSPACE_CONFIG"))


def test_tf32_pinned_off_on_cuda_by_default_and_restored(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)   # PyTorch's own default for convolutions
    before = _state()
    with dev.numerics_mode("cuda"):
        assert torch.backends.cuda.matmul.allow_tf32 is False and torch.backends.cudnn.allow_tf32 is False
        assert torch.get_float32_matmul_precision() == "highest"
        assert not torch.are_deterministic_algorithms_enabled()
    assert _state() == before
    with dev.numerics_mode("cuda", tf32=True):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert torch.get_float32_matmul_precision() == "high"
    assert _state() == before
    assert dev.tf32_allowed("cuda", True) and not dev.tf32_allowed("cuda", False)


def test_tf32_has_no_effect_on_cpu():
    before = _state()
    with dev.numerics_mode("cpu", tf32=True):
        assert _state() == before
    assert dev.tf32_allowed("cpu", True) is False


def test_deterministic_mode_set_and_restored(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    before = _state()
    with dev.numerics_mode("cpu", deterministic=True):
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert _state() == before
    with pytest.raises(RuntimeError):   # restored after an exception too
        with dev.numerics_mode("cpu", deterministic=True):
            raise RuntimeError("boom")
    assert _state() == before


# -------------------------------------------------------------------------------------------------- facts
def test_device_facts_and_peak_memory(monkeypatch):
    assert dev.device_facts("cpu") == {"gpu_name": "", "gpu_capability": "", "cuda_version": "",
                                       "cudnn_version": ""}
    assert math.isnan(dev.peak_memory_mb("cpu"))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (9, 0))
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.backends.cudnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90100)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d=None: 3 * 2 ** 20)
    resets = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d=None: resets.append(d))
    assert dev.device_facts("cuda") == {"gpu_name": "NVIDIA H100 80GB HBM3", "gpu_capability": "9.0",
                                        "cuda_version": "12.4", "cudnn_version": "90100"}
    dev.reset_peak_memory("cuda")
    dev.reset_peak_memory("cpu")
    assert resets == [torch.device("cuda")] and dev.peak_memory_mb("cuda") == 3.0


# ---------------------------------------------------------------------------------------- rows and run.json
PROBE = '''
import torch
from bench.solvers.base import SOLVERS, SolveResult, Solver


@SOLVERS.register("t-probe")
class ProbeSolver(Solver):
    """Records, per row, whether deterministic algorithms were on while it solved (info_det)."""

    parameters = {}
    uses_prior = False

    def solve(self, problem, prior, lam, ctx):
        det = float(torch.are_deterministic_algorithms_enabled())
        return SolveResult(problem.adjoint(problem.y).clamp(0, 1),
                           info={"det": torch.full((problem.batch_size,), det)})
'''


@pytest.fixture
def probe_plugin(tmp_path, monkeypatch):
    from bench.solvers.base import SOLVERS

    (tmp_path / "probe_plugin_det.py").write_text(textwrap.dedent(PROBE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    yield "probe_plugin_det"
    sys.modules.pop("probe_plugin_det", None)
    SOLVERS.unregister("t-probe")


def test_rows_and_run_json_record_flags_on_cpu(priors, test_solvers, tmp_path):
    g = make_grid(priors[:1], solvers=["t-grad", "t-lamfree"], tasks=["denoise"])
    before = _state()
    s = run(g, tmp_path / "out", deterministic=True, tf32=True)
    assert _state() == before   # the in-process units leave the process as they found it
    df = rows_of(tmp_path / "out")
    for col in schema.names(schema.DEVICE_COLUMNS):
        assert col in df.columns, col
    assert (df["tf32"] == False).all() and (df["deterministic"] == True).all()
    assert (df[["gpu_name", "gpu_capability", "cuda_version", "cudnn_version"]] == "").all().all()
    assert df["gpu_peak_mem_mb"].isna().all()
    last = json.loads((tmp_path / "out" / "run.json").read_text())["runs"][-1]
    assert last["tf32"] is False and last["deterministic"] is True
    # the last line: planned image-passes (t-grad: 2 splits × 2 images × 2 λ × budget 10; t-lamfree: none)
    assert s.image_passes == 2 * 2 * 2 * 10
    assert f"{s.image_passes:,} image-passes of the prior (" in s.line() and "/s)" in s.line()
    assert s.passes_per_s == pytest.approx(s.image_passes / s.wall_s)


def test_default_rows_are_not_deterministic(priors, test_solvers, tmp_path):
    run(make_grid(priors[:1], tasks=["denoise"], splits=["id"]), tmp_path / "out")
    df = rows_of(tmp_path / "out")
    assert not df["deterministic"].any() and not df["tf32"].any()


@pytest.mark.slow  # two spawned workers each import torch: ~10-20 s on a loaded 2-core box
def test_deterministic_is_applied_in_each_worker(priors, probe_plugin, tmp_path):
    from bench.run.executors import LocalExecutor

    importlib.import_module(probe_plugin)
    g = make_grid(priors[:1], solvers=["t-probe"])
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        run(g, out, deterministic=True, imports=(probe_plugin,),
            executor=LocalExecutor(workers=workers, imports=(probe_plugin,)))
        df = rows_of(out)
        assert len(df) == 2 * 2 * 2 * 2 and (df["status"] == "ok").all()
        np.testing.assert_array_equal(df["info_det"].to_numpy(), 1.0)
    assert not torch.are_deterministic_algorithms_enabled()


# ------------------------------------------------------------------------------------------- perf: FLOP bound
def test_grid_flops_counts_planned_passes(priors, test_solvers, monkeypatch):
    from bench.plan.grid import load_grid as real_load

    g = make_grid(priors[:1], solvers=["t-grad", "t-lamfree"], tasks=["denoise"])
    monkeypatch.setattr("bench.plan.grid.load_grid", lambda name, **kw: g if name == "tiny" else real_load(name, **kw))
    monkeypatch.setattr("bench.perf.flops.flops_per_image", lambda model, batch=64: 1000.0)
    fl = perf.grid_flops("tiny", torch.device("cpu"))
    assert fl == {"image_passes": 2 * 2 * 2 * 10, "flops": 2 * 2 * 2 * 10 * 1000.0}


def test_perf_prints_flop_bound_and_ratio(monkeypatch):
    monkeypatch.setattr(perf, "machine_conv_rate", lambda device, min_time=1.0: 1e9)
    monkeypatch.setattr(perf, "grid_flops", lambda g, device, cache=None: {"image_passes": 1000, "flops": 5e9})
    monkeypatch.setattr(perf, "time_grid", lambda g, device, keep=None, extra_args=(): perf.GridTiming(
        grid=g, wall_s=12.5, peak_rss_mb=100.0, exit_code=0, summary="x, 0 failures, 12.5 s wall"))
    lines = []
    res = perf.run_perf(["smoke"], [], device_name="cpu", out=lines.append)
    text = "\n".join(lines)
    bound_table = text.split("Where the time goes")[1]
    row = [c.strip() for c in next(ln for ln in bound_table.splitlines() if ln.startswith("| smoke")).split("|")]
    assert "FLOP bound" in text and row[1:9] == ["smoke", "1,000", "0.01", "5.0", "12.5", "2.50×", "yes", "80"]
    assert res["grids"]["smoke"]["flop_bound_s"] == 5.0 and res["grids"]["smoke"]["bound_ratio"] == 2.5


def test_check_notes_name_tf32_and_gpu_differences():
    import pandas as pd

    from bench.verify.check import provenance_notes

    base = {"cpu_isa": ["avx2"], "torch_threads": [1], "device": ["cuda"], "torch_version": ["2"]}
    ref = pd.DataFrame({**base, "gpu_name": ["A"], "tf32": [False], "deterministic": [True]})
    cur = pd.DataFrame({**base, "gpu_name": ["A"], "tf32": [True], "deterministic": [True]})
    notes = provenance_notes(cur, ref)
    assert len(notes) == 1 and notes[0].startswith("tf32 differs: reference False; this run True")
    assert provenance_notes(cur, pd.DataFrame(base)) == []   # a reference from before the device columns


def test_conv_kernel_seconds_counts_only_convolutions():
    """A flow's convolution time is positive and within the wall time of the passes it was measured on (what a
    subset of one thread's ops must be); a prior without convolutions has none (the floor column of ``bench perf``
    cannot invent one)."""
    import time

    from bench.perf.flops import conv_kernel_seconds
    from bench.priors.base import build_prior
    from bench.priors.gaussian import GaussianLogitPrior

    flow = build_prior({"arch": "realnvp", "preset": "xs"}).eval().requires_grad_(False)
    t0 = time.perf_counter()
    conv = conv_kernel_seconds(flow, batch=8, reps=3)
    wall = time.perf_counter() - t0
    assert 0 < conv * 8 * 3 < wall
    assert conv_kernel_seconds(GaussianLogitPrior((1, 8, 8)), batch=8) == 0
