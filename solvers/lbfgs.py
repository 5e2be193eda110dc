"""The batched L-BFGS of latent-lbfgs: ``torch.optim.LBFGS`` per row, with or without torch's strong-Wolfe line
search (:mod:`bench.solvers.linesearch`). Not a solver itself (it registers nothing).

Rows are independent (README contract 3): history, ρ, γ (H_diag), step, line-search state and counters are per
row, and reductions stay within a row.
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.core.errors import UserError
from bench.core.lazy import lazy_module
from bench.solvers.linesearch import LINE_SEARCHES, strong_wolfe

torch = lazy_module("torch")


START, ITER = 0, 1


@dataclass
class LBFGSResult:
    """What :func:`lbfgs_minimize` returns, per row."""

    z: torch.Tensor            # (B, n) final iterate
    pending: torch.Tensor      # (B,) bool: final z was never evaluated (the caller decodes it once more)
    evals: torch.Tensor        # (B,) evaluations spent
    iterations: torch.Tensor   # (B,) L-BFGS iterations (torch's state['n_iter'])
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
    # two-loop recursion; slots a row does not have contribute exact zeros. Below the smallest history of the rows
    # ``later`` every one of them has slot i, so the mask is skipped there (rows are independent: what the other rows
    # compute is discarded by the final where).
    k = int(count[later].max())
    k_all = int(count[later].min())
    zero = torch.zeros_like(t)
    Sk, Yk, rk = S[:, :k].unbind(1), Y[:, :k].unbind(1), rho[:, :k].unbind(1)   # slot i of every row, as views
    q = -g
    al = [zero] * k
    for i in range(k - 1, -1, -1):
        a = (Sk[i] * q).sum(1) * rk[i]
        if i >= k_all:
            a = torch.where(later & (count > i), a, zero)
        al[i] = a
        q -= a[:, None] * Yk[i]
    r = q * H[:, None]
    for i in range(k):
        c = al[i] - (Yk[i] * r).sum(1) * rk[i]
        if i >= k_all:
            c = torch.where(later & (count > i), c, zero)
        r += c[:, None] * Sk[i]
    return torch.where(later[:, None], r, d)


def _begin_iteration(it, g, loss, lr, d, t, prev_g, prev_loss, H, n_loc, n_glob, history):
    """The start of one iteration of ``LBFGS.step``'s loop for the rows ``it``: the iteration counters (``n_loc``,
    ``n_glob``, in place), the direction (−g on a row's first iteration, else :func:`_direction`, which stores the
    last curvature pair in ``history`` = (S, Y, rho, count, cap)), the previous gradient and loss, and the step
    (min(1, 1/||g||₁)·lr on the first iteration, lr after). Returns the new d, t, prev_g, prev_loss, H."""
    S, Y, rho, count, cap = history
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
    return d, t, prev_g, prev_loss, H


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
        d, t, prev_g, prev_loss, H = _begin_iteration(it, g, loss, lr, d, t, prev_g, prev_loss, H, n_loc, n_glob,
                                                      (S, Y, rho, count, cap))
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
    return LBFGSResult(z, pending, evals, n_glob, converged)



def _lbfgs_strong_wolfe(fun, z0, lr, steps, max_evals, max_iter, max_eval, cap, tolerance_grad,
                        tolerance_change, on_eval) -> LBFGSResult:
    """:func:`lbfgs_minimize` with ``line_search="strong_wolfe"``: an event loop over rows. A row is waiting for
    its first evaluation (``need``), inside a line search (``gens[i]``, a :func:`~bench.solvers.linesearch.strong_wolfe` generator that
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
        d, t, prev_g, prev_loss, H = _begin_iteration(it, g, loss, lr, d, t, prev_g, prev_loss, H, n_loc, n_glob,
                                                      (S, Y, rho, count, cap))
        for i in it.nonzero().squeeze(1).tolist():
            gtd = g[i].dot(d[i])
            if gtd > -tolerance_change:                     # not a descent direction: torch breaks, stuck
                converged[i] = done[i] = True
                continue
            # torch passes only max_ls; the search's own tolerance_change stays at its default 1e-9
            gens[i] = strong_wolfe(t[i].clone(), d[i].clone(), float(loss[i]), g[i].clone(), gtd,
                                    max_ls=int(max_eval - cur_evals[i]))
            tq[i] = next(gens[i])
    return LBFGSResult(z, ~fresh, evals, n_glob, converged)
