"""Batches of units: which units are solved together (bench/plan/batches.py), the pass batcher that serves their
prior passes a round at a time (bench/run/passes.py), and that every registered solver writes the same rows in a
batch of units as alone."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from bench.core import objective
from bench.plan.batches import UnitBatch, batch_key, group_units, plan_batches, solve_rows
from bench.plan.units import plan_units
from bench.run.budget import BudgetedPrior
from bench.run.passes import PassBatcher
from bench.solvers.base import SOLVERS
from kit.runs import make_grid, rows_of, run


# ------------------------------------------------------------------------------------------------- planning
def test_units_that_share_prior_solver_and_budget_form_one_batch(priors, test_solvers):
    g = make_grid(priors, solvers=["t-grad", "t-lamfree"], seeds=[0, 1])
    units = plan_units(g)
    groups = group_units(units, 256)
    # 2 priors x 2 solvers; tasks, splits, seeds and λ are merged
    assert len(groups) == 4 and sorted(len(b) for b in groups) == [8] * 4
    for b in groups:
        assert len({batch_key(u) for u in b}) == 1
        assert len({u.task for u in b}) == 2 and len({u.split for u in b}) == 2 and len({u.seed for u in b}) == 2
    assert sorted(u.unit_id for b in groups for u in b) == sorted(u.unit_id for u in units)
    lam_free = [b for b in groups if b[0].solver == "t-lamfree"][0]
    assert solve_rows(lam_free[0]) == 2 and solve_rows(groups[0][0]) in (2, 4)   # images, or images x λ


def test_other_solver_parameters_or_budget_never_share_a_batch(priors, test_solvers):
    g = make_grid(priors[:1], solvers=["t-grad", "t-grad[lr=0.02]"], budget=[10, 20])
    keys = [{batch_key(u) for u in b} for b in group_units(plan_units(g), 256)]
    assert len(keys) == 4 and all(len(k) == 1 for k in keys)


@pytest.mark.parametrize("max_rows", [1, 4, 5, 12, 1000])
def test_batches_hold_at_most_max_rows_and_are_even(priors, test_solvers, max_rows):
    units = plan_units(make_grid(priors[:1], seeds=[0, 1, 2]))   # 12 units of 4 rows
    groups = group_units(units, max_rows)
    sizes = [sum(solve_rows(u) for u in b) for b in groups]
    assert all(s <= max(max_rows, 4) for s in sizes)
    assert max(sizes) - min(sizes) <= 4
    per_batch = max(1, max_rows // 4)   # whole units of 4 rows
    assert len(groups) == -(-12 // per_batch)


def test_a_resumed_run_recomputes_a_batch_whole_and_writes_only_what_is_missing(priors, test_solvers):
    units = plan_units(make_grid(priors))
    missing = units[1:3]
    batches = plan_batches(units, missing, 256)
    assert all(isinstance(b, UnitBatch) for b in batches)
    assert sorted(u for b in batches for u in b.write) == sorted(u.unit_id for u in missing)
    planned_groups = {frozenset(u.unit_id for u in g) for g in group_units(units, 256)}
    assert all(frozenset(u.unit_id for u in b.units) in planned_groups for b in batches)
    reduced = missing[0].with_lams(missing[0].lams[:1])   # a unit cut to its missing λ: batched with its kind
    (b,) = plan_batches(units, [reduced], 256)
    assert b.units == (reduced,) and b.write == {reduced.unit_id}


def test_a_batch_lost_by_its_executor_keeps_the_units_it_wrote(priors, test_solvers, tmp_path):
    from bench.plan.units import RunContext
    from bench.run.runner import run_units

    units = plan_units(make_grid(priors[:1], splits=["id"]), RunContext(isolate=False))
    (batch,) = plan_batches(units, units, 256)
    first = units[0].unit_id

    class LosesTheWorker:   # writes the batch's first unit, then loses the batch
        def map(self, fn, items, out_dir):
            for b in items:
                fn(UnitBatch(b.units, frozenset([first])), out_dir)
                yield b, RuntimeError("worker lost")

    got = {s.unit_id: r["status"] for s, r in run_units(LosesTheWorker(), [batch], tmp_path, progress=False)}
    assert got[first] == {"ok": 4} and all(v == {"error": 4} for k, v in got.items() if k != first)


# ------------------------------------------------------------------------------------------------ the batcher
class _Flow(torch.nn.Module):
    """A row-wise 'flow' that records the batch sizes it is called with."""

    image_shape, latent_shape = (1, 2, 2), (1, 2, 2)

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(1.5), requires_grad=False)
        self.calls = []

    def log_prob(self, x):
        self.calls.append(x.shape[0])
        return -(self.w * x.flatten(1) ** 2).sum(1) + torch.sin(x.flatten(1)).sum(1)

    def decode(self, z):
        self.calls.append(z.shape[0])
        return torch.tanh(z)


def _run_members(batcher, member, n: int) -> None:
    """``member(k)`` for k < n, each on its own thread, as the runner starts a batch's members."""
    batcher.open(n)
    threads = [threading.Thread(target=member, args=(k,), daemon=True) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a member never got its pass"


def _member_inputs(k: int, n: int) -> list:
    g = torch.Generator().manual_seed(k)
    return [torch.rand((2 + k, 1, 2, 2), generator=g) for _ in range(n)]


def test_pass_batcher_serves_every_member_its_own_rows_a_round_at_a_time():
    model = _Flow()
    batcher = PassBatcher(model)
    counts = [5, 3, 4]   # members that stop early leave the later rounds to the others
    got = [[] for _ in counts]

    def member(k):
        with batcher.member(k):
            for x in _member_inputs(k, counts[k]):
                xr = x.clone().requires_grad_(True)
                v = batcher.log_prob(xr)
                (g,) = torch.autograd.grad(v.sum(), xr)
                got[k].append((v.detach(), g, batcher.model_op("decode", x)))

    _run_members(batcher, member, len(counts))
    # rounds: log p (+∇) and decode alternate; a round holds every member still going, in member order
    assert batcher.rounds == 2 * max(counts)
    assert model.calls[:2] == [2 + 3 + 4] * 2 and model.calls[-2:] == [2] * 2
    alone = _Flow()
    for k, n in enumerate(counts):
        for x, (v, g, d) in zip(_member_inputs(k, n), got[k]):
            xr = x.clone().requires_grad_(True)
            want = objective.log_prior(alone, xr)   # the discretised value the harness scores with
            (want_g,) = torch.autograd.grad(want.sum(), xr)
            torch.testing.assert_close(v, want.detach())
            torch.testing.assert_close(g, want_g)
            torch.testing.assert_close(d, torch.tanh(x))


def test_backward_through_batched_forwards_is_one_batched_backward_per_round():
    model = _Flow()
    batcher = PassBatcher(model)
    counts, got = [3, 2], [[], []]
    backwards = []
    real_grad = torch.autograd.grad

    def member(k):
        with batcher.member(k):
            for z in _member_inputs(k, counts[k]):
                zr = z.clone().requires_grad_(True)
                x = batcher.model_op("decode", zr)
                (g,) = torch.autograd.grad((x ** 2).sum(), zr)   # what a latent-space solver does
                got[k].append((x.detach(), g))

    def counting_grad(outputs, inputs, *a, **kw):
        backwards.append(inputs.shape[0] if isinstance(inputs, torch.Tensor) else None)
        return real_grad(outputs, inputs, *a, **kw)

    torch.autograd.grad = counting_grad
    try:
        _run_members(batcher, member, 2)
    finally:
        torch.autograd.grad = real_grad
    # forward and backward rounds alternate; the batcher's backward covers both members' rows (2 + 3) while both go
    assert batcher.rounds == 2 * max(counts) and model.calls == [5, 5, 2]
    assert backwards.count(5) == 2 and not batcher._graphs
    for k, n in enumerate(counts):
        for z, (x, g) in zip(_member_inputs(k, n), got[k]):
            torch.testing.assert_close(x, torch.tanh(z))
            torch.testing.assert_close(g, 2 * torch.tanh(z) * (1 - torch.tanh(z) ** 2))


def test_a_failing_batched_pass_reaches_every_member_of_its_round():
    class Broken(_Flow):
        def log_prob(self, x):
            raise RuntimeError("no pass today")

    batcher = PassBatcher(Broken())
    errors = []

    def member(k):
        with batcher.member(k):
            try:
                batcher.log_prob(torch.rand(2, 1, 2, 2))
            except RuntimeError as e:
                errors.append(str(e))

    _run_members(batcher, member, 2)
    assert errors == ["no pass today"] * 2


def test_budget_is_charged_per_unit_before_the_batched_pass():
    batcher = PassBatcher(_Flow())
    bp = BudgetedPrior(batcher, 1, 2)
    bp.log_prob(torch.rand(2, 1, 2, 2))
    with pytest.raises(Exception, match="budget"):
        bp.log_prob(torch.rand(2, 1, 2, 2))
    assert batcher._model.calls == [2] and bp.refused


# ---------------------------------------------------------------------- every solver: batched units ≡ alone
SHIPPED = [n for n in SOLVERS.names()]


def test_every_solver_writes_the_same_rows_in_a_batch_of_units_as_alone(priors, tmp_path):
    """Each registered solver on 8 units (2 splits x 2 tasks x 2 seeds) of an analytic prior, solved in batches of
    units and each unit alone; the harness's part of the contract 'batched ≡ single' (the solvers' own is
    tests/test_solvers.py)."""
    g = make_grid(priors[:1], solvers=SHIPPED, seeds=[0, 1], budget=12, mle_steps=3)
    batched, alone = tmp_path / "batched", tmp_path / "alone"
    for out, rows in ((batched, None), (alone, 1)):
        s = run(g, out, batch_rows=rows)
        assert s.units_run == 8 * len(SHIPPED), s.line()
    a, b = rows_of(batched), rows_of(alone)
    assert (a["cell_id"] == b["cell_id"]).all()
    uses_prior = a["solver"].map(lambda n: SOLVERS.get(n).uses_prior)
    assert (a.loc[uses_prior, "pass_batch"] > b.loc[uses_prior, "pass_batch"]).all()
    for col in ("map_loss", "psnr", "ssim", "nfe_used"):
        np.testing.assert_allclose(a[col].to_numpy(float), b[col].to_numpy(float), rtol=1e-5, atol=1e-6,
                                   err_msg=col)
    assert (a["status"] == b["status"]).all()
