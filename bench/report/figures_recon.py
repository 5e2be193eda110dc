"""Reconstruction grids and the compressed-sensing sweep of a run directory (matplotlib, Agg backend).

- Reconstruction grid (per task, AIPO Fig. 1–4): clean, doing nothing (shown once), then each solver, for a few images of one
  (prior, split, λ, seed): the first prior, the first split, the λ nearest the median λ, the lowest seed.
- PSNR vs m (Asim Fig. 4): cs tasks with at least 3 values of m; one panel per prior (first split), one line per
  solver at that solver's best λ (highest mean PSNR over the sweep — an oracle choice, stated in the caption),
  mean ± se over (image, seed). x axis m/n when every m is a fraction, else m.

PSNR is the metric of role :data:`bench.core.metrics.QUALITY`; doing nothing is the solver of role
:data:`bench.core.schema.TRIVIAL`.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.core.metrics import decimals, quality_metric, short_name, unit_of  # noqa: E402
from bench.core.schema import (RECON_CELL, RECON_MASK, RECON_OBSERVED, RECON_X_HAT, RECON_X_TRUE, STATUS,  # noqa: E402
                               TRIVIAL, Status)
from bench.report.roles import role_solver  # noqa: E402
from bench.report.tables import is_ok, solver_order, split_order, task_base  # noqa: E402
from bench.store.parts import RECON  # noqa: E402

MAX_IMAGES = 4


# ---------------------------------------------------------------------------------------------------- recon grid
def _load_recon(run_dir: Path, rows: pd.DataFrame, unit_ids) -> pd.DataFrame:
    """One record per (cell, image) of the selected units: identity + arrays."""
    recs = []
    for uid in unit_ids:
        f = run_dir / RECON / f"{uid}.npz"
        if not f.is_file():
            continue
        with np.load(f, allow_pickle=False) as z:
            arr = {k: z[k] for k in z.files}
        if RECON_CELL not in arr or RECON_X_HAT not in arr:
            continue
        urows = rows[rows["unit_id"] == uid]
        by_cell = {cid: list(g["image_id"].astype(str)) for cid, g in urows.groupby("cell_id", sort=False)}
        seen: dict = {}
        for i, cid in enumerate(arr[RECON_CELL].astype(str)):
            if "image_id" in arr:
                img = str(arr["image_id"][i])
            else:
                imgs = by_cell.get(cid, [])
                j = seen.get(cid, 0)
                seen[cid] = j + 1
                if j >= len(imgs):
                    continue
                img = imgs[j]
            rec = {"cell_id": cid, "image_id": img, RECON_X_HAT: arr[RECON_X_HAT][i]}
            for k in (RECON_X_TRUE, RECON_OBSERVED, RECON_MASK):
                if k in arr and len(arr[k]) > i:
                    rec[k] = arr[k][i]
            recs.append(rec)
    return pd.DataFrame(recs)


def _failed(ax, text: str = "failed"):
    """A hatched tile for a row without a finite reconstruction (never a white or black image)."""
    ax.add_patch(plt.Rectangle((0, 0), 1, 1, transform=ax.transAxes, facecolor="#f2dede", hatch="///",
                               edgecolor="#a94442", lw=0))
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=7, color="#a94442", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _show(ax, img):
    a = np.asarray(img, dtype=float)
    if a.ndim == 3 and a.shape[0] in (1, 3):
        a = a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))
    if a.ndim not in (2, 3):
        ax.text(0.5, 0.5, "y ∈ R^m", ha="center", va="center", fontsize=7, transform=ax.transAxes)
    elif not np.isfinite(a).all():
        _failed(ax)
        return
    else:
        ax.imshow(np.clip(a, 0, 1), cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=1,
                  interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def select_recon(rows: pd.DataFrame, task: str) -> dict:
    sub = rows[rows["task"] == task]
    prior = sorted(sub["prior"].unique())[0]
    sub = sub[sub["prior"] == prior]
    split = split_order(sub["split"])[0]
    sub = sub[sub["split"] == split]
    lams = np.sort(sub["lam"].unique())
    lam = lams[np.argmin(np.abs(lams - np.median(lams)))]
    sub = sub[sub["lam"] == lam]
    seed = sub["seed"].min()
    sub = sub[sub["seed"] == seed]
    images = sorted(sub["image_id"].astype(str).unique())[:MAX_IMAGES]
    return {"prior": prior, "split": split, "lam": lam, "seed": seed, "images": images,
            "rows": sub[sub["image_id"].astype(str).isin(images)]}


def plot_recon(run_dir: Path, rows: pd.DataFrame, task: str, path: Path, meta=None) -> str | None:
    sel = select_recon(rows, task)
    sub = sel["rows"]
    rec = _load_recon(run_dir, rows, sub["unit_id"].unique())
    if rec.empty:
        return None
    quality, nothing_solver = quality_metric(), role_solver(TRIVIAL)
    shown = f"{{:.{decimals(quality)}f}} {unit_of(quality)}".strip()   # a reconstruction's quality under it
    ident = sub[["cell_id", "image_id", "solver", quality, STATUS]].copy()
    ident["image_id"] = ident["image_id"].astype(str)
    rec = rec.merge(ident, on=["cell_id", "image_id"])
    if rec.empty:
        return None
    solvers = [s for s in solver_order(rec["solver"].unique(), meta) if s != nothing_solver]   # doing nothing: column 2
    images = [i for i in sel["images"] if i in set(rec["image_id"])]
    ncol = 2 + len(solvers)
    fig, axes = plt.subplots(len(images), ncol, figsize=(1.45 * ncol, 1.55 * len(images) + 0.3), squeeze=False)
    for r, img in enumerate(images):
        ri = rec[rec["image_id"] == img]
        any_rec = ri.iloc[0]
        _show(axes[r][0], any_rec[RECON_X_TRUE] if isinstance(any_rec.get(RECON_X_TRUE), np.ndarray) else np.zeros(1))
        ax = axes[r][1]
        nothing = ri[(ri["solver"] == nothing_solver) & (ri[STATUS] == Status.OK)]
        if len(nothing):   # the do-nothing solver's x̂ (each task's naive estimate) and its PSNR
            _show(ax, nothing.iloc[0][RECON_X_HAT])
            ax.set_xlabel(shown.format(nothing.iloc[0][quality]), fontsize=7)
        else:
            arr = any_rec[RECON_OBSERVED] if isinstance(any_rec.get(RECON_OBSERVED), np.ndarray) else None
            _show(ax, arr if arr is not None and np.any(arr) else np.zeros(1))   # y is not an image (cs)
        if r == 0:
            axes[r][0].set_title("clean", fontsize=8)
            ax.set_title("doing nothing" if len(nothing) else RECON_OBSERVED, fontsize=8)
        axes[r][0].set_ylabel(img, fontsize=6)
        for c, s in enumerate(solvers, start=2):
            ax = axes[r][c]
            rs = ri[ri["solver"] == s]
            if rs.empty:
                ax.axis("off")
            else:
                status = rs.iloc[0][STATUS]
                ok = status == Status.OK
                if ok:
                    _show(ax, rs.iloc[0][RECON_X_HAT])
                else:
                    _failed(ax, f"failed ({status})")
                ax.set_xlabel(shown.format(rs.iloc[0][quality]) if ok else str(status), fontsize=7)
            if r == 0:
                ax.set_title(s, fontsize=8)
    fig.suptitle(f"{task} — prior {sel['prior']}, split {sel['split']}, λ = {sel['lam']:g}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return (f"Reconstructions, {task}: prior {sel['prior']}, split {sel['split']}, λ = {sel['lam']:g}, "
            f"seed {sel['seed']}; columns clean, doing nothing (`{nothing_solver}`'s x̂, else the observation), then "
            f"each solver ({short_name(quality)} below).")


# ---------------------------------------------------------------------------------------------------- cs sweep
def _m_values(cs: pd.DataFrame) -> pd.Series:
    """The measurement parameter ``m`` of each row (its ``p_task_m`` column: a fraction of n or a count)."""
    return pd.to_numeric(cs["p_task_m"], errors="coerce")


def _sweeps_m(task: str) -> bool:
    """Whether ``task``'s class declares ``sweep_param = "m"`` (the measurement count this figure plots along)."""
    from bench.tasks import TASKS

    base = task_base(task)
    return base in TASKS and TASKS.get(base).sweep_param == "m"


def cs_sweep(rows: pd.DataFrame, n_pixels: int | None = None) -> tuple[pd.DataFrame, str] | None:
    """Mean ± se PSNR (role QUALITY) per (prior, solver, m) at each solver's best λ; (table, x-axis label) or
    None."""
    quality = quality_metric()
    cs = rows[(rows["task"].astype(str).map(_sweeps_m)) & is_ok(rows)].copy()
    if "p_task_noise" in cs.columns and (cs["p_task_noise"] == "norm").any():
        cs = cs[cs["p_task_noise"] == "norm"]   # the sweep in Asim's convention (noise norm), not AIPO's
    if cs.empty:
        return None
    cs["m"] = _m_values(cs)
    if cs["m"].nunique() < 3:
        return None
    frac = cs["m"] <= 1
    if frac.all():
        cs["x"], label = cs["m"], "m / n"
    elif not frac.any():
        cs["x"], label = cs["m"], "m"
    elif n_pixels:
        cs["x"] = np.where(frac, cs["m"], cs["m"] / n_pixels)
        label = "m / n"
    else:
        cs = cs[~frac]
        cs["x"], label = cs["m"], "m"
    split = split_order(cs["split"])[0]
    cs = cs[cs["split"] == split]
    cs[quality] = pd.to_numeric(cs[quality], errors="coerce")
    best_lam = cs.groupby(["prior", "solver", "lam"])[quality].mean().groupby(level=[0, 1]).idxmax()
    keep = set(best_lam.dropna().values)
    cs = cs[[k in keep for k in zip(cs["prior"], cs["solver"], cs["lam"])]]
    g = cs.groupby(["prior", "solver", "x"])[quality]
    t = pd.DataFrame({"mean": g.mean(), "se": g.std(ddof=1) / np.sqrt(g.count())})
    lam_of = {(p, s): lam for (p, s, lam) in best_lam.dropna().values}
    t["lam"] = [lam_of[(p, s)] for p, s, _ in t.index]
    t.attrs["split"] = split
    return t, label


def plot_cs_sweep(run_dir: Path, rows: pd.DataFrame, path: Path, meta=None) -> str | None:
    n_pixels = None
    rec_dir = run_dir / RECON
    for f in sorted(rec_dir.glob("*.npz"))[:1] if rec_dir.is_dir() else []:
        with np.load(f) as z:
            if RECON_X_TRUE in z.files:
                n_pixels = int(np.prod(z[RECON_X_TRUE].shape[1:]))
    res = cs_sweep(rows, n_pixels)
    if res is None:
        return None
    t, label = res
    task = ", ".join(sorted({task_base(x) for x in rows["task"].astype(str) if _sweeps_m(x)}))
    priors = sorted(t.index.get_level_values("prior").unique())
    fig, axes = plt.subplots(1, len(priors), figsize=(4.4 * len(priors), 3.4), squeeze=False)
    for ax, prior in zip(axes[0], priors):
        tp = t.xs(prior, level="prior")
        for s in solver_order(tp.index.get_level_values("solver").unique(), meta):
            ts = tp.xs(s, level="solver").sort_index()
            ax.errorbar(ts.index, ts["mean"], yerr=ts["se"].fillna(0), marker="o", ms=3, capsize=2,
                        label=f"{s} (λ={ts['lam'].iloc[0]:g})")
        ax.set_title(f"{task}, prior {prior}", fontsize=10)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    quality = quality_metric()
    axes[0][0].set_ylabel(f"{short_name(quality)} ({unit_of(quality)})")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return (f"{short_name(quality)} vs {label} for {task} (split {t.attrs['split']}): mean ± se over (image, seed); "
            "each solver at its best λ over the sweep (oracle choice, in the legend).")
