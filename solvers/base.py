"""The solver contract, shared by every registered solver.

A solver is a class with declared ``parameters`` (:class:`bench.core.registry.Param`, or plain defaults from its paper)
and one method::

    solve(problem, prior, lam, ctx) -> SolveResult

plus, optionally, ``skip(problem) -> reason | None`` (the combination does not apply: the runner writes rows with
status ``skipped`` and the reason, and calls nothing else) and ``initial_point`` (where the solver starts).

- ``problem``: a :class:`bench.tasks.Problem` batch of B rows (each row one image × one λ);
- ``prior``: a :class:`bench.run.budget.BudgetedPrior` counting passes per row (``None`` for solvers with
  ``uses_prior = False``); calling past the budget raises and the run marks the rows ``overspend``;
- ``lam``: a (B,) tensor, the target Λ of each row;
- ``ctx``: :class:`SolveContext` with the per-row budget, the MLE stage length, the seed index and the device.

It returns a :class:`SolveResult`: ``x_hat`` (B, C, H, W) and per-row ``info`` (labelled solver-reported). The
harness — not the solver — scores ``x_hat`` and the trace points the solver marks with ``prior.trace_point()``
(README contract 1). By default a solver runs in its own process (bench/run/isolate.py): its ``prior`` is a proxy
of the harness's counted oracle, ``problem.image_ids`` are opaque row keys (use :func:`row_generator`), and it
has no files, network or other processes. Batched must equal single: row i's result may depend only on row
i's data, λ and seed (README contract 3). Randomness comes from :func:`row_generator` (cell identity).

Box rule (applies to every x-space solver): iterates are projected onto [0,1]^n after every step (AIPO App. A's
box; the logit preprocessing of the priors is undefined far outside it). Latent-space solvers return G(z), which
lies in the box by construction. Lasso returns its synthesis unclipped; the harness clips every x_hat before
scoring.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from bench.core.lazy import lazy_module
from bench.core.registry import Registry, as_params, defaults, format_spec, parse_spec, resolve_params
from bench.core.seeding import generator

torch = lazy_module("torch")

SOLVERS = Registry("solver", "bench.solvers")


@dataclass
class SolveContext:
    budget: int                # prior passes per row, MLE stage included
    mle_steps: int = 500       # passes the MLE stage x*(0) takes where f is not invertible (AIPO §4.1)
    seed: int = 0              # seed index of the cell
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    trace_every: int = 10      # record the anytime trace every this many passes


@dataclass
class Trace:
    """A solver's own record of its progress. The harness does not score it: anytime traces come from the trace
    points a solver marks on its prior (:meth:`bench.run.budget.BudgetedPrior.trace_point`: the last evaluated
    iterate, or image iterates ``x=`` the harness scores like x̂), with the harness's own pass counts and losses,
    so a solver cannot report a number that reaches f_ref, profiles or anytime scores."""

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


class Solver:
    """Base class and contract; subclasses register with ``@SOLVERS.register(name)``.

    Class attributes the harness reads:

    - ``parameters``: name -> :class:`~bench.core.registry.Param` (type, default, range or choices, tunable, doc), or a
      plain default (shorthand for ``Param(type(default), default)``; stored as a ``Param`` when the class is
      made). ``None`` as default: resolved later (e.g. from the task's ``solver_defaults``); a value given for it
      is still checked against the declared type. Values are checked when the solver is built
      (:func:`~bench.core.registry.resolve_params`), then by :meth:`validate`.
    - ``tunable``: parameters ``bench tune`` may search, in search order (default: the parameters declared
      ``tunable=True``, in declared order).
    - ``uses_prior``: False: gets ``prior=None`` and no budget (Lasso).
    - ``lam_independent``: True: the solution does not depend on λ; the runner solves once per image.
    - ``chaotic``: True: last-bit float differences (another CPU) change its answers; ``check`` judges it against
      the reference cell's spread instead of paired noise.
    - ``stochastic``: True: its answer depends on the seed index (random draws), not only on the data.
    - ``start``: for solvers that differ from others only in where they start (the fixed-Λ Adam family), a few
      words naming the start; the leaderboard's start-sensitivity table compares the solvers that declare one.
    - ``does_nothing``: True for the do-nothing baseline (the task's naive estimate from y): the leaderboard
      compares every solver's PSNR against it and shows its reconstruction once (:func:`bench.report.roles.role_solver`).
    - ``baseline``: True for the solver the leaderboard's paired comparison is against (AIPO; ``report
      --baseline NAME`` picks another).
    """

    name: str = "?"
    parameters: dict = {}
    tunable: tuple = ()
    uses_prior: bool = True
    lam_independent: bool = False
    chaotic: bool = False
    stochastic: bool = False
    start: str | None = None
    does_nothing: bool = False
    baseline: bool = False
    description: str = ""

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if "parameters" in cls.__dict__:
            cls.parameters = as_params(cls.parameters)
            declared = tuple(k for k, p in cls.parameters.items() if p.tunable)
            if declared and "tunable" not in cls.__dict__:
                cls.tunable = declared

    def __init__(self, **overrides):
        self.params = resolve_params("solver", self.name, self.parameters, overrides)
        base = self.defaults()
        self.overrides = {k: v for k, v in self.params.items() if base[k] != v}
        self.validate()

    def validate(self) -> None:
        """Raise UserError for parameter values that their declarations cannot rule out (a check across
        parameters, or against a library's list); called when the solver is built, after every value passed its
        :class:`~bench.core.registry.Param`. Default: nothing more to check."""

    @classmethod
    def defaults(cls) -> dict:
        """The declared default of every parameter (``None``: resolved at solve time)."""
        return defaults(cls.parameters)

    @property
    def spec(self) -> str:
        """``aipo`` or ``aipo[alpha=0.01]``: the solver column of result rows."""
        return format_spec(self.name, self.overrides)

    def skip(self, problem) -> str | None:
        """A one-line reason when this solver (with its parameters) does not apply to ``problem``'s task, else
        None (default). ``problem`` is what the solver would get (:meth:`bench.tasks.Problem.for_solver`). The
        runner then writes the cells' rows with status ``skipped`` and the reason, and runs nothing."""
        return None

    def initial_point(self, problem, prior, lam, ctx, tracer=None) -> torch.Tensor:
        """Where :meth:`solve` starts (x-space solvers; passes spent here count against the budget)."""
        raise NotImplementedError

    def solve(self, problem, prior, lam: torch.Tensor, ctx: SolveContext) -> SolveResult:
        """Solve the B rows of ``problem`` (see the module docstring) and return x̂ with its anytime trace."""
        raise NotImplementedError


def make_solver(spec: str) -> Solver:
    name, params = parse_spec(spec)
    return SOLVERS.get(name)(**params)


# Set in an isolated solver's process (bench/run/isolate.py), where ``problem.image_ids`` are opaque row keys: the
# harness derives the seed from the real image id, so the draws are the same in and out of isolation.
_row_seed = None


def row_generator(problem, row: int, seed: int, *tag) -> torch.Generator:
    """Generator for row ``row``'s random draws, keyed by (tag, image id, seed index) — never by batch position."""
    if _row_seed is None:
        return generator("solver", *tag, problem.image_ids[row], seed)
    g = torch.Generator(device="cpu")
    g.manual_seed(_row_seed(problem.image_ids[row], seed, tag))
    return g


def row_randn(problem, shape, seed: int, *tag) -> torch.Tensor:
    """(B, *shape) standard normals, row i keyed by image i's id and the seed index."""
    return torch.stack([torch.randn(shape, generator=row_generator(problem, i, seed, *tag))
                        for i in range(problem.batch_size)])
