"""Tolerances of the regression check (``bench check --fail-<metric>``): ``<k>se+<x>%``, ``<k>se+<x>``, ``<k>se``,
``<x>%`` or a plain number. Light on imports, so the metric table (:mod:`bench.core.metrics`) can validate its defaults."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from bench.core.errors import UserError

_NUM = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_TOL = re.compile(rf"^\s*(?:{_NUM}\s*se)?\s*\+?\s*(?:{_NUM}\s*(%)?)?\s*$")


@dataclass(frozen=True)
class Tolerance:
    k_se: float        # standard errors allowed (0: none)
    floor: float       # relative (fraction of |reference mean|) when ``relative``, else absolute
    relative: bool
    text: str

    def limit(self, ref_mean: float, se: float) -> float:
        floor = self.floor * abs(ref_mean) if self.relative else self.floor
        return self.k_se * (se if math.isfinite(se) else 0.0) + floor + 1e-9 * abs(ref_mean) + 1e-12


def parse_tolerance(text: str, flag: str = "tolerance") -> Tolerance:
    """``"3se+0.01%"`` | ``"3se"`` | ``"0.01%"`` | ``"0.2"`` -> :class:`Tolerance`; anything else is a UserError."""
    m = _TOL.match(str(text))
    if not m or (m.group(1) is None and m.group(2) is None):
        raise UserError(f"{flag}: bad tolerance {text!r}; use <k>se+<x>% (e.g. 3se+0.01%), <k>se, <x>% or an "
                        "absolute number (e.g. 0.2)")
    k = float(m.group(1)) if m.group(1) else 0.0
    x = float(m.group(2)) if m.group(2) else 0.0
    rel = m.group(3) == "%"
    return Tolerance(k, x / 100.0 if rel else x, rel, str(text).strip())
