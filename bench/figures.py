"""PNG figures of a run directory (matplotlib, Agg backend): anytime curves, reconstruction grid, PSNR vs m.

- Anytime curves (per task): for every trace (a cell's MAP loss after t passes, averaged over the images the
  trace covers) the gap L_t − L*, where L* is the lowest MAP loss any solver reached on the same problem
  (task, prior, split, λ, seed, images) — traces and final harness scores both count. Each curve is carried
  forward after its last record up to the task's largest pass count (a stopped solver keeps its last iterate); a
  solver's mean is plotted from the first pass count at which every one of its problems has a record, so each
  point averages the same set of problems; log scale, floored at ``GAP_FLOOR``.
- Reconstruction grid (per task, AIPO Fig. 1–4): clean, observed, then each solver, for a few images of one
  (prior, split, λ, seed): the first prior, the first split, the λ nearest the median λ, the lowest seed.
- PSNR vs m (Asim Fig. 4): cs tasks with at least 3 values of m; one panel per prior (first split), one line per
  solver at that solver's best λ (highest mean PSNR over the sweep — an oracle choice, stated in the caption),
  mean ± se over (image, seed). x axis m/n when every m is a fraction, else m.
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.report import (is_ok, load_traces, solver_order, split_order, task_base,  # noqa: E402
                          task_order)
from bench.store import RECON  # noqa: E402

GAP_FLOOR = 1e-3
MAX_IMAGES = 4
_PROBLEM = ["task", "prior", "split", "lam", "seed"]


def _scope_title(what: str, rows: pd.DataFrame) -> str:
    """A figure title naming what it aggregates over: priors, splits and λ of the run."""
    lams = ", ".join(f"{v:g}" for v in sorted(rows["lam"].astype(float).unique()))
    return (f"{what} — priors {', '.join(sorted(map(str, rows['prior'].unique())))}; splits "
            f"{', '.join(split_order(rows['split'].unique()))}; λ ∈ {{{lams}}}")


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text)).strip("_")


# ---------------------------------------------------------------------------------------------------- anytime
def anytime_curves(rows: pd.DataFrame, traces: pd.DataFrame) -> dict:
    """{task: DataFrame(index nfe, columns solver) of the mean gap L_t − L*}, see module docstring."""
    if traces.empty or not {"cell_id", "nfe", "map_loss"} <= set(traces.columns) or "cell_id" not in rows:
        return {}
    per_image = "image_id" in traces.columns
    tkey = ["cell_id", "image_id"] if per_image else ["cell_id"]
    first = rows.drop_duplicates("cell_id").set_index("cell_id")
    info = first[_PROBLEM + ["solver"]].copy()
    if per_image or (rows.groupby("cell_id").size() == 1).all():
        info["images"] = first["image_id"].astype(str)
    else:
        info["images"] = rows.groupby("cell_id")["image_id"].agg(lambda s: "|".join(sorted(map(str, s.unique()))))
    tr = traces[tkey + ["nfe", "map_loss"]].copy()
    tr["map_loss"] = pd.to_numeric(tr["map_loss"], errors="coerce")
    tr = tr[np.isfinite(tr["map_loss"].to_numpy(float)) & tr["cell_id"].isin(info.index)]
    if tr.empty:
        return {}
    if per_image:
        tr["image_id"] = tr["image_id"].astype(str)
    cur = tr.groupby(tkey + ["nfe"], sort=False)["map_loss"].mean().reset_index()
    keys = cur[tkey].drop_duplicates().reset_index(drop=True)
    keys["kid"] = np.arange(len(keys))
    keys = keys.join(info.drop(columns="images") if per_image else info, on="cell_id")
    if per_image:
        keys["images"] = keys["image_id"]
    cur = cur.merge(keys[tkey + ["kid"]], on=tkey)
    keys = keys.join(cur.groupby("kid")["map_loss"].min().rename("tmin"), on="kid")
    group = _PROBLEM + ["images"]
    # L*: min over every trace point of the problem and every final ok score of the problem
    best = keys.groupby(group, dropna=False)["tmin"].min()
    ok = rows[is_ok(rows)].copy()
    ok["map_loss"] = pd.to_numeric(ok["map_loss"], errors="coerce")
    if per_image:
        ok["images"] = ok["image_id"].astype(str)
        fin = ok.groupby(group)["map_loss"].min()
    else:
        ok = ok.join(info["images"], on="cell_id")
        fin = ok.groupby(group + ["cell_id"])["map_loss"].mean().groupby(level=list(range(len(group)))).min()
    best = pd.concat([best, fin.reindex(best.index)], axis=1).min(axis=1).rename("best")
    keys = keys.join(best, on=group)
    cur = cur.merge(keys[["kid", "task", "solver", "best"]], on="kid")
    cur["gap"] = cur["map_loss"] - cur["best"]
    out = {}
    for task, gt in cur.groupby("task", sort=False):
        frames = {}
        grid = np.sort(gt["nfe"].unique())
        for solver, g in gt.groupby("solver", sort=False):
            wide = g.pivot_table(index="nfe", columns="kid", values="gap", aggfunc="mean")
            wide = wide.reindex(np.union1d(wide.index.to_numpy(), grid[-1:])).ffill()  # own points + task end
            full = wide.dropna()  # from the first pass count at which every problem has a record
            use = full if len(full) else wide
            frames[solver] = use.mean(axis=1)
            frames[(solver, "se")] = use.std(axis=1, ddof=1) / np.sqrt(use.count(axis=1))
        c = pd.DataFrame({k: v for k, v in frames.items() if not isinstance(k, tuple)}).sort_index()
        c.attrs["se"] = pd.DataFrame({k[0]: v for k, v in frames.items() if isinstance(k, tuple)}).sort_index()
        out[task] = c
    return out


def plot_anytime(rows, traces, path: Path, meta=None) -> str | None:
    curves = anytime_curves(rows, traces)
    if not curves:
        return None
    tasks = task_order(curves)
    solvers_all = solver_order(rows["solver"].unique(), meta)
    ncol = min(3, len(tasks))
    nrow = -(-len(tasks) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.2 * nrow), squeeze=False)
    flat = axes.ravel()
    for ax in flat[len(tasks):]:
        ax.axis("off")
    colors = {s: f"C{i % 10}" for i, s in enumerate(solvers_all)}
    for ax, task in zip(flat, tasks):
        c = curves[task]
        se = c.attrs.get("se", pd.DataFrame())
        for s in solver_order(c.columns, meta):
            y = c[s].dropna().clip(lower=GAP_FLOOR)
            if len(y) == 1:
                ax.plot(y.index, y.values, "o", color=colors[s], label=s)
            else:
                ax.plot(y.index, y.values, "-", color=colors[s], label=s, lw=1.4)
                if s in se.columns:
                    e = se[s].reindex(y.index).fillna(0).to_numpy()
                    ax.fill_between(y.index, np.clip(y.values - e, GAP_FLOOR, None), y.values + e,
                                    color=colors[s], alpha=0.15, lw=0)
        ax.set_yscale("log")
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("prior passes per image")
        ax.grid(alpha=0.3, which="both")
    for row in axes:
        row[0].set_ylabel("mean MAP loss − best reached")
    flat[0].legend(fontsize=7)
    fig.suptitle(_scope_title("Anytime gap to the best-known optimum", rows), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    no_trace = [s for s in solvers_all if not any(s in curves[t].columns for t in curves)]
    return ("Anytime curves: mean over problems (prior, split, λ, seed, image) of the gap L(x_t) − f_ref, f_ref = "
            "lowest MAP loss any solver reached on that problem (every trace point is the harness's score of the "
            f"clipped iterate), shaded ± se over problems; log scale, floored at {GAP_FLOOR:g}; a stopped "
            "solver's curve is carried forward at its last value."
            + (f" No traces for: {', '.join(no_trace)}." if no_trace else ""))


# ---------------------------------------------------------------------------------------------------- profiles
def plot_profiles(prof: dict, path: Path, title: str = "Data profiles and target ECDFs") -> str | None:
    """Data profiles (rows: τ) and target ECDFs (last row) per task (columns), passes on a log axis."""
    from bench.profiles import N_TARGETS, TAUS

    if not prof:
        return None
    tasks = task_order(prof)
    algos = sorted({a for d in prof.values() for a in d["ecdf"].columns})
    colors = {a: f"C{i % 10}" for i, a in enumerate(algos)}
    fig, axes = plt.subplots(len(TAUS) + 1, len(tasks), figsize=(3.6 * len(tasks), 2.6 * (len(TAUS) + 1)),
                             squeeze=False, sharey=True)
    for j, task in enumerate(tasks):
        d = prof[task]
        panels = [(d["data"][tau], f"{task}: solved at τ = {tau:g}") for tau in TAUS]
        panels.append((d["ecdf"], f"{task}: target ECDF ({N_TARGETS} targets)"))
        for i, (frame, title) in enumerate(panels):
            ax = axes[i][j]
            for a in frame.columns:
                ax.step(d["grid"], frame[a].to_numpy(), where="post", color=colors[a], label=a, lw=1.3)
            ax.set_xscale("log")
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(title, fontsize=9)
            ax.grid(alpha=0.3, which="both")
            if i == len(panels) - 1:
                ax.set_xlabel("prior passes per image")
    for i in range(len(TAUS) + 1):
        axes[i][0].set_ylabel("fraction" if i < len(TAUS) else "fraction of (instance, target)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    left = sorted({s for d in prof.values() for s in d["left_out"]})
    return ("Data profiles (Moré & Wild 2009; rows 1–3): fraction of instances (prior, split, image, λ, seed) a "
            "solver has solved after p passes, f(x0) − f_best(p) ≥ (1 − τ)(f(x0) − f_ref), f(x0) = MAP loss of doing "
            "nothing, f_ref = best-known optimum. Bottom row: ECDF of (instance, target) pairs reached, targets f_ref "
            "+ Δf with Δf log-spaced over the task's observed gaps (COCO)."
            + (f" Prior-free solvers (no passes) are left out: {', '.join(left)}." if left else ""))


def plot_budget_axis(rows: pd.DataFrame, path: Path, meta=None) -> str | None:
    """Mean rank (MAP loss) and mean PSNR per solver against the budget, when the run has several budgets."""
    from bench.report import rank_cells

    if "budget" not in rows.columns or rows["budget"].nunique() < 2:
        return None
    df = rows.copy()
    df["task"] = df["task_spec"] if "task_spec" in df.columns else df["task"]
    solvers = solver_order(df["solver"].unique(), meta)
    budgets = sorted(df["budget"].unique())
    rank, psnr = {}, {}
    for b in budgets:
        sub = df[df["budget"] == b]
        rank[b] = rank_cells(sub, "map_loss", solvers).mean()
        ok = sub[is_ok(sub)]
        psnr[b] = ok.groupby("solver")["psnr"].mean()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for i, s in enumerate(solvers):
        axes[0].plot(budgets, [rank[b].get(s, np.nan) for b in budgets], "o-", color=f"C{i % 10}", label=s)
        axes[1].plot(budgets, [psnr[b].get(s, np.nan) for b in budgets], "o-", color=f"C{i % 10}", label=s)
    for ax, lab in zip(axes, ("mean rank by MAP loss (1 = best)", "mean PSNR (dB)")):
        ax.set_xscale("log")
        ax.set_xlabel("budget (prior passes per image)")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3, which="both")
    axes[0].invert_yaxis()
    axes[1].legend(fontsize=7)
    fig.suptitle(_scope_title("Rankings against the budget", rows), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return "Rankings against the budget: where lines cross, the budget decides the winner."


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
        if "cell_id" not in arr or "x_hat" not in arr:
            continue
        urows = rows[rows["unit_id"] == uid] if "unit_id" in rows else rows
        by_cell = {cid: list(g["image_id"].astype(str)) for cid, g in urows.groupby("cell_id", sort=False)}
        seen: dict = {}
        for i, cid in enumerate(arr["cell_id"].astype(str)):
            if "image_id" in arr:
                img = str(arr["image_id"][i])
            else:
                imgs = by_cell.get(cid, [])
                j = seen.get(cid, 0)
                seen[cid] = j + 1
                if j >= len(imgs):
                    continue
                img = imgs[j]
            rec = {"cell_id": cid, "image_id": img, "x_hat": arr["x_hat"][i]}
            for k in ("x_true", "observed", "mask"):
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
    if "unit_id" not in sub:
        return None
    rec = _load_recon(run_dir, rows, sub["unit_id"].unique())
    if rec.empty:
        return None
    ident = sub[["cell_id", "image_id", "solver", "psnr", "status"]].copy()
    ident["image_id"] = ident["image_id"].astype(str)
    rec = rec.merge(ident, on=["cell_id", "image_id"])
    if rec.empty:
        return None
    solvers = solver_order(rec["solver"].unique(), meta)
    images = [i for i in sel["images"] if i in set(rec["image_id"])]
    ncol = 2 + len(solvers)
    fig, axes = plt.subplots(len(images), ncol, figsize=(1.45 * ncol, 1.55 * len(images) + 0.3), squeeze=False)
    for r, img in enumerate(images):
        ri = rec[rec["image_id"] == img]
        any_rec = ri.iloc[0]
        for c, (key, title) in enumerate((("x_true", "clean"), ("observed", "observed"))):
            ax = axes[r][c]
            arr = any_rec[key] if key in any_rec and isinstance(any_rec[key], np.ndarray) else None
            if arr is None or (key == "observed" and not np.any(arr)):   # y is not an image (cs, older runs)
                _show(ax, np.zeros(1))
            else:
                _show(ax, arr)
            if r == 0:
                ax.set_title(title, fontsize=8)
        axes[r][0].set_ylabel(img, fontsize=6)
        for c, s in enumerate(solvers, start=2):
            ax = axes[r][c]
            rs = ri[ri["solver"] == s]
            if rs.empty:
                ax.axis("off")
            else:
                ok = rs.iloc[0]["status"] == "ok"
                if ok:
                    _show(ax, rs.iloc[0]["x_hat"])
                else:
                    _failed(ax, f"failed ({rs.iloc[0]['status']})")
                ax.set_xlabel(f"{rs.iloc[0]['psnr']:.2f} dB" if ok else str(rs.iloc[0]["status"]), fontsize=7)
            if r == 0:
                ax.set_title(s, fontsize=8)
    fig.suptitle(f"{task} — prior {sel['prior']}, split {sel['split']}, λ = {sel['lam']:g}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return (f"Reconstructions, {task}: prior {sel['prior']}, split {sel['split']}, λ = {sel['lam']:g}, "
            f"seed {sel['seed']}; columns clean, observed, then each solver (PSNR below).")


# ---------------------------------------------------------------------------------------------------- cs sweep
def _m_values(cs: pd.DataFrame) -> pd.Series:
    if "p_task_m" in cs.columns:
        m = pd.to_numeric(cs["p_task_m"], errors="coerce")
    else:
        m = pd.Series(np.nan, index=cs.index)
    parsed = cs["task"].astype(str).str.extract(r"m=([0-9.eE+-]+)")[0].astype(float)
    from bench.tasks import CS_FRACTION_HIGH

    return m.fillna(parsed).fillna(CS_FRACTION_HIGH)


def _sweeps_m(task: str) -> bool:
    """Whether ``task``'s class declares ``sweep_param = "m"`` (the measurement count this figure plots along)."""
    from bench.tasks import TASKS

    base = task_base(task)
    return base in TASKS and TASKS.get(base).sweep_param == "m"


def cs_sweep(rows: pd.DataFrame, n_pixels: int | None = None) -> tuple[pd.DataFrame, str] | None:
    """Mean ± se PSNR per (prior, solver, m) at each solver's best λ; (table, x-axis label) or None."""
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
    cs["psnr"] = pd.to_numeric(cs["psnr"], errors="coerce")
    best_lam = cs.groupby(["prior", "solver", "lam"])["psnr"].mean().groupby(level=[0, 1]).idxmax()
    keep = set(best_lam.dropna().values)
    cs = cs[[k in keep for k in zip(cs["prior"], cs["solver"], cs["lam"])]]
    g = cs.groupby(["prior", "solver", "x"])["psnr"]
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
            if "x_true" in z.files:
                n_pixels = int(np.prod(z["x_true"].shape[1:]))
    res = cs_sweep(rows, n_pixels)
    if res is None:
        return None
    t, label = res
    priors = sorted(t.index.get_level_values("prior").unique())
    fig, axes = plt.subplots(1, len(priors), figsize=(4.4 * len(priors), 3.4), squeeze=False)
    for ax, prior in zip(axes[0], priors):
        tp = t.xs(prior, level="prior")
        for s in solver_order(tp.index.get_level_values("solver").unique(), meta):
            ts = tp.xs(s, level="solver").sort_index()
            ax.errorbar(ts.index, ts["mean"], yerr=ts["se"].fillna(0), marker="o", ms=3, capsize=2,
                        label=f"{s} (λ={ts['lam'].iloc[0]:g})")
        ax.set_title(f"cs, prior {prior}", fontsize=10)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("PSNR (dB)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return (f"PSNR vs {label} for compressed sensing (split {t.attrs['split']}): mean ± se over (image, seed); "
            "each solver at its best λ over the sweep (oracle choice, in the legend).")


# ---------------------------------------------------------------------------------------------------- all
def make_all(run_dir, rows: pd.DataFrame, meta: dict, fig_dir: Path, rel_to: Path, prof: dict | None = None) -> dict:
    """Write every figure into ``fig_dir``; return {"anytime"|"profiles"|"budget"|"recon"|"cs_sweep":
    [(caption, relative path)]}. ``prof``: :func:`bench.profiles.profiles` of the run (drawn when given).

    A figure that fails is skipped with a warning on stderr (the tables are still written)."""
    run_dir, fig_dir = Path(run_dir), Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    out = {"anytime": [], "profiles": [], "budget": [], "recon": [], "cs_sweep": []}

    def rel(p: Path) -> str:
        try:
            return p.resolve().relative_to(Path(rel_to).resolve()).as_posix()
        except ValueError:
            return p.resolve().as_posix()

    def attempt(key, fn, path):
        try:
            cap = fn(path)
        except Exception as e:  # a broken figure must not cost the tables
            sys.stderr.write(f"warning: figure {path.name} skipped: {type(e).__name__}: {e}\n")
            return
        if cap:
            out[key].append((cap, rel(path)))

    traces = load_traces(run_dir)
    attempt("anytime", lambda p: plot_anytime(rows, traces, p, meta), fig_dir / "anytime.png")
    if prof:
        title = _scope_title("Data profiles and target ECDFs", rows)
        attempt("profiles", lambda p: plot_profiles(prof, p, title), fig_dir / "profiles.png")
    attempt("budget", lambda p: plot_budget_axis(rows, p, meta), fig_dir / "budget_axis.png")
    for task in task_order(rows["task"].unique()):
        attempt("recon", lambda p, t=task: plot_recon(run_dir, rows, t, p, meta),
                fig_dir / f"recon_{_safe(task)}.png")
    attempt("cs_sweep", lambda p: plot_cs_sweep(run_dir, rows, p, meta), fig_dir / "psnr_vs_m.png")
    return out
