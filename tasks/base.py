"""The task contract: :class:`Problem` (a batch of observed images) and :class:`Task` (a linear forward operator
with Gaussian noise), the ``TASKS`` registry and :func:`make_task`. The tasks themselves are the other modules of
this folder (AIPO §2.3 / §4: ``denoise``, ``cs``, ``inpaint``), each registering itself; this module imports none
of them (discovery does, on the registry's first use).

A :class:`Task` holds the task's declared parameters; ``task.make(x, image_ids, seed)`` builds a :class:`Problem`
batch: the clean images, the observations ``y``, the linear forward operator ``f`` (``forward``) and its adjoint,
and the projection onto ``{x : f(x) = y} ∩ [0,1]^n`` of AIPO Appendix A. All randomness is keyed by the cell
identity (task name, resolved parameters, image id, seed index) via :mod:`bench.core.seeding`.

Conventions
- ``y`` has the task's observation shape: ``(B, m)`` for cs, the image shape ``(B, C, H, W)`` for denoise and
  inpaint. :meth:`Task.observed_image` says how to show it as an image.
- Noise model: every task's e is N(0, σ²I) over the d entries of y; ``Problem.data_nll`` is the MAP objective's
  data term −log p_e(y − f(x)) (:mod:`bench.core.objective`). σ must be > 0 (the likelihood divides by 2σ²).
- Harness, solvers, report and figures ask the task through the hooks declared on :class:`Task`
  (``point_constraint``, ``dense_matrix``, ``observed_image``, ``observed_mask``, ``order``, ``solver_defaults``,
  ``sweep_param``); none of them tests a task's name. ``operator_norm`` completes the operator contract (the
  contract tests check it against ‖f(x)‖/‖x‖).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

from bench.core import objective
from bench.core.lazy import lazy_module
from bench.core.registry import Param, Registry, as_params, defaults, format_spec, parse_spec, resolve_params
from bench.core.seeding import randn

torch = lazy_module("torch")

TASKS = Registry("task", "bench.tasks")


def sigma_param(default: float) -> Param:
    """The ``sigma`` every task declares: the noise's standard deviation, > 0 (the likelihood divides by it)."""
    return Param(float, default, range=">0",
                 doc="noise standard deviation; the MAP objective's noise likelihood divides by 2*sigma^2")


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

    def tangent(self, v: torch.Tensor) -> torch.Tensor:
        """The component of the direction ``v`` along {x : f(x) = y}: v − f⁺(f(v)) (the null space of f)."""
        return self.task.tangent(self, v)

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
    """The operator contract every task implements (in the spirit of deepinv's ``LinearPhysics``).

    Subclasses register with ``@TASKS.register(name)`` and implement :meth:`_make`, :meth:`forward`,
    :meth:`adjoint`, :meth:`least_norm` and :meth:`project`; everything else has a default. All operator methods
    take the :class:`Problem` ``p`` (its per-row or shared ``state``) and act row by row on batches.
    """

    name: str = "?"
    parameters: dict = {}          # name -> bench.core.registry.Param or a plain default; every task declares ``sigma``
                                   # (:func:`sigma_param`)
    per_row_state: tuple = ()      # keys of ``Problem.state`` that hold one entry per row (``take`` indexes them)
    description: str = ""
    point_constraint: bool = False  # True: {x : f(x) = y} is a single point (f invertible): x*(0) = Proj(y) and
                                    # the MLE stage spends no prior pass (AIPO §4.1)
    order: int = 100               # position in report tables (lower first, then by name)
    solver_defaults: dict = {}     # solver name -> {parameter: value} for solver parameters declared ``None``
                                   # ("task default"), e.g. {"latent-lbfgs": {"lr": 0.1, "steps": 30, ...}}
    sweep_param: str | None = None  # the task parameter a sweep figure plots along (``"m"`` for cs), if any
    naive_text: str = "clip(f⁺(y))"  # what :meth:`naive_estimate` is, in a few words (the leaderboard says it)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if "parameters" in cls.__dict__:
            cls.parameters = as_params(cls.parameters)

    def __init__(self, **overrides):
        self.params = resolve_params("task", self.name, self.parameters, overrides)
        self.validate()

    def validate(self) -> None:
        """Check or normalise parameter values beyond what their :class:`~bench.core.registry.Param` declares (called
        by the constructor after :func:`~bench.core.registry.resolve_params`; raise UserError). Default: nothing."""

    def check_shape(self, shape) -> None:
        """Raise UserError if the task's parameters do not fit images of ``shape`` (C, H, W) (checked when a grid
        is planned, before any work)."""

    def noise_sigma(self, d: int) -> float:
        """Per-entry noise standard deviation σ for an observation of ``d`` entries (default: ``sigma``). The data
        term of the MAP objective is ``Problem.data_nll`` = ||y − f(x)||²/(2σ²) + (d/2)·log(2πσ²)."""
        return float(self.params["sigma"])

    @property
    def spec(self) -> str:
        """The task with its non-default parameters, e.g. ``cs[m=0.1628]``: the key used in result rows."""
        base = defaults(self.parameters)
        return format_spec(self.name, {k: v for k, v in self.params.items() if base[k] != v})

    def identity(self) -> dict:
        """What keys the task's random draws: its name and resolved parameters."""
        return {"task": self.name, **self.params}

    def noise(self, shape, image_id: str, seed: int, device) -> torch.Tensor:
        """N(0, σ²I) noise of ``shape`` for one image, keyed by (task identity, image id, seed index)."""
        return self.noise_sigma(math.prod(shape)) * randn(shape, "noise", self.identity(), image_id, seed,
                                                          device=device)

    def make(self, x: torch.Tensor, image_ids, seed: int) -> Problem:
        """The :class:`Problem` batch observing the clean images ``x`` (B, C, H, W) with ids ``image_ids``."""
        if x.dim() != 4 or x.shape[0] != len(image_ids):
            raise ValueError(f"expected images (B,C,H,W) and B ids, got {tuple(x.shape)} and {len(image_ids)} ids")
        return self._make(x, list(image_ids), int(seed))

    def describe(self) -> str:
        return self.description

    # --- the operator: subclasses implement these -----------------------------------------------------------------
    def _make(self, x: torch.Tensor, ids: list, seed: int) -> Problem:
        """Draw the operator state and the noise, and return the Problem with ``y = f(x) + e`` (or the task's
        own observation model)."""
        raise NotImplementedError

    def forward(self, p: Problem, x: torch.Tensor) -> torch.Tensor:
        """f(x) for each row: (B, C, H, W) -> the observation shape of ``p.y``."""
        raise NotImplementedError

    def adjoint(self, p: Problem, r: torch.Tensor) -> torch.Tensor:
        """fᵀ(r) for each row: observation shape -> (B, C, H, W); <f(x), r> = <x, fᵀ(r)>."""
        raise NotImplementedError

    def least_norm(self, p: Problem) -> torch.Tensor:
        """The least-norm solution f⁺(y) of f(x) = y per row, in image shape (not clipped)."""
        raise NotImplementedError

    def project(self, p: Problem, x: torch.Tensor, iters: int) -> torch.Tensor:
        """Projection of ``x`` onto {x : f(x) = y} ∩ [0,1]^n (AIPO Appendix A); ends in the box. ``iters``: the
        iterations of an alternating scheme, for tasks without a closed form."""
        raise NotImplementedError

    # --- hooks with defaults --------------------------------------------------------------------------------------
    def tangent(self, p: Problem, v: torch.Tensor) -> torch.Tensor:
        """Orthogonal projection of a direction ``v`` (B, C, H, W) onto the null space of f, the directions along
        which f(x) = y can move (the MLE stage ascends along them). Default: zero where the constraint set is one
        point; other tasks must say."""
        if self.point_constraint:
            return torch.zeros_like(v)
        raise NotImplementedError(f"task {self.name!r} does not define tangent()")

    def naive_estimate(self, p: Problem) -> torch.Tensor:
        """The "do nothing" reconstruction from y alone, in [0,1]. Default: clip(f⁺(y), 0, 1)."""
        return self.least_norm(p).clamp(0, 1)

    def operator_norm(self, p: Problem) -> float:
        """The spectral norm ||f||₂ (largest singular value) of the operator of ``p`` (the largest over rows for
        per-row operators). Offered for solvers and tests; no scored path uses it."""
        raise NotImplementedError

    def dense_matrix(self, p: Problem) -> torch.Tensor | None:
        """The explicit (m, n) matrix of f shared by all rows, when the task has one; else None (default)."""
        return None

    def observed_image(self, p: Problem) -> torch.Tensor:
        """How ``y`` shows as an image in figures, (B, C, H, W). Default: clip(f⁺(y), 0, 1)."""
        return self.least_norm(p).clamp(0, 1)

    def observed_mask(self, p: Problem) -> torch.Tensor:
        """Which pixels of :meth:`observed_image` were observed (1) or missing (0), (B, C, H, W). Default: ones."""
        return torch.ones((p.batch_size, *p.shape), dtype=p.y.dtype, device=p.y.device)



def make_task(spec: str) -> Task:
    """Build a task from ``"cs[m=0.1628]"``-style text."""
    name, params = parse_spec(spec)
    return TASKS.get(name)(**params)
