"""Identity: the one canonical JSON encoding and sha256 of it, and the ids of units and cells built on it.

``unit_id`` and ``cell_id`` are stable hashes of what determines the numbers (task spec and parameters, prior name
+ checkpoint sha256, dataset, split, image ids, λ, solver spec with its resolved (possibly tuned) parameters, seed,
budget, MLE steps, image size) — never of the grid name or run order. A ``cell_id`` identifies one result row
(cell × image). Grid hashes, tuned-file hashes and the random streams of :mod:`bench.core.seeding` use the same encoding.
"""
from __future__ import annotations

import hashlib
import json

from bench.core.schema import IDENTITY_KEYS


def canonical_json(obj) -> bytes:
    """Key-sorted, whitespace-free JSON (non-JSON values as ``str``): equal content gives equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


def sha256_json(obj, n: int | None = None) -> str:
    """Hex sha256 of :func:`canonical_json` of ``obj``, optionally its first ``n`` characters."""
    return hashlib.sha256(canonical_json(obj)).hexdigest()[:n]


ID_LENGTH = 20


def _keys(spec) -> dict:
    return {k: getattr(spec, k) for k in IDENTITY_KEYS}


def unit_id(spec) -> str:
    """Id of a unit: its identity keys, image ids and λ values (floats: :class:`~bench.plan.units.UnitSpec` makes them
    so)."""
    return sha256_json({**_keys(spec), "image_ids": list(spec.image_ids), "lams": list(spec.lams)}, ID_LENGTH)


def cell_id(spec, image_id: str, lam: float) -> str:
    """Id of one row: the unit's identity keys, one image and one of its λ (independent of its other images/λ)."""
    return sha256_json({**_keys(spec), "image_id": image_id, "lam": lam}, ID_LENGTH)


def cell_ids(spec) -> list[str]:
    """Cell ids of a unit's rows, image-major (the row order of its files)."""
    return [cell_id(spec, i, lam) for i in spec.image_ids for lam in spec.lams]
