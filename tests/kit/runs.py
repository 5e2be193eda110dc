"""Test solvers, two analytic priors and a tiny grid for the runner tests (tests/test_runner*.py)."""
from __future__ import annotations

import contextlib

import pandas as pd
import torch

from bench.plan.grid import parse_grid
from bench.run.runner import run_grid
from bench.solvers.base import SOLVERS, Solver, SolveResult, Trace
from bench.store import parts as store


# ------------------------------------------------------------------------------------------ test solvers
def _grad_steps(problem, prior, lam, lr, passes):
    """``passes`` gradient steps on L(x; λ) from clamp(fᵀy), one counted prior pass each; rows independent."""
    x = problem.adjoint(problem.y).clamp(0, 1)
    trace = Trace()
    for _ in range(passes):
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            loss = problem.data_fit(xr) - lam * prior.log_prob(xr)
            (g,) = torch.autograd.grad(loss.sum(), xr)
        prior.trace_point()   # the harness records the loss at the point just evaluated
        x = (x - lr * g).clamp(0, 1)
    return x.detach(), trace


class GradSolver(Solver):
    """Counts its solve calls and batch sizes (class attributes)."""

    parameters = {"lr": 0.01, "passes": 3}
    tunable = ("lr",)
    calls: list = []

    def solve(self, problem, prior, lam, ctx):
        type(self).calls.append(problem.batch_size)
        x, trace = _grad_steps(problem, prior, lam, self.params["lr"], self.params["passes"])
        return SolveResult(x, trace, {"iterations": torch.full((problem.batch_size,), self.params["passes"])})


class BoomSolver(Solver):
    parameters = {}

    def solve(self, problem, prior, lam, ctx):
        raise RuntimeError("kaboom\nsecond line of the message")


class NanSolver(Solver):
    """NaN for the rows with λ > 1, a fine answer otherwise."""

    parameters = {}

    def solve(self, problem, prior, lam, ctx):
        x, trace = _grad_steps(problem, prior, lam, 0.01, 2)
        x[lam > 1] = float("nan")
        return SolveResult(x, trace)


class GreedySolver(Solver):
    parameters = {}

    def solve(self, problem, prior, lam, ctx):
        x = problem.adjoint(problem.y).clamp(0, 1)
        for _ in range(ctx.budget + 1):
            prior.log_prob(x)
        return SolveResult(x)


class LamFreeSolver(Solver):
    """λ-independent and prior-free (like Lasso): the runner must solve once per image and replicate across λ."""

    parameters = {"shift": 0.0}
    uses_prior = False
    lam_independent = True
    calls: list = []

    def solve(self, problem, prior, lam, ctx):
        assert prior is None
        type(self).calls.append(problem.batch_size)
        return SolveResult((problem.adjoint(problem.y) + self.params["shift"]).clamp(0, 1))


class EscapeSolver(Solver):
    """Raises an exception whose message carries terminal escapes, a bell and a carriage return."""

    parameters = {}

    def solve(self, problem, prior, lam, ctx):
        raise RuntimeError("\x1b[2J\x1b[31mred alert\x1b[0m\x07\rover\x1b]0;title\x07written")


class DtypeSolver(Solver):
    """A fine answer in the wrong dtype: complex, integer or bool (``kind``); it must not be silently cast."""

    parameters = {"kind": "complex"}

    def solve(self, problem, prior, lam, ctx):
        x = problem.adjoint(problem.y).clamp(0, 1)
        kind = self.params["kind"]
        return SolveResult(x.to(torch.complex64) if kind == "complex" else (x > 0.5) if kind == "bool"
                           else (x * 255).to(torch.uint8) if kind == "uint8" else x.round().long())


class IdsSolver(Solver):
    """Fails with the image ids it was given in its message (a solver process gets opaque row keys)."""

    parameters = {}
    uses_prior = False

    def solve(self, problem, prior, lam, ctx):
        raise RuntimeError("ids " + " ".join(problem.image_ids))


TEST_SOLVERS = {"t-ids": IdsSolver, "t-grad": GradSolver, "t-boom": BoomSolver, "t-nan": NanSolver, "t-greedy": GreedySolver,
                "t-lamfree": LamFreeSolver, "t-escape": EscapeSolver, "t-dtype": DtypeSolver}


@contextlib.contextmanager
def registered_test_solvers():
    """The test solvers above, registered for a ``with`` block (the real plugins are discovered first, and the test
    solvers unregistered after); their call logs start empty. The ``test_solvers`` fixture of tests/conftest.py."""
    GradSolver.calls, LamFreeSolver.calls = [], []
    with contextlib.ExitStack() as stack:
        for name, cls in TEST_SOLVERS.items():
            stack.enter_context(SOLVERS.temporarily(name, cls))
        yield


def write_test_priors(folder) -> list[str]:
    """Two analytic priors saved as checkpoints in ``folder`` (loaded by path through bench.priors.catalog); the
    ``priors`` fixture of tests/conftest.py."""
    from bench.priors.gaussian import GaussianLogitPrior
    from bench.priors.training import save_checkpoint

    save_checkpoint(GaussianLogitPrior((1, 16, 16)), folder / "gauss-a.pt")
    save_checkpoint(GaussianLogitPrior((1, 16, 16), mean=torch.full((1, 16, 16), 0.3),
                                       std=torch.full((1, 16, 16), 1.5)), folder / "gauss-b.pt")
    return [str(folder / "gauss-a.pt"), str(folder / "gauss-b.pt")]


def make_grid(priors, **changes):
    raw = {"name": "tiny", "priors": priors, "tasks": ["denoise", "cs[m=0.1628]"], "lams": [0.5, 2.0],
           "solvers": ["t-grad"], "budget": 10, "mle_steps": 2, "images_per_split": 2, "splits": ["id", "ood"]}
    raw.update(changes)
    return parse_grid(raw)


def run(grid, out, **kw):
    """``run_grid`` quietly. In-process by default: these tests count the test solvers' calls in this process
    (their class attributes); tests/test_isolation.py runs the same solvers in solver processes."""
    kw.setdefault("isolate", False)
    kw.setdefault("progress", False)
    kw.setdefault("log", lambda m: None)
    return run_grid(grid, out, **kw)


def rows_of(out) -> pd.DataFrame:
    return store.read_run(out).sort_values("cell_id").reset_index(drop=True)
