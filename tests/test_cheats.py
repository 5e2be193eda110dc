"""Adversarial plugin solvers: each cheat is caught (a failed row) or has no effect on any score, and the honest
solvers' rows are bit-identical to a run without the cheats — in one harness process (``--workers 1``), where
tampering with shared objects would reach later units if it could. Solvers run in their own process behind the
counted oracle (bench/run/isolate.py); the cheats below are what a plugin tries from there."""
from __future__ import annotations

import os
import textwrap

import pandas as pd
import pytest

from bench.store import parts as store
from kit.cheats import PROCESS_CHEATS
from kit.grids import assert_same_rows, bench_env, comparable, make_checkpoint, run_bench, write_grid, write_plugin

CHEATS = textwrap.dedent('''
    """Solvers that try to cheat. Those that cannot succeed return the naive estimate, so their rows must score
    exactly like the honest `observed` solver's."""
    import numpy as np
    import torch

    from bench.solvers.base import SOLVERS, SolveResult, Solver


    def naive(problem):
        return problem.naive_estimate()


    @SOLVERS.register("cheat-oracle")
    class Oracle(Solver):
        """Returns the clean image (problem.x_true) plus a little noise, with 0 passes."""
        uses_prior = False
        def solve(self, problem, prior, lam, ctx):
            return SolveResult(problem.x_true + 1e-3 * torch.randn_like(problem.x_true))


    @SOLVERS.register("cheat-mutate")
    class Mutate(Solver):
        """Returns the naive estimate, then writes into everything it was given: λ, y, the operator state, the
        task's noise level."""
        uses_prior = False
        def solve(self, problem, prior, lam, ctx):
            x = naive(problem)
            lam.mul_(1000)
            problem.y.zero_()
            for v in problem.state.values():
                v.zero_()
            problem.task.params["sigma"] = 1e6      # the noise model the harness scores with
            if problem.x_true is not None:
                problem.x_true.copy_(x)
            return SolveResult(x)


    class Bypass(Solver):
        """Tries one way around the budget, then returns the naive estimate."""
        def attempt(self, problem, prior):
            raise NotImplementedError
        def solve(self, problem, prior, lam, ctx):
            x = naive(problem)
            self.attempt(problem, prior, x)
            return SolveResult(x)


    @SOLVERS.register("cheat-rows-empty")
    class RowsEmpty(Bypass):
        def attempt(self, problem, prior, x):
            for _ in range(3 * ctx_budget(prior)):
                prior.log_prob(x, rows=[])        # evaluate the whole batch, charge nobody


    @SOLVERS.register("cheat-raw-network")
    class RawNetwork(Bypass):
        def attempt(self, problem, prior, x):
            prior.prior.log_prob(x)


    @SOLVERS.register("cheat-reset-used")
    class ResetUsed(Bypass):
        def attempt(self, problem, prior, x):
            for _ in range(3):
                for _ in range(prior.budget):
                    prior.log_prob(x)
                prior.used.zero_()


    @SOLVERS.register("cheat-cached-model")
    class CachedModel(Bypass):
        uses_prior = False
        def attempt(self, problem, prior, x):
            from bench.plan import loading
            model = next(iter(loading._PRIORS.values())).model   # the per-process cache of the old runner
            model.log_prob(x)


    @SOLVERS.register("cheat-raise-budget")
    class RaiseBudget(Bypass):
        def attempt(self, problem, prior, x):
            prior.budget = 10 ** 9


    @SOLVERS.register("cheat-negative-charge")
    class NegativeCharge(Bypass):
        def attempt(self, problem, prior, x):
            prior.charge(-10 ** 6)


    @SOLVERS.register("cheat-private-budget")
    class PrivateBudget(Bypass):
        """Reaches into the name-mangled budget and spends twice the real one: the post-solve check sees it."""
        def attempt(self, problem, prior, x):
            real = prior.budget
            prior._BudgetedPrior__budget = 10 ** 9
            for _ in range(2 * real):
                prior.log_prob(x)


    @SOLVERS.register("cheat-tamper")
    class Tamper(Bypass):
        """Shifts log p of its model (and of any model it can find) by +1e4 for everyone after it (no model, and
        no model code, exists in a solver process)."""
        def attempt(self, problem, prior, x):
            import gc
            from bench.priors.base import FlowPrior
            for obj in gc.get_objects():
                if isinstance(obj, FlowPrior):
                    orig = obj.log_prob
                    obj.log_prob = lambda x, _o=orig: _o(x) + 1e4


    @SOLVERS.register("cheat-exit")
    class Exit(Solver):
        """Ends the whole process from inside a solve."""
        uses_prior = False
        def solve(self, problem, prior, lam, ctx):
            raise SystemExit(3)


    def ctx_budget(prior):
        return prior.budget
''') + PROCESS_CHEATS

HONEST = ["observed", "zero-init", "aipo", "latent-lbfgs", "random-init"]
CAUGHT = {"cheat-oracle": "error", "cheat-rows-empty": "error", "cheat-raw-network": "error",
          "cheat-reset-used": "overspend", "cheat-cached-model": "error", "cheat-raise-budget": "error",
          "cheat-negative-charge": "error", "cheat-private-budget": "error", "cheat-exit": "error",
          "cheat-loader": "error", "cheat-loader-cache": "error", "cheat-gc": "error", "cheat-frames": "error",
          "cheat-frames-write": "error", "cheat-recon-files": "error", "cheat-fresh-model": "error",
          "cheat-reset-counter": "overspend", "cheat-write-unit": "error", "cheat-kill-harness": "error",
          "cheat-keyboard-interrupt": "crashed", "cheat-os-exit": "crashed", "cheat-sigterm": "crashed",
          "cheat-sleep": "timeout", "cheat-allocate": "oom", "cheat-tamper": "error"}
# succeed in doing what they do, but no score moves (they return the naive estimate, so score like `observed`)
NO_EFFECT = ["cheat-mutate", "cheat-patch-scoring", "cheat-forged-trace", "cheat-global-state"]
UNIT_LIMITS = dict(unit_timeout_s=20, unit_memory_mb=1024)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cheats")
    ckpt = make_checkpoint(d / "realnvp-t.pt", "realnvp")
    plugin = write_plugin(d / "plugins", "cheat_plugin", CHEATS)
    env = bench_env(PYTHONPATH=os.pathsep.join([str(d / "plugins"), os.environ.get("PYTHONPATH", "")]))
    common = dict(priors=[str(ckpt)], tasks=["denoise", "cs"], budget=12, mle_steps=4)
    # cheats first in the solver order, so in one process they run before the honest solvers they might tamper with
    cheats = write_grid(d / "cheats.toml", solvers=list(CAUGHT) + NO_EFFECT + HONEST, **common, **UNIT_LIMITS)
    clean = write_grid(d / "clean.toml", solvers=HONEST, **common)
    out = {}
    for name, grid, extra in (("cheats", cheats, ["--plugin", plugin]), ("clean", clean, [])):
        r = run_bench("run", "--grid", grid, "--out", d / name, "--workers", "1", "-q", *extra, env=env)
        assert r.returncode == 0, r.stderr   # failed rows are results, and exit(3) ends only its own unit
        out[name] = store.read_run(d / name)
        out[name + "-traces"] = store.read_traces(d / name)
        out[name + "-line"] = r.stdout.strip().splitlines()[-1]
    return out


def test_every_cheat_is_caught(runs):
    df = runs["cheats"]
    for solver, status in CAUGHT.items():
        got = df.loc[df["solver"] == solver, "status"]
        assert len(got) and (got == status).all(), (solver, got.unique(), df.loc[df["solver"] == solver, "error"]
                                                    .unique())


def test_cheats_that_run_score_like_doing_nothing(runs):
    df = runs["cheats"]
    key = ["task", "split", "image_id", "lam"]
    base = df[df["solver"] == "observed"].set_index(key).sort_index()
    for solver in NO_EFFECT:
        got = df[df["solver"] == solver].set_index(key).sort_index()
        assert (got["status"] == "ok").all(), solver
        for m in ("map_loss", "data_nll", "log_prior", "psnr", "ssim"):
            pd.testing.assert_series_equal(got[m], base[m], check_exact=True, check_names=False), (solver, m)


def test_honest_rows_are_bit_identical_to_a_run_without_cheats(runs):
    a = runs["cheats"]
    a = a[a["solver"].isin(HONEST)]
    assert_same_rows(comparable(a), comparable(runs["clean"]))


def test_the_run_says_how_many_units_its_limits_stopped(runs):
    line = runs["cheats-line"]
    # timeout: sleep; oom: allocate; crashed: KeyboardInterrupt, os._exit, SIGTERM (two tasks each)
    assert "units stopped by its limits or its solver process (crashed 6, oom 2, timeout 2)" in line, line


def test_forged_traces_never_reach_the_traces(runs):
    tr, df = runs["cheats-traces"], runs["cheats"]
    forger = set(df.loc[df["solver"] == "cheat-forged-trace", "cell_id"])
    mine = tr[tr["cell_id"].isin(forger)]
    from bench.run.budget import max_trace_points
    assert (mine["nfe"] == 1).all() and (mine["map_loss"] > -1e6).all()
    assert mine.groupby("cell_id").size().max() <= max_trace_points(12)   # every point at the same pass
    base = df[df["solver"] == "observed"].set_index(["task", "image_id", "lam"])["map_loss"].sort_index()
    got = tr.merge(df[["cell_id", "task", "image_id", "lam"]], on="cell_id")
    got = got[got["cell_id"].isin(forger)].groupby(["task", "image_id", "lam"])["map_loss"].first().sort_index()
    # the harness's loss at the one point it evaluated (the naive estimate): exactly the observed row's
    pd.testing.assert_series_equal(got, base.loc[got.index], check_names=False, rtol=1e-6)


def test_honest_traces_are_bit_identical_to_a_run_without_cheats(runs):
    a, b = runs["cheats-traces"], runs["clean-traces"]
    honest = set(runs["cheats"].loc[runs["cheats"]["solver"].isin(HONEST), "cell_id"])
    a = a[a["cell_id"].isin(honest)].sort_values(["cell_id", "nfe"]).reset_index(drop=True)
    b = b.sort_values(["cell_id", "nfe"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[["cell_id", "nfe", "map_loss"]], b[["cell_id", "nfe", "map_loss"]],
                                  check_exact=True)
