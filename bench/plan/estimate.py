"""``run --dry-run``'s wall-time estimate: every batch of units' prior passes at a per-pass cost timed on this
machine."""
from __future__ import annotations

import torch

from bench.core.device import clock
from bench.plan.loading import fresh_model

OVERHEAD = 1.25      # solver arithmetic, scoring and writing on top of the prior passes (default grid, measured)
UNIT_OVERHEAD_S = 0.15   # per unit: building its two models, the problem, scoring and writing (smoke grid, measured)


def estimate_wall(batches: list, workers: int) -> tuple[int, float]:
    """(image-passes, estimated seconds) of running ``batches`` (:class:`~bench.plan.batches.UnitBatch`, every
    member computed) with ``workers`` parallel workers: each batch's passes at the cost of one pass of its prior at
    the batch's rows, timed here (3 passes after a warm-up per prior and batch size). Budget-spending solvers are
    charged their full budget, λ-independent ones half of it, prior-free ones nothing."""
    from bench.solvers.base import SOLVERS

    cost, passes, secs = {}, 0, 0.0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # as every unit runs (several threads on small batches oversubscribe the cores)
    try:
        for b in batches:
            u = b.units[0]
            cls = SOLVERS.get(u.solver.split("[")[0])
            if cls.uses_prior:
                rows = sum(_unit_shape(m, cls)[0] for m in b.units)
                n = _unit_shape(u, cls)[1]
                passes, secs = passes + rows * n, secs + _pass_cost(u, rows, cost) * n
    finally:
        torch.set_num_threads(threads)
    units = sum(len(b.units) for b in batches)
    return passes, (secs * OVERHEAD + UNIT_OVERHEAD_S * units) / max(1, int(workers))


def _unit_shape(u, cls) -> tuple[int, int]:
    """(batch of the unit's solve, :func:`bench.plan.batches.solve_rows`; prior passes charged per row of it)."""
    from bench.plan.batches import solve_rows

    return solve_rows(u), (u.budget // 2 if cls.lam_independent else u.budget)


def planned_passes(units: list) -> int:
    """Image-passes of the prior that ``units`` are planned to spend (as :func:`estimate_wall` counts them,
    without timing anything): ``run --dry-run``'s count and the rate on ``run``'s last line."""
    from bench.solvers.base import SOLVERS

    total = 0
    for u in units:
        cls = SOLVERS.get(u.solver.split("[")[0])
        if cls.uses_prior:
            B, n = _unit_shape(u, cls)
            total += B * n
    return total


def _pass_cost(u, rows: int, cost: dict) -> float:
    """Seconds of one prior pass of ``u``'s prior at ``rows`` rows; ``cost`` caches them per (prior, rows)."""
    key = (u.prior, u.prior_sha256, rows, u.image_size)
    if key not in cost:
        model = fresh_model(u.prior, u.device, u.prior_sha256)
        x = torch.rand((rows, *model.image_shape), generator=torch.Generator().manual_seed(0)).clamp(0.02, 0.98)
        x = x.to(u.device).requires_grad_(True)
        torch.autograd.grad(model.log_prob(x).sum(), x)
        t0 = clock(x.device)
        for _ in range(3):
            torch.autograd.grad(model.log_prob(x).sum(), x)
        cost[key] = (clock(x.device) - t0) / 3
    return cost[key]
