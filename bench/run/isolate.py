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
(:func:`bench.run.oracle.solve_isolated`) evaluates it with its own model through a
:class:`~bench.run.budget.BudgetedPrior`, which
charges and refuses per row. Value-and-gradient of log p_G at x comes back in one pass (autograd in the child
multiplies the returned gradient by the incoming one, 1 for ``logp.sum()``, so results are bit-identical to an
in-process solve); G(z) and E(x) keep their graph in the harness until the child's backward asks for the one
vector-Jacobian product its pass paid for. Messages (:mod:`bench.run.channel`) are JSON plus raw tensor bytes, never
pickles, and have a size cap, so nothing the child sends can run code in the harness.

The harness enforces the unit's wall time (``timeout``), memory (``oom``) and the child's exit (``crashed``: a
signal, an exit code, ``KeyboardInterrupt``, a broken message); each becomes rows with that status.
"""
from __future__ import annotations

import ctypes
import os
import resource
import struct

import torch

import bench.solvers.base as _solver_base
from bench.core import objective  # noqa: F401  (preloaded for solvers)
from bench.core.errors import BudgetExceeded, one_line
from bench.core.schema import Status
from bench.run.channel import DONE, RAISED, SKIP, Channel, pack, unpack  # noqa: F401  (Channel: unpickled here)
from bench.solvers.base import SOLVERS, SolveContext
from bench.tasks import TASKS, Problem, make_task

SOLVERS.names()   # import every registered solver and task in the template, not in each child
TASKS.names()
import bench.core.metrics  # noqa: E402,F401  (a solver may import the metric helpers)

for _lazy in ("scipy.fft", "pywt"):   # what the shipped Lasso solvers import on first use: once, not per unit
    try:
        __import__(_lazy)
    except ImportError:
        pass


# --- the solver process ------------------------------------------------------------------------------------------
class _OracleError(Exception):
    pass


class OracleClient:
    """The prior a solver gets in its own process: the :class:`~bench.run.budget.BudgetedPrior` interface, each call
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
        if RAISED in reply:
            kind, msg = reply[RAISED]
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

    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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
    from bench.run.executors import die_with_parent

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
            out = {"kind": SKIP, "message": str(reason)}
        else:
            prior = prior_or_stub if job["uses_prior"] else None
            ctx = SolveContext(budget=int(job["budget"]), mle_steps=int(job["mle_steps"]), seed=int(job["seed"]),
                               device=torch.device("cpu"))
            res = solver.solve(problem, prior, job["lam"], ctx)
            info = res.info if isinstance(getattr(res, "info", None), dict) else {}
            out = {"kind": DONE, "x_hat": res.x_hat, "info": info}
    except BudgetExceeded as e:
        out = {"kind": Status.OVERSPEND, "message": one_line(e)}
    except SystemExit as e:
        out = {"kind": Status.ERROR, "message": f"solver called exit({e.code!r})"}
    except KeyboardInterrupt:
        out = {"kind": Status.CRASHED, "message": "solver raised KeyboardInterrupt"}
    except BaseException as e:  # noqa: BLE001 -- everything becomes a message to the harness
        out = {"kind": Status.OOM if _is_oom(e) else Status.ERROR, "message": one_line(e)}
    try:
        conn.send_bytes(pack({"op": "result", **out}))
    except BaseException:  # noqa: BLE001 -- an unsendable result: the harness sees the exit
        os._exit(3)
    os._exit(0)
