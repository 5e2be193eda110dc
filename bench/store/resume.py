"""Resume: what a results directory already holds, what is stale or corrupt, and what is left to run.

Resume is per cell: every rows file in DIR is read and verified (an unreadable or inconsistent unit is reported and
recomputed); a unit whose cells all exist is skipped, one with some λ present runs only the missing λ. So filtered
runs and a later full run of the same grid compose without duplicate rows.

Only files this harness wrote are ever removed, and never through a symbolic link: its temp names; a damaged unit
of this run (its rows file is named by a planned unit, or carries the harness's integrity record), which is then
recomputed; traces and reconstructions whose rows never landed, when named by a planned unit or when their content
is the harness's (a traces table of that unit, a recon archive of its arrays). Anything else named like a unit id
is reported and left alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.core.errors import one_line
from bench.core.identity import cell_id
from bench.core.schema import RECON_KEYS, RESUME_KEY, STATUS, names, trace_columns
from bench.store import parts as store


def _unit_files(out_dir: Path, uid: str) -> list[Path]:
    return [out_dir / store.ROWS / f"{uid}.parquet", out_dir / store.TRACES / f"{uid}.parquet",
            out_dir / store.RECON / f"{uid}.npz"]


def _own_file(p: Path) -> bool:
    """A regular file, not a symbolic link (a link is never the harness's: it is never followed or removed)."""
    return p.is_file() and not p.is_symlink()


def remove_unit(out_dir: Path, uid: str) -> None:
    for p in _unit_files(out_dir, uid):
        if _own_file(p):
            p.unlink()


def _written_by_us(f: Path, sub: str, uid: str) -> bool:
    """Whether a traces or recon file without its rows holds what this harness writes for unit ``uid``."""
    import zipfile

    import numpy as np
    import pyarrow.parquet as pq

    try:
        if sub == store.TRACES:
            t = pq.read_table(f)
            return t.column_names == names(trace_columns()) and set(t.column("unit_id").to_pylist()) <= {uid}
        with zipfile.ZipFile(f):
            pass
        with np.load(f) as z:
            return set(z.files) == set(RECON_KEYS)
    except Exception:  # noqa: BLE001 -- unreadable: not recognisably ours
        return False


def _has_integrity_record(f: Path) -> bool:
    try:
        return bool(store.unit_meta(f))
    except Exception:  # noqa: BLE001
        return False


def _check_unit_files(out_dir: Path, uid: str) -> pd.DataFrame:
    """A finished unit's rows (cell_id, unit_id, status, RESUME_KEY) after :func:`bench.store.parts.verify_unit` has
    checked its three files; raises if anything is off."""
    return store.verify_unit(out_dir, uid)[["cell_id", "unit_id", STATUS] + RESUME_KEY]


@dataclass
class Scan:
    """What a results directory holds: readable rows, corrupt units, leftovers of a killed run."""

    rows: pd.DataFrame                              # cell_id, unit_id, status, RESUME_KEY of every readable unit
    corrupt: list = field(default_factory=list)     # (unit_id, reason): ours, removed and recomputed
    leftovers: list = field(default_factory=list)   # our temp files; traces/recon of units whose rows never landed
    foreign: list = field(default_factory=list)     # (path, reason): named like a unit's file, not ours: left alone

    @property
    def done(self) -> dict[str, str]:
        return dict(zip(self.rows["cell_id"], self.rows["status"]))


def scan_dir(out_dir, planned=frozenset()) -> Scan:
    """Read-only survey of ``out_dir`` (every rows file is read; traces and recon files are checked). ``planned``:
    the unit ids this run plans (their files are the harness's whatever they hold)."""
    out_dir = Path(out_dir)
    finished = store.unit_ids(out_dir)
    leftovers, foreign = [], []
    own = {store.TRACES: ".parquet", store.RECON: ".npz"}
    for sub in (store.TRACES, store.RECON, store.ROWS):
        d = out_dir / sub
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):   # only what this harness wrote: other files (yours) are never touched
            if not _own_file(f):
                continue
            if store.is_temp_name(f.name):
                leftovers.append(f)
                continue
            uid = f.name[:-len(own[sub])] if sub in own and f.name.endswith(own[sub]) else ""
            if store.UNIT_ID.match(uid) and uid not in finished:
                if uid in planned or _written_by_us(f, sub, uid):
                    leftovers.append(f)
                else:
                    foreign.append((f, "named like a unit's file but not written by this harness"))
    parts, corrupt = [], []
    for uid in sorted(finished):
        try:
            parts.append(_check_unit_files(out_dir, uid))
        except Exception as e:  # noqa: BLE001
            rows_file = out_dir / store.ROWS / f"{uid}.parquet"
            if uid in planned or _has_integrity_record(rows_file):
                corrupt.append((uid, one_line(e, 160)))
            else:
                foreign.append((rows_file, f"not a unit of this run and unreadable ({one_line(e, 120)})"))
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["cell_id", "unit_id", STATUS]
                                                                            + RESUME_KEY)
    return Scan(rows, corrupt, leftovers, foreign)


def clean_dir(out_dir, scan: Scan, warn) -> None:
    """Remove corrupt units (reported through ``warn``; their cells are then recomputed) and leftovers; report the
    files that are not ours and leave them."""
    for uid, why in scan.corrupt:
        warn(f"unit {uid} in {out_dir} is unreadable or corrupt ({why}); recomputing it")
        remove_unit(Path(out_dir), uid)
    for f in scan.leftovers:
        if _own_file(f):
            f.unlink()
    for f, why in scan.foreign:
        warn(f"{f} is left alone: {why}")


def planned_keys(units) -> dict:
    """{(task, prior, split, lam, solver, seed, budget, image_id): cell_id} of planned units."""
    return {(u.task, u.prior_name, u.split, lam, u.solver, u.seed, u.budget, i):
            cell_id(u, i, lam) for u in units for i in u.image_ids for lam in u.lams}


def stale_rows(scan: Scan, keys: dict) -> pd.DataFrame:
    """Finished rows for the same (task, prior, split, λ, solver, seed, budget, image) as a planned cell but another
    cell id:
    computed with other solver parameters or another prior checkpoint (code or checkpoint changed since)."""
    r = scan.rows
    if r.empty:
        return r
    k = list(zip(*(r[c] for c in RESUME_KEY)))
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
