"""Randomness derived from cell identity (README contract 4).

Every random draw (noise, sensing matrix, mask, solver init) takes a ``torch.Generator`` seeded from a hash of the
*identity* of what it is for — task name and parameters, image id, seed index — never from a global RNG or from the
order in which work happens. Draws are made on the CPU and moved to the target device, so they are identical on
any machine.
"""
from __future__ import annotations

import hashlib

from bench.core.identity import canonical_json
from bench.core.lazy import lazy_module

torch = lazy_module("torch")


def derive_seed(*parts) -> int:
    """A 63-bit seed from a canonical JSON encoding of ``parts`` (dicts are key-sorted)."""
    return int.from_bytes(hashlib.sha256(canonical_json(parts)).digest()[:8], "little") & ((1 << 63) - 1)


def generator(*parts) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(derive_seed(*parts))
    return g


def randn(shape, *parts, device="cpu", dtype=None) -> torch.Tensor:
    """Standard normal draw of ``shape`` keyed by ``parts`` (``dtype`` default: float32)."""
    return torch.randn(shape, generator=generator(*parts), dtype=dtype or torch.float32).to(device)
