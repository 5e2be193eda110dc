"""Helpers for the executor, fault and bad-input tests: tiny prior checkpoints, grid files, row comparison, and a
plugin module of misbehaving solvers. Independent of the shipped checkpoints (they may not be built yet)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import torch

from bench.core.metrics import METRICS as METRIC_TABLE

REPO = Path(__file__).resolve().parents[2]

# Columns that legitimately differ between two runs of the same cells: timing and provenance (a filtered grid has
# another hash; the lead may commit between two runs of one test).
VOLATILE = ("wall_time_s", "started_at", "git_commit", "torch_version", "numpy_version", "grid_name", "grid_hash")
OUTCOMES = (*METRIC_TABLE, "nfe_used", "iterations", "status", "error")


def make_checkpoint(path, arch: str = "realnvp", preset: str = "xs") -> Path:
    """An untrained (data-initialised) 16x16 grey prior checkpoint at ``path``; deterministic."""
    from bench.datasets.base import load_dataset
    from bench.priors.training import build_model, save_checkpoint

    path = Path(path)
    m = build_model(arch, preset, (1, 16, 16), ("tests-gridkit", arch, preset))
    x = load_dataset("lfw-faces", "train", 16).images[:32].clamp(0.02, 0.98)
    m.train()
    with torch.no_grad():
        m.log_prob(x)  # data-dependent initialisation (ActNorm)
    m.eval()
    save_checkpoint(m, path)
    return path


def toml_value(v) -> str:
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    return repr(v)


def write_grid(path, **keys) -> Path:
    """A grid TOML file; ``keys`` override a tiny default (2 id images, denoise+inpaint, 2 λ, budget 30)."""
    base = {"name": Path(path).stem, "image_size": 16, "images_per_split": 2, "splits": ["id"],
            "tasks": ["denoise", "inpaint"], "lams": [0.5, 2.0], "solvers": ["aipo", "zero-init", "lasso-dct"],
            "budget": 30, "mle_steps": 10}
    base.update(keys)
    text = "".join(f"{k} = {toml_value(v)}\n" for k, v in base.items() if v is not None)
    Path(path).write_text(text)
    return Path(path)


def comparable(df: pd.DataFrame, drop=VOLATILE) -> pd.DataFrame:
    """Rows sorted by cell id with the volatile columns dropped and a fresh index."""
    df = df[[c for c in df.columns if c not in drop]]
    return df.sort_values("cell_id", kind="stable").reset_index(drop=True)


def bench_env(**extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def bench_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "bench", *map(str, args)]


def run_bench(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    """``python -m bench ARGS`` in the repository; a ``run`` writes no report unless the test asks (--report)."""
    args = [str(a) for a in args]
    if args and args[0] == "run" and "--report" not in args:
        args.append("--no-report")
    args = [a for a in args if a != "--report"]
    return subprocess.run(bench_cmd(*args), cwd=REPO, env=env or bench_env(), capture_output=True, text=True,
                          timeout=timeout)


# A plugin module (written into a temp folder, put on PYTHONPATH, loaded with --plugin) with solvers that fail in
# each of the ways the runner must isolate, and a slow one that gives the kill test a window.
FAULTY_PLUGIN = textwrap.dedent('''
    """Misbehaving solvers for the fault tests (never registered in the test process itself)."""
    import time

    import torch

    from bench.solvers.base import SOLVERS, SolveResult, Solver


    @SOLVERS.register("test-raises")
    class Raises(Solver):
        name = "test-raises"
        parameters = {}

        def solve(self, problem, prior, lam, ctx):
            raise RuntimeError("test-raises blew up on purpose")


    @SOLVERS.register("test-nan")
    class ReturnsNaN(Solver):
        name = "test-nan"
        parameters = {}

        def solve(self, problem, prior, lam, ctx):
            return SolveResult(x_hat=torch.full_like(problem.zeros(), float("nan")))


    @SOLVERS.register("test-diverges")
    class Diverges(Solver):
        """Gradient ascent on the MAP loss with a growing step: the iterate overflows to inf."""
        name = "test-diverges"
        parameters = {}

        def solve(self, problem, prior, lam, ctx):
            x = torch.full_like(problem.zeros(), 0.5)
            for _ in range(400):
                x = x * 1e3 + 1.0
                if not torch.isfinite(x).all():
                    break
            return SolveResult(x_hat=x)


    @SOLVERS.register("test-slow")
    class Slow(Solver):
        """Returns the grey image after sleeping (a deterministic window for the kill test)."""
        name = "test-slow"
        parameters = {"seconds": 1.0}
        uses_prior = False

        def solve(self, problem, prior, lam, ctx):
            time.sleep(float(self.params["seconds"]))
            return SolveResult(x_hat=torch.full_like(problem.zeros(), 0.5))
''')


def write_plugin(folder, name: str = "faulty_plugin", text: str = FAULTY_PLUGIN) -> str:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(text)
    return name


def assert_same_rows(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Value-for-value equality of two comparable() frames, ignoring columns that are entirely missing in both
    (per-solver info columns appear only where a unit of that solver is in the frame)."""
    got = got.dropna(axis=1, how="all")
    want = want.dropna(axis=1, how="all")
    assert sorted(got.columns) == sorted(want.columns), set(got.columns) ^ set(want.columns)
    pd.testing.assert_frame_equal(got[sorted(got.columns)].reset_index(drop=True),
                                  want[sorted(got.columns)].reset_index(drop=True), check_exact=True,
                                  check_dtype=False)
