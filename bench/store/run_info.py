"""The facts of a run for the leaderboard's header: grid name, budget, MLE length, tuning, wall time, commit,
device and torch version, from run.json with the rows' columns as fallback."""
from __future__ import annotations

import math

import pandas as pd


def _first(df: pd.DataFrame, col: str):
    if col in df.columns:
        v = df[col].dropna()
        if len(v):
            return v.iloc[0]
    return None


def run_info(df: pd.DataFrame, meta: dict) -> dict:
    """Header facts from run.json (runner format: grid_name, grid{budget, mle_steps, blocks}, versions, tuned,
    runs[{device, wall_s}]; flat keys name/budget/... are accepted too), falling back to the rows' columns."""
    grid = meta.get("grid") or {}
    runs = meta.get("runs") or []

    def pick(*vals):
        for v in vals:
            if v is not None and not (isinstance(v, float) and math.isnan(v)) and v != "":
                return v
        return None

    walls = [r.get("wall_s") for r in runs if isinstance(r, dict) and r.get("wall_s") is not None]
    return {
        "name": pick(meta.get("name"), meta.get("grid_name"), grid.get("name"), _first(df, "grid_name"), "run"),
        "budget": pick(meta.get("budget"), grid.get("budget"), _first(df, "budget"), "?"),
        "mle_steps": pick(meta.get("mle_steps"), grid.get("mle_steps"), _first(df, "mle_steps"), "?"),
        "tuned": meta["tuned"] if "tuned" in meta else _first(df, "tuned"),
        "run_wall_s": pick(meta.get("wall_time_s"), sum(walls) if walls else None),
        "n_invocations": len(walls),
        "git_commit": pick(meta.get("git_commit"), _first(df, "git_commit")),
        "git_dirty": meta.get("git_dirty"),
        "device": pick(meta.get("device"), runs[-1].get("device") if runs and isinstance(runs[-1], dict) else None,
                       _first(df, "device")),
        "torch_version": pick(meta.get("torch_version"), (meta.get("versions") or {}).get("torch"),
                              _first(df, "torch_version")),
    }
