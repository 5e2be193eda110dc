"""The three inverse problems of AIPO §2.3 / §4: denoising, noisy compressed sensing, inpainting.

A :class:`Task` holds the task's declared parameters; ``task.make(x, image_ids, seed)`` builds a :class:`Problem`
batch: the clean images, the observations ``y``, the linear forward operator ``f`` (``forward``) and its adjoint,
and the projection onto ``{x : f(x) = y} ∩ [0,1]^n`` of AIPO Appendix A. All randomness is keyed by the cell
identity (task name, resolved parameters, image id, seed index) via :mod:`bench.seeding`.

Conventions
- ``y`` for cs is ``(B, m)``; for denoise and inpaint it has the image shape ``(B, C, H, W)``.
- cs: the sensing matrix ``A`` (iid N(0, 1/m)) depends on (task parameters, image size, seed index) and is
  shared by every image of that seed, as in the GlowIP code; the noise depends on the image id too.
- inpaint: ``y = M ⊙ (x + e)``; missing pixels of ``y`` are 0, and the data fit counts observed pixels only.
- Noise model: every task's e is N(0, σ²I) over the d entries of y; ``Problem.data_nll`` is the MAP objective's
  data term −log p_e(y − f(x)) (:mod:`bench.objective`). σ must be > 0 (the likelihood divides by 2σ²).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch

from bench import objective
from bench.errors import UserError
from bench.registry import Registry, resolve_params
from bench.seeding import generator, randn

TASKS = Registry("task")

# AIPO §4.3: m = 4000 and m = 2000 at n = 12288; presets at other sizes keep these fractions.
CS_FRACTION_HIGH = 0.3255
CS_FRACTION_LOW = 0.1628


@dataclass
class Problem:
    """A batch of inverse problems: row ``i`` is image ``image_ids[i]`` observed through the task's operator.

    The harness's problem holds the clean images ``x_true``; a solver gets :meth:`for_solver`, a copy without them
    (``x_true`` is ``None``) whose tensors the harness never scores with."""

    task: "Task"
    x_true: torch.Tensor | None
    y: torch.Tensor
    image_ids: list[str]
    seed: int
    state: dict = field(default_factory=dict)  # per-row operator state (mask) or shared state (A, its Gram inverse)
    shape: tuple = ()                           # one image's (C, H, W)

    def __post_init__(self):
        if not self.shape:
            self.shape = tuple(self.x_true.shape[1:])

    @property
    def batch_size(self) -> int:
        return len(self.image_ids)

    @property
    def n(self) -> int:
        return math.prod(self.shape)

    def zeros(self) -> torch.Tensor:
        """A (B, C, H, W) batch of zeros in y's dtype and device (the shape of x)."""
        return torch.zeros((self.batch_size, *self.shape), dtype=self.y.dtype, device=self.y.device)

    def for_solver(self) -> "Problem":
        """What a solver may see: observation, operator state and noise model, as copies (the task object too, so
        nothing the solver changes reaches the harness's scoring); no clean images."""
        return Problem(copy.deepcopy(self.task), None, self.y.clone(), list(self.image_ids), self.seed,
                       {k: v.clone() for k, v in self.state.items()}, self.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) for each row."""
        return self.task.forward(self, x)

    def adjoint(self, r: torch.Tensor) -> torch.Tensor:
        """fᵀ(r) for each row, in image shape."""
        return self.task.adjoint(self, r)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.y - self.forward(x)

    @property
    def d(self) -> int:
        """Number of entries of one row's observation y (m for cs, n for denoise and inpaint)."""
        return self.y[0].numel()

    @property
    def sigma(self) -> float:
        """Per-entry noise standard deviation σ of the task's Gaussian noise model."""
        return self.task.noise_sigma(self.d)

    def data_fit(self, x: torch.Tensor) -> torch.Tensor:
        """||y − f(x)||² per row."""
        return self.residual(x).flatten(1).pow(2).sum(1)

    def data_fit_grad(self, x: torch.Tensor) -> torch.Tensor:
        """∇ₓ ||y − f(x)||² = −2 fᵀ(y − f(x))."""
        return -2.0 * self.adjoint(self.residual(x))

    def data_nll(self, x: torch.Tensor) -> torch.Tensor:
        """−log p_e(y − f(x)) = ||y − f(x)||²/(2σ²) + (d/2)·log(2πσ²) per row: AIPO eq. 3's data term."""
        return objective.gaussian_nll(self.data_fit(x), self.sigma, self.d)

    def data_nll_grad(self, x: torch.Tensor) -> torch.Tensor:
        """∇ₓ(−log p_e(y − f(x))) = −fᵀ(y − f(x))/σ²."""
        return objective.gaussian_nll_grad_scale(self.sigma) * self.data_fit_grad(x)

    def project(self, x: torch.Tensor, iters: int = 100) -> torch.Tensor:
        """Projection onto {x : f(x) = y} ∩ [0,1]^n (AIPO Appendix A)."""
        return self.task.project(self, x, iters)

    def least_norm(self) -> torch.Tensor:
        """The least-norm solution f⁺(y) of f(x) = y per row, in image shape (not clipped)."""
        return self.task.least_norm(self)

    def naive_estimate(self) -> torch.Tensor:
        """The "do nothing" reconstruction from y alone (no prior), in [0,1]: what every solver must beat."""
        return self.task.naive_estimate(self)

    def take(self, rows) -> "Problem":
        """The sub-batch (or re-ordering, or repetition) given by ``rows`` (a list or LongTensor of row indices)."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        state = {k: (v[rows.to(v.device)] if k in self.task.per_row_state else v) for k, v in self.state.items()}
        x_true = None if self.x_true is None else self.x_true[rows.to(self.x_true.device)]
        return Problem(self.task, x_true, self.y[rows.to(self.y.device)],
                       [self.image_ids[i] for i in rows.tolist()], self.seed, state, self.shape)

    def to(self, device) -> "Problem":
        return Problem(self.task, None if self.x_true is None else self.x_true.to(device), self.y.to(device),
                       list(self.image_ids), self.seed, {k: v.to(device) for k, v in self.state.items()}, self.shape)


class Task:
    """Base class: declared parameters + forward model. Subclasses register with ``@TASKS.register(name)``."""

    name: str = "?"
    parameters: dict = {}
    per_row_state: tuple = ()
    description: str = ""

    def __init__(self, **overrides):
        self.params = resolve_params("task", self.name, self.parameters, overrides)
        self.validate()

    def validate(self):
        sigma = self.params.get("sigma")
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma <= 0:
            raise UserError(f"task {self.name!r}: sigma must be a finite number > 0 (the MAP objective's noise "
                            f"likelihood divides by 2*sigma^2), got {sigma!r}")

    def check_shape(self, shape) -> None:
        """Raise UserError if the task's parameters do not fit images of ``shape`` (C, H, W) (checked when a grid
        is planned, before any work)."""

    def noise_sigma(self, d: int) -> float:
        """Per-entry noise standard deviation for an observation of ``d`` entries (default: ``sigma``)."""
        return float(self.params["sigma"])

    @property
    def spec(self) -> str:
        """The task with its non-default parameters, e.g. ``cs[m=0.1628]``: the key used in result rows."""
        diff = {k: v for k, v in self.params.items() if self.parameters[k] != v}
        return self.name + ("[" + ",".join(f"{k}={v}" for k, v in sorted(diff.items())) + "]" if diff else "")

    def identity(self) -> dict:
        return {"task": self.name, **self.params}

    def noise(self, shape, image_id: str, seed: int, device) -> torch.Tensor:
        return self.noise_sigma(math.prod(shape)) * randn(shape, "noise", self.identity(), image_id, seed,
                                                          device=device)

    def make(self, x: torch.Tensor, image_ids, seed: int) -> Problem:
        if x.dim() != 4 or x.shape[0] != len(image_ids):
            raise ValueError(f"expected images (B,C,H,W) and B ids, got {tuple(x.shape)} and {len(image_ids)} ids")
        return self._make(x, list(image_ids), int(seed))

    def describe(self) -> str:
        return self.description

    def naive_estimate(self, p: Problem) -> torch.Tensor:
        """Default: the clipped least-norm solution clip(f⁺(y), 0, 1)."""
        return self.least_norm(p).clamp(0, 1)

    # subclass API
    def _make(self, x, ids, seed) -> Problem: ...
    def forward(self, p: Problem, x): ...
    def adjoint(self, p: Problem, r): ...
    def project(self, p: Problem, x, iters): ...
    def least_norm(self, p: Problem): ...


@TASKS.register("denoise")
class Denoise(Task):
    """y = x + e, e ~ N(0, σ²I) (AIPO §4.2). The constraint set {x : x = y} is one point: Proj = clip(y, 0, 1)."""

    parameters = {"sigma": 0.1}
    description = "y = x + e, e ~ N(0, sigma^2 I)"

    def _make(self, x, ids, seed):
        e = torch.stack([self.noise(x.shape[1:], i, seed, x.device) for i in ids])
        return Problem(self, x, x + e, ids, seed)

    def forward(self, p, x):
        return x

    def adjoint(self, p, r):
        return r

    def project(self, p, x, iters):
        return p.y.clamp(0, 1).expand_as(x).clone()

    def least_norm(self, p):
        return p.y.clone()


@TASKS.register("cs")
class CompressedSensing(Task):
    """y = A x + e, A_ij ~ N(0, 1/m), e ~ N(0, σ²I) (AIPO §4.3, Asim §3.2).

    ``m`` is a fraction of n when ≤ 1 (float in (0, 1]) and an absolute count when > 1 (a whole number; the
    parameter's float default makes ``cs[m=2000]`` arrive as 2000.0, stored back as the int 2000).
    ``noise`` says what ``sigma`` measures: ``"entry"`` (default, AIPO §4.3: e ~ N(0, 0.1²I), σ per measurement)
    or ``"norm"`` (Asim §3.2 / Bora et al.: √E||e||² = sigma, i.e. σ = sigma/√m per measurement).
    Projection (App. A): alternate x ← x − Aᵀ(AAᵀ)⁻¹(Ax − y) and the box clip, ending on the affine step's clip.
    """

    parameters = {"m": CS_FRACTION_HIGH, "sigma": 0.1, "noise": "entry"}
    description = ("y = A x + e, A iid N(0, 1/m), e ~ N(0, sigma^2 I); m absolute or a fraction of n; "
                   "noise=norm: sigma is the noise norm (Asim)")
    NOISE_MODES = ("entry", "norm")

    def validate(self):
        super().validate()
        if self.params["noise"] not in self.NOISE_MODES:
            raise UserError(f"task 'cs': noise must be one of {', '.join(self.NOISE_MODES)}, "
                            f"got {self.params['noise']!r}")
        m = self.params["m"]
        if isinstance(m, bool) or not isinstance(m, (int, float)) or m <= 0 or (m > 1 and not float(m).is_integer()):
            raise UserError(f"task 'cs': m must be a whole number > 1 or a fraction in (0, 1], got {m!r}")
        if m > 1:
            self.params["m"] = int(m)

    def noise_sigma(self, d: int) -> float:
        sigma = float(self.params["sigma"])
        return sigma / math.sqrt(d) if self.params["noise"] == "norm" else sigma

    def check_shape(self, shape) -> None:
        self.m_for(math.prod(shape))

    def m_for(self, n: int) -> int:
        m = self.params["m"]
        m = int(m) if m > 1 else max(1, int(round(m * n)))
        if m > n:
            raise UserError(f"task 'cs': m={m} measurements exceed the n={n} pixels of an image; use m <= {n} or a "
                            f"fraction in (0, 1]")
        return m

    def matrix(self, n: int, seed: int) -> torch.Tensor:
        m = self.m_for(n)
        return torch.randn((m, n), generator=generator("A", self.identity(), n, seed)) / math.sqrt(m)

    def _make(self, x, ids, seed):
        n = x[0].numel()
        A = self.matrix(n, seed).to(x.device)
        gram_inv = torch.linalg.inv(A @ A.T)
        A64 = A.double()
        p = Problem(self, x, torch.zeros(0), ids, seed,
                    {"A": A, "gram_inv": gram_inv, "A64": A64, "gram_inv64": torch.linalg.inv(A64 @ A64.T)})
        e = torch.stack([self.noise((A.shape[0],), i, seed, x.device) for i in ids])
        p.y = self.forward(p, x) + e
        return p

    # Products with A are accumulated in float64 and rounded back to the input dtype: float32 GEMM results depend on
    # the number of rows in the batch (MKL/cuBLAS pick different kernels), which breaks "batched equals single"
    # (README contract 3) once an optimiser amplifies the 1e-7 differences; rounded float64 results do not.
    @staticmethod
    def _a64(p):
        A = p.state.get("A64", p.state["A"])
        return A if A.dtype == torch.float64 else A.double()

    def forward(self, p, x):
        return (x.flatten(1).double() @ self._a64(p).T).to(x.dtype)

    def adjoint(self, p, r):
        return (r.double() @ self._a64(p)).to(r.dtype).view(r.shape[0], *p.shape)

    def project(self, p, x, iters):
        A = self._a64(p)
        G = torch.linalg.inv(A @ A.T) if "gram_inv64" not in p.state else p.state["gram_inv64"]
        shape = x.shape
        v, y = x.flatten(1).double(), p.y.double()
        for _ in range(iters):
            v = v - ((v @ A.T - y) @ G) @ A
            v = v.clamp(0, 1)
        return v.to(x.dtype).view(shape)

    def least_norm(self, p):
        """A⁺y = Aᵀ(AAᵀ)⁻¹y (A has full row rank m ≤ n with probability 1)."""
        A = self._a64(p)
        G = p.state["gram_inv64"] if "gram_inv64" in p.state else torch.linalg.inv(A @ A.T)
        return ((p.y.double() @ G) @ A).to(p.y.dtype).view(p.y.shape[0], *p.shape)


@TASKS.register("inpaint")
class Inpaint(Task):
    """y = M ⊙ (x + e) with M masking random ``block``×``block`` tiles until ``frac`` of pixels are missing;
    e ~ N(0, 0.02²I) (AIPO §4.4). Tiles lie on the block grid, so the missing fraction is exact when the image side
    is a multiple of the block. Projection (App. A): x ← M⊙y + (1 − M)⊙x, then the box clip.
    """

    parameters = {"frac": 0.25, "block": 4, "sigma": 0.02}
    per_row_state = ("mask",)
    description = "y = M*(x + e), random 4x4 blocks missing (25%), e ~ N(0, 0.02^2 I)"

    def validate(self):
        super().validate()
        if not 0 < self.params["frac"] < 1:
            raise UserError(f"task 'inpaint': frac must be in (0, 1), got {self.params['frac']}")
        if self.params["block"] < 1:
            raise UserError(f"task 'inpaint': block must be >= 1, got {self.params['block']}")

    def check_shape(self, shape) -> None:
        _, H, W = shape
        b = self.params["block"]
        if H % b or W % b:
            raise UserError(f"task 'inpaint': image size {H}x{W} is not a multiple of block={b}; use a block that "
                            f"divides {H}")

    def mask(self, shape, image_id: str, seed: int) -> torch.Tensor:
        """1 = observed, 0 = missing; same mask for all channels."""
        C, H, W = shape
        b = self.params["block"]
        if H % b or W % b:
            raise UserError(f"task 'inpaint': image size {H}x{W} is not a multiple of block={b}")
        tiles = (H // b) * (W // b)
        k = max(1, int(round(self.params["frac"] * tiles)))
        order = torch.randperm(tiles, generator=generator("mask", self.identity(), (C, H, W), image_id, seed))
        grid = torch.ones(tiles)
        grid[order[:k]] = 0
        m = grid.view(H // b, W // b).repeat_interleave(b, 0).repeat_interleave(b, 1)
        return m.expand(C, H, W).contiguous()

    def _make(self, x, ids, seed):
        M = torch.stack([self.mask(x.shape[1:], i, seed) for i in ids]).to(x.device)
        e = torch.stack([self.noise(x.shape[1:], i, seed, x.device) for i in ids])
        return Problem(self, x, M * (x + e), ids, seed, {"mask": M})

    def forward(self, p, x):
        return p.state["mask"] * x

    def adjoint(self, p, r):
        return p.state["mask"] * r

    def project(self, p, x, iters):
        M = p.state["mask"]
        return (M * p.y + (1 - M) * x).clamp(0, 1)

    def least_norm(self, p):
        return p.state["mask"] * p.y

    def naive_estimate(self, p):
        """The observed pixels, each hole filled with the mean of that image's observed pixels (per channel)."""
        M = p.state["mask"]
        known = (M * p.y).sum((2, 3), keepdim=True) / M.sum((2, 3), keepdim=True).clamp(min=1)
        return (M * p.y + (1 - M) * known).clamp(0, 1)


def make_task(spec: str) -> Task:
    """Build a task from ``"cs[m=0.1628]"``-style text."""
    from bench.registry import parse_spec

    name, params = parse_spec(spec)
    return TASKS.get(name)(**params)
