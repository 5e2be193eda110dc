"""The harness side of a solver process (:mod:`bench.run.isolate`): start it from the fork server's template, send the
job, serve its prior requests with the harness's :class:`~bench.run.budget.BudgetedPrior`, and turn its answer, its
death or its running past the unit's limits into an :class:`Outcome`."""
from __future__ import annotations

import ctypes
import multiprocessing
import signal
import sys
import threading
from multiprocessing.connection import wait as _wait

import torch

from bench.core.errors import BudgetExceeded, one_line
from bench.core.schema import Status
from bench.core.seeding import derive_seed
from bench.run.channel import RAISED, RESULT_KINDS, channel_pair, pack, unpack

MAX_GRAPHS = 8            # G(z)/E(x) graphs the harness keeps for a later backward (oldest dropped)

_CTX = None


def context():
    """The fork-server context whose template has imported this module (torch, solvers, tasks) once."""
    global _CTX
    if _CTX is None:
        _CTX = multiprocessing.get_context("forkserver")
        _CTX.set_forkserver_preload(["bench.run.isolate"])
    return _CTX


def landlock_available() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        return libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1)) >= 1
    except (OSError, AttributeError):
        return False


def _start_without_main(proc) -> None:
    """Start ``proc`` without multiprocessing's re-import of this program's main module in the child (a script's
    imports, pandas included, would cost each unit ~0.4 s; the child needs nothing from it), also from a
    daemonic process."""
    import types

    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    # a Dask worker is a daemonic process, which multiprocessing forbids to have children lest they outlive it;
    # a solver process cannot: it is killed with its fork server, which exits with the harness process
    config = multiprocessing.current_process()._config
    daemon = config.get("daemon")
    config["daemon"] = False
    try:
        proc.start()
    finally:
        sys.modules["__main__"] = main
        config["daemon"] = daemon


class Outcome:
    """What came back from a solver process: ``kind`` is :data:`~bench.run.channel.DONE`, :data:`~bench.run.channel.SKIP` or
    the failure status its rows get (error, overspend, timeout, oom, crashed); ``x_hat`` and ``info`` for done."""

    def __init__(self, kind, message="", x_hat=None, info=None):
        self.kind, self.message, self.x_hat, self.info = kind, message, x_hat, info or {}


class _Oracle:
    """Serves a child's requests with the harness's :class:`~bench.run.budget.BudgetedPrior`."""

    def __init__(self, bp, keys_to_ids: dict, device):
        self.bp, self.ids, self.device = bp, keys_to_ids, device
        self.graphs: dict = {}
        self.next_handle = 0

    def _input(self, x, shape):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 1 + len(shape) \
                or tuple(x.shape[1:]) != tuple(shape):
            raise ValueError(f"expected a real (k, {', '.join(map(str, shape))}) batch, got "
                             f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
        return x.to(self.device)

    def serve(self, req: dict) -> dict:
        bp, op = self.bp, req.get("op")
        rows = req.get("rows")
        if rows is not None and not isinstance(rows, torch.Tensor):
            raise ValueError("rows must be a list of row indices")
        if op == "charge":
            n = req.get("n")
            if isinstance(n, bool) or not isinstance(n, int):
                raise ValueError(f"a charge is a whole number of passes >= 1, got {n!r}")
            bp.charge(n, None if rows is None else rows.tolist())
            return {}
        if op == "log_prob":
            x = self._input(req.get("x"), bp.image_shape)
            if req.get("grad"):
                with torch.enable_grad():
                    xr = x.detach().requires_grad_(True)
                    logp = bp.log_prob(xr, rows)
                    (g,) = torch.autograd.grad(logp.sum(), xr)
                return {"out": [logp.detach()], "grad": g}
            with torch.no_grad():
                return {"out": [bp.log_prob(x, rows)]}
        if op in ("decode", "encode", "decode_with_log_prob"):
            x = self._input(req.get("x"), bp.image_shape if op == "encode" else bp.latent_shape)
            fn = getattr(bp, op)
            if not req.get("grad"):
                with torch.no_grad():
                    outs = fn(x, rows)
                return {"out": list(outs) if isinstance(outs, tuple) else [outs]}
            with torch.enable_grad():
                xr = x.detach().requires_grad_(True)
                outs = fn(xr, rows)
            outs = list(outs) if isinstance(outs, tuple) else [outs]
            handle = self.next_handle
            self.next_handle += 1
            self.graphs[handle] = (xr, outs)
            while len(self.graphs) > MAX_GRAPHS:
                self.graphs.pop(next(iter(self.graphs)))
            return {"out": [o.detach() for o in outs], "handle": handle}
        if op == "vjp":
            h = req.get("handle")
            if not isinstance(h, int) or h not in self.graphs:
                raise ValueError("this pass's backward was already taken (or is too old): one backward per pass")
            xr, outs = self.graphs.pop(h)
            cot = req.get("cot")
            if not isinstance(cot, list) or len(cot) != len(outs):
                raise ValueError("one cotangent (or None) per output")
            pairs = []
            for o, c in zip(outs, cot):
                if c is None:
                    continue
                if not isinstance(c, torch.Tensor) or tuple(c.shape) != tuple(o.shape) or not c.is_floating_point():
                    raise ValueError("a cotangent has the shape of its output")
                pairs.append((o, c.to(o.device, o.dtype)))
            if not pairs:
                return {"grad": torch.zeros_like(xr)}
            (g,) = torch.autograd.grad([o for o, _ in pairs], xr, [c for _, c in pairs])
            return {"grad": g}
        if op == "trace_point":
            x = req.get("x")
            bp.trace_point(None if x is None else self._input(x, bp.image_shape).cpu())
            return {}
        if op == "seed":
            key, tag = req.get("key"), req.get("tag")
            if key not in self.ids or not isinstance(tag, list) or not all(isinstance(t, str) for t in tag):
                raise ValueError("row_generator: unknown row key")
            return {"seed": derive_seed("solver", *tag, self.ids[key], int(req.get("seed")))}
        raise ValueError(f"unknown request {op!r}")


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def solve_isolated(*, bp, job: dict, keys_to_ids: dict, device, timeout_s: float, max_message: int) -> Outcome:
    """Run ``job`` (see :func:`_child`) in a fresh solver process, serving its prior requests with ``bp``
    until it answers, dies or runs past ``timeout_s``."""
    from bench.run.isolate import _child

    ctx = context()
    parent, child = channel_pair(ctx)
    proc = ctx.Process(target=_child, args=(child,), daemon=False)
    _start_without_main(proc)
    child.close()
    oracle = _Oracle(bp, keys_to_ids, device)
    # the watchdog also ends a child that stalls the channel (a half-sent message, replies it never reads)
    expired = threading.Event()

    def expire():
        expired.set()
        proc.kill()

    timer = threading.Timer(float(timeout_s), expire)
    timer.daemon = True
    timer.start()
    timeout = Outcome(Status.TIMEOUT, f"the solver ran past the unit's wall-time limit of {timeout_s:g} s")
    try:
        parent.send_bytes(pack(job))
        while True:
            if expired.is_set():
                return timeout
            if not _wait([parent.reader, proc.sentinel], timeout=1.0):
                continue
            try:
                data = parent.recv_bytes(max_message)
            except (EOFError, OSError) as e:
                proc.join(2)
                if expired.is_set():
                    return timeout
                if isinstance(e, OSError) and proc.exitcode is None:
                    return Outcome(Status.CRASHED, "the solver process sent a message over the size limit")
                return _died(proc)
            try:
                req = unpack(data)
                if not isinstance(req, dict):
                    raise ValueError("a message is a dict")
            except ValueError as e:
                return Outcome(Status.CRASHED, str(e))
            if req.get("op") == "result":
                kind = req.get("kind")
                if kind not in RESULT_KINDS:
                    return Outcome(Status.CRASHED, "the solver process sent an unknown result")
                return Outcome(kind, str(req.get("message", "")), req.get("x_hat"), req.get("info"))
            try:
                reply = oracle.serve(req)
            except BudgetExceeded as e:
                reply = {RAISED: ["BudgetExceeded", str(e)]}
            except ValueError as e:
                reply = {RAISED: ["ValueError", str(e)]}
            except Exception as e:  # noqa: BLE001 -- a request the model cannot evaluate
                reply = {RAISED: ["Error", one_line(e)]}
            reply["used"] = bp.used
            try:
                parent.send_bytes(pack(reply))
            except OSError:
                proc.join(2)
                return timeout if expired.is_set() else _died(proc)
    finally:
        timer.cancel()
        parent.close()
        if proc.is_alive():
            proc.kill()
        proc.join(5)


def _died(proc) -> Outcome:
    code = proc.exitcode
    if code is None:
        return Outcome(Status.CRASHED, "the solver process closed its channel")
    if code < 0:
        return Outcome(Status.CRASHED, f"the solver process was killed by {_signal_name(code)}")
    return Outcome(Status.CRASHED, f"the solver process exited with code {code} before answering")
