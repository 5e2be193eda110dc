"""``run --dry-run``'s wall-time estimate: every unit's prior passes at a per-pass cost timed on this machine."""
from __future__ import annotations

import time

import torch

from bench.loading import fresh_model

OVERHEAD = 1.25      # solver arithmetic, scoring and writing on top of the prior passes (default grid, measured)
UNIT_OVERHEAD_S = 0.15   # per unit: building its two models, the problem, scoring and writing (smoke grid, measured)


def estimate_wall(units: list, workers: int) -> tuple[int, float]:
    """(image-passes, estimated seconds) of running ``units`` with ``workers`` parallel workers: each unit's passes
    at the cost of one pass of its prior at its batch, timed here (3 passes after a warm-up per prior and batch).
    Budget-spending solvers are charged their full budget, λ-independent ones half of it, prior-free ones nothing."""
    from bench.solvers.base import SOLVERS

    cost, passes, secs = {}, 0, 0.0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # as every unit runs (several threads on small batches oversubscribe the cores)
    try:
        for u in units:
            cls = SOLVERS.get(u.solver.split("[")[0])
            if cls.uses_prior:
                n, t = _unit_cost(u, cls, cost)
                passes, secs = passes + n, secs + t
    finally:
        torch.set_num_threads(threads)
    return passes, (secs * OVERHEAD + UNIT_OVERHEAD_S * len(units)) / max(1, int(workers))


def _unit_cost(u, cls, cost: dict) -> tuple[int, float]:
    """(image-passes, seconds of prior passes) of one unit; ``cost`` caches the timed pass per (prior, batch)."""
    B = len(u.image_ids) * (1 if cls.lam_independent else len(u.lams))
    n = u.budget // 2 if cls.lam_independent else u.budget
    key = (u.prior, u.prior_sha256, B, u.image_size)
    if key not in cost:
        model = fresh_model(u.prior, u.device, u.prior_sha256)
        x = torch.rand((B, *model.image_shape), generator=torch.Generator().manual_seed(0)).clamp(0.02, 0.98)
        x = x.to(u.device).requires_grad_(True)
        sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
        torch.autograd.grad(model.log_prob(x).sum(), x)
        sync()
        t0 = time.perf_counter()
        for _ in range(3):
            torch.autograd.grad(model.log_prob(x).sum(), x)
        sync()
        cost[key] = (time.perf_counter() - t0) / 3
    return B * n, cost[key] * n
