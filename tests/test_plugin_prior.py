"""A new prior architecture is one plugin file: written into a temp folder, it is picked up by the prior contract
tests (tests/test_priors.py, parametrized over every name in ARCHS) and passes them, and from the CLI it trains
(``train-prior --plugin``) and runs as a grid's prior (``run --plugin``) — with no edit anywhere else.

``checker-additive``: a per-pixel affine map in logit space, then additive checkerboard couplings (NICE, Dinh et
al. 2015) whose shift is a small convolutional network of the other squares.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd

from kit import prior_contract as pc
from kit.grids import REPO, bench_env, run_bench, write_grid, write_plugin

PLUGIN = textwrap.dedent('''
    """checker-additive: a prior architecture declared in full in one file (hyper-parameters, presets, the flow)."""
    import torch
    from torch import nn

    from bench.core.registry import Param
    from bench.priors.base import ARCHS, DEPTH, WIDTH, FlowPrior


    @ARCHS.register("checker-additive")
    class CheckerAdditive(FlowPrior):
        """u -> (u - shift) * exp(-log_scale) per pixel, then z <- z + (1 - m) * t(m * z) on alternating
        checkerboards m (volume-preserving, so log|det| is the affine map's alone)."""

        description = "per-pixel affine map + additive checkerboard couplings (NICE)"
        hyperparameters = {"couplings": Param(int, range=DEPTH, doc="additive couplings"),
                           "hidden": Param(int, range=WIDTH, doc="channels of each coupling's network")}
        presets = {"xs": {"couplings": 2, "hidden": 4}, "s": {"couplings": 4, "hidden": 8},
                   "m": {"couplings": 4, "hidden": 16}, "paper": {"couplings": 8, "hidden": 64}}

        def __init__(self, image_shape=None, preset="s", **overrides):
            super().__init__(image_shape, preset, **overrides)
            c, hidden = self.image_shape[0], self.config["hidden"]
            self.shift = nn.Parameter(torch.zeros(self.image_shape))
            self.log_scale = nn.Parameter(torch.zeros(self.image_shape))
            self.nets = nn.ModuleList(
                nn.Sequential(nn.Conv2d(c, hidden, 3, padding=1), nn.Tanh(), nn.Conv2d(hidden, c, 3, padding=1))
                for _ in range(self.config["couplings"]))

        @staticmethod
        def mask(k, like):
            h, w = like.shape[-2:]
            ij = torch.arange(h, device=like.device).view(-1, 1) + torch.arange(w, device=like.device).view(1, -1)
            return ((ij + k) % 2).to(like.dtype)

        def _forward(self, u):
            z = (u - self.shift) * torch.exp(-self.log_scale)
            for k, net in enumerate(self.nets):
                m = self.mask(k, z)
                z = z + (1 - m) * net(m * z)
            return z, (-self.log_scale).sum().expand(u.shape[0])

        def _inverse(self, z):
            for k in reversed(range(len(self.nets))):
                m = self.mask(k, z)
                z = z - (1 - m) * self.nets[k](m * z)
            return z * torch.exp(self.log_scale) + self.shift, self.log_scale.sum().expand(z.shape[0])
''')
ARCH = "checker-additive"


def test_plugin_architecture_is_picked_up_by_the_prior_contract_tests(tmp_path):
    """pytest loads the plugin module first (``-p``), so the architecture is registered when tests/test_priors.py
    is collected: every contract test runs on it (each model check per small preset, each architecture check,
    training from the CLI) and passes."""
    name = write_plugin(tmp_path, "checker_additive_flow", PLUGIN)
    env = bench_env(PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", name, "tests/test_priors.py", "-k", ARCH],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    expected = len(pc.MODEL_CHECKS) * len(pc.SMALL) + len(pc.ARCH_CHECKS) + 1   # + test_train_prior_smoke
    assert r.returncode == 0 and f"{expected} passed" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]


def test_plugin_architecture_trains_and_runs_from_the_cli(tmp_path):
    folder = tmp_path / "plugins"
    name = write_plugin(folder, "checker_additive_cli", PLUGIN)
    env = bench_env(PYTHONPATH=os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]))
    r = run_bench("train-prior", "--plugin", name, "--prior", ARCH, "--preset", "xs", "--size", "16", "--steps", "3",
                  "--eval-every", "3", "--train-images", "16", "--eval-images", "8", "--no-progress",
                  "--device", "cpu", "--out", tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = tmp_path / f"{ARCH}-xs.pt"
    grid = write_grid(tmp_path / "g.toml", priors=[str(ckpt)], tasks=["denoise"], lams=[0.5],
                      solvers=["zero-init", "aipo"], budget=12, mle_steps=4)
    out = tmp_path / "out"
    r = run_bench("run", "--grid", grid, "--plugin", name, "--out", out, "-q", "--workers", "1", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = pd.read_parquet(out / "rows")
    assert len(rows) == 4 and (rows["status"] == "ok").all() and np.isfinite(rows["map_loss"]).all()
    assert set(rows["prior"]) == {f"{ARCH}-xs"}
