"""The result schema, declared once: row statuses, identity keys, the columns of rows and traces with their dtypes,
the arrays of a recon file, the keys that group rows into cells, and the solver roles the report reads.

- :class:`Status`: how a row ended. ``ok``; a solve that failed: ``error`` (an exception, or an ``x_hat`` that is
  not a real floating-point tensor), ``overspend`` (a pass past the budget was asked for), ``nan`` (a non-finite
  ``x_hat``); a unit whose solver process ran past its wall-time limit (``timeout``), past its memory limit
  (``oom``) or died (``crashed``); and ``skipped``: the solver declared that the task does not apply.
- :data:`IDENTITY_KEYS`: the :class:`~bench.plan.units.UnitSpec` fields that :mod:`bench.core.identity` hashes into unit and
  cell ids.
- Row columns, in the order a rows file holds them (:func:`row_columns`): :data:`KEY_COLUMNS`, one float64 column per
  registered metric (:data:`bench.core.metrics.METRICS`, its order), :data:`RUN_COLUMNS`, :data:`PROVENANCE_COLUMNS`,
  :data:`DEVICE_COLUMNS`; then ``p_task_*`` and ``p_solver_*`` (every resolved parameter) and ``info_*`` (what the
  solver reported). :func:`rows_frame` builds a unit's rows in that order and with these dtypes, :func:`coerce` gives
  rows read back their float columns as floats (λ above all): the two edges where rows are written and read.
- :data:`TASK_SPEC`: a column the report derives (:func:`bench.report.leaderboard.disambiguate_tasks`): the task with its
  parameters but without budget and MLE length, once ``task`` also names those.
- Cell keys: a table cell (:data:`TABLE_CELL`), a ranking cell (:data:`RANK_CELL`), a paired sample
  (:data:`PAIR_KEY`), one row of a table cell (:data:`ROW_KEY`), a table row (:data:`WINNER_CELL`), a solver's
  instance within a table (:data:`FLOOR_INSTANCE`), an optimisation instance (:data:`INSTANCE`) and a resumable
  cell × image (:data:`RESUME_KEY`).
- Roles: the solver class attributes that make a solver the do-nothing reference (:data:`TRIVIAL`) or the
  baseline of the paired comparison (:data:`BASELINE`); :func:`bench.report.roles.role_solver` finds the registered one.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bench.core.metrics import METRICS, loss_metric


class Status(StrEnum):
    """How a result row ended (module docstring); the value is what the ``status`` column holds."""
    OK = "ok"
    ERROR = "error"
    OVERSPEND = "overspend"
    NAN = "nan"
    TIMEOUT = "timeout"
    OOM = "oom"
    CRASHED = "crashed"
    SKIPPED = "skipped"


UNIT_FAILURES = (Status.TIMEOUT, Status.OOM, Status.CRASHED)   # a whole unit's rows; the run's last line counts units
NOT_FAILURES = (Status.OK, Status.SKIPPED)

IDENTITY_KEYS = ("task", "task_params", "prior_name", "prior_sha256", "dataset", "dataset_split", "split",
                 "image_size", "solver", "solver_params", "tuned", "seed", "budget", "mle_steps", "protocol")

STR, INT, FLOAT, BOOL = "str", "int64", "float64", "bool"


@dataclass(frozen=True)
class Column:
    """A fixed column of the result rows: its name and pandas dtype (``str``: text)."""
    name: str
    dtype: str


def _columns(*pairs) -> tuple:
    return tuple(Column(name, dtype) for name, dtype in pairs)


STATUS, ERROR = "status", "error"
KEY_COLUMNS = _columns(("cell_id", STR), ("unit_id", STR), ("task", STR), ("prior", STR), ("prior_sha256", STR),
                       ("dataset", STR), ("split", STR), ("image_id", STR), ("lam", FLOAT), ("solver", STR),
                       ("seed", INT), ("image_size", INT))
# after the metrics: what the run of a row spent and how it ended
RUN_COLUMNS = _columns(("nfe_used", INT), ("budget", INT), ("iterations", INT), ("wall_time_s", FLOAT),
                       (STATUS, STR), (ERROR, STR))
# where and from what a row was computed (bench.core.provenance; pass_batch: the rows its prior passes were batched
# with, bench.plan.batches), and the unit's MLE length and protocol
PROVENANCE_COLUMNS = _columns(("git_commit", STR), ("torch_version", STR), ("numpy_version", STR), ("device", STR),
                              ("torch_threads", INT), ("pass_batch", INT), ("cpu_isa", STR), ("started_at", STR), ("grid_name", STR),
                              ("grid_hash", STR), ("tuned", BOOL), ("mle_steps", INT), ("protocol", STR))
# on what (bench.core.device): TF32 allowed (False on CPU), deterministic algorithms, the GPU and its CUDA / cuDNN versions
# ("" on CPU), the unit's peak GPU memory in MB (NaN on CPU)
DEVICE_COLUMNS = _columns(("tf32", BOOL), ("deterministic", BOOL), ("gpu_name", STR), ("gpu_capability", STR),
                          ("cuda_version", STR), ("cudnn_version", STR), ("gpu_peak_mem_mb", FLOAT))
TASK_PARAM, SOLVER_PARAM, INFO = "p_task_", "p_solver_", "info_"   # prefixes of the per-unit columns that follow


def row_columns() -> tuple:
    """Every fixed column of a rows file, in order, with the metrics registered now."""
    return (*KEY_COLUMNS, *(Column(m, FLOAT) for m in METRICS), *RUN_COLUMNS, *PROVENANCE_COLUMNS, *DEVICE_COLUMNS)


def names(columns) -> list[str]:
    """The names of ``columns``."""
    return [c.name for c in columns]


def rows_frame(values: dict, extra: dict):
    """A unit's rows: ``values`` holds one sequence per fixed column (:func:`row_columns`, in any order; exactly
    those), ``extra`` the ``p_task_*``, ``p_solver_*`` and ``info_*`` columns in the order they are written."""
    import numpy as np
    import pandas as pd

    cols = row_columns()
    missing, unknown = set(names(cols)) - set(values), set(values) - set(names(cols))
    if missing or unknown:
        raise ValueError(f"row values do not match the schema: missing {sorted(missing)}, unknown {sorted(unknown)}")
    bad = [k for k in extra if not k.startswith((TASK_PARAM, SOLVER_PARAM, INFO))]
    if bad:
        raise ValueError(f"columns {bad} are neither declared nor p_task_*, p_solver_* or info_*")
    def column(c: Column):   # text as a list: pandas gives it its str dtype
        return list(values[c.name]) if c.dtype == STR else np.asarray(values[c.name], dtype=c.dtype)

    return pd.DataFrame({**{c.name: column(c) for c in cols}, **extra})


def coerce(rows):
    """``rows`` as read back, with every declared float column as float64 (λ written by older code as an integer
    included), so that no later step has to cast."""
    floats = {c.name for c in row_columns() if c.dtype == FLOAT} & set(rows.columns)
    return rows.astype({c: FLOAT for c in floats}) if floats else rows


def trace_columns() -> tuple:
    """The columns of a traces file: one point of a row's anytime trace (passes used, the MAP loss there)."""
    return _columns(("cell_id", STR), ("unit_id", STR), ("nfe", INT), (loss_metric(), FLOAT))


# the arrays of a recon file: cell ids, x̂, the clean image, y shown as an image (the task's observed_image), the
# observed pixels
RECON_CELL, RECON_X_HAT, RECON_X_TRUE, RECON_OBSERVED, RECON_MASK = "cell_id", "x_hat", "x_true", "observed", "mask"
RECON_KEYS = (RECON_CELL, RECON_X_HAT, RECON_X_TRUE, RECON_OBSERVED, RECON_MASK)

TASK_SPEC = "task_spec"

WINNER_CELL = ["task", "prior", "split", "lam"]                 # a row of a leaderboard table
TABLE_CELL = [*WINNER_CELL, "solver"]                           # a table cell: its samples are (image, seed) rows
RANK_CELL = [*WINNER_CELL, "seed"]                              # solvers are ranked per ranking cell
PAIR_KEY = [*RANK_CELL, "image_id"]                             # two solvers' rows of one sample
ROW_KEY = [*TABLE_CELL, "seed", "image_id"]                     # one row of a table cell
FLOOR_INSTANCE = ROW_KEY[1:]                                    # a solver's instance within one table
RESUME_KEY = [*TABLE_CELL, "seed", "budget", "image_id"]        # a cell × image as its rows name it
INSTANCE = [TASK_SPEC, "prior", "prior_sha256", "dataset", "image_size", "split", "image_id", "lam", "seed"]


def instance_task(rows):
    """The task of each row without budget and MLE length: :data:`TASK_SPEC` where the report set it, else ``task``."""
    return rows[TASK_SPEC] if TASK_SPEC in rows.columns else rows["task"]


TRIVIAL, BASELINE = "does_nothing", "baseline"   # the solver class attributes that declare the two roles
