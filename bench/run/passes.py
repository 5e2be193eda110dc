"""One model serving the prior passes of several units' solves, batched across them.

A work unit's solve is a batch of rows (its images × λ); a :class:`~bench.plan.batches.UnitBatch` solves several
units that share a prior and a solver at once, each in its own solver process (or thread, with ``--no-isolation``),
and their passes meet here. :meth:`PassBatcher.call` blocks until *every* member still solving has asked for its
next pass (or has finished), then evaluates all waiting requests of one kind as one batched call of the model and
hands each member its own rows. So a pass runs at the batch the hardware likes rather than the one the grid's
bookkeeping makes (README "Performance"), and:

- each row's result still depends only on its own row (a flow evaluates images independently; README contract 3),
  to float rounding — the batch's composition can move the last bits;
- the composition is deterministic: a round holds the next request of every member not yet finished, concatenated
  in member order, whatever order the threads arrive in, so the same batch of units gives the same numbers on one
  machine;
- budget accounting stays per unit (:class:`~bench.run.budget.BudgetedPrior` charges before it asks for a pass).

What is batched: log p_G(x) with or without its gradient (the gradient is computed with the forward and handed back
through :class:`_Precomputed`, exact for any cotangent since rows are independent); ``decode``, ``encode`` and
``decode_with_log_prob``, and, for those evaluated with a graph (latent-space solvers differentiate through G(z)),
their backward: the members' vector-Jacobian products of one batched forward are one batched backward, with zero
cotangents for members that ask later (the graph is then kept until every member has had its backward, or has
left; at most :data:`MAX_GRAPHS` graphs are kept).

A round waits for every member, so the members of a batch (one solver on other tasks, splits or seeds, possibly of
the same images) share a clock: one that stalls holds the others until the unit limits end them, and request timing
is a channel between them (README "What a plugin can and cannot do").
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

from bench.core import objective
from bench.core.lazy import lazy_module

torch = lazy_module("torch")

LOG_PROB, LOG_PROB_GRAD, GRAPH, VJP = "log_prob", "log_prob_grad", "graph", "vjp"
MAX_GRAPHS = 16   # batched forwards whose backward a member may still ask for (the oldest is dropped)


class _Precomputed(torch.autograd.Function):
    """log p_G(x) whose gradient was computed with it: backward returns cotangent × ∇ₓ log p_G(x), row by row."""

    @staticmethod
    def forward(ctx, x, value, grad):
        ctx.save_for_backward(grad)
        return value.clone()

    @staticmethod
    def backward(ctx, g):
        (grad,) = ctx.saved_tensors
        return g.view(-1, *([1] * (grad.dim() - 1))) * grad, None, None


class _BatchedGraph(torch.autograd.Function):
    """``decode`` / ``encode`` / ``decode_with_log_prob`` of the caller's rows as part of a batched forward; its
    backward is the caller's part of a batched backward (:meth:`PassBatcher.call` with :data:`VJP`)."""

    @staticmethod
    def forward(ctx, x, batcher, op):
        index = batcher._index()
        graph, k, outs = batcher.call(GRAPH, x, op, index=index)
        ctx.batcher, ctx.graph, ctx.k, ctx.index = batcher, graph, k, index
        ctx.set_materialize_grads(False)
        outs = tuple(o.clone() for o in outs)
        return outs if len(outs) > 1 else outs[0]

    @staticmethod
    def backward(ctx, *gs):
        (grad,) = ctx.batcher.call(VJP, None, (ctx.graph, ctx.k, gs), index=ctx.index)
        return grad, None, None


class _Graph:
    """A batched forward kept for its backward: the input, the outputs, each place's rows and member, and the
    places whose backward is still to come."""

    def __init__(self, x, outs, sizes, members):
        self.x, self.outs, self.sizes, self.members = x, outs, sizes, members
        self.open = set(range(len(sizes)))

    def leave(self, index) -> None:
        self.open -= {k for k, m in enumerate(self.members) if m == index}


def _evaluate(model, op: str, x, arg=None):
    """One batched pass of ``op`` on ``x``; returns a tuple of tensors (for :data:`GRAPH`: the input and outputs
    with their graph)."""
    if op == LOG_PROB_GRAD:
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            value = objective.log_prior(model, xr)
            (grad,) = torch.autograd.grad(value.sum(), xr)
        return value.detach(), grad
    if op == GRAPH:
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            out = getattr(model, arg)(xr)
        return xr, tuple(out) if isinstance(out, tuple) else (out,)
    with torch.no_grad():
        if op == LOG_PROB:
            return (objective.log_prior(model, x),)
        out = getattr(model, op)(x)
    return tuple(out) if isinstance(out, tuple) else (out,)


class PassBatcher:
    """The prior passes of a batch of units, served by one model (see the module docstring). :meth:`open` says how
    many members there are; each solves inside :meth:`member`. A caller that is not a member (a unit solved alone,
    a test) is served at once."""

    def __init__(self, model):
        self._model = model
        self._cv = threading.Condition()
        self._live = 0
        self._pending: dict = {}     # member index -> [op, x, arg, result]
        self._graphs: list = []      # _Graph objects whose backward some member may still ask for
        self._local = threading.local()
        self.rounds = 0               # rounds evaluated (for tests and perf notes)

    @property
    def image_shape(self):
        return tuple(self._model.image_shape)

    @property
    def latent_shape(self):
        return tuple(self._model.latent_shape)

    def open(self, members: int) -> None:
        """Expect ``members`` members (before any of them starts: a round waits for all of them)."""
        with self._cv:
            self._live = int(members)

    @contextmanager
    def member(self, index: int):
        """Run the body on this thread as member ``index`` of the batch (its place in each round's concatenation);
        leaving ends its part in the rounds."""
        self._local.index = index
        try:
            yield
        finally:
            self._local.index = None
            with self._cv:
                self._live -= 1
                for g in self._graphs:
                    g.leave(index)
                self._graphs = [g for g in self._graphs if g.open]
                self._maybe_run()
                self._cv.notify_all()

    def _index(self):
        return getattr(self._local, "index", None)

    def call(self, op: str, x, arg=None, index=None):
        """``op`` on the caller's rows ``x`` (``arg``: the model method of a :data:`GRAPH` pass; the graph, the
        caller's place in it and its cotangents for a :data:`VJP`), evaluated with every other member's next
        request; returns a tuple of tensors with the caller's rows. ``index``: the member asking (default: this
        thread's)."""
        index = self._index() if index is None else index
        slot = [op, None if x is None else x.detach(), arg, None]
        with self._cv:
            if index is None:   # not a member: alone
                self._run_round({0: slot})
            else:
                self._pending[index] = slot
                self._maybe_run()
                while slot[3] is None:
                    self._cv.wait()
        if isinstance(slot[3], BaseException):
            raise slot[3]
        return slot[3]

    def _maybe_run(self) -> None:
        """With the lock held: when every live member is waiting, evaluate the round."""
        if self._pending and len(self._pending) >= self._live:
            pending, self._pending = self._pending, {}
            self.rounds += 1
            self._run_round(pending)
            self._cv.notify_all()

    def _run_round(self, pending: dict) -> None:
        """Evaluate ``pending`` (member index -> slot): one batched call per kind of request, in member order."""
        by_kind: dict = {}
        for index in sorted(pending):
            op, x, arg, _ = slot = pending[index]
            kind = (op, id(arg[0])) if op == VJP else (op, arg, tuple(x.shape[1:]), x.dtype, x.device)
            by_kind.setdefault(kind, []).append((index, slot))
        for (op, *_), slots in by_kind.items():
            try:
                if op == VJP:
                    self._backward(slots)
                    continue
                xs = [s[1] for _, s in slots]
                sizes = [x.shape[0] for x in xs]
                outs = _evaluate(self._model, op, torch.cat(xs) if len(xs) > 1 else xs[0], slots[0][1][2])
                if op == GRAPH:
                    graph = _Graph(outs[0], outs[1], sizes, [i for i, _ in slots])
                    self._graphs = (self._graphs + [graph])[-MAX_GRAPHS:]
                    parts = [o.detach().split(sizes) for o in graph.outs]
                    for k, (_, s) in enumerate(slots):
                        s[3] = (graph, k, tuple(p[k] for p in parts))
                    continue
                parts = [o.split(sizes) for o in outs]
                for k, (_, s) in enumerate(slots):
                    s[3] = tuple(p[k] for p in parts)
            except BaseException as e:  # noqa: BLE001 -- every caller of the failed batch gets the error
                for _, s in slots:
                    s[3] = e

    def _backward(self, slots) -> None:
        """The vector-Jacobian products of one batched forward for the members in ``slots``, as one backward (zero
        cotangents for the other places; the graph is kept while some place's backward is still to come)."""
        graph = slots[0][1][2][0]
        asked = {s[2][1]: s[2][2] for _, s in slots}
        if graph not in self._graphs or not set(asked) <= graph.open:
            raise ValueError("this pass's backward was already taken (or is too old): one backward per pass")
        outs, cots = [], []
        for j, o in enumerate(graph.outs):
            given = {k: gs[j] for k, gs in asked.items() if j < len(gs) and gs[j] is not None}
            if given:
                rows = o.split(graph.sizes)
                outs.append(o)
                cots.append(torch.cat([given[k].to(o.dtype) if k in given else torch.zeros_like(r)
                                       for k, r in enumerate(rows)]))
        graph.open -= set(asked)
        if not graph.open:
            self._graphs.remove(graph)
        grad = (torch.autograd.grad(outs, graph.x, cots, retain_graph=bool(graph.open))[0] if outs
                else torch.zeros_like(graph.x))
        parts = grad.split(graph.sizes)
        for _, s in slots:
            s[3] = (parts[s[2][1]],)

    def log_prob(self, x):
        """log p_G(x) (discretised, :func:`bench.core.objective.log_prior`) per row; differentiable in x when
        grad mode is on and x requires grad (value and gradient computed in one batched pass)."""
        if torch.is_grad_enabled() and x.requires_grad:
            value, grad = self.call(LOG_PROB_GRAD, x)
            return _Precomputed.apply(x, value, grad)
        return self.call(LOG_PROB, x)[0]

    def model_op(self, op: str, x):
        """``decode`` / ``encode`` / ``decode_with_log_prob`` of ``x``, batched; differentiable in x when grad
        mode is on and x requires grad (its backward batched too)."""
        if torch.is_grad_enabled() and x.requires_grad:
            return _BatchedGraph.apply(x, self, op)
        out = self.call(op, x)
        return out if len(out) > 1 else out[0]
