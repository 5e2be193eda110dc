"""pytest-benchmark: one step of each solver family at batch 64, 16x16 grey, RealNVP/Glow ``s`` (random weights).

Skipped by default (pyproject addopts has --benchmark-skip). Run with
``OMP_NUM_THREADS=1 python -m pytest tests/benchmarks/test_bench_solvers.py --benchmark-only`` (measured on the
shared 2-core box, 1 thread: x-space step 30-50 ms, MLE step 60-70 ms, 20 L-BFGS iterations ~0.95 s, FISTA
iteration 1-3 ms).

Families: the x-space step every AIPO-style solver repeats (one counted pass: log p_G and its gradient, the data
fit, an Adam step and the box clamp), the MLE step (the same pass, a GD step and the App. A projection, cs), one
L-BFGS iteration in latent space (decode_with_log_prob + backward and the two-loop recursion over a full
history), and one FISTA iteration of the Lasso (no prior).
"""
from __future__ import annotations

import pytest
import torch

from bench.priors.base import ARCHS
from bench.run.budget import BudgetedPrior
from bench.tasks import make_task

B, S = 64, 16


def _model(arch):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = ARCHS.get(arch)((1, S, S), "s")
    m.train()
    with torch.no_grad():
        m.log_prob(torch.rand(16, 1, S, S))
    return m.eval().requires_grad_(False)


def _problem(task):
    x = torch.rand((B, 1, S, S), generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    return make_task(task).make(x, [f"img{i}" for i in range(B)], 0)


@pytest.mark.parametrize("arch", ARCHS.names())
def test_x_adam_step(benchmark, arch):
    from bench.solvers.optim import Adam, clamp01
    from bench.solvers.stages import evaluate

    torch.set_num_threads(1)
    m, pb = _model(arch), _problem("denoise")
    lam = torch.full((B,), 1.0)
    bp = BudgetedPrior(m, 10 ** 9, B)
    opt, state = Adam(0.01), {"x": pb.y.clamp(0, 1)}

    def step():
        e = evaluate(pb, bp, state["x"])
        state["x"] = clamp01(opt.step(state["x"], e.grad(lam)))

    benchmark(step)


@pytest.mark.parametrize("arch", ARCHS.names())
def test_mle_step_cs(benchmark, arch):
    from bench.solvers.optim import GD
    from bench.solvers.stages import evaluate, mle_start

    torch.set_num_threads(1)
    m, pb = _model(arch), _problem("cs")
    bp = BudgetedPrior(m, 10 ** 9, B)
    opt, state = GD(0.01), {"x": mle_start(pb)}

    def step():
        e = evaluate(pb, bp, state["x"])
        state["x"] = pb.project(opt.step(state["x"], -e.g_logp))

    benchmark(step)


@pytest.mark.parametrize("arch", ARCHS.names())
def test_latent_lbfgs_iteration(benchmark, arch):
    """20 iterations (one outer step, history filled) per round; the benchmark reports per round."""
    from bench.solvers.lbfgs import lbfgs_minimize

    torch.set_num_threads(1)
    m, pb = _model(arch), _problem("cs")
    bp = BudgetedPrior(m, 10 ** 9, B)

    def fun(z_rows, rows):
        with torch.enable_grad():
            z = z_rows.detach().view(len(rows), 1, S, S).requires_grad_(True)
            x, _ = bp.decode_with_log_prob(z, rows=rows.tolist())
            f = pb.take(rows).data_fit(x)
            (g,) = torch.autograd.grad(f.sum(), z)
        return f.detach(), g.flatten(1)

    benchmark.pedantic(lambda: lbfgs_minimize(fun, torch.zeros(B, S * S), 0.1, 1, 10 ** 9), rounds=3, iterations=1)


@pytest.mark.parametrize("name", ["lasso-dct", "lasso-wvt"])
def test_lasso_iteration(benchmark, name):
    from bench.solvers.base import SOLVERS

    torch.set_num_threads(1)
    pb = _problem("cs")
    solver = SOLVERS.get(name)(max_iter=1)
    from bench.solvers.base import SolveContext

    benchmark(lambda: solver.solve(pb, None, torch.ones(B), SolveContext(budget=0)))
