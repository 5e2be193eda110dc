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


def _direction(g, prev_g, d, t, S, Y, rho, count, H, later, cap):
    """The L-BFGS direction of the rows ``later`` (not their first iteration): the curvature pair (s, y) of the
    last step is stored when yᵀs > 1e-10 (the oldest dropped at ``cap``), H_diag = yᵀs/yᵀy, then the two-loop
    recursion. Updates S, Y, rho, count, H in place; returns d (other rows unchanged)."""
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
    al = torch.zeros(g.shape[0], max(k, 1), dtype=g.dtype, device=g.device)
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
    return torch.where(later[:, None], r, d)


def lbfgs_minimize(fun, z0: torch.Tensor, lr, steps: int, max_evals, *, max_iter: int = 20,
                   max_eval: int | None = None, history_size: int = 100, tolerance_grad: float = 1e-7,
                   tolerance_change: float = 1e-9, on_eval=None, line_search: str = "none") -> LBFGSResult:
    """``steps`` calls of ``torch.optim.LBFGS(lr, max_iter, max_eval, tolerance_grad, tolerance_change,
    history_size, line_search_fn=None).step(closure)`` on every row at once, with all state per row
    (``line_search="strong_wolfe"``: ``line_search_fn="strong_wolfe"``, see below).

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

    ``line_search="strong_wolfe"``: torch's ``_strong_wolfe`` per row (c1 = 1e-4, c2 = 0.9, its own
    tolerance_change 1e-9 as torch leaves it, max_ls = max_eval − current_evals; first trial step t as above,
    then bracketing and zoom with cubic interpolation, Nocedal & Wright Alg. 3.5/3.6). Each row has its own search
    state and spends its own evaluations; every pass evaluates the trial points of all rows still searching
    (``fun`` on those rows only), so batched equals single. The iterate moves to the search's returned point with
    its cached loss and gradient (no re-evaluation). A row whose budget runs out mid-search stops at the best
    point it evaluated (lowest loss among the search's start and its trial points); ``pending`` then says whether
    that point differs from the last one evaluated.
    """
    if line_search not in LINE_SEARCHES:
        raise UserError(f"unknown line search {line_search!r}; valid: {', '.join(LINE_SEARCHES)}")
    B, n = z0.shape
    dev, dt = z0.device, z0.dtype
    max_eval = int(max_eval if max_eval is not None else max_iter * 5 // 4)
    lr = torch.as_tensor(lr, dtype=dt, device=dev).expand(B).clone()
    max_evals = torch.as_tensor(max_evals, dtype=torch.long, device=dev).expand(B).clone()
    cap = max(1, min(int(history_size), int(steps) * int(max_iter)))
    if line_search == "strong_wolfe":
        return _lbfgs_strong_wolfe(fun, z0, lr, steps, max_evals, max_iter, max_eval, cap, tolerance_grad,
                                   tolerance_change, on_eval)

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
            d = _direction(g, prev_g, d, t, S, Y, rho, count, H, later, cap)
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


# --- strong-Wolfe line search (torch.optim.LBFGS(line_search_fn="strong_wolfe")) --------------------------------
LINE_SEARCHES = ("none", "strong_wolfe")


def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """torch's ``_cubic_interpolate`` (torch/optim/lbfgs.py, from torch7's polyinterp.lua), unchanged: the
    minimiser of the cubic through (x1, f1, g1), (x2, f2, g2) clamped to ``bounds``, else the bounds' midpoint."""
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1 ** 2 - g1 * g2
    if d2_square >= 0:
        d2 = d2_square.sqrt()
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def _strong_wolfe(t, d, f, g, gtd, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25):
    """torch's ``_strong_wolfe`` (torch/optim/lbfgs.py, from torch7's lswolfe.lua; Nocedal & Wright Alg. 3.5
    bracketing + Alg. 3.6 zoom with cubic interpolation) for ONE row, as a generator: each ``obj_func(x, t, d)``
    of torch becomes ``f_new, g_new = yield t`` (the caller evaluates the point x + t·d). Returns torch's
    ``(f_new, g_new, t, ls_func_evals)``: the bracket's low point and the evaluations spent. Same statements,
    same order, same scalar types as torch (f a Python float, gtd a 0-dim tensor), so the decisions match."""
    d_norm = d.abs().max()
    g = g.clone(memory_format=torch.contiguous_format)
    f_new, g_new = yield t
    ls_func_evals = 1
    gtd_new = g_new.dot(d)

    # bracket an interval containing a point satisfying the Wolfe criteria
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.clone()], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.clone()], [gtd_prev, gtd_new]
            break
        # interpolate
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        # next step
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new.clone(), gtd_new
        f_new, g_new = yield t
        ls_func_evals += 1
        gtd_new = g_new.dot(d)
        ls_iter += 1

    # reached max number of iterations?
    if ls_iter == max_ls:
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]

    # zoom phase: refine the bracket until a point satisfies the criteria
    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:   # line-search bracket is so small
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1])
        # sufficient progress? t too close to a boundary twice in a row (or on/outside it): 0.1·|bracket| inside
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                if abs(t - max(bracket)) < abs(t - min(bracket)):
                    t = max(bracket) - eps
                else:
                    t = min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, g_new = yield t
        ls_func_evals += 1
        gtd_new = g_new.dot(d)
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            # Armijo condition not satisfied or not lower than lowest point
            bracket[high_pos], bracket_f[high_pos] = t, f_new
            bracket_g[high_pos], bracket_gtd[high_pos] = g_new.clone(), gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True                                             # Wolfe conditions satisfied
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                # old high becomes new low
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos], bracket_gtd[high_pos] = bracket_g[low_pos], bracket_gtd[low_pos]
            # new point becomes new low
            bracket[low_pos], bracket_f[low_pos] = t, f_new
            bracket_g[low_pos], bracket_gtd[low_pos] = g_new.clone(), gtd_new

    return bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], ls_func_evals


def _lbfgs_strong_wolfe(fun, z0, lr, steps, max_evals, max_iter, max_eval, cap, tolerance_grad,
                        tolerance_change, on_eval) -> LBFGSResult:
    """:func:`lbfgs_minimize` with ``line_search="strong_wolfe"``: an event loop over rows. A row is waiting for
    its first evaluation (``need``), inside a line search (``gens[i]``, a :func:`_strong_wolfe` generator that
    asks for the point z + tq·d), or done; every pass evaluates all waiting rows at once; the line-search
    decisions are scalar, per row (a Python loop over the rows evaluated, negligible next to a prior pass)."""
    B, n = z0.shape
    dev, dt = z0.device, z0.dtype
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
    need = torch.ones(B, dtype=torch.bool, device=dev)      # the closure call at the start of the first .step()
    fresh = torch.zeros_like(need)                          # z is the row's last evaluated point
    done = torch.zeros_like(need)
    converged = torch.zeros_like(need)
    gens = [None] * B
    tq = torch.zeros(B, dtype=dt, device=dev)               # the step a searching row asks to evaluate
    trials: list = [[] for _ in range(B)]                   # (f, t, g) of the current search's evaluated points
    steps = int(steps)

    while True:
        searching = torch.tensor([gen is not None for gen in gens], dtype=torch.bool, device=dev)
        want = (need | searching) & ~done
        broke = want & (evals >= max_evals)                 # out of passes: stop at the best evaluated point
        for i in broke.nonzero().squeeze(1).tolist():
            if gens[i] is not None:
                gens[i] = None
                best, bf = None, float(loss[i])
                for k, (fk, tk, gk) in enumerate(trials[i]):
                    if fk < bf:                             # NaN never wins; ties keep the earlier point
                        best, bf = k, fk
                if best is not None:
                    fk, tk, gk = trials[i][best]
                    z[i] = z[i] + tk * d[i]
                    loss[i], g[i] = fk, gk
                    fresh[i] = best == len(trials[i]) - 1
                trials[i] = []
        done |= broke
        rows = want & ~done
        if not bool(rows.any()):
            break
        idx = rows.nonzero().squeeze(1)
        zq = torch.where(searching[:, None], z + tq[:, None] * d, z)
        f_r, g_r = fun(zq[idx], idx)
        f_r, g_r = f_r.detach().to(torch.float64), g_r.detach()
        evals[idx] += 1
        if on_eval is not None:
            on_eval()

        start = torch.zeros_like(need)                      # the first closure call of the first .step()
        ended = torch.zeros_like(need)                      # rows whose line search returned
        for k, i in enumerate(idx.tolist()):
            if gens[i] is None:
                loss[i], g[i] = f_r[k], g_r[k]
                fresh[i], need[i], start[i] = True, False, True
                continue
            fresh[i] = False
            fk, gk = float(f_r[k]), g_r[k].clone()
            trials[i].append((fk, tq[i].clone(), gk))
            try:
                tq[i] = gens[i].send((fk, gk))
            except StopIteration as stop:
                f_ls, g_ls, t_ls, n_ls = stop.value
                t[i] = t_ls
                fresh[i] = bool(t[i] == trials[i][-1][1])   # the returned point is the last one evaluated
                loss[i], g[i] = f_ls, g_ls
                cur_evals[i] += n_ls
                gens[i], trials[i] = None, []
                ended[i] = True
        gmax_small = g.abs().amax(1) <= tolerance_grad

        # the start of .step(): current_evals = 1, n_iter = 0, return if max|g| <= tolerance_grad
        outer += start.long()
        cur_evals = torch.where(start, torch.ones_like(cur_evals), cur_evals)
        conv = start & gmax_small
        # after the line search: x += t·d, then the break tests of LBFGS.step
        z = torch.where(ended[:, None], z + t[:, None] * d, z)
        brk = ended & ((n_loc == max_iter) | (cur_evals >= max_eval) | gmax_small
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

        # one iteration of the while loop of LBFGS.step: direction, initial step, then a line search
        it = (start | ended) & ~done
        if not bool(it.any()):
            continue
        n_loc += it.long()
        n_glob += it.long()
        first = it & (n_glob == 1)
        later = it & (n_glob > 1)
        if bool(later.any()):
            d = _direction(g, prev_g, d, t, S, Y, rho, count, H, later, cap)
        H = torch.where(first, torch.ones_like(H), H)
        d = torch.where(first[:, None], -g, d)
        prev_g = torch.where(it[:, None], g, prev_g)
        prev_loss = torch.where(it, loss, prev_loss)
        t_first = torch.clamp(1.0 / g.abs().sum(1), max=1.0) * lr
        t = torch.where(first, t_first, torch.where(it, lr, t))
        for i in it.nonzero().squeeze(1).tolist():
            gtd = g[i].dot(d[i])
            if gtd > -tolerance_change:                     # not a descent direction: torch breaks, stuck
                converged[i] = done[i] = True
                continue
            # torch passes only max_ls; the search's own tolerance_change stays at its default 1e-9
            gens[i] = _strong_wolfe(t[i].clone(), d[i].clone(), float(loss[i]), g[i].clone(), gtd,
                                    max_ls=int(max_eval - cur_evals[i]))
            tq[i] = next(gens[i])
    return LBFGSResult(z, ~fresh, evals, n_glob, outer, converged)
