"""Forward models of AIPO §2.3/§4 (tasks/*.py): projections, masks, identity-keyed randomness, parameters. The
operator contract every task satisfies (adjointness, least norm, ...) is tests/test_task_contract.py."""
from __future__ import annotations

import math

import pytest
import torch

from bench.core.errors import UserError
from bench.tasks import TASKS, make_task
from bench.tasks.cs import CompressedSensing

ALL = ["denoise", "cs", "inpaint"]   # the tasks of the paper; every test below that is not about one of them runs
NAMES = TASKS.names()                # over every registered task


def _x(b=4, c=1, s=16, seed=0, lo=0.0, hi=1.0):
    return lo + (hi - lo) * torch.rand(b, c, s, s, generator=torch.Generator().manual_seed(seed))


def _ids(b):
    return [f"test/{i:03d}" for i in range(b)]


def test_registered():
    assert set(ALL) <= set(TASKS.names())


@pytest.mark.parametrize("name", NAMES)
def test_data_fit_grad(name):
    """data_fit_grad is the autograd gradient of data_fit."""
    p = make_task(name).make(_x(2), _ids(2), 0)
    x = _x(2, seed=5).requires_grad_(True)
    p.data_fit(x).sum().backward()
    torch.testing.assert_close(p.data_fit_grad(x.detach()), x.grad, rtol=1e-4, atol=1e-4)


def test_denoise_projection_is_clipped_y():
    p = make_task("denoise").make(_x(3), _ids(3), 0)
    z = _x(3, seed=9)
    assert torch.equal(p.project(z), p.y.clamp(0, 1))
    assert torch.equal(p.project(p.project(z)), p.project(z))


def test_cs_projection():
    """x_true well inside the box: P(x) lands on {Ax = y} ∩ [0,1]^n and is idempotent."""
    t = make_task("cs[m=0.1628,sigma=1e-06]")   # (almost) noiseless: x_true lies in the set
    xt = _x(3, lo=0.3, hi=0.7)
    p = t.make(xt, _ids(3), 0)
    z = _x(3, seed=7)
    P = p.project(z, iters=200)
    assert P.min() >= 0 and P.max() <= 1
    res = (p.forward(P) - p.y).norm(dim=1) / p.y.norm(dim=1)
    assert res.max() < 1e-3, res
    PP = p.project(P, iters=200)
    assert (PP - P).abs().max() < 1e-3
    # projecting moves z towards the set: the result is closer to z than x_true is (x_true is in the set)
    assert ((P - z).flatten(1).norm(dim=1) <= (xt - z).flatten(1).norm(dim=1) + 1e-4).all()


def test_inpaint_projection():
    p = make_task("inpaint").make(_x(3, c=3), _ids(3), 0)
    z = _x(3, c=3, seed=11) * 1.4 - 0.2
    P = p.project(z)
    M = p.state["mask"].bool()
    assert torch.equal(P[M], p.y.clamp(0, 1)[M])
    assert torch.equal(P[~M], z.clamp(0, 1)[~M])
    torch.testing.assert_close(p.project(P), P)


@pytest.mark.parametrize("size", [8, 16, 32])
def test_inpaint_mask(size):
    t = make_task("inpaint")
    b = t.params["block"]
    for image_id in ("a", "b", "c"):
        M = t.mask((3, size, size), image_id, 0)
        assert set(M.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(M[0], M[1]) and torch.equal(M[0], M[2])
        missing = 1 - M[0].mean().item()
        assert abs(missing - 0.25) <= b * b / size ** 2 + 1e-9
        tiles = M[0].view(size // b, b, size // b, b)
        # constant on each aligned b×b tile
        assert torch.equal(tiles.amin(dim=(1, 3)), tiles.amax(dim=(1, 3)))
    assert not torch.equal(t.mask((1, 16, 16), "a", 0), t.mask((1, 16, 16), "b", 0))


@pytest.mark.parametrize("name", NAMES)
def test_identity_keyed_randomness(name):
    t = make_task(name)
    x = _x(5, c=1)
    ids = _ids(5)
    p1 = t.make(x, ids, 2)
    p2 = make_task(name).make(x.clone(), list(ids), 2)
    assert torch.equal(p1.y, p2.y)
    perm = [3, 0, 4, 2, 1]
    p3 = t.make(x[perm], [ids[i] for i in perm], 2)
    assert torch.equal(p3.y, p1.y[perm])
    # a sub-batch gives the same rows too
    p4 = t.make(x[1:3], ids[1:3], 2)
    assert torch.equal(p4.y, p1.y[1:3])
    p5 = t.make(x, ids, 3)
    assert not torch.equal(p5.y, p1.y)
    # a different parameter value changes the draw
    other = make_task(f"{name}[sigma=0.05]").make(x, ids, 2)
    assert not torch.equal(other.y, p1.y)


@pytest.mark.parametrize("spec,sigma", [("denoise", 0.1), ("cs", 0.1), ("inpaint", 0.02)])
def test_noise_std(spec, sigma):
    t = make_task(spec)
    x = torch.full((16, 1, 16, 16), 0.5)
    p = t.make(x, _ids(16), 0)
    e = p.y - p.forward(x)
    if spec == "inpaint":
        e = e[p.state["mask"].bool()]
    std = e.std().item()
    assert abs(std - sigma) < 0.05 * sigma, std
    assert abs(e.mean().item()) < 4 * sigma / math.sqrt(e.numel())   # 4 standard errors


def test_cs_matrix_and_m():
    t = make_task("cs[m=0.25]")
    assert t.m_for(256) == 64
    p = t.make(_x(2), _ids(2), 0)
    assert p.y.shape == (2, 64) and p.state["A"].shape == (64, 256)
    A = CompressedSensing(m=2000).matrix(4096, 0)
    assert A.shape == (2000, 4096)
    assert abs(A.var().item() - 1 / 2000) < 0.02 / 2000
    assert make_task("cs[m=100]").make(_x(2), _ids(2), 0).y.shape == (2, 100)
    assert make_task("cs[m=1.0]").m_for(256) == 256
    t2000 = make_task("cs[m=2000]")
    assert t2000.params["m"] == 2000 and isinstance(t2000.params["m"], int) and t2000.spec == "cs[m=2000]"
    # A is shared by the images of one seed and differs across seeds
    assert torch.equal(t.matrix(256, 0), p.state["A"]) and not torch.equal(t.matrix(256, 1), p.state["A"])


@pytest.mark.parametrize("spec,match", [
    ("cs[m=0]", "m"), ("cs[m=-3]", "m"), ("cs[m=1.5]", "m"), ("denoise[sigma=-0.1]", "sigma"),
    ("cs[sigma=-1]", "sigma"), ("inpaint[frac=1.2]", "frac"), ("inpaint[block=0]", "block"),
    ("blur", "blur"), ("denoise[foo=1]", "foo"), ("cs[m=abc]", "m"),
])
def test_bad_params(spec, match):
    with pytest.raises(UserError, match=match):
        make_task(spec)


def test_bad_params_at_make():
    with pytest.raises(UserError, match="exceed"):
        make_task("cs[m=300]").make(_x(1), _ids(1), 0)
    with pytest.raises(UserError, match="block"):
        make_task("inpaint[block=5]").make(_x(1), _ids(1), 0)


def test_take_reorders_state():
    p = make_task("inpaint").make(_x(4), _ids(4), 0)
    q = p.take([2, 0, 2])
    assert q.image_ids == ["test/002", "test/000", "test/002"]
    assert torch.equal(q.state["mask"], p.state["mask"][[2, 0, 2]])
    assert torch.equal(q.y, p.y[[2, 0, 2]]) and torch.equal(q.x_true, p.x_true[[2, 0, 2]])
    z = _x(3, seed=4)
    assert torch.equal(q.data_fit(z), torch.stack([p.take([i]).data_fit(z[k:k + 1])[0]
                                                   for k, i in enumerate([2, 0, 2])]))
    c = make_task("cs").make(_x(4), _ids(4), 0).take(torch.tensor([1, 3]))
    assert c.state["A"].shape[1] == 256 and c.y.shape[0] == 2  # shared state is kept whole


def test_spec_roundtrip():
    assert make_task("cs").spec == "cs"
    assert make_task("cs[m=0.1628]").spec == "cs[m=0.1628]"
    assert make_task(make_task("inpaint[sigma=0.05]").spec).params == make_task("inpaint[sigma=0.05]").params


@pytest.mark.parametrize("name", NAMES)
def test_least_norm_solves_f_of_x_equals_y(name):
    """f(f⁺(y)) = y, and f⁺(y) is the minimum-norm solution (it lies in the row space of f: f⁺(y) = fᵀ(w))."""
    p = make_task(name).make(_x(2), _ids(2), 0)
    x0 = p.least_norm()
    assert x0.shape == p.x_true.shape
    torch.testing.assert_close(p.forward(x0), p.y, rtol=1e-4, atol=1e-4)
    A = p.task.dense_matrix(p)
    if A is not None:   # row space of the matrix
        w = torch.linalg.lstsq(A.double().T, x0.flatten(1).double().T).solution.T
        torch.testing.assert_close(p.adjoint(w.float()), x0, rtol=1e-4, atol=1e-4)


def test_naive_estimates():
    x = _x(2)
    d = make_task("denoise").make(x, _ids(2), 0)
    assert torch.equal(d.naive_estimate(), d.y.clamp(0, 1))
    c = make_task("cs").make(x, _ids(2), 0)
    assert torch.equal(c.naive_estimate(), c.least_norm().clamp(0, 1))
    i = make_task("inpaint").make(x, _ids(2), 0)
    M, est = i.state["mask"], i.naive_estimate()
    assert torch.equal(est[M.bool()], i.y.clamp(0, 1)[M.bool()])
    for r in range(2):
        fill = (i.y[r][M[r].bool()]).mean()
        torch.testing.assert_close(est[r][~M[r].bool()], fill.clamp(0, 1).expand(int((M[r] == 0).sum())))


def test_cs_noise_norm_convention():
    """noise = "norm" (Asim): sigma is the expected noise norm, so the per-measurement σ is sigma/√m."""
    t = make_task("cs[m=0.5,noise=norm]")
    p = t.make(torch.full((64, 1, 16, 16), 0.5), _ids(64), 0)
    assert p.sigma == pytest.approx(0.1 / math.sqrt(128))
    e = p.y - p.forward(p.x_true)
    assert e.norm(dim=1).pow(2).mean().sqrt().item() == pytest.approx(0.1, rel=0.05)
    with pytest.raises(UserError, match="parameter 'noise' of task 'cs' must be one of entry, norm, got 'bogus'"):
        make_task("cs[noise=bogus]")


def test_declared_hooks_of_the_paper_tasks():
    """The hooks that replaced the name checks: point constraint (denoise), table order, the cs sweep parameter,
    the dense matrix (cs: the tensor the problem holds), the figure image of y and its mask."""
    assert [TASKS.get(n).point_constraint for n in ALL] == [True, False, False]
    assert [TASKS.get(n).order for n in ALL] == [0, 1, 2]
    assert [TASKS.get(n).sweep_param for n in ALL] == [None, "m", None]
    x = _x(2)
    c = make_task("cs[m=0.25]").make(x, _ids(2), 0)
    assert c.task.dense_matrix(c) is c.state["A"]
    torch.testing.assert_close(c.task.operator_norm(c), float(torch.linalg.svdvals(c.state["A64"])[0]))
    assert torch.equal(c.task.observed_image(c), c.least_norm().clamp(0, 1))
    for name in ("denoise", "inpaint"):
        p = make_task(name).make(x, _ids(2), 0)
        assert p.task.dense_matrix(p) is None and p.task.operator_norm(p) == 1.0
        assert torch.equal(p.task.observed_image(p), p.y)
    i = make_task("inpaint").make(x, _ids(2), 0)
    assert torch.equal(i.task.observed_mask(i), i.state["mask"])
    assert torch.equal(c.task.observed_mask(c), torch.ones_like(x))
