"""Solvers in their own process, behind a counted oracle (README "What a plugin can and cannot do").

A unit's solve runs in a child process forked from a template that has imported torch and the registered
solvers and tasks once (a ``multiprocessing`` fork server started by the harness process, never holding a model,
an image or a path of the run). The child receives only what a solver gets: y, the operator's public state, the
task spec, λ, the budget, ``mle_steps``, the seed index, opaque row keys instead of image ids, the solver spec and
its parameters, and the torch thread count. It then, before any plugin code runs:

- asks the kernel to kill it when its parent dies, caps its address space (``RLIMIT_AS``: the template's size +
  the unit's memory limit) and core dumps;
- imports the plugin modules, then (Linux ≥ 5.13, Landlock) gives up every file-system access, TCP, signals to
  processes outside itself and ptrace of them: no dataset, checkpoint, run directory or harness memory is
  reachable. Where Landlock is missing the rest still holds, and ``LANDLOCK`` is False (README lists what then
  still wins).

Its ``prior`` is an :class:`OracleClient`: every method sends a request over a pipe and the harness
(:func:`solve_isolated`) evaluates it with its own model through a :class:`~bench.budget.BudgetedPrior`, which
charges and refuses per row. Value-and-gradient of log p_G at x comes back in one pass (autograd in the child
multiplies the returned gradient by the incoming one, 1 for ``logp.sum()``, so results are bit-identical to an
in-process solve); G(z) and E(x) keep their graph in the harness until the child's backward asks for the one
vector-Jacobian product its pass paid for. Messages are JSON plus raw tensor bytes, never pickles, and have a size
cap, so nothing the child sends can run code in the harness.

The harness enforces the unit's wall time (``timeout``), memory (``oom``) and the child's exit (``crashed``: a
signal, an exit code, ``KeyboardInterrupt``, a broken message); each becomes rows with that status.
"""
from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import resource
import signal
import struct
import sys
import threading
from multiprocessing.connection import wait as _wait

import numpy as np
import torch

import bench.solvers.base as _solver_base
from bench import objective  # noqa: F401  (preloaded for solvers)
from bench.errors import BudgetExceeded, one_line
from bench.seeding import derive_seed
from bench.solvers.base import SOLVERS, SolveContext
from bench.tasks import TASKS, Problem, make_task

SOLVERS.names()   # import every registered solver and task in the template, not in each child
TASKS.names()
import bench.metrics  # noqa: E402,F401  (a solver may import the metric helpers)

for _lazy in ("scipy.fft", "pywt"):   # what the shipped Lasso solvers import on first use: once, not per unit
    try:
        __import__(_lazy)
    except ImportError:
        pass

MAX_GRAPHS = 8            # G(z)/E(x) graphs the harness keeps for a later backward (oldest dropped)
MESSAGE_SLACK = 1 << 20   # bytes a message may carry beyond its tensors

# --- messages: JSON header + raw tensor bytes (never pickle) ----------------------------------------------------
_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool", "complex64",
           "complex128")


class Unsupported:
    """A value the message format does not carry (the harness sees its type name)."""

    def __init__(self, what: str):
        self.what = what


def pack(obj) -> bytes:
    bufs = []

    def enc(o):
        if isinstance(o, torch.Tensor):
            try:
                o = o.detach().cpu().resolve_conj().resolve_neg().numpy()
            except (TypeError, RuntimeError):
                return {"__unsupported": f"tensor of dtype {o.dtype}"}
        if isinstance(o, np.ndarray):
            if o.dtype.name not in _DTYPES:
                return {"__unsupported": f"array of dtype {o.dtype}"}
            a = np.ascontiguousarray(o)
            bufs.append(a.tobytes())
            return {"__t": len(bufs) - 1, "dtype": a.dtype.name, "shape": list(a.shape)}
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, dict):
            return {"__d": [[str(k), enc(v)] for k, v in o.items()]}
        if isinstance(o, (list, tuple)):
            return [enc(v) for v in o]
        if o is None or isinstance(o, (bool, int, float, str)):
            return o
        return {"__unsupported": type(o).__name__}

    head = json.dumps(enc(obj)).encode()
    sizes = json.dumps([len(b) for b in bufs]).encode()
    return struct.pack("<II", len(head), len(sizes)) + head + sizes + b"".join(bufs)


def unpack(data: bytes):
    """Decode :func:`pack`'s bytes; raises ValueError on anything malformed."""
    try:
        nh, ns = struct.unpack_from("<II", data)
        head = json.loads(bytes(data[8:8 + nh]))
        sizes = json.loads(bytes(data[8 + nh:8 + nh + ns]))
        if not isinstance(sizes, list) or not all(isinstance(n, int) and n >= 0 for n in sizes):
            raise ValueError("bad buffer table")
        offsets, pos = [], 8 + nh + ns
        for n in sizes:
            offsets.append((pos, n))
            pos += n
        if pos != len(data):
            raise ValueError("message length does not match its buffers")

        def dec(o):
            if isinstance(o, list):
                return [dec(v) for v in o]
            if isinstance(o, dict):
                if "__d" in o:
                    return {str(k): dec(v) for k, v in o["__d"]}
                if "__unsupported" in o:
                    return Unsupported(str(o["__unsupported"]))
                dt, shape, (start, n) = o["dtype"], [int(s) for s in o["shape"]], offsets[int(o["__t"])]
                if dt not in _DTYPES or any(s < 0 for s in shape):
                    raise ValueError(f"bad tensor {dt} {shape}")
                a = np.frombuffer(data, dtype=np.dtype(dt), count=n // np.dtype(dt).itemsize, offset=start)
                return torch.from_numpy(a.reshape(shape).copy())
            return o

        return dec(head)
    except (ValueError, KeyError, IndexError, TypeError, struct.error, RecursionError, json.JSONDecodeError) as e:
        raise ValueError(f"malformed message from the solver process: {one_line(e, 120)}") from None


# --- the channel: two one-way pipes with large buffers ------------------------------------------------------------
PIPE_BYTES = 1 << 20   # a pass's request or reply at 28×28 × 20 rows (~130 kB) is written without waiting


class Channel:
    """One end of the harness ↔ solver-process channel: a pipe to read from and one to write to, their buffers
    enlarged (Linux ``F_SETPIPE_SZ``) so that a reply is written without waiting for the reader to be scheduled."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    def send_bytes(self, data) -> None:
        """``Connection.send_bytes``'s framing in one write: its two writes (length, then a large payload) wake
        the reader twice, which cost ~1 ms a message on a loaded machine."""
        n = len(data)
        view = memoryview((struct.pack("!i", n) if n <= 0x7FFFFFFF else struct.pack("!iQ", -1, n)) + data)
        fd = self.writer.fileno()
        while view:
            view = view[os.write(fd, view):]

    def recv_bytes(self, maxlength=None) -> bytes:
        return self.reader.recv_bytes(maxlength)

    def fds(self) -> tuple:
        return self.reader.fileno(), self.writer.fileno()

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


def channel_pair(ctx) -> tuple:
    """(harness end, solver end)."""
    import fcntl

    r1, w1 = ctx.Pipe(duplex=False)   # solver -> harness
    r2, w2 = ctx.Pipe(duplex=False)   # harness -> solver
    for c in (r1, r2):
        try:
            fcntl.fcntl(c.fileno(), 1031, PIPE_BYTES)   # F_SETPIPE_SZ
        except OSError:
            pass
    return Channel(r1, w2), Channel(r2, w1)


# --- the child: a solver process ---------------------------------------------------------------------------------
class _OracleError(Exception):
    pass


class OracleClient:
    """The prior a solver gets in its own process: the :class:`~bench.budget.BudgetedPrior` interface, each call
    a request to the harness (which charges, refuses, evaluates and returns tensors)."""

    __slots__ = ("_conn", "_budget", "_used", "_latent", "_image")

    def __init__(self, conn, budget: int, batch_size: int, latent_shape, image_shape):
        self._conn, self._budget = conn, int(budget)
        self._used = torch.zeros(int(batch_size), dtype=torch.long)
        self._latent, self._image = tuple(latent_shape), tuple(image_shape)

    budget = property(lambda self: self._budget)
    used = property(lambda self: self._used.clone())
    batch_size = property(lambda self: len(self._used))
    latent_shape = property(lambda self: self._latent)
    image_shape = property(lambda self: self._image)

    def remaining(self, rows=None):
        r = self._budget - self._used
        return r if rows is None else r[torch.as_tensor(rows, dtype=torch.long)]

    def _call(self, op: str, **kw):
        self._conn.send_bytes(pack({"op": op, **kw}))
        reply = unpack(self._conn.recv_bytes())
        self._used = reply["used"]
        if "error" in reply:
            kind, msg = reply["error"]
            raise {"BudgetExceeded": _budget_error, "ValueError": ValueError}.get(kind, _OracleError)(msg)
        return reply

    @staticmethod
    def _rows(rows):
        return None if rows is None else torch.as_tensor(rows, dtype=torch.long).reshape(-1)

    def charge(self, n: int, rows=None) -> None:
        if isinstance(n, bool) or not isinstance(n, int):
            raise ValueError(f"a charge is a whole number of passes >= 1, got {n!r}")
        self._call("charge", n=n, rows=self._rows(rows))

    def log_prob(self, x, rows=None):
        if torch.is_grad_enabled() and x.requires_grad:
            return _LogProb.apply(x, self, self._rows(rows))
        return self._call("log_prob", x=x, rows=self._rows(rows), grad=False)["out"][0]

    def _graph(self, op, inp, rows):
        if torch.is_grad_enabled() and inp.requires_grad:
            outs = _Graph.apply(inp, self, op, self._rows(rows))
            return outs
        outs = self._call(op, x=inp, rows=self._rows(rows), grad=False)["out"]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def decode(self, z, rows=None):
        return self._graph("decode", z, rows)

    def encode(self, x, rows=None):
        return self._graph("encode", x, rows)

    def decode_with_log_prob(self, z, rows=None):
        return self._graph("decode_with_log_prob", z, rows)

    def trace_point(self, x=None) -> None:
        self._call("trace_point", x=None if x is None else x.detach())


def _budget_error(msg):
    e = BudgetExceeded([], 0, 0)
    e.args = (msg,)
    return e


class _LogProb(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, client, rows):
        reply = client._call("log_prob", x=x.detach(), rows=rows, grad=True)
        value, grad = reply["out"][0], reply["grad"]
        ctx.save_for_backward(grad)
        return value

    @staticmethod
    def backward(ctx, g):
        (grad,) = ctx.saved_tensors
        return g.view(-1, *([1] * (grad.dim() - 1))) * grad, None, None


class _Graph(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inp, client, op, rows):
        reply = client._call(op, x=inp.detach(), rows=rows, grad=True)
        ctx.client, ctx.handle = client, reply["handle"]
        ctx.set_materialize_grads(False)
        outs = reply["out"]
        return outs[0] if len(outs) == 1 else tuple(outs)

    @staticmethod
    def backward(ctx, *gs):
        reply = ctx.client._call("vjp", handle=ctx.handle, cot=[None if g is None else g.detach() for g in gs])
        return reply["grad"], None, None, None


_READ = (1 << 0) | (1 << 2) | (1 << 3)   # Landlock: execute, read file, read dir


def _readable_paths() -> list[str]:
    """What a solver process may still read: the Python standard library and the installed third-party packages
    (so a plugin's lazy ``import scipy.optimize`` works) — not this harness's package (its datasets and
    checkpoints may live inside it), not the repository, the data, the checkpoints or the run directory."""
    import site
    import sysconfig

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")}
    for sp in {*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        try:
            names = os.listdir(sp)
        except OSError:
            continue
        for name in names:
            full = os.path.join(sp, name)
            if name == "bench" or os.path.abspath(full) == here:
                continue
            paths.add(full)
    out = []
    for p in sorted(paths):
        p = os.path.abspath(p)
        if os.path.exists(p) and not (here + os.sep).startswith(p + os.sep) and p != here:
            out.append(p)
    return out


def _landlock(readable=()) -> bool:
    """Give up file-system access (but reading ``readable``), TCP, signals and ptrace outside this process (Linux
    Landlock); True if done."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        abi = libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))   # landlock_create_ruleset: ABI
        if abi < 1:
            return False
        fs = (1 << 13) - 1                                   # ABI 1: execute, read/write files and dirs, make *
        fs |= (1 << 13) if abi >= 2 else 0                   # refer
        fs |= (1 << 14) if abi >= 3 else 0                   # truncate
        fs |= (1 << 15) if abi >= 5 else 0                   # ioctl on devices
        net = 3 if abi >= 4 else 0                           # bind and connect TCP
        scoped = 3 if abi >= 6 else 0                        # abstract unix sockets, signals
        attr = struct.pack("<QQQ", fs, net, scoped)
        size = 8 if abi < 4 else (16 if abi < 6 else 24)
        buf = ctypes.create_string_buffer(attr[:size], size)
        fd = libc.syscall(444, buf, ctypes.c_size_t(size), ctypes.c_uint32(0))
        if fd < 0:
            return False
        for path in readable:
            try:
                pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            access = _READ if os.path.isdir(path) else (1 << 0) | (1 << 2)
            rule = ctypes.create_string_buffer(struct.pack("<Qi", access, pfd), 12)
            libc.syscall(445, ctypes.c_int(fd), ctypes.c_int(1), rule, ctypes.c_uint32(0))   # path beneath
            os.close(pfd)
        if libc.prctl(38, 1, 0, 0, 0) != 0:                  # PR_SET_NO_NEW_PRIVS
            return False
        ok = libc.syscall(446, ctypes.c_int(fd), ctypes.c_uint32(0)) == 0   # landlock_restrict_self
        os.close(fd)
        return ok
    except (OSError, AttributeError):
        return False


_READABLE = _readable_paths()


def _limit_memory(memory_mb) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory_mb:
        with open("/proc/self/status") as f:
            vm = next((int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:")), 0)
        cap = vm + int(memory_mb) * (1 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and any(
        s in str(e) for s in ("can't allocate memory", "out of memory", "Cannot allocate memory")))


def _solver_class(name: str, module: str, qualname: str):
    """The solver's class, found where the harness found it: its module (imported here before the lockdown, so a
    class registered by a test or a plugin at run time is found too) and qualified name."""
    import importlib

    if "<locals>" in qualname:
        raise RuntimeError(f"solver {name!r}: class {module}.{qualname} is defined inside a function; a solver "
                           f"process can only run a class importable from its module")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _child(conn) -> None:
    """The solver process: receive the job, lock down, solve, send x̂ and info; exit without cleanup."""
    from bench.executors import die_with_parent

    die_with_parent()
    out = None
    try:
        job = unpack(conn.recv_bytes())
        torch.set_num_threads(int(job["threads"]))
        _limit_memory(job["memory_mb"])
        for mod in job["imports"]:
            __import__(mod)
        __import__(job["solver"][1])
        for fd in range(3, 1024):   # nothing but the pipe to the harness
            if fd not in conn.fds():
                try:
                    os.close(fd)
                except OSError:
                    pass
        if job["landlock"] and not _landlock(_READABLE):
            raise RuntimeError("the solver process could not lock itself down (Landlock)")

        def row_seed(key, seed, tag):
            return int(OracleClient._call(prior_or_stub, "seed", key=str(key), seed=int(seed),
                                          tag=[str(t) for t in tag])["seed"])

        prior_or_stub = OracleClient(conn, job["budget"], len(job["keys"]), job["latent_shape"], job["image_shape"])
        _solver_base._row_seed = row_seed
        solver = _solver_class(*job["solver"][:3])(**job["solver"][3])
        problem = Problem(make_task(job["task"]), None, job["y"], list(job["keys"]), int(job["seed"]),
                          dict(job["state"]), tuple(job["shape"]))
        reason = solver.skip(problem)
        if reason:
            out = {"kind": "skip", "message": str(reason)}
        else:
            prior = prior_or_stub if job["uses_prior"] else None
            ctx = SolveContext(budget=int(job["budget"]), mle_steps=int(job["mle_steps"]), seed=int(job["seed"]),
                               device=torch.device("cpu"))
            res = solver.solve(problem, prior, job["lam"], ctx)
            info = res.info if isinstance(getattr(res, "info", None), dict) else {}
            out = {"kind": "done", "x_hat": res.x_hat, "info": info}
    except BudgetExceeded as e:
        out = {"kind": "overspend", "message": one_line(e)}
    except SystemExit as e:
        out = {"kind": "error", "message": f"solver called exit({e.code!r})"}
    except KeyboardInterrupt:
        out = {"kind": "crashed", "message": "solver raised KeyboardInterrupt"}
    except BaseException as e:  # noqa: BLE001 -- everything becomes a message to the harness
        out = {"kind": "oom" if _is_oom(e) else "error", "message": one_line(e)}
    try:
        conn.send_bytes(pack({"op": "result", **out}))
    except BaseException:  # noqa: BLE001 -- an unsendable result: the harness sees the exit
        os._exit(3)
    os._exit(0)


# --- the harness side --------------------------------------------------------------------------------------------
_CTX = None


def context():
    """The fork-server context whose template has imported this module (torch, solvers, tasks) once."""
    global _CTX
    if _CTX is None:
        _CTX = multiprocessing.get_context("forkserver")
        _CTX.set_forkserver_preload(["bench.isolate"])
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
    """What came back from a solver process: ``kind`` is done / skip / error / overspend / timeout / oom /
    crashed; ``x_hat`` and ``info`` for done."""

    def __init__(self, kind, message="", x_hat=None, info=None):
        self.kind, self.message, self.x_hat, self.info = kind, message, x_hat, info or {}


class _Oracle:
    """Serves a child's requests with the harness's :class:`~bench.budget.BudgetedPrior`."""

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
    timeout = Outcome("timeout", f"the solver ran past the unit's wall-time limit of {timeout_s:g} s")
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
                    return Outcome("crashed", "the solver process sent a message over the size limit")
                return _died(proc)
            try:
                req = unpack(data)
                if not isinstance(req, dict):
                    raise ValueError("a message is a dict")
            except ValueError as e:
                return Outcome("crashed", str(e))
            if req.get("op") == "result":
                kind = req.get("kind")
                if kind not in ("done", "skip", "error", "overspend", "oom", "crashed"):
                    return Outcome("crashed", "the solver process sent an unknown result")
                return Outcome(kind, str(req.get("message", "")), req.get("x_hat"), req.get("info"))
            try:
                reply = oracle.serve(req)
            except BudgetExceeded as e:
                reply = {"error": ["BudgetExceeded", str(e)]}
            except ValueError as e:
                reply = {"error": ["ValueError", str(e)]}
            except Exception as e:  # noqa: BLE001 -- a request the model cannot evaluate
                reply = {"error": ["Error", one_line(e)]}
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
        return Outcome("crashed", "the solver process closed its channel")
    if code < 0:
        return Outcome("crashed", f"the solver process was killed by {_signal_name(code)}")
    return Outcome("crashed", f"the solver process exited with code {code} before answering")
