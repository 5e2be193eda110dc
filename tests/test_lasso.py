"""Lasso baselines (Asim et al. 2020, footnote 1): bases, FISTA against scikit-learn, and the solver contract."""
import math

import numpy as np
import pytest
import pywt
import scipy.fft
import torch

from bench.core.errors import UserError
from bench.solvers.base import SOLVERS, SolveContext, make_solver
from bench.solvers.lasso import as_double, fista, lasso_objective, make_basis, operator_norm_sq, soft, wavelet_matrix
from bench.tasks import make_task

LASSO = ["lasso-dct", "lasso-wvt"]
BASES = [("dct", {}), ("wavelet", {"wavelet": "haar"}), ("wavelet", {"wavelet": "db4", "level": 1})]


def synthesis_matrix(basis, H, W) -> torch.Tensor:
    """Φ (HW×HW) on row-major vectorised channels: column k is the synthesis of the k-th unit coefficient."""
    unit = torch.eye(H * W, dtype=torch.float64).view(H * W, 1, H, W)
    return basis.synth(unit).reshape(H * W, H * W).T


def images(B, C=3, H=8, W=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(B, C, H + 2, W + 2, generator=g), 3, 1)
    return smooth.clamp(0, 1)


@pytest.mark.filterwarnings("ignore:Level value")
@pytest.mark.parametrize("kind,kw", BASES)
@pytest.mark.parametrize("H", [8, 16])
def test_basis_orthonormal_and_matches_reference(kind, kw, H):
    basis = make_basis(kind, H, H, "cpu", **kw)
    phi = synthesis_matrix(basis, H, H)
    assert torch.allclose(phi.T @ phi, torch.eye(H * H, dtype=phi.dtype), atol=1e-10)
    c = torch.randn(2, 3, H, H, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x = basis.synth(c)
    for b in range(2):
        for ch in range(3):
            cc = c[b, ch].numpy()
            if kind == "dct":
                ref = scipy.fft.idctn(cc, norm="ortho")
            else:
                level = pywt.dwt_max_level(H, pywt.Wavelet(kw["wavelet"]).dec_len) if "level" not in kw else kw["level"]
                _, sl = pywt.coeffs_to_array(pywt.wavedec2(np.zeros((H, H)), kw["wavelet"], mode="periodization",
                                                           level=level))
                ref = pywt.waverec2(pywt.array_to_coeffs(cc, sl, output_format="wavedec2"), kw["wavelet"],
                                    mode="periodization")
            np.testing.assert_allclose(x[b, ch].numpy(), ref, atol=1e-12)
            np.testing.assert_allclose((phi @ c[b, ch].reshape(-1)).reshape(H, H).numpy(), ref, atol=1e-12)
    assert torch.allclose(basis.analysis(x), c, atol=1e-12)


def test_wavelet_rejects_bad_choices():
    with pytest.raises(UserError):
        make_solver("lasso-wvt[wavelet=bior2.2]")
    with pytest.raises(UserError):
        make_solver("lasso-wvt[wavelet=nope]")
    with pytest.raises(UserError):
        make_solver("lasso-dct[tol=0]")
    with pytest.raises(UserError):
        wavelet_matrix(12, 12, "haar", 3)


def test_fista_matches_sklearn_lasso_on_cs():
    """sklearn minimises (1/(2m))||y − Xw||² + α_sk||w||₁; ours is ||y − Xw||² + α||w||₁, so α_sk = α/(2m)."""
    from sklearn.linear_model import Lasso

    task = make_task("cs[m=30,sigma=0.05]")
    x = images(1, C=1)
    p = task.make(x, ["img0"], seed=0)
    alpha = 0.01
    basis = make_basis("dct", 8, 8, "cpu")
    c, iters, conv = fista(p, basis, alpha, tol=1e-10, max_iter=50000)
    assert bool(conv.all())
    X = (p.state["A"].double() @ synthesis_matrix(basis, 8, 8)).numpy()
    m = X.shape[0]
    sk = Lasso(alpha=alpha / (2 * m), fit_intercept=False, tol=1e-12, max_iter=1_000_000).fit(X, p.y[0].double().numpy())
    w = torch.as_tensor(sk.coef_).view(1, 1, 8, 8)
    pd = as_double(p)
    f_ours, f_sk = lasso_objective(pd, c, alpha, basis), lasso_objective(pd, w, alpha, basis)
    assert abs(float(f_ours - f_sk)) <= 1e-6 * float(f_sk)
    assert float((c - w).norm() / w.norm()) < 1e-4


@pytest.mark.parametrize("task_spec", ["denoise", "cs[m=0.3]", "inpaint"])
@pytest.mark.parametrize("name", LASSO)
def test_solver_contract_objective_and_batching(name, task_spec):
    task = make_task(task_spec)
    x = images(4)
    ids = [f"img{i}" for i in range(4)]
    p = task.make(x, ids, seed=0)
    solver = make_solver(name)
    assert solver.uses_prior is False and solver.lam_independent is True
    lam = torch.tensor([0.5, 2.0, 0.5, 2.0])
    res = solver.solve(p, None, lam, SolveContext(budget=0))
    assert res.x_hat.shape == x.shape and res.x_hat.dtype == x.dtype
    assert res.info["iterations"].shape == (4,) and res.info["iterations"].dtype == torch.long
    assert bool(res.info["converged"].all())
    assert len(res.trace.nfe) == 0
    # the Lasso objective decreases from c = 0 to the solution
    basis = solver.basis(8, 8, "cpu")
    pd = as_double(p)
    c = basis.analysis(res.x_hat.double())
    f0 = lasso_objective(pd, torch.zeros_like(c), 0.01, basis)
    assert bool((lasso_objective(pd, c, 0.01, basis) < f0).all())
    # batched == single, in reversed order too
    for i in range(4):
        alone = solver.solve(p.take([i]), None, lam[i:i + 1], SolveContext(budget=0))
        assert torch.allclose(alone.x_hat[0], res.x_hat[i], atol=1e-5)
        assert int(alone.info["iterations"][0]) == int(res.info["iterations"][i])
    rev = solver.solve(p.take([3, 2, 1, 0]), None, lam.flip(0), SolveContext(budget=0))
    assert torch.allclose(rev.x_hat.flip(0), res.x_hat, atol=1e-5)


@pytest.mark.parametrize("name", LASSO)
def test_denoise_is_soft_threshold(name):
    """For A = I the minimiser of ||Φc − y||² + α||c||₁ is soft(Φᵀy, α/2); α defaults to the universal threshold
    2σ√(2 ln n) (σ = 0.1, n = the pixels of all channels) and is recorded per row."""
    from bench.solvers.lasso import universal_alpha

    p = make_task("denoise").make(images(3, H=16, W=16), ["a", "b", "c"], seed=1)
    solver = make_solver(name)
    basis = solver.basis(16, 16, "cpu")
    alpha = universal_alpha(0.1, p.n)
    assert alpha == pytest.approx(0.2 * (2 * math.log(p.n)) ** 0.5)
    c_ref = soft(basis.analysis(p.y.double()), alpha / 2)
    res = solver.solve(p, None, torch.ones(3), SolveContext(budget=0))
    assert torch.allclose(res.x_hat.double(), basis.synth(c_ref), atol=1e-6)
    assert int(res.info["iterations"].max()) <= 3
    assert torch.allclose(res.info["alpha"], torch.full((3,), alpha))


def test_optimality_conditions_inpaint():
    """KKT of the Lasso at the returned point: |∇| ≤ α where c = 0, ∇ = −α sign(c) elsewhere."""
    p = make_task("inpaint").make(images(2, H=16, W=16), ["a", "b"], seed=0)
    basis = make_basis("wavelet", 16, 16, "cpu")
    c, _, conv = fista(p, basis, 0.01, tol=1e-10, max_iter=20000)
    assert bool(conv.all())
    g = basis.analysis(as_double(p).data_fit_grad(basis.synth(c)))
    zero = c == 0
    assert float(g[zero].abs().max()) <= 0.01 * (1 + 1e-6)
    assert torch.allclose(g[~zero], -0.01 * torch.sign(c[~zero]), atol=1e-6)


def test_operator_norm():
    x = images(2, H=8, W=8)
    cs = make_task("cs[m=40]").make(x, ["a", "b"], seed=0)
    ref = torch.linalg.matrix_norm(cs.state["A"].double(), 2) ** 2
    assert torch.allclose(operator_norm_sq(cs), ref.expand(2), rtol=1e-10)
    for spec in ("denoise", "inpaint"):
        p = make_task(spec).make(x, ["a", "b"], seed=0)
        assert torch.allclose(operator_norm_sq(p), torch.ones(2, dtype=torch.float64))


def test_registered():
    assert set(LASSO) <= set(SOLVERS.names())
    assert make_solver("lasso-wvt[wavelet=db4]").spec == "lasso-wvt[wavelet=db4]"
