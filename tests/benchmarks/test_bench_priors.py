"""pytest-benchmark: one forward+backward of log_prob w.r.t. x at 16x16 grey, per architecture, preset and batch.

Skipped by default (pyproject addopts has --benchmark-skip). Run with
``OMP_NUM_THREADS=1 python -m pytest tests/benchmarks/test_bench_priors.py --benchmark-enable``; the per-image cost
ratio batch 1 / batch 256 (target >= 10x) is ``stats.mean[B=1] / (stats.mean[B=256] / 256)``.
"""
from __future__ import annotations

import pytest
import torch

from bench.priors.base import ARCHS


def _model(arch, preset):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = ARCHS.get(arch)((1, 16, 16), preset)
    m.train()
    with torch.no_grad():
        m.log_prob(torch.rand(16, 1, 16, 16))
    return m.eval().requires_grad_(False)


@pytest.mark.parametrize("batch", [1, 40, 64, 256])
@pytest.mark.parametrize("preset", ["xs", "s"])
@pytest.mark.parametrize("arch", ARCHS.names())
def test_log_prob_fwd_bwd(benchmark, arch, preset, batch):
    torch.set_num_threads(1)
    m = _model(arch, preset)
    x = torch.rand((batch, 1, 16, 16), generator=torch.Generator().manual_seed(0), requires_grad=True)

    def step():
        x.grad = None
        m.log_prob(x).sum().backward()
        return x.grad

    benchmark.group = f"{arch}-{preset}"
    benchmark.extra_info.update(arch=arch, preset=preset, batch=batch)
    g = benchmark(step)
    assert torch.isfinite(g).all()
