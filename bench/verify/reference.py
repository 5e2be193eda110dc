"""Best-known optima by long multi-start solves: what ``python -m bench reference DIR`` computes.

For every instance (task, prior, split, image, λ, seed) of a finished run directory, restart from the
reconstructions of the ``starts`` solvers that reached the lowest MAP loss on it (their x̂ in ``DIR/recon``) and
run projected Adam at fixed λ on L(x; λ) for ``factor`` × the run's largest budget, once per step size in ``lrs``.
Every iterate is clamped to the box and scored with the same objective as the harness; the lowest value seen is the
instance's reference. The table (``DIR/reference.parquet``: the instance columns, ``map_loss``, ``start``, ``lr``,
``passes``) is used by ``report`` as a candidate f_ref beside the run's own results, so a reference can only lower
f_ref, never raise it.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.core.errors import UserError
from bench.core.metrics import loss_metric
from bench.core.schema import INSTANCE, RECON_CELL, RECON_X_HAT, TASK_SPEC
from bench.store.parts import RECON


def _recon(run_dir: Path) -> dict:
    """{cell_id: x_hat (C, H, W)} of every readable recon file."""
    out = {}
    for f in sorted((run_dir / RECON).glob("*.npz")):
        try:
            z = np.load(io.BytesIO(f.read_bytes()))
            for c, x in zip(z[RECON_CELL].tolist(), z[RECON_X_HAT]):
                out[str(c)] = x
        except Exception:  # noqa: BLE001 -- an unreadable file only removes starts
            continue
    return out


def _prior_spec(name: str, meta: dict) -> str:
    for b in (meta.get("grid") or {}).get("blocks") or []:
        for p in b.get("priors", []):
            if Path(str(p)).stem == name or p == name:
                return str(p)
    return name


def reference_solves(run_dir, factor: float = 1.0, lrs=(0.01,), starts: int = 2, device: str = "cpu",
                     progress: bool = True, data_root=None, ood_root=None, prior_dir=None) -> pd.DataFrame:
    """The reference table of ``run_dir`` (module docstring). ``data_root``/``ood_root``: the dataset folders the
    run used (folder datasets only); ``prior_dir``: what relative checkpoint paths of its grid resolve against."""
    from bench.plan.loading import fresh_model, get_images
    from bench.plan.units import resolve_prior
    from bench.report.leaderboard import load_run
    from bench.report.tables import is_ok
    from bench.run.budget import BudgetedPrior
    from bench.solvers.optim import Adam, clamp01
    from bench.solvers.stages import evaluate
    from bench.tasks import make_task

    run_dir = Path(run_dir)
    rows, meta = load_run(run_dir)
    ok = rows[is_ok(rows)].copy()
    recon = _recon(run_dir)
    ok = ok[ok["cell_id"].isin(recon)]
    if ok.empty:
        raise UserError(f"{str(run_dir)!r} has no reconstructions to restart from (recon/*.npz)")
    steps = max(1, int(round(factor * int(ok["budget"].max()))))
    grid = meta.get("grid") or {}
    root = {"id": data_root or grid.get("data_root"), "ood": ood_root or grid.get("ood_data_root") or data_root}
    groups = list(ok.groupby([TASK_SPEC, "prior", "prior_sha256", "dataset", "split", "seed", "image_size"]))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(groups) * len(lrs), unit="group", desc="reference", dynamic_ncols=True)
    out = []
    for (task_spec, prior, sha, dataset, split, seed, size), g in groups:
        best = g.sort_values(loss_metric()).groupby(["image_id", "lam"], sort=False).head(starts)
        ids = sorted(best["image_id"].unique())
        iset = get_images(dataset, "test", int(size), root.get(split))
        pos = {i: k for k, i in enumerate(iset.ids)}
        problem = make_task(task_spec).make(iset.images[[pos[i] for i in ids]].to(device), ids, int(seed))
        full = problem.take([ids.index(i) for i in best["image_id"]])
        lam = torch.tensor(best["lam"].to_numpy(), dtype=torch.float32, device=device)
        x0 = torch.from_numpy(np.stack([recon[c] for c in best["cell_id"]])).to(device).clamp(0, 1)
        model = fresh_model(resolve_prior(_prior_spec(prior, meta), prior_dir), device, sha)
        for lr in lrs:
            bp = BudgetedPrior(model, steps + 1, full.batch_size)
            x, opt = x0.clone(), Adam(lr)
            low = torch.full((full.batch_size,), float("inf"), dtype=torch.float64, device=device)
            for t in range(steps + 1):
                e = evaluate(full, bp, x)
                low = torch.minimum(low, e.loss(lam).double())
                if t < steps:
                    x = clamp01(opt.step(x, e.grad(lam)))
            part = best[INSTANCE].copy()
            part[loss_metric()] = low.cpu().numpy()
            part["start"], part["lr"], part["passes"] = best["solver"].values, float(lr), steps
            out.append(part)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return pd.concat(out, ignore_index=True)
