"""The operator contract every registered task must satisfy (tests/test_task_contract.py runs it over every task;
tests/test_plugins_task_solver.py runs it on a plugin task). Each check takes a task spec and a channel count."""
from __future__ import annotations

import pytest
import torch

from bench.core.errors import UserError
from bench.tasks import make_task

SIZE = 16


def images(b=3, c=1, s=SIZE, seed=0, lo=0.0, hi=1.0):
    return lo + (hi - lo) * torch.rand(b, c, s, s, generator=torch.Generator().manual_seed(seed))


def ids(b):
    return [f"test/{i:03d}" for i in range(b)]


def problem64(spec: str, c: int = 1, b: int = 3):
    """A problem of ``spec`` whose operator state is float64 (for exact adjointness checks)."""
    p = make_task(spec).make(images(b, c), ids(b), 0).to("cpu")
    p.state = {k: (v.double() if v.is_floating_point() else v) for k, v in p.state.items()}
    return p


def check_adjoint(spec: str, c: int = 1) -> None:
    """<f(x), r> = <x, fᵀ(r)> on random x and r (float64), and the shapes of f and fᵀ."""
    p = problem64(spec, c)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(p.batch_size, c, SIZE, SIZE, generator=g, dtype=torch.float64)
    r = torch.randn(p.y.shape, generator=g, dtype=torch.float64)
    lhs = (p.forward(x) * r).flatten(1).sum(1)
    rhs = (x * p.adjoint(r)).flatten(1).sum(1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-10)
    assert p.adjoint(r).shape == x.shape and p.forward(x).shape == p.y.shape


def check_least_norm(spec: str, c: int = 1) -> None:
    """f(f⁺(y)) = y, in image shape."""
    p = make_task(spec).make(images(2, c), ids(2), 0)
    x0 = p.least_norm()
    assert x0.shape == p.x_true.shape
    torch.testing.assert_close(p.forward(x0), p.y, rtol=1e-4, atol=1e-4)


def check_project(spec: str, c: int = 1) -> None:
    """Proj lands in the box, on {f(x) = y} when that set meets the box (x_true well inside the box, almost no
    noise), and it is idempotent there."""
    p = make_task(f"{spec}[sigma=1e-06]" if "[" not in spec else spec.replace("]", ",sigma=1e-06]")).make(
        images(3, c, lo=0.3, hi=0.7), ids(3), 0)
    z = images(3, c, seed=7) * 1.4 - 0.2
    P = p.project(z, iters=200)
    assert P.shape == z.shape and P.min() >= 0 and P.max() <= 1
    res = (p.forward(P) - p.y).flatten(1).norm(dim=1) / p.y.flatten(1).norm(dim=1)
    assert res.max() < 1e-3, res
    assert (p.project(P, iters=200) - P).abs().max() < 1e-3


def check_observed(spec: str, c: int = 1) -> None:
    """observed_image has the image shape and lies in [0,1] (or is y itself, for image-shaped observations);
    observed_mask is 0/1 in image shape; naive_estimate is in the box."""
    p = make_task(spec).make(images(2, c), ids(2), 0)
    obs = p.task.observed_image(p)
    assert obs.shape == p.x_true.shape and torch.isfinite(obs).all()
    assert (obs.min() >= 0 and obs.max() <= 1) or torch.equal(obs, p.y)
    m = p.task.observed_mask(p)
    assert m.shape == p.x_true.shape and set(m.unique().tolist()) <= {0.0, 1.0}
    est = p.naive_estimate()
    assert est.shape == p.x_true.shape and est.min() >= 0 and est.max() <= 1


def check_operator_norm(spec: str, c: int = 1) -> None:
    """operator_norm ≥ ||f(x)||/||x|| on random x, and dense_matrix (when offered) is the matrix of f."""
    p = problem64(spec, c)
    norm = float(p.task.operator_norm(p))
    g = torch.Generator().manual_seed(2)
    for _ in range(5):
        x = torch.randn(p.batch_size, c, SIZE, SIZE, generator=g, dtype=torch.float64)
        ratio = p.forward(x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
        assert (ratio <= norm * (1 + 1e-9)).all(), (ratio, norm)
    A = p.task.dense_matrix(p)
    if A is not None:
        x = torch.randn(p.batch_size, c, SIZE, SIZE, generator=g, dtype=torch.float64)
        torch.testing.assert_close(p.forward(x), x.flatten(1) @ A.double().T, rtol=1e-10, atol=1e-10)


def check_declarations(spec: str) -> None:
    """The declared hooks have the declared types; ``sigma`` is declared and a noise level <= 0 is refused (the
    noise likelihood divides by it)."""
    t = make_task(spec)
    assert isinstance(t.point_constraint, bool)
    assert isinstance(t.order, int) and isinstance(t.solver_defaults, dict)
    assert all(isinstance(v, dict) for v in t.solver_defaults.values())
    assert t.sweep_param is None or t.sweep_param in t.parameters
    assert "sigma" in t.parameters and t.description
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(UserError, match=f"parameter 'sigma' of task {t.name!r} must be > 0"):
            type(t)(**{**t.params, "sigma": bad})


ALL_CHECKS = (check_adjoint, check_least_norm, check_project, check_observed, check_operator_norm)


def check_all(spec: str) -> None:
    check_declarations(spec)
    for c in (1, 3):
        for check in ALL_CHECKS:
            check(spec, c)
