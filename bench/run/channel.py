"""The harness ↔ solver-process channel (:mod:`bench.run.isolate`): messages of JSON plus raw tensor bytes — never
pickles, so nothing a solver process sends can run code in the harness — over two one-way pipes."""
from __future__ import annotations

import json
import os
import struct

import numpy as np
import torch

from bench.core.errors import one_line
from bench.core.schema import Status

# --- what the messages say -----------------------------------------------------------------------------------------
# A result message's ``kind``: solved, skipped (the solver declared the task does not apply), or how it failed, as the
# status its rows get; the harness adds TIMEOUT (bench.run.oracle) for a process it had to end.
DONE, SKIP = "done", "skip"
RESULT_KINDS = (DONE, SKIP, Status.ERROR, Status.OVERSPEND, Status.OOM, Status.CRASHED)
RAISED = "raised"   # the key of a reply carrying the exception the harness raised serving a request

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
