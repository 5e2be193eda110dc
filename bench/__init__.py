"""flowprior-bench: a benchmark harness for MAP solvers with normalizing-flow priors.

The repository keeps ``solvers/``, ``priors/``, ``datasets/`` and ``tasks/`` next to ``bench/``; they are
importable as ``bench.solvers``, ``bench.priors``, ``bench.datasets`` and ``bench.tasks``. In an installed wheel
they live inside the package (see pyproject.toml); in a source checkout the repository root is appended to this
package's search path so the same names resolve to the top-level folders. No top-level ``datasets`` package is ever created.
"""
from pathlib import Path as _Path

from bench.core.numerics import pin_portable_isa as _pin_portable_isa

_pin_portable_isa()  # before any torch kernel runs: same float results on every x86-64 CPU (bench/core/numerics.py)

_HERE = _Path(__file__).resolve().parent
_ROOT = _HERE.parent
if (_ROOT / "solvers").is_dir() and not (_HERE / "solvers").is_dir():
    __path__.append(str(_ROOT))  # noqa: F821  (module attribute of a package)

REPO_ROOT = _ROOT
__version__ = "0.1.0"
