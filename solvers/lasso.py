"""Shared maths of the Lasso baselines (Asim et al. 2020, footnote 1): orthonormal bases and batched FISTA.

    min_c  ||A Φ c − y||² + α ||c||₁,     x̂ = Φ c,      α = 2σ√(2 ln n) (robust) or 0.01 (paper, Asim fn. 1)

Φ is an orthonormal synthesis applied per colour channel: the 2-D DCT-II (``scipy.fft``, ``norm="ortho"``) or a
periodized orthogonal wavelet (``pywt.waverec2``, ``mode="periodization"``). The paper solved it by coordinate
descent (scikit-learn); here it is FISTA (Beck & Teboulle 2009, Alg. 2 with constant step 1/L) with the gradient
restart of O'Donoghue & Candès (2015), batched over rows, computed in float64, stopped per row at a stated
tolerance. This module registers nothing: ``lasso_dct.py`` and ``lasso_wvt.py`` register the two solvers.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from bench.core.errors import UserError
from bench.core.lazy import lazy_module
from bench.core.registry import Param
from bench.solvers.base import Solver, SolveResult

torch = lazy_module("torch")


# ----------------------------------------------------------------------------------------------------- bases
@functools.lru_cache(maxsize=8)
def dct_matrix(n: int) -> np.ndarray:
    """D (n×n) with D v = scipy.fft.dct(v, norm="ortho"); orthonormal, so the 1-D synthesis is Dᵀ."""
    import scipy.fft

    return scipy.fft.dct(np.eye(n), norm="ortho", axis=0)


def wavelet_level(h: int, w: int, wavelet: str, level) -> int:
    """PyWavelets' maximum level for the shorter side, lowered until every level halves an even side, unless
    ``level`` is given; validated so that every level halves an even side (then the periodized transform is square
    and orthonormal)."""
    import pywt

    try:
        wav = pywt.Wavelet(wavelet)
    except ValueError:
        raise UserError(f"unknown wavelet {wavelet!r}; valid: orthogonal wavelets of pywt.wavelist(kind='discrete'),"
                        f" e.g. haar, db2, db4, sym4, coif1") from None
    if not wav.orthogonal:
        raise UserError(f"wavelet {wavelet!r} is not orthogonal; use e.g. haar, db4, sym4, coif1")
    if level is None:   # the deepest level at which every level still halves both sides (28 → 14 → 7: 2)
        level = pywt.dwt_max_level(min(h, w), wav.dec_len)
        while level > 0 and (h % 2 ** level or w % 2 ** level):
            level -= 1
    level = int(level)
    if level < 0 or h % 2 ** level or w % 2 ** level:
        raise UserError(f"wavelet level {level} needs an image side divisible by {2 ** max(level, 0)}, "
                        f"got {h}x{w}")
    return level


def wavelet_matrix(h: int, w: int, wavelet: str = "haar", level: int | None = None) -> np.ndarray:
    """Φ (hw×hw): column k is ``pywt.waverec2`` of the k-th unit coefficient in ``pywt.coeffs_to_array`` layout."""
    import pywt

    level = wavelet_level(h, w, wavelet, level)
    kw = dict(wavelet=wavelet, mode="periodization", level=level, axes=(-2, -1))
    _, slices = pywt.coeffs_to_array(pywt.wavedec2(np.zeros((h, w)), **kw))
    eye = np.eye(h * w).reshape(h * w, h, w)
    coeffs = [eye[(slice(None),) + slices[0]]]
    coeffs += [tuple(eye[(slice(None),) + s[k]] for k in ("da", "ad", "dd")) for s in slices[1:]]
    x = pywt.waverec2(coeffs, wavelet, mode="periodization", axes=(-2, -1))  # (hw, h, w): basis image per k
    return x.reshape(h * w, h * w).T.copy()


class DCTBasis:
    """Separable orthonormal 2-D DCT per channel: X = D_hᵀ C D_w (= ``scipy.fft.idctn(C, norm="ortho")``)."""

    def __init__(self, h, w, device):
        self.Dh = torch.as_tensor(dct_matrix(h), dtype=torch.float64, device=device)
        self.Dw = torch.as_tensor(dct_matrix(w), dtype=torch.float64, device=device)

    def synth(self, c):
        return self.Dh.T @ c @ self.Dw

    def analysis(self, x):
        return self.Dh @ x @ self.Dw.T


@functools.lru_cache(maxsize=8)
def wavelet_sparse(h: int, w: int, wavelet: str, level: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(Φ, Φᵀ) as sparse float64 CPU tensors (Haar at 64×64 is 0.5% dense, db4 7%); cached per size/wavelet/level."""
    phi = wavelet_matrix(h, w, wavelet, level)
    phi = torch.as_tensor(np.where(np.abs(phi) > 1e-13, phi, 0.0), dtype=torch.float64)
    return phi.to_sparse().coalesce(), phi.T.contiguous().to_sparse().coalesce()


class WaveletBasis:
    """Orthonormal periodized wavelet synthesis per channel, applied as a sparse (hw×hw) matrix Φ."""

    def __init__(self, h, w, device, wavelet="haar", level=None):
        P, PT = wavelet_sparse(h, w, wavelet, wavelet_level(h, w, wavelet, level))
        self.P, self.PT = P.to(device), PT.to(device)

    @staticmethod
    def _apply(M, v):
        B, C, H, W = v.shape
        return torch.sparse.mm(M, v.reshape(B * C, H * W).T).T.reshape(B, C, H, W)

    def synth(self, c):
        return self._apply(self.P, c)

    def analysis(self, x):
        return self._apply(self.PT, x)


def make_basis(kind: str, h: int, w: int, device="cpu", wavelet: str = "haar", level=None):
    if kind == "dct":
        return DCTBasis(h, w, device)
    if kind == "wavelet":
        return WaveletBasis(h, w, device, wavelet, level)
    raise ValueError(f"unknown basis {kind!r}")


# ------------------------------------------------------------------------------------------------- objective
def as_double(problem):
    """The same problem with observations and operator state in float64 (no clean images)."""
    from bench.tasks import Problem

    state = {k: (v.to(torch.float64) if v.is_floating_point() else v) for k, v in problem.state.items()}
    return Problem(problem.task, None, problem.y.to(torch.float64), list(problem.image_ids), problem.seed, state,
                   problem.shape)


def lasso_objective(problem, c: torch.Tensor, alpha: float, basis) -> torch.Tensor:
    """||A Φ c − y||² + α||c||₁ per row (Asim et al. 2020, footnote 1); ``c`` has image shape (B, C, H, W).
    For an image x, pass c = ``basis.analysis(x)`` (Φ is orthonormal, so Φᵀx is its unique coefficient vector)."""
    return problem.data_fit(basis.synth(c)) + alpha * c.flatten(1).abs().sum(1)


def soft(v: torch.Tensor, thr) -> torch.Tensor:
    """Soft threshold: prox of thr·||·||₁."""
    return torch.sign(v) * (v.abs() - thr).clamp_min(0)


_GRAM_CACHE: dict = {}


def operator_norm_sq(problem, iters: int = 100) -> torch.Tensor:
    """||A||² per row. Shared dense A (cs): exact largest eigenvalue of AAᵀ (or AᵀA), cached — cheaper and more
    accurate than power iteration for Gaussian A, whose top singular values cluster (measured: 300 power steps
    are still 4e-4 low at 4000×12288). Other operators: per-row power iteration on fᵀf from the ones vector
    (exact after two steps for the identity and for masks)."""
    B = problem.batch_size
    A = problem.task.dense_matrix(problem)
    if A is not None and A.dim() == 2:
        key = (tuple(A.shape), str(A.device), float(A.double().sum()), float(A[0].double().abs().sum()))
        if key not in _GRAM_CACHE:
            Ad = A.to(torch.float64)
            G = Ad @ Ad.T if A.shape[0] <= A.shape[1] else Ad.T @ Ad
            if len(_GRAM_CACHE) >= 4:
                _GRAM_CACHE.pop(next(iter(_GRAM_CACHE)))
            _GRAM_CACHE[key] = float(torch.linalg.eigvalsh(G)[-1])
        return torch.full((B,), _GRAM_CACHE[key], dtype=torch.float64, device=A.device)
    v = torch.ones_like(problem.zeros(), dtype=torch.float64)
    s = torch.zeros(B, dtype=torch.float64, device=v.device)
    done = torch.zeros(B, dtype=torch.bool, device=v.device)
    for _ in range(iters):
        w = problem.adjoint(problem.forward(v))
        s_new = w.flatten(1).norm(dim=1)
        done_now = (s_new - s).abs() <= 1e-12 * s_new
        s = torch.where(done, s, s_new)
        v = torch.where(done.view(-1, 1, 1, 1), v, w / s_new.clamp_min(1e-300).view(-1, 1, 1, 1))
        done = done | done_now
        if bool(done.all()):
            break
    return s


# ------------------------------------------------------------------------------------------------------ FISTA
def fista(problem, basis, alpha: float, tol: float = 1e-6, max_iter: int = 5000):
    """Batched FISTA with gradient restart for min_c ||AΦc − y||² + α||c||₁, from c = 0.

    Step 1/L with L = 2||AΦ||² = 2||A||² (Φ orthonormal). Row i stops once ||c_{k+1} − c_k|| ≤ tol·||c_{k+1}||;
    stopped rows are dropped from the batch, so every row follows exactly the iterates it would follow alone.
    Returns (c, iterations, converged)."""
    p = as_double(problem)
    B = p.batch_size
    dev = p.y.device
    c_out = p.zeros()
    iters = torch.zeros(B, dtype=torch.long, device=dev)
    conv = torch.zeros(B, dtype=torch.bool, device=dev)

    rows = torch.arange(B, device=dev)
    sub = p
    step = (1.0 / (2.0 * operator_norm_sq(p))).view(-1, 1, 1, 1)
    c = p.zeros()
    z = c.clone()
    t = torch.ones(B, 1, 1, 1, dtype=torch.float64, device=dev)
    for k in range(1, max_iter + 1):
        grad = basis.analysis(sub.data_fit_grad(basis.synth(z)))       # 2 Φᵀ Aᵀ (AΦz − y)
        c_new = soft(z - step * grad, alpha * step)
        d = c_new - c
        restart = ((z - c_new) * d).flatten(1).sum(1).view(-1, 1, 1, 1) > 0   # O'Donoghue & Candès (2015)
        t = torch.where(restart, torch.ones_like(t), t)
        t_new = (1 + torch.sqrt(1 + 4 * t * t)) / 2
        z = c_new + torch.where(restart, torch.zeros_like(t), (t - 1) / t_new) * d
        c, t = c_new, t_new
        done = d.flatten(1).norm(dim=1) <= tol * c.flatten(1).norm(dim=1)
        finished = done | (k == max_iter)
        if bool(finished.any()):
            idx = rows[finished]
            c_out[idx], iters[idx], conv[idx] = c[finished], k, done[finished]
            keep = ~finished
            if not bool(keep.any()):
                break
            rows, c, z, t, step = rows[keep], c[keep], z[keep], t[keep], step[keep]
            sub = sub.take(keep.nonzero().flatten().cpu())
    return c_out, iters, conv


class LassoSolver(Solver):
    """Base of ``lasso-dct`` and ``lasso-wvt``: no prior, no budget, one solve per image for every λ."""

    uses_prior = False
    lam_independent = True
    basis_kind = "?"
    # paper: Asim et al. 2020, footnote 1 (coordinate descent there; FISTA here)

    def basis(self, h, w, device):
        return make_basis(self.basis_kind, h, w, device)

    def solve(self, problem, prior, lam, ctx) -> SolveResult:
        _, H, W = problem.shape
        basis = self.basis(H, W, problem.y.device)
        alpha = self.params["alpha"]
        if alpha is None:
            alpha = universal_alpha(problem.sigma, problem.n)
        c, iters, conv = fista(problem, basis, alpha, self.params["tol"], self.params["max_iter"])
        x_hat = basis.synth(c).to(problem.y.dtype)   # unclipped: the harness clips before scoring
        B = problem.batch_size
        return SolveResult(x_hat, info={"iterations": iters, "converged": conv, "alpha": torch.full((B,), alpha),
                                        "objective": lasso_objective(as_double(problem), c, alpha, basis)})


def universal_alpha(sigma: float, n: int) -> float:
    """α = 2σ√(2 ln n): the universal threshold t = σ√(2 ln n) of Donoho & Johnstone (1994, "VisuShrink") for
    noise σ per entry and n coefficients, doubled because the objective here is ||AΦc − y||² + α||c||₁ (no ½),
    whose orthonormal-denoising solution soft-thresholds at α/2. A rule stated before any result was seen, not
    tuned; the robust protocol's default. Asim et al.'s α = 0.01 was chosen for compressed sensing at noise norm
    0.1 (σ = 0.1/√m per measurement) and is the paper protocol's."""
    return 2.0 * float(sigma) * math.sqrt(2.0 * math.log(n))


LASSO_DEFAULTS = {"alpha": Param(float, None, range=">=0", protocols={"paper": 0.01},
                                 doc="ℓ1 weight; unset: the universal threshold 2σ√(2 ln n) (paper: 0.01, Asim fn. 1)"),
                  "tol": Param(float, 1e-6, range=">0", doc="FISTA stops at this relative change"),
                  "max_iter": Param(int, 5000, range=">=1", doc="FISTA iteration cap")}
