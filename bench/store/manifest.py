"""The run directory itself: writability checks, the exclusive run lock, and ``DIR/run.json``.

``run.json`` records the resolved grid, its hash, the git commit, package versions, the tuned file and one entry
per run (its filters, argv, planned cells, wall time, failures); a run with a different grid, commit or tuned file
into the same DIR is refused (``--resume-anyway`` overrides). A non-empty folder that is not a run directory is
never written into.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from bench.core.errors import UserError, one_line
from bench.core.provenance import now_iso
from bench.store import parts as store

RUN_JSON = "run.json"


def check_writable(out_dir) -> None:
    """Fail early (UserError) when ``out_dir`` cannot be created or written; creates nothing."""
    p = Path(out_dir)
    if p.exists() and not p.is_dir():
        raise UserError(f"output directory {str(p)!r} exists and is not a directory")
    anc = p
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir():
        raise UserError(f"output directory {str(p)!r} cannot be created: {str(anc)!r} is not a directory")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise UserError(f"output directory {str(p)!r} is not writable ({str(anc)!r} is read-only)")


def prepare_out_dir(out_dir) -> None:
    """Create ``out_dir`` and prove it is writable with a probe file (UserError otherwise)."""
    p = Path(out_dir)
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-test.", dir=p)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise UserError(f"output directory {str(p)!r} is not writable: {e.strerror or e}") from None


LOCK_NAME = ".lock"


class RunLock:
    """An exclusive lock on a run directory (``DIR/.lock``, flock), held for the whole of one ``run``: a second run
    into the same ``--out`` is refused at once, naming the holder. Creates the directory if needed; ``release``
    removes the directory again if this lock created it and nothing else was written there."""

    def __init__(self, out_dir: Path):
        import fcntl

        self.out_dir = Path(out_dir)
        self.created = not self.out_dir.exists()
        prepare_out_dir(self.out_dir)
        self.path = self.out_dir / LOCK_NAME
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(self.fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(self.fd)
            raise UserError(f"another `bench run` ({holder}) is writing to {str(self.out_dir)!r}; wait for it to "
                            f"finish, or use another --out") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid {os.getpid()}, started {now_iso()}".encode(), 0)

    def release(self) -> None:
        import fcntl

        try:   # remove a directory this lock created and nothing else wrote into, while still holding the lock
            if self.created and [p.name for p in self.out_dir.iterdir()] == [LOCK_NAME]:
                self.path.unlink()
                self.out_dir.rmdir()
        except OSError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def refuse_links(out_dir: Path) -> None:
    """The folders and files a run writes (rows/, traces/, recon/, run.json, .lock) must be its own: a symbolic
    link there (or a file where a folder belongs) is refused, never followed or replaced."""
    for name, folder in ((store.ROWS, True), (store.TRACES, True), (store.RECON, True), (RUN_JSON, False),
                         (LOCK_NAME, False)):
        p = Path(out_dir) / name
        if p.is_symlink():
            raise UserError(f"{str(p)!r} is a symbolic link; a run never writes through a link: replace it with a "
                            f"real {'folder' if folder else 'file'} or use another --out")
        if folder and p.exists() and not p.is_dir():
            raise UserError(f"{str(p)!r} is not a folder; move it aside or use another --out")


def refuse_foreign_dir(out_dir: Path) -> None:
    """A non-empty folder that is not a run directory (no run.json, no rows) is never written into."""
    if not out_dir.is_dir() or (out_dir / RUN_JSON).exists() or store.unit_ids(out_dir):
        return
    entries = [p.name for p in out_dir.iterdir() if p.name != LOCK_NAME]
    if entries:
        shown = ", ".join(sorted(entries)[:3]) + (", ..." if len(entries) > 3 else "")
        raise UserError(f"output directory {str(out_dir)!r} is not empty ({shown}) and is not a run directory "
                        f"(no {RUN_JSON}); choose a new or empty folder for --out")


def read_run_json(out_dir) -> dict | None:
    p = Path(out_dir) / RUN_JSON
    if not p.exists():
        return None
    try:
        record = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{str(p)!r} is unreadable ({one_line(e, 120)}); move the directory aside or use "
                        f"another --out") from None
    if not isinstance(record, dict) or not isinstance(record.get("runs", []), list):
        raise UserError(f"{str(p)!r} is not a run record (expected a JSON object with a list of runs); move the "
                        f"directory aside or use another --out")
    return record


def write_run_json(out_dir, record: dict) -> None:
    store._atomic_bytes(Path(out_dir) / RUN_JSON, (json.dumps(record, indent=2, default=str) + "\n").encode())


def compatibility_problems(prev: dict | None, record: dict, has_units: bool) -> list[str]:
    if prev is None:
        return ["it holds result files but no run.json"] if has_units else []
    out = []
    if prev.get("grid_hash") != record["grid_hash"]:
        out.append(f"its grid {prev.get('grid_name')!r} (hash {prev.get('grid_hash')}) differs from this run's grid "
                   f"{record['grid_name']!r} (hash {record['grid_hash']})")
    if prev.get("git_commit") != record["git_commit"] or prev.get("versions", {}).get("flowprior-bench") != \
            record["versions"]["flowprior-bench"]:
        out.append(f"it was made by code commit {str(prev.get('git_commit'))[:12]}, this is "
                   f"{record['git_commit'][:12]}")
    th = lambda r: (r.get("tuned") or {}).get("hash")  # noqa: E731
    if th(prev) != th(record):
        out.append(f"its tuned parameters ({th(prev) or 'none'}) differ from this run's ({th(record) or 'none'})")
    return out
