"""What the harness computes from a unit's solve, with its own model and its own copy of the problem: the scores
of x̂ (:func:`bench.core.metrics.score`), the anytime trace from the points the solver marked on its prior, and the
arrays of the reconstruction figures."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from bench.core import objective
from bench.core.schema import RECON_CELL, RECON_MASK, RECON_OBSERVED, RECON_X_HAT, RECON_X_TRUE, trace_columns

SCORE_CHUNK = 128


def score_rows(problem, prior, x_hat, lam) -> dict:
    from bench.core.metrics import score

    parts = []
    for i in range(0, x_hat.shape[0], SCORE_CHUNK):
        rows = list(range(i, min(i + SCORE_CHUNK, x_hat.shape[0])))
        parts.append(score(problem.take(rows), prior, x_hat[i:i + len(rows)], lam[i:i + len(rows)]))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _score_trace(trace, full, model, lam_full, expand):
    """A trace recorded as iterates (``Trace.x``), scored like x̂ for every row of ``full`` at the row's own λ:
    returns (the trace with ``nfe``/``loss`` per row of ``full``, the identity row map)."""
    from bench.solvers.base import Trace

    idx = torch.as_tensor(expand)
    dev = full.y.device
    out = Trace()
    for nfe, x in zip(trace.nfe, trace.x):
        xs = x.to(dev, full.y.dtype)[idx.to(dev)].clamp(0, 1)
        loss = torch.cat([objective.problem_map_loss(full.take(list(range(i, min(i + SCORE_CHUNK, len(idx))))),
                                                     model, xs[i:i + SCORE_CHUNK], lam_full[i:i + SCORE_CHUNK])
                          for i in range(0, len(idx), SCORE_CHUNK)])
        out.record(torch.as_tensor(nfe)[idx], loss)
    return out, list(range(len(idx)))


def per_row(value, n: int):
    """A per-row info value as a length-n numpy array, or None if it is not one."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dim() == 1 and value.shape[0] == n:
            return value.numpy()
        return None
    if isinstance(value, (list, tuple, np.ndarray)) and len(value) == n:
        arr = np.asarray(value)
        return arr if arr.ndim == 1 and arr.dtype.kind in "biuf" else None
    return None


def traces_frame(spec, trace, expand_rows, cids) -> pd.DataFrame:
    """Long table (:func:`bench.core.schema.trace_columns`: cell id, unit id, passes, MAP loss) from a solver Trace;
    ``expand_rows[k]`` = solve row of row k."""
    columns = trace_columns()
    empty = pd.DataFrame({c.name: pd.Series(dtype=c.dtype) for c in columns})
    if trace is None or not trace.nfe:
        return empty
    try:
        B = int(torch.as_tensor(trace.loss[0]).numel())
        nfe = np.stack([np.broadcast_to(torch.as_tensor(v).cpu().numpy().reshape(-1), (B,)) for v in trace.nfe])
        loss = np.stack([torch.as_tensor(v).cpu().double().numpy().reshape(-1) for v in trace.loss])
        if nfe.shape != loss.shape:
            return empty
        keep = [k for k, r in enumerate(expand_rows) if r is not None]
        cols = [expand_rows[k] for k in keep]
        T = nfe.shape[0]
        cell, unit, passes, value = (c.name for c in columns)
        return pd.DataFrame({
            cell: np.repeat(np.asarray([cids[k] for k in keep])[None, :], T, 0).reshape(-1),
            unit: spec.unit_id,
            passes: nfe[:, cols].reshape(-1).astype(np.int64),
            value: loss[:, cols].reshape(-1),
        })
    except Exception:  # noqa: BLE001 -- a malformed trace never costs the rows
        return empty


def harness_trace(bp, full, scorer, lam_full, expand, trace_rows):
    """The anytime trace from the points the solver marked on its prior: losses the harness computed at them, or
    iterates it scores now (uncharged passes); the pass counts are the prior's. Returns (Trace, row map)."""
    from bench.solvers.base import Trace

    points = bp.trace_points()
    trace = Trace()
    if not points:
        return None, trace_rows
    if points[0][0] == "loss":
        for _, used, loss in points:
            trace.record(used, loss)
        return trace, trace_rows
    for _, used, x in points:
        trace.record(used, x=x)
    return _score_trace(trace, full, scorer, lam_full, expand)


def recon_arrays(full, x_hat, cids) -> dict:
    """Arrays for figures: cell_id, x_hat, x_true, observed (the task's ``observed_image``), mask."""
    x_true = full.x_true.detach().cpu().float().numpy()
    xh = x_hat.detach().cpu().float().numpy() if x_hat is not None else np.full_like(x_true, np.nan)
    # what y shows as an image, and which of its pixels were observed: the task says
    observed = full.task.observed_image(full).detach().cpu().float().numpy()
    mask = full.task.observed_mask(full).detach().cpu().float().numpy()
    return {RECON_CELL: np.asarray(cids), RECON_X_HAT: xh.astype(np.float32), RECON_X_TRUE: x_true.astype(np.float32),
            RECON_OBSERVED: observed.astype(np.float32), RECON_MASK: mask.astype(np.float32)}


