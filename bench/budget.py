"""Counted prior passes (README contract 2).

The unit of compute is one pass of the prior (forward *or* inverse, with its backward) on one image. A solver
never sees the raw prior: it gets a :class:`BudgetedPrior`, which charges every call to each row that takes part
and raises :class:`~bench.errors.BudgetExceeded` *before* running a pass that would take any row past its budget.
The runner turns that exception into rows with ``status = "overspend"``; nothing is silently truncated.

``log_prob`` and ``decode_with_log_prob`` return log p_G(x) in the MAP objective's discretised 8-bit convention
(:func:`bench.objective.log_prior`), the same value the harness scores with.

What a solver can and cannot do through this object: it exposes no network (the model is held in a name-mangled
slot), its ``budget`` is read-only, ``used`` returns a copy, charges must be whole numbers ≥ 1, and ``rows`` must
name exactly the rows of the batch being evaluated (distinct, in range, one per row). Python code can still reach
anything in its process; the harness therefore also checks ``used ≤ budget`` after every solve and scores with a
model the solver never held (README, "What a plugin can and cannot do").
"""
from __future__ import annotations

from bench import objective
from bench.errors import BudgetExceeded
from bench.lazy import lazy_module

torch = lazy_module("torch")


class BudgetedPrior:
    """Wraps a flow prior; ``used[i]`` counts the passes charged to problem row ``i``."""

    __slots__ = ("__model", "__budget", "__used")

    def __init__(self, prior, budget: int, batch_size: int):
        self.__model = prior
        self.__budget = int(budget)
        self.__used = torch.zeros(int(batch_size), dtype=torch.long)

    # read-only facts solvers may use freely
    @property
    def budget(self) -> int:
        return self.__budget

    @property
    def used(self) -> torch.Tensor:
        """Passes charged per row (a copy: writing to it changes nothing)."""
        return self.__used.clone()

    @property
    def batch_size(self) -> int:
        return len(self.__used)

    @property
    def latent_shape(self):
        return tuple(self.__model.latent_shape)

    @property
    def image_shape(self):
        return tuple(self.__model.image_shape)

    def remaining(self, rows=None) -> torch.Tensor:
        r = self.__budget - self.__used
        return r if rows is None else r[torch.as_tensor(rows, dtype=torch.long)]

    def charge(self, n: int, rows=None) -> None:
        """Charge ``n`` ≥ 1 passes to ``rows`` (default: all rows); raise if any would exceed the budget."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"a charge is a whole number of passes >= 1, got {n!r}")
        idx = torch.arange(len(self.__used)) if rows is None else self._check_rows(rows)
        after = self.__used[idx] + n
        over = after > self.__budget
        if bool(over.any()):
            bad = idx[over]
            raise BudgetExceeded(bad.tolist(), int(self.__used[bad].max()), self.__budget)
        self.__used[idx] = after

    def _check_rows(self, rows) -> torch.Tensor:
        idx = torch.as_tensor(rows, dtype=torch.long).cpu().reshape(-1)
        B = len(self.__used)
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= B):
            raise ValueError(f"rows must be problem rows 0..{B - 1}, got {idx.tolist()}")
        if len(torch.unique(idx)) != len(idx):
            raise ValueError(f"rows must be distinct, got {idx.tolist()}")
        return idx

    def _rows(self, x, rows):
        """The rows a pass on ``x`` is charged to: all rows (``rows=None``, x must be the whole batch) or exactly
        one listed row per row of ``x``."""
        if rows is None:
            if x.shape[0] != len(self.__used):
                raise ValueError(f"batch of {x.shape[0]} rows but the budget tracks {len(self.__used)}; pass rows=")
            return None
        idx = self._check_rows(rows)
        if len(idx) != x.shape[0]:
            raise ValueError(f"rows names {len(idx)} rows for a batch of {x.shape[0]}: one row index per image")
        return idx

    def log_prob(self, x: torch.Tensor, rows=None) -> torch.Tensor:
        self.charge(1, self._rows(x, rows))
        return objective.log_prior(self.__model, x)

    def encode(self, x: torch.Tensor, rows=None) -> torch.Tensor:
        self.charge(1, self._rows(x, rows))
        return self.__model.encode(x)

    def decode(self, z: torch.Tensor, rows=None) -> torch.Tensor:
        self.charge(1, self._rows(z, rows))
        return self.__model.decode(z)

    def decode_with_log_prob(self, z: torch.Tensor, rows=None):
        self.charge(1, self._rows(z, rows))
        x, log_density = self.__model.decode_with_log_prob(z)
        return x, objective.discretise(log_density, x[0].numel())
