"""Field validators of a grid file: each checks one value and raises one :class:`~bench.core.errors.UserError` naming
the field (``bench.plan.grid`` assembles them into a :class:`~bench.plan.grid.Grid`)."""
from __future__ import annotations

import json
import math
import re

from bench.core.errors import UserError

SPLITS = ("id", "ood")


def _fail(where: str, msg: str):
    raise UserError(f"{where}: {msg}")


def _str(where, v):
    if not isinstance(v, str) or not v.strip():
        _fail(where, f"must be a non-empty string, got {v!r}")
    return v.strip()


def _int(where, v, lo=None):
    if isinstance(v, bool) or not isinstance(v, int):
        _fail(where, f"must be an integer, got {v!r}")
    if lo is not None and v < lo:
        _fail(where, f"must be >= {lo}, got {v}")
    return v


def _list(where, v, item, allow_all=False):
    if allow_all and v == "all":
        return "all"
    if not isinstance(v, list):
        _fail(where, f"must be a list{' or the string all' if allow_all else ''}, got {v!r}")
    if not v:
        _fail(where, "is empty (every axis needs at least one value)")
    out = [item(f"{where}[{i}]", x) for i, x in enumerate(v)]
    seen = set()
    for x in out:
        key = json.dumps(x, sort_keys=True) if not isinstance(x, str) else x
        if key in seen:
            _fail(where, f"duplicate value {x!r}")
        seen.add(key)
    return out


def _lam(where, v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        _fail(where, f"λ must be a finite number, got {v!r}")
    if not 0 <= v <= 1e6:   # λ weighs log p_G against the data term; past 10^6 the data no longer count
        _fail(where, f"λ must be in 0 … 1e6 (the prior's weight in the MAP loss), got {v}")
    return float(v)


def _split(where, v):
    if v not in SPLITS:
        _fail(where, f"unknown split {v!r}; valid: {', '.join(SPLITS)}")
    return v


def _images_count(where, v):
    if v == "all":
        return None
    if isinstance(v, str):
        _fail(where, f"must be a positive integer or 'all', got {v!r}")
    return _int(where, v, lo=1)


MAX_SEED = 2 ** 31 - 1
MAX_BUDGET = 10 ** 7        # prior passes per image: 10^7 is days of GPU time at paper scale
MAX_IMAGE_SIZE = 1024
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _seed(where, v):
    v = _int(where, v, lo=0)
    if v > MAX_SEED:
        _fail(where, f"must be <= {MAX_SEED}, got {v}")
    return v


# ------------------------------------------------------------------------------------------------- names
def shipped_prior_names() -> list[str]:
    """Names ``bench.priors.catalog.load_prior`` accepts besides checkpoint paths (shipped names, whether or not
    their checkpoint file is present yet, plus any other checkpoint in the catalog folder)."""
    from bench.priors import catalog

    return list(catalog.SHIPPED) + [n for n in catalog.shipped_names() if n not in catalog.SHIPPED]


def is_prior_path(spec: str) -> bool:
    return "/" in spec or "\\" in spec or spec.endswith((".pt", ".pth"))


def _prior(where, v):
    v = _str(where, v)
    if not is_prior_path(v) and v not in shipped_prior_names():
        _fail(where, f"unknown prior {v!r}; valid: {', '.join(shipped_prior_names())} or a checkpoint path (*.pt)")
    return v


def _task(where, v):
    from bench.tasks import make_task

    v = _str(where, v)
    try:
        return make_task(v).spec
    except UserError as e:
        _fail(where, str(e))


def _solver(where, v):
    from bench.solvers.base import make_solver

    v = _str(where, v)
    try:
        return make_solver(v).spec
    except UserError as e:
        _fail(where, str(e))


def all_solvers() -> list[str]:
    from bench.solvers.base import SOLVERS

    return SOLVERS.names()


def _dataset(where, v):
    from bench.datasets.base import DATASETS

    v = _str(where, v)
    if v not in DATASETS:
        _fail(where, f"unknown dataset {v!r}; valid: {', '.join(DATASETS.names())}")
    ds = DATASETS.get(v)
    if "test" not in ds.splits:
        _fail(where, f"dataset {v!r} has no 'test' split (splits: {', '.join(ds.splits)})")
    return v
