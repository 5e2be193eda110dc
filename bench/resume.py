"""Resume: what a results directory already holds, what is stale or corrupt, and what is left to run.

Resume is per cell: every rows file in DIR is read and verified (an unreadable or inconsistent unit is reported and
recomputed); a unit whose cells all exist is skipped, one with some λ present runs only the missing λ. So filtered
runs and a later full run of the same grid compose without duplicate rows. Only files this harness writes (unit ids,
its temp names) are ever removed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench import store
from bench.errors import one_line
from bench.identity import cell_id


def _unit_files(out_dir: Path, uid: str) -> list[Path]:
    return [out_dir / store.ROWS / f"{uid}.parquet", out_dir / store.TRACES / f"{uid}.parquet",
            out_dir / store.RECON / f"{uid}.npz"]


def remove_unit(out_dir: Path, uid: str) -> None:
    for p in _unit_files(out_dir, uid):
        if p.exists():
            p.unlink()


KEY_COLUMNS = ["task", "prior", "split", "lam", "solver", "seed", "budget", "image_id"]  # a cell × image, readable


def _check_unit_files(out_dir: Path, uid: str) -> pd.DataFrame:
    """A finished unit's rows (cell_id, unit_id, status, KEY_COLUMNS) after :func:`bench.store.verify_unit` has
    checked its three files; raises if anything is off."""
    return store.verify_unit(out_dir, uid)[["cell_id", "unit_id", "status"] + KEY_COLUMNS]


@dataclass
class Scan:
    """What a results directory holds: readable rows, corrupt units, leftovers of a killed run."""

    rows: pd.DataFrame                              # cell_id, unit_id, status, KEY_COLUMNS of every readable unit
    corrupt: list = field(default_factory=list)     # (unit_id, reason)
    leftovers: list = field(default_factory=list)   # our temp files; traces/recon of units whose rows never landed

    @property
    def done(self) -> dict[str, str]:
        return dict(zip(self.rows["cell_id"], self.rows["status"]))


def scan_dir(out_dir) -> Scan:
    """Read-only survey of ``out_dir`` (every rows file is read; traces and recon files are checked)."""
    out_dir = Path(out_dir)
    finished = store.unit_ids(out_dir)
    leftovers = []
    own = {store.TRACES: ".parquet", store.RECON: ".npz"}
    for sub in (store.TRACES, store.RECON, store.ROWS):
        d = out_dir / sub
        if d.is_dir():   # only names this harness writes: other files (yours) are never touched
            leftovers += [f for f in sorted(d.iterdir()) if f.is_file() and (
                store.is_temp_name(f.name) or (sub in own and f.name.endswith(own[sub])
                                               and store.UNIT_ID.match(f.name[:-len(own[sub])])
                                               and f.name[:-len(own[sub])] not in finished))]
    parts, corrupt = [], []
    for uid in sorted(finished):
        try:
            parts.append(_check_unit_files(out_dir, uid))
        except Exception as e:  # noqa: BLE001
            corrupt.append((uid, one_line(e, 160)))
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["cell_id", "unit_id", "status"]
                                                                            + KEY_COLUMNS)
    return Scan(rows, corrupt, leftovers)


def clean_dir(out_dir, scan: Scan, warn) -> None:
    """Remove corrupt units (reported through ``warn``; their cells are then recomputed) and leftovers."""
    for uid, why in scan.corrupt:
        warn(f"unit {uid} in {out_dir} is unreadable or corrupt ({why}); recomputing it")
        remove_unit(Path(out_dir), uid)
    for f in scan.leftovers:
        if f.exists():
            f.unlink()


def planned_keys(units) -> dict:
    """{(task, prior, split, lam, solver, seed, budget, image_id): cell_id} of planned units."""
    return {(u.task, u.prior_name, u.split, float(lam), u.solver, u.seed, u.budget, i):
            cell_id(u, i, lam) for u in units for i in u.image_ids for lam in u.lams}


def stale_rows(scan: Scan, keys: dict) -> pd.DataFrame:
    """Finished rows for the same (task, prior, split, λ, solver, seed, budget, image) as a planned cell but another
    cell id:
    computed with other solver parameters or another prior checkpoint (code or checkpoint changed since)."""
    r = scan.rows
    if r.empty:
        return r
    k = list(zip(r["task"], r["prior"], r["split"], r["lam"].astype(float), r["solver"], r["seed"],
                 r["budget"].astype(int), r["image_id"]))
    mask = [key in keys and keys[key] != c for key, c in zip(k, r["cell_id"])]
    return r[mask]


def reduce_to_missing(units: list, done: dict) -> tuple[list, list]:
    """Split planned units into (to run, fully done); a partly done unit runs only its missing λ values."""
    run, skipped = [], []
    for u in units:
        missing = [lam for lam in u.lams if any(cell_id(u, i, lam) not in done for i in u.image_ids)]
        if not missing:
            skipped.append(u)
        elif len(missing) == len(u.lams):
            run.append(u)
        else:
            run.append(u.with_lams(missing))
    return run, skipped
