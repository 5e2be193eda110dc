"""The stages of the prior-based solvers: one counted evaluation (:class:`Eval`), the anytime trace, the MLE stage
x*(0), projected descent at fixed λ, and the fixed-Λ baselines' mixins. Not a solver itself (it registers nothing).

Budget accounting (README contract 2): every call to :func:`evaluate` or :meth:`BudgetedPrior.decode*` costs one
pass per row taking part. The helpers here never call the prior more often than the caller asked for, so a solver
counts its passes by construction; the budget exception is a safety net, never a control-flow mechanism.

Box rule: x-space iterates are clamped to [0, 1] after every step (:func:`bench.solvers.optim.clamp01`); the MLE
stage ends each step with ``problem.project`` (AIPO App. A), which ends in the box.
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.core import objective
from bench.core.lazy import lazy_module
from bench.core.registry import Param
from bench.solvers.base import Trace
from bench.solvers.optim import ADAM_LR, LR_DECAY, OPTIMIZERS, Adam, clamp01, make_optimizer, rowwise

torch = lazy_module("torch")


# --- one counted evaluation ---------------------------------------------------------------------------------------
@dataclass
class Eval:
    """Everything one prior pass at x gives, per row: the data term −log p_e(y − f(x)), log p_G(x) (discretised,
    :mod:`bench.core.objective`) and both gradients."""

    nll: torch.Tensor
    logp: torch.Tensor
    g_nll: torch.Tensor
    g_logp: torch.Tensor

    def loss(self, lam) -> torch.Tensor:
        """L(x; λ) = −log p_e(y − f(x)) − λ·log p_G(x) (AIPO eq. 3), per row."""
        return objective.map_loss(self.nll, self.logp, torch.as_tensor(lam, dtype=self.nll.dtype,
                                                                         device=self.nll.device))

    def grad(self, lam) -> torch.Tensor:
        """∇ₓ L(x; λ) = −fᵀ(y − f(x))/σ² − λ∇ log p_G(x)."""
        return self.g_nll - rowwise(lam, self.g_logp) * self.g_logp


def evaluate(problem, prior, x: torch.Tensor) -> Eval:
    """One pass per row: log p_G(x) with its gradient (autograd), plus the data term and its gradient (free)."""
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        logp = prior.log_prob(xr)
        (g_logp,) = torch.autograd.grad(logp.sum(), xr)  # rows are independent: d(sum)/dx_i = d logp_i/dx_i
    x = x.detach()
    return Eval(problem.data_nll(x), logp.detach(), problem.data_nll_grad(x), g_logp)


# --- anytime trace ------------------------------------------------------------------------------------------------
class Tracer:
    """Marks an anytime-trace point (:meth:`bench.run.budget.BudgetedPrior.trace_point`) every ``every`` passes and
    when forced (the end). The harness records the MAP loss of the iterate the pass just spent evaluated, from its
    own log p_G and its own copy of the problem: no pass is spent for tracing and no solver-computed number is
    used. ``trace`` stays empty (solver-reported losses are ignored); it is kept for the :class:`SolveResult`."""

    def __init__(self, prior, every: int):
        self.prior, self.every = prior, max(1, int(every))
        self.trace = Trace()
        self._last = None

    def __call__(self, loss: torch.Tensor | None = None, force: bool = False):
        n = int(self.prior.used.max())
        if (force or n % self.every == 0) and n != self._last:
            self.prior.trace_point()
            self._last = n


# --- the MLE stage x*(0) ------------------------------------------------------------------------------------------
def has_point_constraint(problem) -> bool:
    """Whether {x : f(x) = y} is a single point (the task declares ``point_constraint``): x*(0) = Proj(y) without
    any prior pass (AIPO §4.1 runs the MLE only on NCS and inpainting; README "Solvers")."""
    return bool(problem.task.point_constraint)


def mle_passes(problem, ctx) -> int:
    """Passes the MLE stage will take: 0 where {f(x) = y} is one point (denoise), else ``ctx.mle_steps`` (AIPO §4.1
    uses 500), but never more than ``ctx.budget − 1`` so that one pass is left for the solver itself."""
    return 0 if has_point_constraint(problem) else max(0, min(int(ctx.mle_steps), int(ctx.budget) - 1))


def mle_start(problem) -> torch.Tensor:
    """Start of the MLE ascent, Alg. 2 line 2's x_0 = f⁻¹(y): the least-norm solution of f(x) = y (A⁺y for cs,
    the observed pixels with zero holes for inpaint), projected onto {f(x) = y} ∩ [0,1]^n (App. A)."""
    return problem.project(problem.least_norm())


def mle(problem, prior, steps: int, lr: float, tracer: Tracer | None = None, lam=None,
        optimizer: str = "gd", decay: float = 0.0) -> torch.Tensor:
    """x*(0) ∈ argmax p_G(x) s.t. f(x) = y (AIPO eq. 4) by projected ascent (App. A), ``steps`` passes.

    Each step is a step of ``optimizer`` on −log p_G with step size ``lr`` (decayed by ``decay``,
    :func:`bench.solvers.optim.decayed`), followed by ``problem.project`` (App. A: affine projection alternated
    with the box clip, ending in the box). The returned point is the last projected iterate (not yet evaluated).
    Where the constraint set is a single point (denoising) x*(0) = clip(y, 0, 1) and no pass is spent.
    ``tracer``/``lam`` record L(x; Λ) of the iterates.

    - ``"gd"``: App. A's projected gradient method (the paper protocol; step 3e-4 was the best of {1e-2, 3e-3,
      1e-3, 3e-4} for GD on a trained realnvp-xs at 16×16, where ||∇ log p|| ≈ 250–500). It ascends slowly: in 50
      steps the holes of an inpainting problem stay near the start's zeros.
    - ``"adam"`` (the robust protocol): Adam fed the *tangent* gradient P·g (P the projection onto the null
      space of f, :meth:`bench.tasks.Problem.tangent`). Adam's per-pixel scaling D does not commute with P, but
      P·D·(P·g) is still an ascent direction, since gᵀP·D·P·g = (P·g)ᵀD(P·g) > 0; fed the raw g, P·D·g need not
      be (measured on a random-weight 8×8 RealNVP: log p fell from 21.5 to 18.4 over 500 such steps).
    """
    if has_point_constraint(problem):
        return problem.project(problem.y.clone())
    x = mle_start(problem)
    opt = make_optimizer(optimizer, lr, decay)
    for _ in range(int(steps)):
        e = evaluate(problem, prior, x)
        if tracer is not None:
            tracer(e.loss(lam))
        g = problem.tangent(-e.g_logp) if optimizer == "adam" else -e.g_logp
        x = problem.project(opt.step(x, g))
    return x


def descend(problem, prior, x, lam, n_evals: int, opt, tracer: Tracer) -> tuple[torch.Tensor, Eval | None]:
    """Projected descent on L(x; λ) at fixed λ for ``n_evals`` passes (AIPO §4.1 baselines).

    Each pass evaluates x and (except the last) takes one step followed by the box clamp. The last pass only
    evaluates, so the returned x is the last evaluated iterate and the trace ends on its exact loss."""
    e = None
    for k in range(int(n_evals)):
        e = evaluate(problem, prior, x)
        last = k == n_evals - 1
        tracer(e.loss(lam), force=last)
        if not last:
            x = clamp01(opt.step(x, e.grad(lam)))
    return x, e


# --- the fixed-Λ baselines of AIPO §4.1 ---------------------------------------------------------------------------
STEP_PARAMS = {
    "lr_decay": Param(float, LR_DECAY, range=">=0", protocols={"paper": 0.0},
                      doc="step decay τ in passes: step t is lr·τ/(τ + t − 1); 0 = constant (paper protocol)"),
}
MLE_PARAMS = {
    "mle_lr": Param(float, 0.01, range=">0", tunable=True, protocols={"paper": 3e-4},
                    doc="step of the MLE stage's projected ascent (paper protocol: GD at 3e-4)"),
    "mle_optimizer": Param(str, "adam", choices=tuple(OPTIMIZERS), protocols={"paper": "gd"},
                           doc="MLE stage optimiser: adam on the tangent gradient, or gd (App. A, paper protocol)"),
}


class MLEStart:
    """Mixin: start from the MLE x*(0) (AIPO eq. 4) — :func:`mle` with the solver's declared ``mle_lr``,
    ``mle_optimizer`` and ``lr_decay``, charged ``mle_passes`` per row (shared by ``aipo``, ``aipo-uniform`` and
    ``mle-init``, which declare :data:`MLE_PARAMS`)."""

    def initial_point(self, problem, prior, lam, ctx, tracer=None):
        return mle(problem, prior, mle_passes(problem, ctx), self.params["mle_lr"], tracer, lam,
                   self.params["mle_optimizer"], self.params["lr_decay"])


class FixedLambdaSolver:
    """Mixin for ``mle-init``, ``random-init`` and ``zero-init``: projected Adam on x at the row's fixed Λ from
    the subclass's :meth:`initial_point`, for every pass the start leaves of ``ctx.budget`` (AIPO §4.1: "All the
    three baselines have λ fixed throughout the optimization process ... we optimize x by Adam").

    Every row gets the same total budget ``ctx.budget``; passes the start does not use (no MLE) become extra Adam
    steps, as §4.1 assigns random and zero initialisation "an extra computing budget of the same amount". The last
    pass evaluates the returned iterate (its loss ends the trace). Clipping: the start and every Adam iterate are
    clamped to [0, 1].

    ``lr`` (Adam step size): AIPO gives none for the baselines; by default they use AIPO's own inner step, Table 4's
    α = 0.05 (``ADAM_LR``), with AIPO's step decay ``lr_decay`` (the protocol's), so the only differences between
    AIPO and the three baselines are the start and the λ schedule (AIPO §4.1: every method optimises x by Adam at
    an equal budget). ``bench tune`` may search it.
    """

    parameters = {"lr": Param(float, ADAM_LR, range=">0", tunable=True,
                              doc="Adam step size (AIPO Table 4's α by default)"),
                  **STEP_PARAMS}
    uses_prior = True
    lam_independent = False

    def initial_point(self, problem, prior, lam, ctx, tracer: Tracer | None = None) -> torch.Tensor:
        raise NotImplementedError

    def solve(self, problem, prior, lam, ctx):
        from bench.solvers.base import SolveResult

        lam = lam.to(problem.y.device, problem.y.dtype)
        tracer = Tracer(prior, ctx.trace_every)
        x = self.initial_point(problem, prior, lam, ctx, tracer)
        init_passes = prior.used.clone()
        left = int(ctx.budget - int(prior.used.max()))
        x, _ = descend(problem, prior, x, lam, left, Adam(self.params["lr"], self.params["lr_decay"]), tracer)
        steps = torch.full_like(init_passes, max(left - 1, 0))
        return SolveResult(x.detach(), tracer.trace, {"init_passes": init_passes, "iterations": steps})


def prior_image(prior, z: torch.Tensor) -> torch.Tensor:
    """G(z) clamped to the box, one pass per row (random/zero initialisation of AIPO §4.1)."""
    with torch.no_grad():
        return clamp01(prior.decode(z))
