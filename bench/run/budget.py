"""Counted prior passes (README contract 2).

The unit of compute is one pass of the prior (forward *or* inverse, with its backward) on one image. A solver
never sees the raw prior: it gets a :class:`BudgetedPrior`, which charges every call to each row that takes part
and raises :class:`~bench.core.errors.BudgetExceeded` *before* running a pass that would take any row past its budget.
The runner turns that exception into rows with ``status = "overspend"``; nothing is silently truncated.

The anytime trace is the harness's, not the solver's: a solver *marks* trace points with :meth:`trace_point` —
with no argument, "the iterate each row was last evaluated at by ``log_prob``" (the harness computes its MAP loss
from the log p_G it computed itself and the data term of its own copy of the problem, so no pass is spent), or
with ``x=``, an image iterate the harness scores after the solve with uncharged passes of its own model. The
passes recorded with a point are this object's counts at that moment. At most :func:`max_trace_points` per row
(more is a ValueError).

``log_prob`` and ``decode_with_log_prob`` return log p_G(x) in the MAP objective's discretised 8-bit convention
(:func:`bench.core.objective.log_prior`), the same value the harness scores with.

What a solver can and cannot do through this object: it exposes no network (the model is held in a name-mangled
slot), its ``budget`` is read-only, ``used`` returns a copy, charges must be whole numbers ≥ 1, and ``rows`` must
name exactly the rows of the batch being evaluated (distinct, in range, one per row). It lives in the harness's
process: a solver in its own process (:mod:`bench.run.isolate`) reaches it only through requests, so what it is
charged is what it got. (With ``run --no-isolation`` Python code in the same process can reach anything; the
harness therefore also checks ``used ≤ budget`` after every solve and scores with a model the solver never held.)
"""
from __future__ import annotations

from bench.core import objective
from bench.core.errors import BudgetExceeded
from bench.core.lazy import lazy_module
from bench.run.passes import PassBatcher

torch = lazy_module("torch")

TRACE_EVERY = 10   # passes between two trace points of the shipped solvers (``SolveContext.trace_every``)


def max_trace_points(budget: int, iterates: bool = False) -> int:
    """The most trace points a solver may mark per row: one per pass for evaluated points (they cost the harness
    no pass), one every :data:`TRACE_EVERY` passes for image iterates (each costs the harness an uncharged pass
    to score), plus a few forced ones (the end of a stage, the last iterate)."""
    return (int(budget) // TRACE_EVERY if iterates else int(budget)) + 4


class BudgetedPrior:
    """Wraps a flow prior; ``used[i]`` counts the passes charged to problem row ``i``."""

    __slots__ = ("__passes", "__budget", "__used", "__loss_fn", "__last", "__points", "__refused")

    def __init__(self, prior, budget: int, batch_size: int, loss_fn=None):
        """``prior``: a flow model, or the :class:`~bench.run.passes.PassBatcher` that batches its passes with other
        units'; ``loss_fn(x, log_prior) -> (B,)``: the harness's MAP loss of the whole batch at its own λ from a
        log-prior value it computed (used by :meth:`trace_point` without ``x``)."""
        self.__passes = prior if isinstance(prior, PassBatcher) else PassBatcher(prior)
        self.__budget = int(budget)
        self.__used = torch.zeros(int(batch_size), dtype=torch.long)
        self.__loss_fn = loss_fn
        self.__last = None        # (x, log p) of the last log_prob evaluation of each row
        self.__points = []        # ("loss", used, loss) or ("x", used, x) per trace point
        self.__refused = False    # a pass past the budget was asked for (even if the solver caught the error)

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
        return self.__passes.latent_shape

    @property
    def image_shape(self):
        return self.__passes.image_shape

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
            self.__refused = True
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
        idx = self._rows(x, rows)
        self.charge(1, idx)
        value = self.__passes.log_prob(x)
        self._remember(idx, x, value)
        return value

    def _remember(self, idx, x, value) -> None:
        if self.__last is None:
            B = len(self.__used)
            self.__last = (torch.zeros((B, *x.shape[1:]), dtype=x.dtype, device=x.device),
                           torch.full((B,), float("nan"), dtype=value.dtype, device=value.device))
        lx, lv = self.__last
        sel = slice(None) if idx is None else idx.to(lx.device)
        lx[sel] = x.detach().to(lx.dtype)
        lv[sel] = value.detach().to(lv.dtype)

    @property
    def refused(self) -> bool:
        """Whether a pass past the budget was asked for (the rows are ``overspend`` even if the solver went on)."""
        return self.__refused

    def trace_point(self, x: torch.Tensor | None = None) -> None:
        """Mark an anytime-trace point for every row at the passes used so far: without ``x``, at the iterate each
        row was last evaluated at by :meth:`log_prob`; with ``x`` (B, C, H, W), at these image iterates (scored
        after the solve). One trace holds one kind of point. At most :func:`max_trace_points` points."""
        kind = "loss" if x is None else "x"
        cap = max_trace_points(self.__budget, iterates=x is not None)
        if len(self.__points) >= cap:
            raise ValueError(f"at most {cap} trace points {'with iterates ' if x is not None else ''}per row at a "
                             f"budget of {self.__budget}")
        if self.__points and self.__points[0][0] != kind:
            raise ValueError("a trace records either evaluated points or iterates, not both")
        if x is None:
            if self.__last is None:
                raise ValueError("trace_point() without x marks the last log_prob evaluation: there was none")
            loss = (self.__loss_fn(*self.__last) if self.__loss_fn is not None
                    else torch.full((len(self.__used),), float("nan")))
            self.__points.append(("loss", self.__used.clone(), loss.detach().cpu().double().clone()))
            return
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or \
                tuple(x.shape) != (len(self.__used), *self.image_shape):
            raise ValueError(f"trace_point(x=) takes a real (B, C, H, W) = {(len(self.__used), *self.image_shape)} "
                             f"batch of images")
        self.__points.append(("x", self.__used.clone(), x.detach().cpu().float().clone()))

    def trace_points(self) -> list:
        """The marked points, in order: ``(kind, passes used per row, loss per row or images)``."""
        return list(self.__points)

    def encode(self, x: torch.Tensor, rows=None) -> torch.Tensor:
        self.charge(1, self._rows(x, rows))
        return self.__passes.model_op("encode", x)

    def decode(self, z: torch.Tensor, rows=None) -> torch.Tensor:
        self.charge(1, self._rows(z, rows))
        return self.__passes.model_op("decode", z)

    def decode_with_log_prob(self, z: torch.Tensor, rows=None):
        self.charge(1, self._rows(z, rows))
        x, log_density = self.__passes.model_op("decode_with_log_prob", z)
        return x, objective.discretise(log_density, x[0].numel())
