"""The solver contract, parametrized over every registered solver, and the algorithm details of the
prior-based solvers (AIPO Alg. 1/2, the MLE stage, the batched L-BFGS).

Prior: the shipped ``realnvp-xs`` checkpoint if present, else a RealNVP xs at 8×8 with seeded random weights
(its zero-initialised output layers perturbed, so it is not the identity flow). Problems: lfw-faces 8×8.
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch

from bench.core import objective
from bench.core.errors import BudgetExceeded, UserError
from bench.run.budget import BudgetedPrior
from bench.solvers.base import SOLVERS, SolveContext, Solver, make_solver
from bench.solvers.optim import Adam
from bench.solvers.stages import evaluate, mle
from bench.tasks import TASKS, make_task

NAMES = SOLVERS.names()
TASK_NAMES = TASKS.names()
MLE_TASKS = [t for t in TASK_NAMES if not TASKS.get(t).point_constraint]   # the MLE stage spends passes
PRIOR_BASED = [n for n in NAMES if SOLVERS.get(n).uses_prior]
SIZE, BUDGET, MLE_STEPS = 8, 60, 20


@pytest.fixture(scope="module")
def prior():
    from bench.priors import catalog
    from bench.priors.base import ARCHS

    if "realnvp-xs" in catalog.shipped_names():
        model = catalog.load_prior("realnvp-xs").model
        if tuple(model.image_shape[1:]) == (SIZE, SIZE):
            return model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ARCHS.get("realnvp")(image_shape=(1, SIZE, SIZE), preset="xs")
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def faces():
    from bench.datasets.base import load_dataset

    return load_dataset("lfw-faces", "test", SIZE)


def problem(faces, task="cs", n=4, lams=(1.0,), seed=0):
    """n images × len(lams) λ values, rows image-major; returns (problem, lam)."""
    x = faces.images[:n].repeat_interleave(len(lams), 0)
    ids = [i for i in faces.ids[:n] for _ in lams]
    lam = torch.tensor(list(lams) * n, dtype=torch.float32)
    return make_task(task).make(x, ids, seed), lam


def solve(name, pb, lam, model, budget=BUDGET, seed=0, **params):
    s = make_solver(name) if not params else SOLVERS.get(name)(**params)
    own = pb.for_solver()   # the trace points' losses: the harness's own copy of the problem, each row's λ
    bp = BudgetedPrior(model, budget, pb.batch_size, lambda x, lp: objective.map_loss(own.data_nll(x), lp, lam))
    ctx = SolveContext(budget=budget, mle_steps=MLE_STEPS, seed=seed, trace_every=10)
    return s.solve(pb, bp if s.uses_prior else None, lam, ctx), bp, s, ctx


# --- contract, every registered solver ----------------------------------------------------------------------------
def test_all_issue_solvers_registered():
    assert {"aipo", "aipo-uniform", "mle-init", "random-init", "zero-init", "latent-lbfgs"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_declared_attributes(name):
    cls = SOLVERS.get(name)
    assert isinstance(cls.parameters, dict) and cls.description
    assert set(cls.tunable) <= set(cls.parameters)
    assert all(isinstance(getattr(cls, a), bool) for a in ("uses_prior", "lam_independent", "chaotic", "stochastic"))
    assert set(cls.defaults()) == set(cls.parameters) and cls().spec == name


@pytest.mark.parametrize("task", TASK_NAMES)
@pytest.mark.parametrize("name", NAMES)
def test_loss_decreases_from_own_start(name, task, prior, faces):
    pb, lam = problem(faces, task, n=3)
    res, bp, s, ctx = solve(name, pb, lam, prior)
    assert res.x_hat.shape == pb.x_true.shape and torch.isfinite(res.x_hat).all()
    if s.uses_prior and not s.lam_independent:   # x-space MAP solvers: the MAP loss itself went down
        x0 = s.initial_point(pb, BudgetedPrior(prior, BUDGET, pb.batch_size), lam.clone(), ctx)
        start = objective.problem_map_loss(pb, prior, x0.clamp(0, 1), lam)
        final = objective.problem_map_loss(pb, prior, res.x_hat.clamp(0, 1), lam)
        assert (final < start).all(), (start, final)
        kind, _, last = bp.trace_points()[-1]   # the trace ends on the harness's loss of x_hat (last evaluated)
        assert kind == "loss" and torch.allclose(last.float(), final, rtol=1e-4, atol=1e-3)
    else:
        # λ-independent solvers minimise their own objective, not L(x; λ) (latent-lbfgs with γ = 0 fits the
        # noise, so its MAP loss may rise): their own objective must go down from their start — reported as
        # info["objective_start"], or x = 0 (c = 0 for Lasso) for solvers without a prior
        assert "objective" in res.info, f"solver {name!r} exposes no info['objective'] to check"
        start = res.info.get("objective_start")
        if start is None:
            assert not s.uses_prior
            start = pb.data_fit(torch.zeros_like(pb.x_true))
        assert (res.info["objective"].double().cpu() < start.double().cpu()).all()


@pytest.mark.parametrize("budget", [BUDGET, 25, 3])
@pytest.mark.parametrize("name", PRIOR_BASED)
def test_budget_never_exceeded(name, budget, prior, faces):
    pb, lam = problem(faces, "inpaint", n=2, lams=(0.5, 2.0))
    res, bp, s, _ = solve(name, pb, lam, prior, budget=budget)
    assert (bp.used <= budget).all() and (bp.used >= 1).all()
    assert torch.isfinite(res.x_hat).all() and res.x_hat.min() >= 0 and res.x_hat.max() <= 1
    if bp.trace_points():   # anytime trace: passes non-decreasing, last entry = passes used
        nfe = torch.stack([used for _, used, _ in bp.trace_points()])
        assert (nfe[1:] >= nfe[:-1]).all() and torch.equal(nfe[-1], bp.used)
    if not s.lam_independent:   # fixed-budget x-space solvers spend the whole budget
        assert (bp.used == budget).all()


@pytest.fixture
def overspender():
    name = "_test-overspend"

    class Overspend(Solver):
        """Evaluates log p until it is stopped — relies on the budget exception, as no solver may."""

        description = "test only"

        def solve(self, problem, prior, lam, ctx):
            while True:
                prior.log_prob(problem.y.clamp(0, 1))

    with SOLVERS.temporarily(name, Overspend):
        yield name


def test_overspending_solver_is_stopped(overspender, prior, faces):
    pb, lam = problem(faces, "denoise", n=2)
    assert overspender not in NAMES
    with pytest.raises(BudgetExceeded) as err:
        solve(overspender, pb, lam, prior, budget=7)
    assert err.value.rows == [0, 1] and err.value.budget == 7


@pytest.fixture
def batch_invariant_kernels():
    """oneDNN's CPU convolutions pick kernels by batch size: one image alone and the same image in a batch of 8
    differ by ~1e-7 in log p (measured; 0 with oneDNN off), and L-BFGS amplifies that to ~5e-5 in x_hat over 60
    passes. The solvers' own arithmetic is row-independent — with batch-invariant kernels the results below are
    bitwise equal — so the contract is checked with oneDNN off. (The cs operator accumulates in float64 for the
    same reason: MKL's float32 GEMM differs between 1 and 8 rows.)"""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # torch warns about TF32-on-oneDNN when the flag is set
        with torch.backends.mkldnn.flags(enabled=False):
            with warnings.catch_warnings():
                yield


@pytest.mark.parametrize("task", TASK_NAMES)
@pytest.mark.parametrize("name", NAMES)
def test_batched_equals_single(name, task, prior, faces, batch_invariant_kernels):
    pb, lam = problem(faces, task, n=4, lams=(0.5, 2.0))
    batched, bp, s, _ = solve(name, pb, lam, prior, budget=40, seed=1)
    for i in range(pb.batch_size):
        alone, bp1, _, _ = solve(name, pb.take([i]), lam[i:i + 1], prior, budget=40, seed=1)
        torch.testing.assert_close(alone.x_hat[0], batched.x_hat[i], rtol=0, atol=1e-5)
        if s.uses_prior:
            assert int(bp1.used[0]) == int(bp.used[i])


@pytest.mark.parametrize("name", NAMES)
def test_seed_changes_random_init_only(name, prior, faces):
    pb, lam = problem(faces, "cs", n=2)
    a = solve(name, pb, lam, prior, budget=30, seed=0)[0].x_hat
    b = solve(name, pb, lam, prior, budget=30, seed=0)[0].x_hat
    c = solve(name, pb, lam, prior, budget=30, seed=1)[0].x_hat
    assert torch.equal(a, b)
    if SOLVERS.get(name).stochastic:
        assert (a - c).flatten(1).abs().amax(1).min() > 1e-3
    else:
        assert torch.equal(a, c)


# --- the MLE stage (AIPO eq. 4, App. A) ----------------------------------------------------------------------------
@pytest.mark.parametrize("task", MLE_TASKS)
def test_mle_is_feasible(task, prior, faces):
    pb, _ = problem(faces, task, n=3)
    bp = BudgetedPrior(prior, MLE_STEPS, pb.batch_size)
    x = mle(pb, bp, MLE_STEPS, 0.01)
    assert (bp.used == MLE_STEPS).all()
    assert x.min() >= 0 and x.max() <= 1
    if "mask" in pb.state:
        M = pb.state["mask"]
        assert torch.equal((M * x), (M * pb.y).clamp(0, 1))
        assert (M == 0).any() and ((1 - M) * (x - 0.5)).abs().sum() > 0   # missing pixels moved off the start
    else:
        rel = pb.residual(x).norm(dim=1) / pb.y.norm(dim=1)
        assert (rel < 1e-3).all(), rel
    # ascent: log p_G went up from the feasible start
    from bench.solvers.stages import mle_start

    assert (prior.log_prob(x) > prior.log_prob(mle_start(pb))).all()


@pytest.mark.parametrize("task", [t for t in TASK_NAMES if t not in MLE_TASKS])
def test_mle_free_for_point_constraints(task, prior, faces):
    pb, _ = problem(faces, task, n=2)
    bp = BudgetedPrior(prior, 5, pb.batch_size)
    x = mle(pb, bp, 500, 0.01)
    assert torch.equal(x, pb.y.clamp(0, 1)) and (bp.used == 0).all()


# --- AIPO Algorithm 2 -----------------------------------------------------------------------------------------------
class RecordingPrior(BudgetedPrior):
    """Remembers the x of every log_prob call (to check where a stage starts)."""

    def __init__(self, *a):
        super().__init__(*a)
        self.seen = []

    def log_prob(self, x, rows=None):
        self.seen.append(x.detach().clone())
        return super().log_prob(x, rows)


@pytest.mark.parametrize("budget", [250, 130])   # 130: room for round 0 only, then the budget forces the jump
@pytest.mark.parametrize("task", ["cs", "denoise"])
def test_aipo_schedule(task, budget, prior, faces):
    pb, lam = problem(faces, task, n=2, lams=(0.5, 2.0))
    s = make_solver("aipo")
    ctx = SolveContext(budget=budget, mle_steps=MLE_STEPS)
    bp = RecordingPrior(prior, budget, pb.batch_size)
    res = s.solve(pb, bp, lam, ctx)
    sched = res.info["lam_schedule"]
    assert sched.shape[0] == pb.batch_size and sched.shape[1] >= 2
    assert (sched[:, 1:] >= sched[:, :-1]).all()                 # monotone
    assert torch.equal(sched[:, -1], lam) and (sched[:, 0] > 0).all()  # the λ = 0 round takes no step
    assert (sched <= lam[:, None]).all()
    assert ((res.info["lam_reached"] > 0) & (res.info["lam_reached"] <= lam)).all()
    assert (res.info["rounds"] >= 1).all()
    # the first stage starts from the MLE: the first pass after the MLE stage evaluates x*(0)
    n_mle = 0 if TASKS.get(task).point_constraint else MLE_STEPS
    x_mle = mle(pb, BudgetedPrior(prior, budget, pb.batch_size), n_mle, s.params["mle_lr"],
                optimizer=s.params["mle_optimizer"], decay=s.params["lr_decay"])
    torch.testing.assert_close(bp.seen[n_mle], x_mle, rtol=0, atol=0)
    assert (bp.used == budget).all()


def test_aipo_delta_min_bounds_table4():
    """δ_min,h = min(4δ_min⁰, 1): at Λ = 2 it is 0.4; at Λ = 10 (δ_min⁰ = 0.5) it is capped at 1, never 2."""
    from bench.solvers.aipo import delta_min_bounds

    lo, hi = delta_min_bounds(torch.tensor([0.1, 0.5]))
    torch.testing.assert_close(lo, torch.tensor([0.025, 0.125]))
    torch.testing.assert_close(hi, torch.tensor([0.4, 1.0]))


def test_aipo_delta_min_update_guard():
    """Line 10 is skipped where Δ_L is NULL (NaN, the λ = 0 round) or 0, and clips δ_min^(Δ'_L/Δ_L) otherwise."""
    from bench.solvers.aipo import update_delta_min

    dmin = torch.full((4,), 0.1)
    lo, hi = torch.full((4,), 0.025), torch.full((4,), 0.4)
    DL = torch.tensor([float("nan"), 0.0, 0.2, 0.2])
    DLp = torch.tensor([0.1, 0.1, 0.1, 10.0])
    out = update_delta_min(dmin, DLp, DL, lo, hi)
    torch.testing.assert_close(out, torch.tensor([0.1, 0.1, 0.1 ** 0.5, 0.025]))


def test_aipo_lambda0_round_spends_nothing(prior, faces):
    """The λ = 0 round neither moves x*(0) nor spends passes: the MLE stage is followed by exactly one pass at
    x*(0), whose gradient already steps at the first λ > 0."""
    pb, lam = problem(faces, "cs", n=2, lams=(0.5, 2.0))
    s = make_solver("aipo")
    bp = RecordingPrior(prior, BUDGET, pb.batch_size)
    res = s.solve(pb, bp, lam, SolveContext(budget=BUDGET, mle_steps=MLE_STEPS))
    x_mle = bp.seen[MLE_STEPS]
    assert not torch.equal(bp.seen[MLE_STEPS + 1], x_mle)
    assert (res.info["lam_schedule"][:, 0] >= 0.05 * lam).all()   # the first λ is δ ≥ δ_min⁰ = Λ/20


def test_aipo_budget_forces_jump(prior, faces):
    """With too few passes for the adaptive schedule (Table 4's K = 40 at 90 passes), every row jumps to Λ and
    finishes there; with the first round sized to the budget (K = 0) the same rows reach Λ on their own."""
    pb, lam = problem(faces, "denoise", n=2, lams=(2.0,))
    res, bp, _, _ = solve("aipo", pb, lam, prior, budget=90, K=40)
    assert (res.info["lam_reached"] < lam).all() and torch.equal(res.info["lam_schedule"][:, -1], lam)
    res, bp, _, _ = solve("aipo", pb, lam, prior, budget=400)
    assert torch.equal(res.info["lam_reached"], lam) and (res.info["K0"] < 40).all()


def test_aipo_gd_and_reset_variants(prior, faces):
    pb, lam = problem(faces, "cs", n=2)
    for params in ({"optimizer": "gd"}, {"adam_reset": True}):
        res, bp, _, _ = solve("aipo", pb, lam, prior, **params)
        assert torch.isfinite(res.x_hat).all() and (bp.used == BUDGET).all()


def test_aipo_uniform_info(prior, faces):
    pb, lam = problem(faces, "cs", n=2)
    res, bp, s, _ = solve("aipo-uniform", pb, lam, prior, budget=200, optimizer="gd")
    assert (res.info["lipschitz"] > 0).all() and torch.isfinite(res.info["lipschitz"]).all()
    S = 200 - MLE_STEPS - 1 - s.params["lipschitz_iters"]
    assert (res.info["iterations"] == S).all() and (res.info["steps_per_stage"] == S // 20).all()
    res, bp, s, _ = solve("aipo-uniform", pb, lam, prior, budget=200)        # Adam: no L estimate, no pass for it
    assert torch.isnan(res.info["lipschitz"]).all() and (res.info["iterations"] == 200 - MLE_STEPS - 1).all()

def test_lipschitz_estimate_on_quadratic(faces):
    """Denoising with a flat prior (λ = 0 part only): ∇²L = I/σ² = 100·I, so the estimate must be 100."""
    from bench.priors.gaussian import GaussianLogitPrior
    from bench.solvers.aipo_uniform import lipschitz_estimate

    pb, _ = problem(faces, "denoise", n=2)
    bp = BudgetedPrior(GaussianLogitPrior((1, SIZE, SIZE)), 10, 2)
    x = pb.y.clamp(0.2, 0.8)
    e0 = evaluate(pb, bp, x)
    L = lipschitz_estimate(pb, bp, x, torch.zeros(2), e0, 3, 0.01)
    torch.testing.assert_close(L, torch.full((2,), 100.0), rtol=1e-3, atol=0)


# --- optimisers -----------------------------------------------------------------------------------------------------
def test_adam_matches_torch():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 5, generator=g)
    grads = [torch.randn(3, 5, generator=g) for _ in range(4)]
    p = x0.clone().requires_grad_(True)
    ref = torch.optim.Adam([p], lr=0.05)
    ours, x = Adam(0.05), x0.clone()
    for gr in grads:
        p.grad = gr.clone()
        ref.step()
        x = ours.step(x, gr)
    torch.testing.assert_close(x, p.detach(), rtol=1e-6, atol=1e-7)


def test_latent_lbfgs_task_defaults(prior, faces):
    for task, (lr, steps, gamma) in {"cs": (0.1, 30, 0.0), "denoise": (1.0, 20, math.sqrt(SIZE * SIZE / 12288)),
                                     "inpaint": (1.0, 20, 0.0)}.items():
        pb, lam = problem(faces, task, n=1)
        res, bp, _, _ = solve("latent-lbfgs", pb, lam, prior, budget=10)
        assert (res.info["lr"], res.info["steps"], res.info["gamma"]) == (
            pytest.approx([lr]), pytest.approx([steps]), pytest.approx([gamma]))
    res, _, _, _ = solve("latent-lbfgs", pb, lam, prior, budget=10, lr=0.5, penalty="l2sq", gamma=0.1)
    assert float(res.info["lr"][0]) == 0.5 and math.isclose(float(res.info["gamma"][0]), 0.1, rel_tol=1e-6)


def test_typed_parameter_declared_none_is_checked():
    with pytest.raises(UserError, match=r"parameter 'lr' of solver 'latent-lbfgs' must be a number \(float\)"):
        make_solver("latent-lbfgs[lr=abc]")
