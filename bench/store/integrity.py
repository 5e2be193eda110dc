"""Is a run directory complete and consistent? (what ``report`` puts in the leaderboard header and ``check`` fails on)

A run directory is *complete* when every cell any invocation planned (``run.json``: ``runs[*].planned_cells``) has a
row, and *consistent* when every unit's three files pass :func:`bench.store.parts.verify_unit`, no cell id
appears in two units, and rows/, traces/ and recon/ hold no file this harness did not write. Each problem is one
line naming the file or the units concerned.
"""
from __future__ import annotations

import json
from pathlib import Path

from bench.store import parts as store


def run_problems(run_dir, limit: int = 5) -> list[str]:
    """One line per problem of ``run_dir``; empty when the directory is complete and consistent."""
    run_dir = Path(run_dir)
    out = []
    present = store.unit_ids(run_dir)
    meta = {}
    if (run_dir / "run.json").is_file():
        try:
            meta = json.loads((run_dir / "run.json").read_text())
        except (OSError, ValueError):
            out.append("run.json is unreadable")
    runs = meta.get("runs") if isinstance(meta, dict) else None
    planned = set()
    for r in runs or []:
        if isinstance(r, dict):
            planned.update(r.get("planned_cells") or [])
    seen: dict = {}
    for uid in sorted(present):
        try:
            df = store.verify_unit(run_dir, uid)
        except Exception as e:  # noqa: BLE001 -- every unreadable file is named, none stops the survey
            out.append(f"{store.ROWS}/{uid}.parquet: {str(e).splitlines()[0][:160] if str(e) else type(e).__name__}")
            continue
        for c in df["cell_id"]:
            seen.setdefault(c, []).append(uid)
    missing = sorted(planned - set(seen))
    if missing:
        out.append(f"incomplete: {len(missing)} of {len(planned)} planned cells have no row (e.g. cell "
                   f"{', '.join(missing[:limit])}); rerun the same command to finish it")
    if runs and isinstance(runs[-1], dict) and "finished_at" not in runs[-1] and not missing:
        out.append(f"the last run (started {runs[-1].get('started_at', '?')}) did not finish")
    dup = {c: u for c, u in seen.items() if len(u) > 1}
    if dup:
        c, u = next(iter(dup.items()))
        out.append(f"{len(dup)} cell ids appear in more than one unit (e.g. {c} in {', '.join(u)})")
    stray = store.stray_files(run_dir)
    if stray:
        names = ", ".join(str(p.relative_to(run_dir)) for p in stray[:limit])
        out.append(f"{len(stray)} files were not written by this harness (ignored): {names}")
    return out
