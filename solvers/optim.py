"""The optimisers of the solvers: Adam and GD steps on x, and a batched L-BFGS (per-row state). Not a solver itself
(it registers nothing).

Rows are independent (README contract 3): Adam and GD are elementwise; the L-BFGS keeps history, ρ, γ (H_diag),
step and counters per row and reduces only within a row.

Box rule: x-space iterates are clamped to [0, 1] after every step (:func:`clamp01`).
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.errors import UserError
from bench.lazy import lazy_module

torch = lazy_module("torch")


def rowwise(v, like: torch.Tensor) -> torch.Tensor:
    """A scalar or a (B,) tensor shaped to broadcast over the rows of ``like`` (B, ...)."""
    v = torch.as_tensor(v, dtype=like.dtype, device=like.device)
    return v.view(-1, *([1] * (like.dim() - 1))) if v.dim() else v


def clamp01(x: torch.Tensor) -> torch.Tensor:
    """The box projection Proj_[0,1]^n of AIPO App. A."""
    return x.clamp(0.0, 1.0)


# --- optimisers on x ----------------------------------------------------------------------------------------------
# AIPO Table 4's step size α, the default inner step of every x-space Adam solver (equal optimiser settings).
ADAM_LR = 0.05
# The robust protocol's step decay τ (passes): step t (1-based) is lr·τ/(τ + t − 1). The harness's own choice,
# measured (README "Protocols"): with a constant step, Adam keeps moving around the optimum and more budget can
# raise the loss; with this decay the loss at the full budget is below the loss at half of it. 0 = constant.
LR_DECAY = 100.0


def decayed(lr, decay: float, t: int):
    """The step of iteration ``t`` (1-based): ``lr`` if ``decay`` is 0, else lr·decay/(decay + t − 1)."""
    return lr if not decay else lr * (decay / (decay + t - 1))


class Adam:
    """Adam (Kingma & Ba 2014, Alg. 1) exactly as ``torch.optim.Adam`` computes it (betas 0.9/0.999, eps 1e-8),
    elementwise so rows never interact. ``lr`` is a float or a (B,) tensor (per-row step); ``decay`` τ > 0 makes
    step t take lr·τ/(τ + t − 1) (:func:`decayed`; t counts steps since the last :meth:`reset`)."""

    def __init__(self, lr, decay: float = 0.0, betas=(0.9, 0.999), eps: float = 1e-8):
        self.lr, self.decay, self.betas, self.eps = lr, decay, betas, eps
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
        return x - rowwise(decayed(self.lr, self.decay, self.t), x) / bc1 * self.m / denom


class GD:
    """Plain gradient step x ← x − lr·g (AIPO Alg. 1 line 11, Alg. 2 line 5); ``decay`` as for :class:`Adam`."""

    def __init__(self, lr, decay: float = 0.0):
        self.lr, self.decay = lr, decay
        self.reset()

    def reset(self):
        self.t = 0

    def step(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        self.t += 1
        return x - rowwise(decayed(self.lr, self.decay, self.t), x) * g


OPTIMIZERS = {"adam": Adam, "gd": GD}


def make_optimizer(name: str, lr, decay: float = 0.0):
    if name not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](lr, decay)


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
