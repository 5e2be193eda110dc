"""pytest-benchmark: the whole smoke grid end to end (plan, every unit, Parquet files), in this process.

Skipped by the normal test run (pyproject addopts has --benchmark-skip). Run and save, then compare later runs:

    pytest tests/benchmarks --benchmark-only --benchmark-storage=results/benchmarks --benchmark-autosave
    pytest tests/benchmarks --benchmark-only --benchmark-storage=results/benchmarks \\
        --benchmark-compare --benchmark-compare-fail=min:25%

Each round runs into a fresh directory (nothing is resumed) and asserts every row is ok; target <= 60 s on the
2-core reference machine (README "Performance").
"""
from __future__ import annotations

import itertools

import pytest

from bench.plan import loading
from bench.plan.grid import load_grid
from bench.priors.catalog import CHECKPOINT_DIR
from bench.run.runner import run_grid
from bench.store.parts import read_run


def test_smoke_grid(benchmark, tmp_path):
    grid = load_grid("smoke")
    missing = [p for p in grid.values("priors") if not (CHECKPOINT_DIR / f"{p}.pt").is_file()]
    if missing:
        pytest.skip(f"shipped priors missing: {missing}")
    counter = itertools.count()
    outs = []

    def setup():
        for cache in (loading._PRIORS, loading._IMAGES, loading._CHECKPOINTS):   # each round loads its priors
            cache.clear()                                                      # and images like a fresh run
        outs.append(tmp_path / f"round{next(counter)}")
        return (outs[-1],), {}

    def run(out):
        return run_grid(grid, out, device="cpu", progress=False, log=lambda m: None)

    benchmark.extra_info.update(grid="smoke", grid_hash=grid.hash)
    summary = benchmark.pedantic(run, setup=setup, rounds=2, iterations=1, warmup_rounds=0)
    rows = read_run(outs[-1])
    benchmark.extra_info.update(rows=int(len(rows)), units=summary.units_run)
    assert summary.units_run == summary.units_planned > 0
    assert len(rows) == summary.rows_written and (rows["status"] == "ok").all()
