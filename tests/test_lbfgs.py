"""The batched L-BFGS (``bench.solvers.lbfgs``) against ``torch.optim.LBFGS`` run per row, without and with the
strong-Wolfe line search; per-row budgets; batched equals single; latent-lbfgs's strong-Wolfe variant on a
denoising problem where GlowIP's fixed step diverges."""
from __future__ import annotations

import pytest
import torch

from bench.core.errors import UserError
from bench.run.budget import BudgetedPrior
from bench.solvers.base import SOLVERS, SolveContext, make_solver
from bench.solvers.lbfgs import lbfgs_minimize
from bench.tasks import make_task


def _test_function(B, n):
    g = torch.Generator().manual_seed(0)
    A = torch.randn(B, n, n, generator=g, dtype=torch.float64)
    A = A @ A.transpose(1, 2) / n + 0.1 * torch.eye(n, dtype=torch.float64)
    b = torch.randn(B, n, generator=g, dtype=torch.float64)
    return lambda z, i: 0.5 * z @ A[i] @ z - b[i] @ z + 0.1 * z.pow(4).sum() + torch.sin(z).sum()


@pytest.mark.parametrize("lr,steps,history", [(1.0, 3, 100), (0.1, 5, 5)])
def test_batched_lbfgs_mirrors_torch(lr, steps, history):
    B, n = 3, 10
    f = _test_function(B, n)

    def fun(zr, rows):
        zr = zr.detach().requires_grad_(True)
        vals = torch.stack([f(zr[k], int(i)) for k, i in enumerate(rows)])
        return vals.detach(), torch.autograd.grad(vals.sum(), zr)[0]

    res = lbfgs_minimize(fun, torch.zeros(B, n, dtype=torch.float64), lr, steps, 10 ** 6, history_size=history)
    for i in range(B):
        z = torch.zeros(n, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([z], lr=lr, history_size=history)

        def closure():
            opt.zero_grad()
            v = f(z, i)
            v.backward()
            return v

        for _ in range(steps):
            opt.step(closure)
        torch.testing.assert_close(res.z[i], z.detach(), rtol=0, atol=1e-12)
        assert int(res.evals[i]) <= opt.state[opt._params[0]]["func_evals"]


def test_lbfgs_respects_max_evals():
    f = _test_function(2, 6)

    def fun(zr, rows):
        zr = zr.detach().requires_grad_(True)
        vals = torch.stack([f(zr[k], int(i)) for k, i in enumerate(rows)])
        return vals.detach(), torch.autograd.grad(vals.sum(), zr)[0]

    res = lbfgs_minimize(fun, torch.zeros(2, 6, dtype=torch.float64), 0.1, 30, torch.tensor([3, 7]))
    assert res.evals.tolist() == [3, 7] and res.pending.all()


def _rosenbrock_rows(B, n):
    """Row i: scale_i · Rosenbrock(z) plus the quartic test function's sine term; start points random."""
    g = torch.Generator().manual_seed(1)
    z0 = torch.randn(B, n, generator=g, dtype=torch.float64)
    scale = torch.rand(B, generator=g, dtype=torch.float64) + 0.1

    def f(z, i):
        return scale[i] * (100 * (z[1:] - z[:-1] ** 2) ** 2 + (1 - z[:-1]) ** 2).sum() + 0.1 * torch.sin(z).sum()
    return f, z0


def _rows_fun(f, calls=None, row_of=lambda i: i):
    def fun(zr, rows):
        zr = zr.detach().requires_grad_(True)
        vals = torch.stack([f(zr[k], row_of(int(i))) for k, i in enumerate(rows)])
        if calls is not None:
            for i in rows.tolist():
                calls[row_of(i)] += 1
        return vals.detach(), torch.autograd.grad(vals.sum(), zr)[0]
    return fun


@pytest.mark.parametrize("lr,steps,history,which", [(1.0, 3, 100, "rosenbrock"), (0.5, 4, 5, "rosenbrock"),
                                                    (1.0, 2, 100, "quartic")])
def test_strong_wolfe_lbfgs_mirrors_torch(lr, steps, history, which):
    B, n = 4, 8
    if which == "rosenbrock":
        f, z0 = _rosenbrock_rows(B, n)
    else:
        f, z0 = _test_function(B, n), torch.zeros(B, n, dtype=torch.float64)
    res = lbfgs_minimize(_rows_fun(f), z0, lr, steps, 10 ** 6, history_size=history, line_search="strong_wolfe")
    for i in range(B):
        z = z0[i].clone().requires_grad_(True)
        opt = torch.optim.LBFGS([z], lr=lr, history_size=history, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            v = f(z, i)
            v.backward()
            return v

        for _ in range(steps):
            opt.step(closure)
        # torch's x += t·d is a fused add (alpha=t): last-bit differences only
        torch.testing.assert_close(res.z[i], z.detach(), rtol=0, atol=1e-10)
        assert int(res.evals[i]) <= opt.state[opt._params[0]]["func_evals"]
        assert not res.pending[i]                    # the line search returns an evaluated point
    assert res.evals.unique().numel() > 1             # the rows searched with their own numbers of evaluations


def test_strong_wolfe_lbfgs_batched_equals_single():
    B, n = 4, 8
    f, z0 = _rosenbrock_rows(B, n)
    budget = torch.tensor([7, 1000, 23, 60])
    res = lbfgs_minimize(_rows_fun(f), z0, 1.0, 3, budget, line_search="strong_wolfe")
    for i in range(B):
        one = lbfgs_minimize(_rows_fun(f, row_of=lambda _, i=i: i), z0[i:i + 1], 1.0, 3, budget[i:i + 1],
                             line_search="strong_wolfe")
        assert torch.equal(one.z[0], res.z[i])
        for k in ("pending", "evals", "iterations", "converged"):
            assert torch.equal(getattr(one, k)[0], getattr(res, k)[i]), k


def test_strong_wolfe_lbfgs_respects_max_evals():
    B, n = 5, 8
    f, z0 = _rosenbrock_rows(B, n)
    budget = torch.tensor([0, 1, 3, 9, 17])
    calls = [0] * B
    res = lbfgs_minimize(_rows_fun(f, calls), z0, 1.0, 20, budget, line_search="strong_wolfe")
    assert calls == res.evals.tolist() == budget.tolist()
    assert bool(res.pending[0])                        # never evaluated
    for i in range(1, B):                              # stopped mid-search at its best point, never above the start
        assert float(f(res.z[i], i)) <= float(f(z0[i], i))
    with pytest.raises(UserError, match="unknown line search"):
        lbfgs_minimize(_rows_fun(f), z0, 1.0, 1, 10, line_search="armijo")


def test_latent_lbfgs_strong_wolfe_on_a_diverging_denoise():
    """glow-s on Fashion-MNIST denoising: GlowIP's lr = 1 without a line search diverges (G(z) non-finite) within
    30 passes on these images; the strong-Wolfe variant stays finite, decreases the objective and keeps the budget."""
    from bench.datasets.base import load_dataset
    from bench.priors import catalog

    if "glow-s" not in catalog.shipped_names():
        pytest.skip("shipped prior glow-s not present")
    model = catalog.load_prior("glow-s").model
    ds = load_dataset("fashion-mnist", "test", model.image_shape[-1])
    pb = make_task("denoise").make(ds.images[:2], list(ds.ids[:2]), 0)
    lam = torch.ones(2)
    out = {}
    for ls in ("none", "strong_wolfe"):
        bp = BudgetedPrior(model, 30, 2)
        out[ls] = SOLVERS.get("latent-lbfgs")(line_search=ls).solve(
            pb, bp, lam, SolveContext(budget=30, mle_steps=10, seed=0, trace_every=10))
        assert int(bp.used.max()) <= 30
    sw = out["strong_wolfe"]
    assert bool(sw.x_hat.isfinite().all())
    assert bool(sw.info["objective"].isfinite().all())
    assert bool((sw.info["objective"] < sw.info["objective_start"]).all())
    assert not bool(out["none"].info["objective"].isfinite().any())   # the divergence this variant avoids
    assert "line_search" in make_solver("latent-lbfgs[line_search=strong_wolfe]").params
    with pytest.raises(UserError):
        make_solver("latent-lbfgs[line_search=armijo]")


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")   # set by the mkldnn flag
def test_latent_lbfgs_strong_wolfe_batched_equals_single():
    """Per-row line searches on a shipped prior: each image alone gives the batch's row bit for bit (oneDNN off,
    whose convolution kernels depend on the batch size; see test_solvers.batch_invariant_kernels)."""
    from bench.datasets.base import load_dataset
    from bench.priors import catalog

    if "glow-s" not in catalog.shipped_names():
        pytest.skip("shipped prior glow-s not present")
    model = catalog.load_prior("glow-s").model
    ds = load_dataset("fashion-mnist", "test", model.image_shape[-1])
    pb = make_task("denoise").make(ds.images[:3], list(ds.ids[:3]), 0)

    def run(p):
        bp = BudgetedPrior(model, 40, p.batch_size)
        res = SOLVERS.get("latent-lbfgs")(line_search="strong_wolfe").solve(
            p, bp, torch.ones(p.batch_size), SolveContext(budget=40, mle_steps=10, seed=0, trace_every=10))
        return res, bp

    with torch.backends.mkldnn.flags(enabled=False):
        batched, bp = run(pb)
        for i in range(3):
            alone, bp1 = run(pb.take([i]))
            assert torch.equal(alone.x_hat[0], batched.x_hat[i])
            assert int(bp1.used[0]) == int(bp.used[i])
            assert int(alone.info["evaluations"][0]) == int(batched.info["evaluations"][i])
