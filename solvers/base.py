"""The solver contract, shared by every registered solver.

A solver is a class with declared ``parameters`` (defaults from its paper) and one method::

    solve(problem, prior, lam, ctx) -> SolveResult

- ``problem``: a :class:`bench.tasks.Problem` batch of B rows (each row one image × one λ);
- ``prior``: a :class:`bench.budget.BudgetedPrior` counting passes per row (``None`` for solvers with
  ``uses_prior = False``); calling past the budget raises and the run marks the rows ``overspend``;
- ``lam``: a (B,) tensor, the target Λ of each row;
- ``ctx``: :class:`SolveContext` with the per-row budget, the MLE stage length, the seed index and the device.

It returns a :class:`SolveResult`: ``x_hat`` (B, C, H, W), and an anytime ``trace``. The harness — not the
solver — scores ``x_hat`` (README contract 1). Batched must equal single: row i's result may depend only on row
i's data, λ and seed (README contract 3). Randomness comes from :func:`row_generator` (cell identity).

Box rule (applies to every x-space solver): iterates are projected onto [0,1]^n after every step (AIPO App. A's
box; the logit preprocessing of the priors is undefined far outside it). Latent-space solvers return G(z), which
lies in the box by construction. Lasso returns its synthesis unclipped; the harness clips every x_hat before
scoring.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from bench.errors import UserError
from bench.registry import Registry, format_spec, parse_spec, resolve_params
from bench.seeding import generator

SOLVERS = Registry("solver", "bench.solvers")


@dataclass
class SolveContext:
    budget: int                # prior passes per row, MLE stage included
    mle_steps: int = 500       # passes the MLE stage x*(0) takes where f is not invertible (AIPO §4.1)
    seed: int = 0              # seed index of the cell
    device: torch.device = torch.device("cpu")
    trace_every: int = 10      # record the anytime trace every this many passes


@dataclass
class Trace:
    """Anytime trace: after ``nfe[t]`` passes, row i has MAP loss ``loss[t][i]`` at its own Λ.

    A solver whose iterates are not what it returns (latent-space solvers: G(z) before clipping) records the
    returned-image iterates instead (``x``, via ``record(nfe, x=...)``) and the harness scores them exactly as it
    scores x̂ — clipped, with its own prior and each row's λ."""

    nfe: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    x: list = field(default_factory=list)

    def record(self, nfe: torch.Tensor, loss: torch.Tensor | None = None, x: torch.Tensor | None = None) -> None:
        if (loss is None) == (x is None):
            raise ValueError("Trace.record takes exactly one of loss= and x=")
        if (x is None and self.x) or (loss is None and self.loss):
            raise ValueError("a trace records either losses or iterates, not both")
        self.nfe.append(nfe.detach().cpu().clone())
        if x is None:
            self.loss.append(loss.detach().cpu().double().clone())
        else:
            self.x.append(x.detach().cpu().float().clone())


@dataclass
class SolveResult:
    x_hat: torch.Tensor
    trace: Trace = field(default_factory=Trace)
    info: dict = field(default_factory=dict)  # per-row extras: {"iterations": tensor(B)}, {"lam_reached": ...}


def check_ranges(name: str, params: dict, ranges: dict) -> None:
    """Raise UserError for a parameter outside its declared range. Rules: ``">0"``, ``">=0"``, ``">=1"``,
    ``"(0,1)"``, ``"(0,1]"`` (numbers), or ``"a|b"`` (one of these strings); ``None`` values are not checked."""
    for k, rule in ranges.items():
        v = params.get(k)
        if v is None:
            continue
        if "|" in rule:
            ok = v in rule.split("|")
            want = "one of " + ", ".join(rule.split("|"))
        else:
            ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and {
                ">0": v > 0, ">=0": v >= 0, ">=1": v >= 1, "(0,1)": 0 < v < 1, "(0,1]": 0 < v <= 1}[rule]
            want = {">0": "> 0", ">=0": ">= 0", ">=1": ">= 1"}.get(rule, f"in {rule}")
        if not ok:
            raise UserError(f"solver {name!r}: parameter {k} must be {want}, got {v!r}")


class Solver:
    """Base class; subclasses register with ``@SOLVERS.register(name)``."""

    name: str = "?"
    parameters: dict = {}
    ranges: dict = {}             # declared valid values per parameter (:func:`check_ranges`)
    tunable: tuple = ()           # parameters `bench tune` may search (step sizes)
    uses_prior: bool = True       # False: gets prior=None and no budget (Lasso)
    lam_independent: bool = False  # True: the solution does not depend on λ; the runner solves once per image
    chaotic: bool = False          # True: last-bit float differences (another CPU) change its answers; `check`
                                   # judges it against the reference cell's spread instead of paired noise
    description: str = ""
    paper: str = ""

    def __init__(self, **overrides):
        self.params = resolve_params("solver", self.name, self.parameters, overrides)
        self.overrides = {k: v for k, v in self.params.items() if self.parameters[k] != v}
        check_ranges(self.name, self.params, self.ranges)

    @property
    def spec(self) -> str:
        """``aipo`` or ``aipo[alpha=0.01]``: the solver column of result rows."""
        return format_spec(self.name, self.overrides)

    def solve(self, problem, prior, lam: torch.Tensor, ctx: SolveContext) -> SolveResult:
        raise NotImplementedError


def make_solver(spec: str) -> Solver:
    name, params = parse_spec(spec)
    return SOLVERS.get(name)(**params)


def row_generator(problem, row: int, seed: int, *tag) -> torch.Generator:
    """Generator for row ``row``'s random draws, keyed by (tag, image id, seed index) — never by batch position."""
    return generator("solver", *tag, problem.image_ids[row], seed)


def row_randn(problem, shape, seed: int, *tag) -> torch.Tensor:
    """(B, *shape) standard normals, row i keyed by image i's id and the seed index."""
    return torch.stack([torch.randn(shape, generator=row_generator(problem, i, seed, *tag))
                        for i in range(problem.batch_size)])
