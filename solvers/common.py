"""Shared maths of the prior-based solvers: one counted evaluation, Adam/GD steps, the MLE stage, a trace helper
and a batched L-BFGS. Not a solver itself (it registers nothing).

Budget accounting (README contract 2): every call to :func:`evaluate` or :meth:`BudgetedPrior.decode*` costs one
pass per row taking part. The helpers here never call the prior more often than the caller asked for, so a solver
counts its passes by construction; the budget exception is a safety net, never a control-flow mechanism.

Rows are independent (README contract 3): Adam and GD are elementwise; the L-BFGS keeps history, ρ, γ (H_diag),
step and counters per row and reduces only within a row.

Box rule: x-space iterates are clamped to [0, 1] after every step (:func:`clamp01`); the MLE stage ends each step
with ``problem.project`` (AIPO App. A), which ends in the box.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench import objective
from bench.errors import UserError
from bench.solvers.base import Trace

# Tasks whose constraint set {x : f(x) = y} is a single point: x*(0) = Proj(y) without any prior pass (AIPO §4.1
# runs the MLE only on NCS and inpainting; README "Solvers").
POINT_CONSTRAINT_TASKS = ("denoise",)


def rowwise(v, like: torch.Tensor) -> torch.Tensor:
    """A scalar or a (B,) tensor shaped to broadcast over the rows of ``like`` (B, ...)."""
    v = torch.as_tensor(v, dtype=like.dtype, device=like.device)
    return v.view(-1, *([1] * (like.dim() - 1))) if v.dim() else v


def clamp01(x: torch.Tensor) -> torch.Tensor:
    """The box projection Proj_[0,1]^n of AIPO App. A."""
    return x.clamp(0.0, 1.0)


# --- one counted evaluation ---------------------------------------------------------------------------------------
@dataclass
class Eval:
    """Everything one prior pass at x gives, per row: the data term −log p_e(y − f(x)), log p_G(x) (discretised,
    :mod:`bench.objective`) and both gradients."""

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


# --- optimisers on x ----------------------------------------------------------------------------------------------
# AIPO Table 4's step size α, the default inner step of every x-space Adam solver (equal optimiser settings).
ADAM_LR = 0.05


class Adam:
    """Adam (Kingma & Ba 2014, Alg. 1) exactly as ``torch.optim.Adam`` computes it (betas 0.9/0.999, eps 1e-8),
    elementwise so rows never interact. ``lr`` is a float or a (B,) tensor (per-row step)."""

    def __init__(self, lr, betas=(0.9, 0.999), eps: float = 1e-8):
        self.lr, self.betas, self.eps = lr, betas, eps
        self.reset()

    def reset(self):
        self.t, self.m, self.v = 0, None, None

    def step(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        b1, b2 = self.betas
        if self.m is None:
            self.m, self.v = torch.zeros_like(x), torch.zeros_like(x)
        self.t += 1
        self.m = self.m * b1 + g * (1 - b1)
        self.v = self.v * b2 + g * g * (1 - b2)
        bc1, bc2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        denom = self.v.sqrt() / (bc2 ** 0.5) + self.eps
        return x - rowwise(self.lr, x) / bc1 * self.m / denom


class GD:
    """Plain gradient step x ← x − lr·g (AIPO Alg. 1 line 11, Alg. 2 line 5)."""

    def __init__(self, lr):
        self.lr = lr

    def reset(self):
        pass

    def step(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return x - rowwise(self.lr, x) * g


OPTIMIZERS = {"adam": Adam, "gd": GD}


def make_optimizer(name: str, lr):
    if name not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](lr)


# --- anytime trace ------------------------------------------------------------------------------------------------
class Tracer:
    """Records (passes used per row, L(x; Λ) per row) every ``every`` passes and when forced (the end).

    The loss recorded is the one the pass that was just spent computed — no pass is ever spent for tracing."""

    def __init__(self, prior, every: int):
        self.prior, self.every = prior, max(1, int(every))
        self.trace = Trace()
        self._last = None

    def __call__(self, loss: torch.Tensor, force: bool = False):
        n = int(self.prior.used.max())
        if (force or n % self.every == 0) and n != self._last:
            self.trace.record(self.prior.used, loss)
            self._last = n


# --- the MLE stage x*(0) ------------------------------------------------------------------------------------------
def has_point_constraint(problem) -> bool:
    return problem.task.name in POINT_CONSTRAINT_TASKS


def mle_passes(problem, ctx) -> int:
    """Passes the MLE stage will take: 0 where {f(x) = y} is one point (denoise), else ``ctx.mle_steps`` (AIPO §4.1
    uses 500), but never more than ``ctx.budget − 1`` so that one pass is left for the solver itself."""
    return 0 if has_point_constraint(problem) else max(0, min(int(ctx.mle_steps), int(ctx.budget) - 1))


def mle_start(problem) -> torch.Tensor:
    """Start of the MLE ascent, Alg. 2 line 2's x_0 = f⁻¹(y): the least-norm solution of f(x) = y (A⁺y for cs,
    the observed pixels with zero holes for inpaint), projected onto {f(x) = y} ∩ [0,1]^n (App. A)."""
    return problem.project(problem.least_norm())


def mle(problem, prior, steps: int, lr: float, tracer: Tracer | None = None, lam=None,
        optimizer: str = "gd") -> torch.Tensor:
    """x*(0) ∈ argmax p_G(x) s.t. f(x) = y (AIPO eq. 4) by projected gradient ascent (App. A), ``steps`` passes.

    Each step is a step of ``optimizer`` on −log p_G with step size ``lr``, followed by ``problem.project`` (App. A:
    affine projection alternated with the box clip, ending in the box). The returned point is the last projected
    iterate (not yet evaluated). Where the constraint set is a single point (denoising) x*(0) = clip(y, 0, 1) and
    no pass is spent. ``tracer``/``lam`` record L(x; Λ) of the iterates.

    ``optimizer = "gd"`` (default) is App. A's projected gradient method: for a small enough step P·g is an ascent
    direction. "adam" is offered, but on cs it is not guaranteed to ascend: Adam's per-pixel scaling D does not
    commute with the affine projection P, so P·D·g need not increase log p_G (measured on a random-weight 8×8
    RealNVP: log p fell from 21.5 to 18.4 over 500 projected Adam steps while projected GD rose to 22.6). For
    inpainting P is diagonal and both ascend. Step size: the solvers' default ``mle_lr = 3e-4`` was the best of
    {1e-2, 3e-3, 1e-3, 3e-4} for GD on a trained realnvp-xs at 16×16 (lfw-faces val, cs and inpaint, 500 steps;
    ||∇ log p|| ≈ 250–500 there, so 1e-3 already oscillates); it depends on the prior's gradient scale, hence
    tunable.
    """
    if has_point_constraint(problem):
        return problem.project(problem.y.clone())
    x = mle_start(problem)
    opt = make_optimizer(optimizer, lr)
    for _ in range(int(steps)):
        e = evaluate(problem, prior, x)
        if tracer is not None:
            tracer(e.loss(lam))
        x = problem.project(opt.step(x, -e.g_logp))
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


# --- batched L-BFGS -----------------------------------------------------------------------------------------------
START, ITER = 0, 1


@dataclass
class LBFGSResult:
    z: torch.Tensor            # (B, n) final iterate
    pending: torch.Tensor      # (B,) bool: final z was never evaluated (the caller decodes it once more)
    evals: torch.Tensor        # (B,) evaluations spent
    iterations: torch.Tensor   # (B,) L-BFGS iterations (torch's state['n_iter'])
    outer: torch.Tensor        # (B,) outer .step() calls started
    converged: torch.Tensor    # (B,) bool: stopped on tolerance_grad or a non-descent direction


def lbfgs_minimize(fun, z0: torch.Tensor, lr, steps: int, max_evals, *, max_iter: int = 20,
                   max_eval: int | None = None, history_size: int = 100, tolerance_grad: float = 1e-7,
                   tolerance_change: float = 1e-9, on_eval=None) -> LBFGSResult:
    """``steps`` calls of ``torch.optim.LBFGS(lr, max_iter, max_eval, tolerance_grad, tolerance_change,
    history_size, line_search_fn=None).step(closure)`` on every row at once, with all state per row.

    ``fun(z_rows, rows) -> (loss (k,), grad (k, n))`` evaluates the rows ``rows`` (a LongTensor) at ``z_rows``;
    it is called only for rows that need an evaluation, at most ``max_evals[i]`` times for row i (after which the
    row stops where it is). ``on_eval()`` runs after every batched evaluation (for the trace).

    Mirrors torch's ``LBFGS.step`` line by line, per row: first iteration d = −g, t = min(1, 1/||g||₁)·lr; later
    d from the two-loop recursion over a history of at most ``history_size`` pairs, the pair skipped when
    yᵀs ≤ 1e-10, H_diag = yᵀs/yᵀy; t = lr; stop on gᵀd > −tolerance_change (before the step), on max|g| ≤
    tolerance_grad, on max|t·d| ≤ tolerance_change, on |Δloss| < tolerance_change, after ``max_iter`` iterations
    or ``max_eval`` evaluations per ``.step`` call. Where torch would re-evaluate the closure at an unchanged
    point (the first closure call of the next ``.step`` after an early break) the cached value is reused: the
    result is identical and no pass is spent. Rows that stop on max|g| ≤ tolerance_grad or on a non-descent
    direction would repeat the same evaluation in every later ``.step``; they are frozen instead.
    """
    B, n = z0.shape
    dev, dt = z0.device, z0.dtype
    max_eval = int(max_eval if max_eval is not None else max_iter * 5 // 4)
    lr = torch.as_tensor(lr, dtype=dt, device=dev).expand(B).clone()
    max_evals = torch.as_tensor(max_evals, dtype=torch.long, device=dev).expand(B).clone()
    cap = max(1, min(int(history_size), int(steps) * int(max_iter)))

    z = z0.detach().clone()
    g = torch.zeros_like(z)
    loss = torch.zeros(B, dtype=torch.float64, device=dev)
    prev_g, prev_loss = torch.zeros_like(z), torch.zeros_like(loss)
    d, t = torch.zeros_like(z), torch.zeros(B, dtype=dt, device=dev)
    S = torch.zeros(B, cap, n, dtype=dt, device=dev)
    Y = torch.zeros_like(S)
    rho = torch.zeros(B, cap, dtype=dt, device=dev)
    count = torch.zeros(B, dtype=torch.long, device=dev)
    H = torch.ones(B, dtype=dt, device=dev)
    zeros_l = lambda: torch.zeros(B, dtype=torch.long, device=dev)  # noqa: E731
    n_glob, n_loc, cur_evals, outer, evals = zeros_l(), zeros_l(), zeros_l(), zeros_l(), zeros_l()
    phase = torch.full((B,), START, dtype=torch.long, device=dev)
    pending = torch.ones(B, dtype=torch.bool, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    converged = torch.zeros_like(done)
    steps = int(steps)

    while True:
        want = pending & ~done
        done |= want & (evals >= max_evals)          # out of passes: stop where it is (z pending)
        rows = want & ~done
        if not bool(rows.any()):
            break
        idx = rows.nonzero().squeeze(1)
        f_r, g_r = fun(z[idx], idx)
        loss[idx] = f_r.detach().to(torch.float64)
        g[idx] = g_r.detach()
        evals[idx] += 1
        pending[idx] = False
        if on_eval is not None:
            on_eval()
        gmax_small = g.abs().amax(1) <= tolerance_grad

        # closure call at the start of .step(): current_evals = 1, n_iter = 0, return if max|g| <= tol_grad
        start = rows & (phase == START)
        outer += start.long()
        cur_evals = torch.where(start, torch.ones_like(cur_evals), cur_evals)
        n_loc = torch.where(start, torch.zeros_like(n_loc), n_loc)
        conv = start & gmax_small
        # closure call inside the loop (ls_func_evals = 1) and the break tests that follow it
        ie = rows & (phase == ITER)
        cur_evals += ie.long()
        brk = ie & ((cur_evals >= max_eval) | gmax_small
                    | ((d * t[:, None]).abs().amax(1) <= tolerance_change)
                    | ((loss - prev_loss).abs() < tolerance_change))
        # a break ends this .step(); the next .step() starts at the same z with the cached closure value
        finished = brk & (outer >= steps)
        nxt = brk & (outer < steps)
        outer += nxt.long()
        cur_evals = torch.where(nxt, torch.ones_like(cur_evals), cur_evals)
        n_loc = torch.where(nxt, torch.zeros_like(n_loc), n_loc)
        conv |= nxt & gmax_small
        converged |= conv
        done |= conv | finished

        # one iteration of the while loop of LBFGS.step for the rows still inside a .step()
        it = rows & ~done
        if not bool(it.any()):
            continue
        n_loc += it.long()
        n_glob += it.long()
        first = it & (n_glob == 1)
        later = it & (n_glob > 1)
        if bool(later.any()):
            yv = g - prev_g
            s = d * t[:, None]
            ys = (yv * s).sum(1)
            upd = later & (ys > 1e-10)
            full = upd & (count == cap)
            if bool(full.any()):                     # drop the oldest pair (old_dirs.pop(0))
                fi = full.nonzero().squeeze(1)
                S[fi] = torch.roll(S[fi], -1, 1)
                Y[fi] = torch.roll(Y[fi], -1, 1)
                rho[fi] = torch.roll(rho[fi], -1, 1)
                count[fi] -= 1
            if bool(upd.any()):
                ui = upd.nonzero().squeeze(1)
                pos = count[ui]
                S[ui, pos] = s[ui]
                Y[ui, pos] = yv[ui]
                rho[ui, pos] = 1.0 / ys[ui]
                count[ui] += 1
                H[ui] = ys[ui] / (yv[ui] * yv[ui]).sum(1)
            # two-loop recursion; slots a row does not have contribute exact zeros
            k = int(count[later].max())
            q = -g
            al = torch.zeros(B, max(k, 1), dtype=dt, device=dev)
            for i in range(k - 1, -1, -1):
                valid = later & (count > i)
                a = torch.where(valid, (S[:, i] * q).sum(1) * rho[:, i], torch.zeros_like(t))
                al[:, i] = a
                q = q - a[:, None] * Y[:, i]
            r = q * H[:, None]
            for i in range(k):
                valid = later & (count > i)
                be = (Y[:, i] * r).sum(1) * rho[:, i]
                r = r + torch.where(valid, al[:, i] - be, torch.zeros_like(t))[:, None] * S[:, i]
            d = torch.where(later[:, None], r, d)
        H = torch.where(first, torch.ones_like(H), H)
        d = torch.where(first[:, None], -g, d)
        prev_g = torch.where(it[:, None], g, prev_g)
        prev_loss = torch.where(it, loss, prev_loss)
        t_first = torch.clamp(1.0 / g.abs().sum(1), max=1.0) * lr
        t = torch.where(first, t_first, torch.where(it, lr, t))
        gtd = (g * d).sum(1)
        stuck = it & (gtd > -tolerance_change)       # not a descent direction: torch breaks before stepping
        converged |= stuck
        done |= stuck
        step = it & ~stuck
        z = torch.where(step[:, None], z + t[:, None] * d, z)
        pending |= step
        at_max = step & (n_loc == max_iter)          # no closure call after the last iteration of a .step()
        phase = torch.where(step & ~at_max, torch.full_like(phase, ITER), phase)
        phase = torch.where(at_max, torch.full_like(phase, START), phase)
        done |= at_max & (outer >= steps)
    return LBFGSResult(z, pending, evals, n_glob, outer, converged)


# --- the fixed-Λ baselines of AIPO §4.1 ---------------------------------------------------------------------------
class MLEStart:
    """Mixin: start from the MLE x*(0) (AIPO eq. 4) — :func:`mle` with the solver's declared ``mle_lr`` and
    ``mle_optimizer``, charged ``mle_passes`` per row (shared by ``aipo``, ``aipo-uniform`` and ``mle-init``)."""

    def initial_point(self, problem, prior, lam, ctx, tracer=None):
        return mle(problem, prior, mle_passes(problem, ctx), self.params["mle_lr"], tracer, lam,
                   self.params["mle_optimizer"])


class FixedLambdaSolver:
    """Mixin for ``mle-init``, ``random-init`` and ``zero-init``: projected Adam on x at the row's fixed Λ from
    the subclass's :meth:`initial_point`, for every pass the start leaves of ``ctx.budget`` (AIPO §4.1: "All the
    three baselines have λ fixed throughout the optimization process ... we optimize x by Adam").

    Every row gets the same total budget ``ctx.budget``; passes the start does not use (no MLE) become extra Adam
    steps, as §4.1 assigns random and zero initialisation "an extra computing budget of the same amount". The last
    pass evaluates the returned iterate (its loss ends the trace). Clipping: the start and every Adam iterate are
    clamped to [0, 1].

    ``lr`` (Adam step size): AIPO gives none for the baselines; by default they use AIPO's own inner step, Table 4's
    α = 0.05 (``ADAM_LR``), so the only differences between AIPO and the three baselines are the start and the λ
    schedule (AIPO §4.1: every method optimises x by Adam at an equal budget). ``bench tune`` may search it.
    """

    parameters = {"lr": ADAM_LR}
    ranges = {"lr": ">0", "temperature": ">=0", "mle_lr": ">0", "mle_optimizer": "adam|gd"}
    tunable = ("lr",)
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
        x, _ = descend(problem, prior, x, lam, left, Adam(self.params["lr"]), tracer)
        steps = torch.full_like(init_passes, max(left - 1, 0))
        return SolveResult(x.detach(), tracer.trace, {"init_passes": init_passes, "iterations": steps})


def prior_image(prior, z: torch.Tensor) -> torch.Tensor:
    """G(z) clamped to the box, one pass per row (random/zero initialisation of AIPO §4.1)."""
    with torch.no_grad():
        return clamp01(prior.decode(z))
