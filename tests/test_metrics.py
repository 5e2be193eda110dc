"""Metrics (bench/core/metrics.py) and the objective (bench/core/objective.py): PSNR/SSIM as skimage computes them, the MAP
loss of AIPO eq. (3) with the Gaussian noise likelihood and the discretised log-density, score()."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import norm
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from bench.core import metrics, objective
from bench.priors.base import ALPHA
from bench.priors.gaussian import GaussianLogitPrior
from bench.tasks import make_task

KEYS = {"map_loss", "data_fit", "data_nll", "log_prior", "bits_per_dim", "psnr", "ssim"}
SIGMA = {"denoise": 0.1, "cs": 0.1, "inpaint": 0.02}


def _pair(b=3, c=1, s=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, s, s, generator=g)
    x_hat = x + 0.3 * torch.randn(b, c, s, s, generator=g)  # leaves [0, 1]
    return x, x_hat


def test_psnr_known_mse():
    x = torch.full((2, 1, 8, 8), 0.5)
    x_hat = x.clone()
    x_hat[0] += 0.1            # MSE 0.01 -> 20 dB
    x_hat[1, :, :4] += 0.2     # MSE 0.5 * 0.04 = 0.02 -> 10 log10(50) dB
    np.testing.assert_allclose(metrics.psnr(x, x_hat), [20.0, 10 * math.log10(50)], rtol=1e-5)


@pytest.mark.parametrize("c", [1, 3])
def test_psnr_ssim_match_skimage_on_clipped(c):
    x, x_hat = _pair(c=c)
    a, b = x.double().numpy(), np.clip(x_hat.double().numpy(), 0, 1)
    ref_p = [peak_signal_noise_ratio(a[i], b[i], data_range=1.0) for i in range(len(a))]
    if c == 1:
        ref_s = [structural_similarity(a[i, 0], b[i, 0], data_range=1.0) for i in range(len(a))]
    else:
        ref_s = [structural_similarity(a[i], b[i], data_range=1.0, channel_axis=0) for i in range(len(a))]
    np.testing.assert_allclose(metrics.psnr(x, x_hat), ref_p, rtol=1e-10)
    np.testing.assert_allclose(metrics.ssim(x, x_hat), ref_s, rtol=1e-10)
    # clipping matters: the unclipped skimage value differs
    unclipped = [peak_signal_noise_ratio(a[i], x_hat.double().numpy()[i], data_range=1.0) for i in range(len(a))]
    assert not np.allclose(metrics.psnr(x, x_hat), unclipped)


def test_ssim_identity_and_small_images():
    x, _ = _pair(s=16)
    np.testing.assert_allclose(metrics.ssim(x, x), 1.0)
    x5, y5 = _pair(s=5)
    assert np.isfinite(metrics.ssim(x5, y5)).all()


def _brute_log_prob(prior, x):
    """Normal logpdf of u = logit(α + (1−2α)x) under N(mean, std²), plus log|du/dx| by autograd (the transform is
    elementwise, so the gradient of Σu is the Jacobian's diagonal)."""
    x = x.double().clone().requires_grad_(True)
    u = torch.logit(ALPHA + (1 - 2 * ALPHA) * x)
    (du,) = torch.autograd.grad(u.sum(), x)
    mean = prior.mean.detach().double().expand_as(u)
    std = prior.log_std.detach().double().exp().expand_as(u)
    logpdf = norm.logpdf(u.detach().numpy(), loc=mean.numpy(), scale=std.numpy())
    return torch.from_numpy(logpdf).flatten(1).sum(1) + du.abs().log().flatten(1).sum(1)


@pytest.mark.parametrize("fitted", [False, True])
def test_gaussian_logit_log_prob_brute_force(fitted):
    shape = (1, 8, 8)
    if fitted:
        g = torch.Generator().manual_seed(2)
        prior = GaussianLogitPrior(shape, mean=torch.randn(shape, generator=g) * 0.5,
                                   std=torch.rand(shape, generator=g) + 0.5)
    else:
        prior = GaussianLogitPrior(shape)
    x, _ = _pair(b=4, s=8)
    torch.testing.assert_close(prior.log_prob(x).double(), _brute_log_prob(prior, x), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("task", ["denoise", "cs", "inpaint"])
def test_map_loss(task):
    """L = ||y − f(x)||²/(2σ²) + (d/2)·log(2πσ²) − λ·(log p(x) − n·log 256), written out by hand."""
    x, x_hat = _pair(b=4)
    x_hat = x_hat.clamp(0, 1)
    p = make_task(task).make(x, [f"t/{i}" for i in range(4)], 0)
    prior = GaussianLogitPrior((1, 16, 16))
    n = 256
    d = round(0.3255 * n) if task == "cs" else n
    sigma = SIGMA[task]
    fit = ((p.y - p.forward(x_hat)) ** 2).flatten(1).sum(1).double()
    nll = fit / (2 * sigma ** 2) + d / 2 * math.log(2 * math.pi * sigma ** 2)
    logp = _brute_log_prob(prior, x_hat) - n * math.log(256)
    for lam in (0.0, 0.5, torch.tensor([0.1, 1.0, 2.0, 0.0])):
        lam_d = torch.as_tensor(lam, dtype=torch.float64)
        want = nll - lam_d * logp
        torch.testing.assert_close(objective.problem_map_loss(p, prior, x_hat, lam).double(), want, rtol=1e-5, atol=1e-2)
    torch.testing.assert_close(p.data_nll(x_hat).double(), nll, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("task", ["denoise", "cs", "inpaint"])
def test_data_nll_grad(task):
    """∇(−log p_e) is the autograd gradient of data_nll."""
    x, x_hat = _pair(b=2)
    p = make_task(task).make(x, ["a", "b"], 0)
    z = x_hat.clamp(0, 1).requires_grad_(True)
    p.data_nll(z).sum().backward()
    torch.testing.assert_close(p.data_nll_grad(z.detach()), z.grad, rtol=1e-4, atol=1e-2)


def test_likelihood_constant_matches_aipo_tables():
    """AIPO Table 1 − Table 2 (same prior and λ, n = 12288, m = 4000, σ = 0.1) is ≈ −7,300: at the truth the
    residual is the noise, E||e||² = dσ², so −log p_e ≈ (d/2)(1 + log 2πσ²) and the two tasks differ by
    (n − m)/2·(1 + log 2πσ²) ≈ −7,324. The bare ||y − f(x)||² could not produce a difference beyond ≈ 123."""
    n, m, sigma = 12288, 4000, 0.1
    nll = lambda d: float(objective.gaussian_nll(torch.tensor(d * sigma ** 2), sigma, d))  # noqa: E731
    assert nll(n) - nll(m) == pytest.approx(-7324, abs=1)
    table1_minus_table2 = [-7306, -7223, -7256, -7140, -6955]   # RealNVP, test split, λ = 0.3 … 2.0
    assert all(abs(v - (nll(n) - nll(m))) < 400 for v in table1_minus_table2)


def test_discretised_log_prior_is_bits_per_dim():
    prior = GaussianLogitPrior((1, 8, 8))
    x, _ = _pair(b=3, s=8)
    lp = objective.log_prior(prior, x)
    torch.testing.assert_close(lp, prior.log_prob(x) - 64 * math.log(256))
    bpd = objective.bits_per_dim(lp, 64)
    torch.testing.assert_close(bpd, -prior.log_prob(x) / (64 * math.log(2)) + 8)   # training's convention
    assert (lp < 0).all()


def test_score_keys_shapes_and_clipping():
    x, x_hat = _pair(b=3)
    p = make_task("inpaint").make(x, ["a", "b", "c"], 0)
    prior = GaussianLogitPrior((1, 16, 16))
    s = metrics.score(p, prior, x_hat, 0.5)
    assert list(s) == list(metrics.METRICS) and set(s) == KEYS
    for k, v in s.items():
        assert isinstance(v, np.ndarray) and v.shape == (3,), k
        assert np.isfinite(v).all(), k
    s_clip = metrics.score(p, prior, x_hat.clamp(0, 1), 0.5)
    for k in KEYS:
        np.testing.assert_array_equal(s[k], s_clip[k])
    np.testing.assert_allclose(s["map_loss"], s["data_nll"] - 0.5 * s["log_prior"], rtol=1e-6)
    np.testing.assert_allclose(s["data_nll"], s["data_fit"] / (2 * 0.02 ** 2) + 128 * math.log(2 * math.pi * 0.0004),
                               rtol=1e-6)
    np.testing.assert_allclose(s["bits_per_dim"], -s["log_prior"] / (256 * math.log(2)), rtol=1e-12)
    np.testing.assert_allclose(s["data_fit"], p.data_fit(x_hat.clamp(0, 1)).double().numpy(), rtol=1e-6)
    # without a prior the prior terms are NaN but the image metrics are still there
    s0 = metrics.score(p, None, x_hat, 0.5)
    assert np.isnan(s0["log_prior"]).all() and np.isnan(s0["map_loss"]).all() and np.isfinite(s0["data_nll"]).all()
    np.testing.assert_array_equal(s0["psnr"], s["psnr"])


# ------------------------------------------------------------------------------------------- the metric table
def test_table_order_is_the_row_schema_and_declares_directions():
    assert list(metrics.METRICS) == ["map_loss", "data_fit", "data_nll", "log_prior", "bits_per_dim", "psnr", "ssim"]
    assert [m for m in metrics.METRICS if metrics.higher_is_better(m)] == ["log_prior", "psnr", "ssim"]
    assert {m.name: m.tolerance for m in metrics.METRICS.values() if m.tolerance} == {
        "map_loss": "3se+0.01%", "psnr": "3se+0.05", "ssim": "3se+0.002"}
    assert metrics.decimals("not_a_metric") == 3 and not metrics.higher_is_better("not_a_metric")


def test_a_metric_added_temporarily_is_scored_then_gone():
    x, x_hat = _pair(b=2)
    p = make_task("denoise").make(x, ["a", "b"], 0)
    extra = metrics.Metric("mse", lambda b: ((b.x - b.x_true) ** 2).flatten(1).mean(1), False, 4, "3se")
    with metrics.METRICS.added(extra):
        s = metrics.score(p, None, x_hat, 0.5)
        assert list(s)[-1] == "mse"
        np.testing.assert_allclose(s["mse"], ((x_hat.clamp(0, 1) - x) ** 2).flatten(1).mean(1).double().numpy())
        with pytest.raises(ValueError, match="already registered"):
            metrics.METRICS.register(extra)
    assert "mse" not in metrics.METRICS and "mse" not in metrics.score(p, None, x_hat, 0.5)
    with pytest.raises(ValueError, match="metric name"):
        metrics.METRICS.register(metrics.Metric("p_mse", extra.fn, False))


MSE_PLUGIN = '''
from bench.core.metrics import register_metric


@register_metric("mse", higher_is_better=False, decimals=4, tolerance="3se+0.0001",
                 table="MSE (lower is better; plugin metric)")
def mse(b):
    """mean squared error per image"""
    return ((b.x - b.x_true) ** 2).flatten(1).mean(1) + OFFSET
'''

SHIPPED_XS = [Path(__file__).resolve().parents[1] / "priors" / "checkpoints" / f"{n}.pt"
              for n in ("realnvp-xs", "glow-xs")]


@pytest.mark.skipif(not all(p.is_file() for p in SHIPPED_XS), reason="shipped xs priors not trained yet")
def test_plugin_metric_is_a_row_column_a_leaderboard_table_and_checked(tmp_path):
    """A metric is one entry in a plugin module: the runner scores it into the rows, ``report`` makes its table,
    ``check`` compares it (and fails when it moves) with the tolerance it declares."""
    from kit.grids import bench_env, run_bench

    for name, offset in (("plain", 0.0), ("moved", 0.5)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "mse_plugin.py").write_text(f"OFFSET = {offset}\n" + MSE_PLUGIN)
    env = {k: bench_env(PYTHONPATH=os.pathsep.join([str(tmp_path / k), os.environ.get("PYTHONPATH", "")]))
           for k in ("plain", "moved")}
    slice_ = ["--grid", "smoke", "--task", "denoise", "--prior", "realnvp-xs", "--solver", "observed,aipo",
              "--lam", "0.5", "--workers", "1", "-q", "--plugin", "mse_plugin"]
    for out, e in (("a", "plain"), ("b", "plain"), ("c", "moved")):
        r = run_bench("run", *slice_, "--out", tmp_path / out, env=env[e])
        assert r.returncode == 0, r.stderr
    rows = pd.read_parquet(sorted((tmp_path / "a" / "rows").glob("*.parquet"))[0])
    cols = list(rows.columns)
    assert cols[cols.index("ssim") + 1] == "mse" and cols[cols.index("mse") + 1] == "nfe_used"
    ok = rows[rows["status"] == "ok"]
    assert len(ok) and np.isfinite(ok["mse"]).all() and (ok["mse"] > 0).all()

    (tmp_path / "rep").mkdir()   # report --out never creates folders
    r = run_bench("report", tmp_path / "a", "--out", tmp_path / "rep" / "LEADERBOARD.md", "--no-figures",
                  "--plugin", "mse_plugin", env=env["plain"])
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "rep" / "LEADERBOARD.md").read_text()
    assert "- MSE (lower is better; plugin metric): [" in md and "- SSIM (higher is better): [" in md

    r = run_bench("check", tmp_path / "b", "--reference", tmp_path / "a", "--plugin", "mse_plugin", env=env["plain"])
    assert r.returncode == 0 and "mse 3se+0.0001" in r.stdout, r.stdout + r.stderr
    r = run_bench("check", tmp_path / "b", "--reference", tmp_path / "a", "--plugin", "mse_plugin", "--exact",
                  env=env["plain"])
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_bench("check", tmp_path / "c", "--reference", tmp_path / "a", "--plugin", "mse_plugin", env=env["plain"])
    moved = [line for line in r.stdout.splitlines() if " mse " in line]
    assert r.returncode == 1 and len(moved) == 4 and "map_loss" not in r.stdout, r.stdout   # 2 solvers × 2 splits
    r = run_bench("check", tmp_path / "c", "--reference", tmp_path / "a", "--plugin", "mse_plugin",
                  "--fail", "mse=1", env=env["plain"])
    assert r.returncode == 0 and "mse 1" in r.stdout, r.stdout + r.stderr
