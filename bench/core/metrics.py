"""Metrics computed by the harness, never by the solver (README contract 1), declared in one table.

Images are scored clipped to [0, 1]; PSNR and SSIM use ``skimage.metrics`` with ``data_range = 1``. ``map_loss``
is AIPO eq. (3) as :mod:`bench.core.objective` defines it: L(x; λ) = −log p_e(y − f(x)) − λ·log p_G(x), the Gaussian
noise likelihood of the task and the discretised (8-bit) log-density of the prior, in nats. ``data_fit`` =
||y − f(x)||², ``data_nll`` = −log p_e(y − f(x)), ``log_prior`` = log p_G(x),
``bits_per_dim`` = −log p_G(x)/(n ln 2).

:data:`METRICS` maps each metric's name to its :class:`Metric` (direction, displayed decimals, default regression
tolerance, leaderboard table, role), in the order of the result rows' columns. Everything that names metrics
iterates over it: :func:`score`, the row schema (:mod:`bench.core.schema`), the leaderboard tables (``bench.report.tables``,
``bench.report.leaderboard``), the regression check and its ``--fail-<name>`` options (``bench.verify.check``). The summaries ask
it by role instead of by name: :data:`LOSS` is the MAP objective (traces, rankings, f_ref, tuning), :data:`QUALITY`
the image-quality metric set beside it (and against doing nothing), and :data:`DATA_TERM`, :data:`PRIOR_TERM`,
:data:`BITS_PER_DIM` the parts of the regime table; the metrics with :data:`HEADLINE` roles are the summary's.
A plugin module adds a metric with one entry::

    from bench.core.metrics import register_metric

    @register_metric("mse", higher_is_better=False, decimals=4, tolerance="3se+0.0001", table="MSE")
    def mse(b):
        "mean squared error per image"
        return ((b.x - b.x_true) ** 2).flatten(1).mean(1)

This module imports neither torch nor numpy at import time (the CLI builds its options from the table at once);
metric functions import what they need when called.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable

from bench.core.tolerance import parse_tolerance

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_UNIT = re.compile(r"\bin (nats|dB|bits)\b")

# What the report uses a metric for (``Metric.role``); at most one metric per role.
LOSS, QUALITY, DATA_TERM, PRIOR_TERM, BITS_PER_DIM = "loss", "quality", "data term", "prior term", "bits/dim"
HEADLINE = (LOSS, QUALITY)   # the roles the summary ranks and compares, in this order


@dataclass(frozen=True)
class Metric:
    """One outcome metric: a float64 column of every result row.

    ``fn(batch)`` returns one value per image of a :class:`Batch` (a numpy array or a torch tensor);
    ``higher_is_better`` drives bold, verdicts, ranks and paired counts; ``decimals`` the digits shown (and the
    rounding of the best-of-row comparison); ``tolerance`` the default of ``bench check --fail-<name>`` (``None``:
    not compared, except by ``--exact``); ``table`` the leaderboard section title (``None``: no table); ``role``
    what the summaries use it for (module docstring; ``None``: nothing) and ``label`` its short name there."""
    name: str
    fn: Callable[[Any], Any]
    higher_is_better: bool
    decimals: int = 3
    tolerance: str | None = None
    doc: str = ""
    table: str | None = None
    role: str | None = None
    label: str = ""

    @property
    def flag(self) -> str:
        """The ``bench check`` option of this metric's tolerance."""
        return "--fail-" + self.name.replace("_", "-")

    @property
    def unit(self) -> str:
        """The unit its ``doc`` names (``"… in nats"``, ``"… in dB"``), else ``""``."""
        hit = _UNIT.search(self.doc)
        return hit.group(1) if hit else ""


class MetricTable(Mapping):
    """name -> :class:`Metric`, in registration order (the row columns' order). Plugins add with
    :meth:`register` or :func:`register_metric`; tests with :meth:`added` (removed again on exit)."""

    def __init__(self):
        self._items: dict[str, Metric] = {}

    def __getitem__(self, name: str) -> Metric:
        return self._items[name]

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"MetricTable({list(self._items)})"

    def register(self, metric: Metric, replace: bool = False) -> Metric:
        if not isinstance(metric, Metric):
            raise TypeError(f"register a Metric, not {type(metric).__name__}")
        if not _NAME.match(metric.name) or metric.name.startswith(("p_", "info_")):
            raise ValueError(f"metric name {metric.name!r}: use lower-case letters, digits and _ (a row column; "
                             "p_* and info_* are taken)")
        if metric.name in self._items and not replace:
            raise ValueError(f"metric {metric.name!r} is already registered")
        if metric.tolerance is not None:   # a bad default is found where it is declared
            parse_tolerance(metric.tolerance, f"metric {metric.name!r}")
        taken = self.role(metric.role) if metric.role is not None else None
        if taken not in (None, metric.name):
            raise ValueError(f"metric {metric.name!r}: role {metric.role!r} is already metric {taken!r}'s")
        self._items[metric.name] = metric
        return metric

    def role(self, role: str) -> str | None:
        """The name of the metric declared with ``role``, or None."""
        return next((m.name for m in self._items.values() if m.role == role), None)

    def headline(self) -> list[str]:
        """The metrics of the :data:`HEADLINE` roles, in that order (the loss first)."""
        return [n for n in map(self.role, HEADLINE) if n is not None]

    def unregister(self, name: str) -> None:
        del self._items[name]

    @contextmanager
    def added(self, *metrics: Metric):
        """Register ``metrics`` for the duration of a ``with`` block (tests)."""
        names = [self.register(m).name for m in metrics]
        try:
            yield self
        finally:
            for n in names:
                self._items.pop(n, None)


METRICS = MetricTable()


def register_metric(name: str, *, higher_is_better: bool, decimals: int = 3, tolerance: str | None = None,
                    doc: str | None = None, table: str | None = None, role: str | None = None, label: str = ""):
    """Decorator: register the decorated ``fn(batch)`` as metric ``name`` (``doc`` defaults to its docstring)."""
    def deco(fn):
        METRICS.register(Metric(name, fn, higher_is_better, decimals, tolerance,
                                doc if doc is not None else (fn.__doc__ or "").strip().split("\n")[0], table, role,
                                label))
        return fn
    return deco


def loss_metric() -> str:
    """The name of the MAP-loss metric (role :data:`LOSS`): what traces record and rankings, f_ref and tuning use."""
    return METRICS.role(LOSS)


def quality_metric() -> str | None:
    """The name of the image-quality metric (role :data:`QUALITY`), or None."""
    return METRICS.role(QUALITY)


def higher_is_better(name: str) -> bool:
    """Direction of a metric (columns that are not metrics: lower is better)."""
    m = METRICS.get(name)
    return bool(m.higher_is_better) if m is not None else False


def decimals(name: str) -> int:
    """Digits shown for a metric (3 for columns that are not metrics)."""
    m = METRICS.get(name)
    return int(m.decimals) if m is not None else 3


def unit_of(name: str) -> str:
    """The unit of a metric (:attr:`Metric.unit`; ``""`` for columns that are not metrics)."""
    m = METRICS.get(name)
    return m.unit if m is not None else ""


def short_name(name: str) -> str:
    """A metric's short name in the summaries (its name where it declares none)."""
    m = METRICS.get(name)
    return (m.label or m.name) if m is not None else name


# ---------------------------------------------------------------------------------------------------- scoring
class Batch:
    """What a metric function sees: the problem, the prior (or ``None``), the reconstructions ``x`` clipped to
    [0, 1], λ as a tensor (scalar or (B,)), and intermediates computed once per batch and shared."""

    def __init__(self, problem, prior, x, lam):
        self.problem, self.prior, self.x, self.lam = problem, prior, x, lam

    @property
    def x_true(self):
        return self.problem.x_true

    @cached_property
    def fit(self):
        """||y − f(x)||² per image."""
        return self.problem.data_fit(self.x)

    @cached_property
    def nll(self):
        """−log p_e(y − f(x)) per image."""
        from bench.core import objective

        return objective.gaussian_nll(self.fit, self.problem.sigma, self.problem.d)

    @cached_property
    def log_prior(self):
        """log p_G(x) per image (discretised); NaN without a prior."""
        import torch

        from bench.core import objective

        return objective.log_prior(self.prior, self.x) if self.prior is not None else \
            torch.full_like(self.fit, float("nan"))


def _as_np(v):
    """A metric value as numpy: tensors as float64 on the CPU, arrays unchanged."""
    if hasattr(v, "detach"):
        return v.cpu().double().numpy()
    import numpy as np

    return np.asarray(v)


def _np(x):
    import torch

    return x.detach().to("cpu", torch.float64).clamp(0, 1).numpy()


def psnr(x_true, x_hat):
    """PSNR in dB per image of a (B, C, H, W) batch, on images clipped to [0, 1]."""
    import numpy as np
    from skimage.metrics import peak_signal_noise_ratio

    a, b = _np(x_true), _np(x_hat)
    return np.array([peak_signal_noise_ratio(a[i], b[i], data_range=1.0) for i in range(len(a))])


def ssim(x_true, x_hat):
    """SSIM per image (channel axis 0; the 7×7 default window, shrunk for images smaller than 7 pixels)."""
    import numpy as np
    from skimage.metrics import structural_similarity

    a, b = _np(x_true), _np(x_hat)
    win = min(7, a.shape[-1], a.shape[-2])
    win -= 1 - win % 2
    return np.array([structural_similarity(a[i], b[i], data_range=1.0, channel_axis=0, win_size=win)
                     for i in range(len(a))])


def score(problem, prior, x_hat, lam) -> dict:
    """Every metric of :data:`METRICS` (in its order) for a batch of reconstructions: {name: (B,) float array}.
    ``x_hat`` is clipped to [0, 1] first, for every metric, so a solver that leaves the box (Lasso) is scored on
    the image it would be displayed as."""
    import torch

    with torch.no_grad():
        x = x_hat.clamp(0, 1)
        b = Batch(problem, prior, x, torch.as_tensor(lam, dtype=x.dtype, device=x.device))
        return {name: _as_np(m.fn(b)) for name, m in METRICS.items()}


def _map_loss(b):
    from bench.core import objective

    return objective.map_loss(b.nll, b.log_prior, b.lam)


def _bits_per_dim(b):
    from bench.core import objective

    return objective.bits_per_dim(_as_np(b.log_prior), b.problem.n)


# The built-in metrics, in the row columns' order.
for _m in (
    Metric("map_loss", _map_loss, False, 2, "3se+0.01%", "MAP loss L(x; λ) in nats (AIPO eq. 3)",
           "MAP loss (lower is better; AIPO Tables 1–3 layout)", LOSS, "MAP loss"),
    Metric("data_fit", lambda b: b.fit, False, 3, None, "||y − f(x)||²"),
    Metric("data_nll", lambda b: b.nll, False, 3, None, "−log p_e(y − f(x)) in nats", role=DATA_TERM),
    Metric("log_prior", lambda b: b.log_prior, True, 2, None, "log p_G(x) in nats (discretised, 8-bit)",
           role=PRIOR_TERM),
    Metric("bits_per_dim", _bits_per_dim, False, 3, None, "−log p_G(x) / (n ln 2)", role=BITS_PER_DIM),
    Metric("psnr", lambda b: psnr(b.x_true, b.x), True, 2, "3se+0.05", "PSNR in dB",
           "PSNR in dB (higher is better; AIPO Tables 5–6 layout)", QUALITY, "PSNR"),
    Metric("ssim", lambda b: ssim(b.x_true, b.x), True, 3, "3se+0.002", "SSIM", "SSIM (higher is better)"),
):
    METRICS.register(_m)
del _m
