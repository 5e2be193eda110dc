"""Results store: one Parquet part file per finished work unit, written whole (temp file + rename).

Layout of a run directory::

    DIR/rows/<unit_id>.parquet     one row per (cell, image)           -- the unit is done once this exists
    DIR/traces/<unit_id>.parquet   anytime traces (MAP loss vs passes)
    DIR/recon/<unit_id>.npz        reconstructions x_hat (for figures)

The rows file is renamed into place last, so a killed run leaves either a finished unit or nothing that counts.
:func:`read_run` returns every rows file of a directory as one DataFrame. Column schema: see README "Results".
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

# Columns every row has (later modules and the regression check rely on these names).
IDENTITY_COLUMNS = ["cell_id", "unit_id", "task", "prior", "prior_sha256", "dataset", "split", "image_id",
                    "lam", "solver", "seed", "image_size"]
OUTCOME_COLUMNS = ["map_loss", "data_fit", "data_nll", "log_prior", "bits_per_dim", "psnr", "ssim", "nfe_used",
                   "budget", "iterations", "wall_time_s", "status", "error"]
PROVENANCE_COLUMNS = ["git_commit", "torch_version", "numpy_version", "device", "started_at", "grid_name",
                      "grid_hash", "tuned"]
TRACE_COLUMNS = ["cell_id", "unit_id", "nfe", "map_loss"]

ROWS, TRACES, RECON = "rows", "traces", "recon"


def _atomic_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_parquet(path: Path, df: pd.DataFrame) -> None:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    _atomic_bytes(Path(path), buf.getvalue())


def write_npz(path: Path, **arrays) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    _atomic_bytes(Path(path), buf.getvalue())


def write_unit(run_dir, unit_id: str, rows: pd.DataFrame, traces: pd.DataFrame | None = None,
               recon: dict | None = None) -> None:
    """Write one finished work unit: traces and reconstructions first, the rows file (the completion mark) last."""
    run_dir = Path(run_dir)
    if traces is not None:
        write_parquet(run_dir / TRACES / f"{unit_id}.parquet", traces)
    if recon is not None:
        write_npz(run_dir / RECON / f"{unit_id}.npz", **recon)
    write_parquet(run_dir / ROWS / f"{unit_id}.parquet", rows)


def unit_ids(run_dir) -> set[str]:
    d = Path(run_dir) / ROWS
    return {p.stem for p in d.glob("*.parquet")} if d.is_dir() else set()


def read_unit(run_dir, unit_id: str) -> pd.DataFrame:
    return pd.read_parquet(Path(run_dir) / ROWS / f"{unit_id}.parquet")


def _read_all(folder: Path) -> pd.DataFrame:
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return pd.DataFrame()
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def read_run(run_dir) -> pd.DataFrame:
    """All result rows of a run directory as one DataFrame (empty if none)."""
    return _read_all(Path(run_dir) / ROWS)


def read_traces(run_dir) -> pd.DataFrame:
    return _read_all(Path(run_dir) / TRACES)
