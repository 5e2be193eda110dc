"""Counted prior passes (DESIGN contract 2).

The unit of compute is one pass of the prior (forward *or* inverse, with its backward) on one image. A solver
never sees the raw prior: it gets a :class:`BudgetedPrior`, which charges every call to each row that takes part
and raises :class:`~bench.errors.BudgetExceeded` *before* running a pass that would take any row past its budget.
The runner turns that exception into rows with ``status = "overspend"``; nothing is silently truncated.

``log_prob`` and ``decode_with_log_prob`` return log p_G(x) in the MAP objective's discretised 8-bit convention
(:func:`bench.objective.log_prior`), the same value the harness scores with.
"""
from __future__ import annotations

import torch

from bench import objective
from bench.errors import BudgetExceeded


class BudgetedPrior:
    """Wraps a flow prior; ``used[i]`` counts the passes charged to problem row ``i``."""

    def __init__(self, prior, budget: int, batch_size: int):
        self.prior = prior
        self.budget = int(budget)
        self.used = torch.zeros(batch_size, dtype=torch.long)

    # read-only facts solvers may use freely
    @property
    def latent_shape(self):
        return self.prior.latent_shape

    @property
    def image_shape(self):
        return self.prior.image_shape

    def remaining(self, rows=None) -> torch.Tensor:
        r = self.budget - self.used
        return r if rows is None else r[torch.as_tensor(rows, dtype=torch.long)]

    def charge(self, n: int, rows=None) -> None:
        """Charge ``n`` passes to ``rows`` (default: all rows); raise if any would exceed the budget."""
        idx = torch.arange(len(self.used)) if rows is None else torch.as_tensor(rows, dtype=torch.long).cpu()
        after = self.used[idx] + n
        over = after > self.budget
        if bool(over.any()):
            bad = idx[over]
            raise BudgetExceeded(bad.tolist(), int(self.used[bad].max()), self.budget)
        self.used[idx] = after

    def _rows(self, x, rows):
        if rows is None and x.shape[0] != len(self.used):
            raise ValueError(f"batch of {x.shape[0]} rows but the budget tracks {len(self.used)}; pass rows=")
        return rows

    def log_prob(self, x: torch.Tensor, rows=None) -> torch.Tensor:
        self.charge(1, self._rows(x, rows))
        return objective.log_prior(self.prior, x)

    def encode(self, x: torch.Tensor, rows=None) -> torch.Tensor:
        self.charge(1, self._rows(x, rows))
        return self.prior.encode(x)

    def decode(self, z: torch.Tensor, rows=None) -> torch.Tensor:
        self.charge(1, self._rows(z, rows))
        return self.prior.decode(z)

    def decode_with_log_prob(self, z: torch.Tensor, rows=None):
        self.charge(1, self._rows(z, rows))
        x, log_density = self.prior.decode_with_log_prob(z)
        return x, objective.discretise(log_density, x[0].numel())
