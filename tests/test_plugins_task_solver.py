"""A new task and a new solver are one plugin file each: written into a temp folder, loaded with ``--plugin``, run
by the CLI next to shipped ones, and picked up by the task contract tests — with no edit anywhere else.

``sr2``: 2× super-resolution by 2×2 average pooling (its own σ); ``pgd-ln``: fixed-step projected gradient descent
on L(x; λ) from the least-norm point. ``sr2`` declares no latent-lbfgs defaults, so that solver skips it.
"""
from __future__ import annotations

import importlib
import os
import sys
import textwrap

import numpy as np
import pandas as pd

from kit import task_contract as tc
from kit.grids import bench_env, run_bench, write_grid, write_plugin

PLUGIN = textwrap.dedent('''
    """sr2 (2x super-resolution by average pooling) and pgd-ln (projected gradient descent from the least-norm
    point): a task and a solver, each declared in full here."""
    import torch
    import torch.nn.functional as F

    from bench.core.errors import UserError
    from bench.core.registry import Param
    from bench.solvers.base import SOLVERS, Solver, SolveResult
    from bench.tasks import TASKS, Problem, Task, sigma_param


    def up(r):
        return r.repeat_interleave(2, -2).repeat_interleave(2, -1)


    @TASKS.register("sr2")
    class SuperResolution2(Task):
        """y = pool2(x) + e: 2x2 average pooling, e ~ N(0, sigma^2 I)."""

        parameters = {"sigma": sigma_param(0.05)}
        description = "y = avgpool2(x) + e, e ~ N(0, sigma^2 I)"

        def check_shape(self, shape):
            if shape[1] % 2 or shape[2] % 2:
                raise UserError(f"task 'sr2': image size {shape[1]}x{shape[2]} is not even")

        def _make(self, x, ids, seed):
            self.check_shape(tuple(x.shape[1:]))
            shape = (x.shape[1], x.shape[2] // 2, x.shape[3] // 2)
            e = torch.stack([self.noise(shape, i, seed, x.device) for i in ids])
            return Problem(self, x, F.avg_pool2d(x, 2) + e, ids, seed)

        def forward(self, p, x):
            return F.avg_pool2d(x, 2)

        def adjoint(self, p, r):
            return up(r) / 4

        def least_norm(self, p):
            return up(p.y)          # pool(up(y)) = y, and up(y) = f^T(4y) lies in the row space

        def project(self, p, x, iters):
            for _ in range(iters):  # affine projection x + A^+(y - Ax), A^+ = 4 A^T = up; then the box
                x = (x + up(p.y - F.avg_pool2d(x, 2))).clamp(0, 1)
            return x

        def operator_norm(self, p):
            return 0.5

        def observed_image(self, p):
            return up(p.y).clamp(0, 1)


    @SOLVERS.register("pgd-ln")
    class PGDLeastNorm(Solver):
        """x <- clip(x - step * grad L(x; lam)) from clip(f^+(y)), one prior pass per step."""

        parameters = {"step": Param(float, 1e-4, range=">0", doc="fixed step size")}
        description = "projected gradient descent on L(x; lambda) from the least-norm point"

        def solve(self, problem, prior, lam, ctx):
            lam = lam.to(problem.y.device, problem.y.dtype)
            x = problem.least_norm().clamp(0, 1)
            for k in range(ctx.budget):
                with torch.enable_grad():
                    xr = x.detach().requires_grad_(True)
                    logp = prior.log_prob(xr)
                    (g_logp,) = torch.autograd.grad(logp.sum(), xr)
                nll = problem.data_nll(x)
                prior.trace_point()   # the harness records L(x; lam) at x, from its own numbers
                if k < ctx.budget - 1:
                    g = problem.data_nll_grad(x) - lam.view(-1, 1, 1, 1) * g_logp
                    x = (x - self.params["step"] * g).clamp(0, 1)
            return SolveResult(x.detach(), info={"objective": nll.detach()})
''')


def test_plugin_task_and_solver_run_from_the_cli(tmp_path):
    folder = tmp_path / "plugins"
    name = write_plugin(folder, "sr2_plugin", PLUGIN)
    grid = write_grid(tmp_path / "sr.toml", priors=["realnvp-xs"], tasks=["sr2", "denoise"], lams=[0.5],
                      solvers=["pgd-ln", "zero-init", "latent-lbfgs"], budget=12, mle_steps=4)
    env = bench_env(PYTHONPATH=os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "out"
    r = run_bench("run", "--grid", grid, "--plugin", name, "--out", out, "-q", "--workers", "1", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = pd.read_parquet(out / "rows")
    sr = rows[(rows["task"] == "sr2") & (rows["solver"] == "pgd-ln")]
    assert len(sr) == 2 and (sr["status"] == "ok").all() and np.isfinite(sr["map_loss"]).all()
    assert ((rows["task"] == "sr2") & (rows["solver"] == "zero-init") & (rows["status"] == "ok")).sum() == 2
    skipped = rows[(rows["task"] == "sr2") & (rows["solver"] == "latent-lbfgs")]
    assert len(skipped) == 2 and (skipped["status"] == "skipped").all()
    assert all("lr" in e and "steps" in e and "gamma" in e and "sr2" in e for e in skipped["error"])
    assert (skipped["nfe_used"] == 0).all()
    den = rows[(rows["task"] == "denoise") & (rows["solver"] == "latent-lbfgs")]
    assert (den["status"] == "ok").all() and len(den) == 2
    assert " 0 failures" in r.stdout   # skipped rows are not failures


def test_plugin_task_passes_the_task_contract(tmp_path, monkeypatch):
    """The contract tests' parametrization (every name in TASKS) picks the plugin task up, and it passes; the
    plugin's registrations are held only inside ``TASKS.temporarily`` (nothing leaks into other tests)."""
    from bench.solvers.base import SOLVERS, make_solver
    from bench.tasks import TASKS, make_task

    write_plugin(tmp_path, "sr2_inproc", PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    TASKS.names(), SOLVERS.names()                 # discover the shipped plugins first
    try:
        importlib.import_module("sr2_inproc")      # registers sr2 and pgd-ln at import ...
        cls = TASKS.get("sr2")
    finally:                                       # ... which this test holds only for the with block below
        TASKS.unregister("sr2")
        SOLVERS.unregister("pgd-ln")
        sys.modules.pop("sr2_inproc", None)
    assert "sr2" not in TASKS.names()
    with TASKS.temporarily("sr2", cls):
        import test_task_contract

        assert "sr2" in sorted(set(TASKS.names()) | set(test_task_contract.SPECS))
        tc.check_all("sr2")
        p = make_task("sr2").make(tc.images(2), tc.ids(2), 0)
        assert p.y.shape == (2, 1, tc.SIZE // 2, tc.SIZE // 2) and p.sigma == 0.05
        reason = make_solver("latent-lbfgs").skip(p.for_solver())
        assert reason and all(k in reason for k in ("lr", "steps", "gamma"))
        assert make_solver("latent-lbfgs[lr=0.5,steps=3,gamma=0.0]").skip(p.for_solver()) is None
        assert make_solver("zero-init").skip(p.for_solver()) is None
    assert "sr2" not in TASKS.names() and "pgd-ln" not in SOLVERS.names()
