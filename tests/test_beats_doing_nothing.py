"""Sanity of the posed problem: with the papers' MAP objective, a plain MAP solver under a shipped prior must beat
doing nothing. Denoising at λ = 0.5 on the 20 test faces: mle-init (Adam from clip(y)) against the trivial
``observed`` baseline clip(y), on both shipped s priors, at the faces grid's budget."""
from __future__ import annotations

import pytest
import torch

from bench.core import metrics
from bench.plan.grid import load_grid
from bench.priors import catalog
from bench.run.budget import BudgetedPrior
from bench.solvers.base import SolveContext, make_solver
from bench.tasks import make_task


@pytest.mark.parametrize("prior_name", ["realnvp-s", "glow-s"])
def test_mle_init_beats_the_noisy_input_by_1db(prior_name):
    from bench.datasets.base import load_dataset

    model = catalog.load_prior(prior_name).model
    faces = load_dataset("lfw-faces", "test", 16)
    grid = load_grid("faces")
    pb = make_task("denoise").make(faces.images, faces.ids, 0)
    lam = torch.full((pb.batch_size,), 0.5)
    ctx = SolveContext(budget=grid.budget, mle_steps=grid.mle_steps)
    with torch.random.fork_rng(devices=[]):
        res = make_solver("mle-init").solve(pb, BudgetedPrior(model, grid.budget, pb.batch_size), lam, ctx)
    naive = make_solver("observed").solve(pb, None, lam, ctx).x_hat
    gain = metrics.psnr(pb.x_true, res.x_hat).mean() - metrics.psnr(pb.x_true, naive).mean()
    assert gain >= 1.0, f"mle-init beats clip(y) by only {gain:.2f} dB on {prior_name}"
