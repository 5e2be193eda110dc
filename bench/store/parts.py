"""Results store: one Parquet part file per finished work unit, written whole (temp file + rename).

Layout of a run directory::

    DIR/rows/<unit_id>.parquet     one row per (cell, image)           -- the unit is done once this exists
    DIR/traces/<unit_id>.parquet   anytime traces (MAP loss vs passes)
    DIR/recon/<unit_id>.npz        reconstructions x_hat (for figures)

The rows file is renamed into place last, so a killed run leaves either a finished unit or nothing that counts.
:func:`read_run` returns every rows file of a directory as one DataFrame. Column schema: :mod:`bench.core.schema`; rows
read back pass through :func:`bench.core.schema.coerce`.

Integrity: the rows file's Parquet metadata records a hash of its own values and the sha256 of the unit's traces
and recon files (``""`` when the unit wrote none). :func:`verify_unit` recomputes them, and checks that traces and
reconstructions hold the rows' cell ids, so a damaged, missing or swapped file is found and the unit recomputed.
Temporary files are named ``.<final name>.<random>.tmp``; nothing else in a run directory is ever deleted by
the harness except a unit's own three files.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from bench.core.errors import DiskFull
from bench.core.schema import RECON_CELL, coerce

META_KEY = b"flowbench"
UNIT_ID = re.compile(r"^[0-9a-f]{20}$")
TEMP_NAME = re.compile(r"^\.([0-9a-f]{20}\.(parquet|npz)|run\.json)\.[A-Za-z0-9_]+\.tmp$")

ROWS, TRACES, RECON = "rows", "traces", "recon"


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one of this harness's temporary file names (see :func:`_atomic_bytes`)."""
    return bool(TEMP_NAME.match(name))


def _write_file(path: str, data: bytes) -> None:
    """Write ``data`` into the (new, empty) file ``path`` and flush it to the disk."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _atomic_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: a temp file beside it, renamed into place. A full disk (or quota) is a
    :class:`~bench.core.errors.DiskFull` naming the file, with the temp file removed."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        _write_file(tmp, data)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(f"disk full writing {str(path)!r} ({len(data):,} bytes): {e.strerror or e}") from None
        raise


def parquet_bytes(df: pd.DataFrame, meta: dict | None = None) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    if meta is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(meta).encode()})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def write_parquet(path: Path, df: pd.DataFrame) -> None:
    _atomic_bytes(Path(path), parquet_bytes(df))


def frame_hash(df: pd.DataFrame) -> str:
    """A hash of a frame's values and column names (row order included)."""
    h = hashlib.sha256(",".join(map(str, df.columns)).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


def _sha(data: bytes | None) -> str:
    return hashlib.sha256(data).hexdigest() if data is not None else ""


def write_unit(run_dir, unit_id: str, rows: pd.DataFrame, traces: pd.DataFrame | None = None,
               recon: dict | None = None) -> None:
    """Write one finished work unit: traces and reconstructions first, the rows file (the completion mark, with
    the integrity record of module docstring) last."""
    run_dir = Path(run_dir)
    tb = parquet_bytes(traces) if traces is not None else None
    rb = npz_bytes(**recon) if recon is not None else None
    if tb is not None:
        _atomic_bytes(run_dir / TRACES / f"{unit_id}.parquet", tb)
    if rb is not None:
        _atomic_bytes(run_dir / RECON / f"{unit_id}.npz", rb)
    meta = {"rows_hash": frame_hash(rows), "traces_sha256": _sha(tb), "recon_sha256": _sha(rb)}
    _atomic_bytes(run_dir / ROWS / f"{unit_id}.parquet", parquet_bytes(rows, meta))


def unit_meta(path: Path) -> dict:
    """The integrity record of a rows file ({} for files written before it existed)."""
    import pyarrow.parquet as pq

    md = pq.read_schema(path).metadata or {}
    return json.loads(md[META_KEY]) if META_KEY in md else {}


def verify_unit(run_dir, unit_id: str) -> pd.DataFrame:
    """The unit's rows, after checking the rows, traces and recon files against the rows file's integrity record
    and the rows' cell ids; raises ValueError naming what is wrong."""
    import zipfile

    run_dir = Path(run_dir)
    path = run_dir / ROWS / f"{unit_id}.parquet"
    df = pd.read_parquet(path)
    meta = unit_meta(path)
    if not meta:
        raise ValueError("rows file has no integrity record")
    if frame_hash(df) != meta.get("rows_hash"):
        raise ValueError("rows file values do not match their recorded hash (damaged)")
    if df.empty or (df["unit_id"] != unit_id).any() or df["cell_id"].duplicated().any():
        raise ValueError("rows do not belong to this unit")
    cells = set(df["cell_id"])
    for sub, ext, key in ((TRACES, "parquet", "traces_sha256"), (RECON, "npz", "recon_sha256")):
        f = run_dir / sub / f"{unit_id}.{ext}"
        want = meta.get(key, "")
        if not want:
            continue
        if not f.is_file():
            raise ValueError(f"{sub} file is missing")
        data = f.read_bytes()
        if _sha(data) != want:
            raise ValueError(f"{sub} file does not match its recorded sha256 (damaged or swapped)")
        if sub == TRACES:
            ids = set(pd.read_parquet(io.BytesIO(data), columns=["cell_id"])["cell_id"])
        else:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                if z.testzip() is not None:
                    raise ValueError("recon file fails its CRC check")
                ids = set(np.load(io.BytesIO(data))[RECON_CELL].tolist())
        if not ids <= cells:
            raise ValueError(f"{sub} file holds cells of another unit")
    return coerce(df)


def unit_ids(run_dir) -> set[str]:
    """Ids of the finished units (rows files named ``<unit id>.parquet``; other files are not ours)."""
    d = Path(run_dir) / ROWS
    return {p.stem for p in d.glob("*.parquet") if UNIT_ID.match(p.stem)} if d.is_dir() else set()


def stray_files(run_dir) -> list[Path]:
    """Files under rows/, traces/ and recon/ that no unit of this harness wrote (never read, never deleted)."""
    run_dir = Path(run_dir)
    out = []
    for sub, ext in ((ROWS, ".parquet"), (TRACES, ".parquet"), (RECON, ".npz")):
        d = run_dir / sub
        if d.is_dir():
            out += [f for f in sorted(d.iterdir()) if not (f.is_file() and f.name.endswith(ext)
                                                           and UNIT_ID.match(f.name[:-len(ext)]))
                    and not is_temp_name(f.name)]
    return out


def read_unit(run_dir, unit_id: str) -> pd.DataFrame:
    """The rows of one finished unit."""
    return coerce(pd.read_parquet(Path(run_dir) / ROWS / f"{unit_id}.parquet"))


def _read_all(folder: Path, skip_unreadable: bool = False) -> pd.DataFrame:
    files = sorted(f for f in folder.glob("*.parquet") if UNIT_ID.match(f.stem)) if folder.is_dir() else []
    parts = []
    for f in files:
        try:
            parts.append(pd.read_parquet(f))
        except Exception:
            if not skip_unreadable:
                raise
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def read_run(run_dir, skip_unreadable: bool = False) -> pd.DataFrame:
    """All result rows of a run directory as one DataFrame (empty if none); unreadable rows files raise, or are
    skipped with ``skip_unreadable`` (``bench.store.integrity`` names them)."""
    return coerce(_read_all(Path(run_dir) / ROWS, skip_unreadable))


def read_traces(run_dir) -> pd.DataFrame:
    """All traces; unreadable traces files are skipped (``bench.store.integrity`` names them)."""
    return _read_all(Path(run_dir) / TRACES, skip_unreadable=True)
