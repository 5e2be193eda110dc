"""Synthetic run directories in the store format, for the report and check tests only (never results)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from bench.store.parts import write_unit

SOLVER_OFFSET = {"aipo": 0.0, "latent-lbfgs": 3.0, "lasso-dct": 40.0, "x-adam": 1.5}
SOLVER_PSNR = {"aipo": 26.0, "latent-lbfgs": 27.0, "lasso-dct": 22.0, "x-adam": 25.0}


def _h(*parts, n: int = 12) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:n]


def _rng(*parts) -> np.random.Generator:
    return np.random.default_rng(int(_h(*parts), 16))


def make_run(run_dir, *, tasks=("denoise", "cs[m=0.1628]", "inpaint"), priors=("realnvp-xs", "glow-xs"),
             splits=("test", "ood"), lams=(0.5, 1.0), solvers=tuple(SOLVER_OFFSET), seeds=(0,), n_images=3,
             per_image_cell_id=True, fail=None, shift=None, recon=True, traces=True, budget=200,
             run_json=True) -> Path:
    """Write a run dir. ``fail``: {(task, solver): k} marks the first k rows of those units 'nan';
    ``shift``: callable(row dict) -> added map_loss (perturbations for the check tests)."""
    run_dir = Path(run_dir)
    fail = fail or {}
    side, ch = 8, 1
    for task in tasks:
        m = None
        if task.startswith("cs"):
            m = float(task.split("m=")[1].rstrip("]")) if "m=" in task else 0.3255
        for prior in priors:
            for split in splits:
                for seed in seeds:
                    imgs = [f"{split}-{i:03d}" for i in range(n_images)]
                    x_true = {i: _rng("x", i).uniform(0, 1, (ch, side, side)) for i in imgs}
                    for solver in solvers:
                        unit = _h(task, prior, split, seed, solver, n=20)   # the store's unit-id form
                        rows, trs, rec = [], [], {"cell_id": [], "x_hat": [], "x_true": [], "observed": []}
                        if task.startswith("inpaint"):
                            rec["mask"] = []
                        k_fail = fail.get((task, solver), 0)
                        for lam in lams:
                            for img in imgs:
                                cell = _h(task, prior, split, lam, solver, seed, img if per_image_cell_id else "")
                                r = _rng(task, prior, split, lam, solver, seed, img)
                                base = -300.0 * lam + 10 * int(img[-3:]) + (5 if split == "ood" else 0)
                                loss = base + SOLVER_OFFSET.get(solver, 2.0) * lam + r.normal(0, 0.5)
                                psnr = SOLVER_PSNR.get(solver, 24.0) - (m or 0) * 3 + (
                                    8 * m if m and solver != "lasso-dct" else 0) + r.normal(0, 0.4)
                                status = "ok"
                                if k_fail > 0:
                                    status, k_fail = "nan", k_fail - 1
                                row = {"cell_id": cell, "unit_id": unit, "task": task, "prior": prior,
                                       "prior_sha256": _h(prior), "dataset": "lfw-embedded", "split": split,
                                       "image_id": img, "lam": float(lam), "solver": solver, "seed": int(seed),
                                       "image_size": side, "map_loss": loss, "data_fit": 7.0 + r.normal(0, .1),
                                       "log_prior": (7.0 - loss) / lam, "psnr": psnr,
                                       "ssim": 0.5 + psnr / 100, "nfe_used": budget, "budget": budget,
                                       "iterations": 100, "wall_time_s": 0.25, "status": status,
                                       "error": "" if status == "ok" else "non-finite x_hat",
                                       "p_task_m": m, "p_solver_lr": 0.01, "tuned": "",
                                       "grid_name": "synthetic", "git_commit": "abc1234", "device": "cpu",
                                       "torch_version": "2.13.0"}
                                if shift is not None:
                                    row["map_loss"] += shift(row)
                                if status != "ok":
                                    for k in ("map_loss", "psnr", "ssim"):
                                        row[k] = float("nan")
                                rows.append(row)
                                if solver != "lasso-dct":
                                    for nfe in range(0, budget + 1, 20):
                                        t = {"cell_id": cell, "unit_id": unit, "nfe": nfe,
                                             "map_loss": row["map_loss"] + 50 * np.exp(-nfe / 40)}
                                        if not per_image_cell_id:
                                            t["image_id"] = img
                                        trs.append(t)
                                rec["cell_id"].append(cell)
                                rec["x_hat"].append(np.clip(x_true[img] + r.normal(0, .05, x_true[img].shape), 0, 1))
                                rec["x_true"].append(x_true[img])
                                rec["observed"].append(np.clip(x_true[img] + r.normal(0, .1, x_true[img].shape), 0, 1))
                                if "mask" in rec:
                                    rec["mask"].append((r.uniform(0, 1, x_true[img].shape) > .25).astype(float))
                        arrays = {k: (np.array(v, dtype=str) if k == "cell_id" else np.stack(v))
                                  for k, v in rec.items()}
                        write_unit(run_dir, unit, pd.DataFrame(rows),
                                   pd.DataFrame(trs) if traces and trs else None, arrays if recon else None)
    if run_json:
        (run_dir / "run.json").write_text(json.dumps({
            "name": "synthetic", "budget": budget, "mle_steps": 50, "tuned": None, "wall_time_s": 12.5,
            "git_commit": "abc1234", "device": "cpu", "torch_version": "2.13.0", "solvers": list(solvers)}))
    return run_dir
