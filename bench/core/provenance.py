"""Provenance: the code's git commit, package versions and UTC timestamps recorded with every result."""
from __future__ import annotations

import importlib
import subprocess
import sys
from datetime import datetime, timezone


def git_commit() -> tuple[str, bool]:
    """(HEAD commit of the code's repository or "unknown", whether tracked files have uncommitted changes)."""
    from bench import REPO_ROOT

    try:
        head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return "unknown", False
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip(), bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def versions() -> dict:
    import bench

    out = {"python": sys.version.split()[0], "flowprior-bench": bench.__version__}
    for mod, name in (("torch", "torch"), ("numpy", "numpy"), ("pandas", "pandas"), ("pyarrow", "pyarrow"),
                      ("scipy", "scipy"), ("skimage", "scikit-image"), ("pywt", "PyWavelets")):
        try:
            out[name] = importlib.import_module(mod).__version__
        except Exception:  # noqa: BLE001
            out[name] = "unknown"
    return out


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def row_provenance(commit: str, vers: dict, started: str, grid_name: str, grid_hash: str) -> dict:
    """What every row of a run records about where it came from (commit, versions, start time, grid)."""
    return {"git_commit": commit, "torch_version": vers["torch"], "numpy_version": vers["numpy"],
            "started_at": started, "grid_name": grid_name, "grid_hash": grid_hash}
