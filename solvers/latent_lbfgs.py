"""``latent-lbfgs``: Asim et al. (2020) — L-BFGS in the latent space of the flow from z0 = 0 (GlowIP's settings)."""
from __future__ import annotations

import math

from bench.core.errors import UserError
from bench.core.lazy import lazy_module
from bench.core.registry import Param
from bench.solvers.base import SOLVERS, Solver, SolveResult
from bench.solvers.lbfgs import lbfgs_minimize
from bench.solvers.linesearch import LINE_SEARCHES
from bench.solvers.optim import clamp01

torch = lazy_module("torch")

# Per-task settings live with the tasks (``solver_defaults["latent-lbfgs"]`` of tasks/*.py): GlowIP's (Asim
# App. A: "we set the number of iterations and learning rate for denoising, compressed sensing, and inpainting to
# be 20, 1; 30, 0.1; and 20, 1"), and γ: 0 for cs and inpaint (Asim §2); for denoising Asim's best value at
# σ = 0.1 is γ = 1 (Fig. 2; Fig. 12 caption) at n = 64·64·3 = 12288, which we rescale to the image size
# (``ASIM_N``, see :meth:`LatentLBFGS.resolved`). A task without them cannot run latent-lbfgs unless the grid
# gives lr, steps and gamma (:meth:`LatentLBFGS.skip`).
TASK_PARAMS = ("lr", "steps", "gamma")
ASIM_N = 64 * 64 * 3
PENALTIES = ("l2", "l2sq")


@SOLVERS.register("latent-lbfgs")
class LatentLBFGS(Solver):
    """min_z ||y − f(G(z))||² + γ·||z|| (Asim eq. 2; ``penalty = "l2sq"`` uses γ||z||², their App. B variant),
    z0 = 0, solved with L-BFGS (by default without line search), returning x̂ = clip(G(ẑ), 0, 1).

    The optimiser is :func:`bench.solvers.lbfgs.lbfgs_minimize`, a per-row mirror of
    ``torch.optim.LBFGS(lr, max_iter=20, max_eval=25, history_size=100, tolerance_grad=1e-7,
    tolerance_change=1e-9)`` called ``steps`` times (GlowIP calls ``optimizer.step(closure)`` once per "step"):
    first-iteration step min(1, 1/||g||₁)·lr, curvature pairs skipped per row when yᵀs ≤ 1e-10, rows that
    converge are frozen. History, ρ, H_diag, step and counters are per row, so batched equals single.

    Parameters left at ``None`` take the task's default (``solver_defaults["latent-lbfgs"]`` of the task, GlowIP's
    settings: cs lr 0.1 × 30 steps, denoise and inpaint lr 1 × 20 steps; γ = 0 for cs and inpaint (Asim)); on a
    task that declares none, the solver is skipped unless the grid sets them. Denoising γ: Asim's best, γ = 1 at
    σ = 0.1 and n = 12288 (Fig. 2), times sqrt(n/12288): the data term's gradient grows like √n (residual ≈ σ√n) while that
    of γ||z|| has norm γ, so this keeps their balance at other image sizes (γ ≈ 0.144 at 16×16 grey). Unscaled,
    γ = 1 at n = 64 pins ẑ at the kink z = 0, where the L-BFGS secant pairs blow up (measured: G(z) diverges).
    An explicit ``gamma`` is used as given. The resolved values are returned per row in ``info``.

    ``line_search``: ``"none"`` (default) is Asim's/GlowIP's setting, fixed steps of size lr. ``"strong_wolfe"``
    is the harness's own addition, not Asim's setting: ``torch.optim.LBFGS``'s ``line_search_fn="strong_wolfe"``
    (bracketing and zoom with cubic interpolation, Nocedal & Wright Alg. 3.5/3.6; c1 = 1e-4, c2 = 0.9, at most
    max_eval − current_evals evaluations per search), per row: each row searches with its own state and
    evaluations. With lr = 1 the fixed steps can diverge (G(z) non-finite) on denoising; the line search moves
    only to an evaluated point no higher than its start (non-finite values aside). Each trial point costs one pass; a row whose budget runs out
    mid-search keeps the best point it evaluated. With it the trace records every evaluated point, trial points
    included.

    Budget: one pass (``decode_with_log_prob`` + backward) per evaluation, at most ``ctx.budget − 1`` per row;
    the last pass decodes ẑ when the final iterate was not evaluated. The trace records the returned image
    clip(G(z), 0, 1) of the evaluated iterates, and the harness scores it like x̂ (at every λ of the cell).
    ``lam_independent``: the solution ignores λ; the harness scores it at every λ. Clipping: only the returned
    image (G maps into (−0.056, 1.056) through the logit preprocessing).
    """

    parameters = {"lr": Param(float, None, range=">0", tunable=True, doc="L-BFGS step size (task default)"),
                  "steps": Param(int, None, range=">=1", doc="outer LBFGS.step calls (task default)"),
                  "gamma": Param(float, None, range=">=0",
                                 doc="weight of the latent penalty (task default, rescaled to n)"),
                  "penalty": Param(str, "l2", choices=PENALTIES, doc="latent penalty: " + ", ".join(PENALTIES)),
                  "max_iter": Param(int, 20, range=">=1", doc="inner iterations per LBFGS.step"),
                  "history_size": Param(int, 100, range=">=1", doc="L-BFGS memory"),
                  "tolerance_grad": Param(float, 1e-7, range=">=0", doc="torch LBFGS tolerance_grad"),
                  "tolerance_change": Param(float, 1e-9, range=">=0", doc="torch LBFGS tolerance_change"),
                  "line_search": Param(str, "none", choices=LINE_SEARCHES,
                                       doc="line search: none (GlowIP, fixed step lr) or strong_wolfe (torch LBFGS "
                                           "line_search_fn; not Asim's)")}
    lam_independent = True
    chaotic = True   # L-BFGS without a line search: other CPUs' last bits lead to other local minima
    description = "Asim et al. 2020: LBFGS on min_z ||y - f(G(z))||^2 + gamma ||z|| from z0 = 0 (GlowIP settings)"
    # paper: Asim et al. 2020, sec. 2 and App. A

    def resolved(self, task, n: int = ASIM_N) -> dict:
        """The parameters with ``None`` replaced by ``task``'s default (its ``solver_defaults``) at image size
        ``n``; a parameter neither given nor defaulted stays ``None`` (see :meth:`skip`)."""
        base = dict(task.solver_defaults.get(self.name, {}))
        if "gamma" in base:
            base["gamma"] = base["gamma"] * math.sqrt(n / ASIM_N)
        return {k: (base[k] if v is None and k in base else v) for k, v in self.params.items()}

    def _missing(self, problem) -> list:
        p = self.resolved(problem.task, problem.n)
        return [k for k in TASK_PARAMS if p[k] is None]

    def skip(self, problem):
        missing = self._missing(problem)
        if missing:
            return (f"latent-lbfgs: task {problem.task.name!r} declares no default for parameter(s) "
                    f"{', '.join(missing)} (its solver_defaults); set them, e.g. "
                    f"latent-lbfgs[{','.join(f'{k}=...' for k in missing)}]")
        return None

    def initial_point(self, problem, prior, lam, ctx, tracer=None):
        z0 = torch.zeros((problem.batch_size, *prior.latent_shape), dtype=problem.y.dtype, device=problem.y.device)
        with torch.no_grad():
            return clamp01(prior.decode(z0))

    def solve(self, problem, prior, lam, ctx):
        from bench.solvers.base import Trace

        reason = self.skip(problem)
        if reason:
            raise UserError(reason)
        p = self.resolved(problem.task, problem.n)
        dev, dt = problem.y.device, problem.y.dtype
        B = problem.batch_size
        shape = (B, *prior.latent_shape)
        gamma, sq = float(p["gamma"]), p["penalty"] == "l2sq"
        x_last = problem.zeros()
        obj_last = torch.full((B,), float("nan"), dtype=torch.float64, device=dev)
        obj_start = obj_last.clone()
        trace, ticks = Trace(), [0]

        def objective(fit, zf):
            # γ||z|| with its subgradient 0 at z = 0 (the clamp's backward is 0 there), or γ||z||²
            pen = zf.pow(2).sum(1) if sq else zf.pow(2).sum(1).clamp(min=1e-30).sqrt()
            return fit + gamma * pen if gamma else fit

        def fun(z_rows, rows):
            sub = problem if len(rows) == B else problem.take(rows.cpu())
            rl = rows.cpu().tolist() if len(rows) != B else None
            with torch.enable_grad():
                z = z_rows.detach().view(len(rows), *prior.latent_shape).requires_grad_(True)
                x, _ = prior.decode_with_log_prob(z, rows=rl)
                fit = sub.data_fit(x)
                zf = z.flatten(1)
                obj = objective(fit, zf)
                (g,) = torch.autograd.grad(obj.sum(), z)
            x_last[rows] = x.detach()
            obj_last[rows] = obj.detach().double()
            obj_start[rows] = torch.where(torch.isnan(obj_start[rows]), obj_last[rows], obj_start[rows])
            return obj.detach(), g.flatten(1)

        def on_eval():
            ticks[0] += 1
            if ticks[0] % max(1, ctx.trace_every) == 0:
                prior.trace_point(x=clamp01(x_last))

        res = lbfgs_minimize(fun, torch.zeros(B, math.prod(shape[1:]), dtype=dt, device=dev),
                             float(p["lr"]), int(p["steps"]), ctx.budget - 1 - prior.used.to(dev),
                             max_iter=int(p["max_iter"]), history_size=int(p["history_size"]),
                             tolerance_grad=float(p["tolerance_grad"]),
                             tolerance_change=float(p["tolerance_change"]), on_eval=on_eval,
                             line_search=p["line_search"])
        pend = res.pending.nonzero().squeeze(1)
        if len(pend) and int(prior.remaining(pend.cpu()).min()) >= 1:   # always true unless ctx.budget == 0
            rl = pend.cpu().tolist()
            with torch.no_grad():
                x = prior.decode(res.z[pend].view(len(rl), *shape[1:]), rows=rl)
            sub = problem.take(pend.cpu())
            x_last[pend] = x
            obj_last[pend] = objective(sub.data_fit(x), res.z[pend]).double()
        prior.trace_point(x=clamp01(x_last))
        info = {"lr": torch.full((B,), float(p["lr"])), "steps": torch.full((B,), int(p["steps"])),
                "gamma": torch.full((B,), gamma), "iterations": res.iterations.cpu(),
                "evaluations": res.evals.cpu(), "converged": res.converged.cpu(),
                "objective": obj_last.cpu(), "objective_start": obj_start.cpu()}
        return SolveResult(clamp01(x_last).detach(), trace, info)
