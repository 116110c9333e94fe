"""Trusted bootstrap that runs INSIDE the sandbox (``python -I bootstrap.py``) in front of candidate code.

It is self-contained (standard library only) because the sandbox sees nothing of this package. It
keeps its protocol channel on private file descriptors, points the candidate's stdin/stdout/stderr
elsewhere, installs a seccomp filter, and then answers requests from the judge, one JSON object per
line:

* ``load``: compile the candidate (and, in function mode, run its module body);
* ``call``: call a candidate function (or ``Class.method`` on a fresh instance) on plain-data
  arguments and return plain data; anything else is an error, never a value;
* ``run_stdio``: run the program as ``__main__`` in a forked child with the given stdin and return
  its (capped) stdout;
* ``run_asserts``: the fallback for tests that need candidate-defined objects: run assertion strings
  in the candidate's namespace (these verdicts are forgeable, and reported as such);
* ``exit``.

The judge never trusts what comes back beyond its plain-data value: verdicts are computed outside.
The codec (:func:`encode` / :func:`decode`) is shared with the judge, which imports this module.
"""

from __future__ import annotations

import base64
import ctypes
import json
import math
import os
import platform
import select
import signal
import sys
import tempfile
import traceback

MAX_DEPTH = 64
MEMORY_EXIT_CODE = 120  # a stdio child that ran out of memory

# ---------------------------------------------------------------- plain-data codec


class NotPlainData(TypeError):
    """A value that is not plain data (int, float, str, bytes, bool, None, list, tuple, dict, set,
    frozenset, complex), with exact types: subclasses are refused."""


def encode(value, depth=0):
    if depth > MAX_DEPTH:
        raise NotPlainData("value nested deeper than %d levels" % MAX_DEPTH)
    kind = type(value)
    if value is None:
        return {"n": None}
    if kind is bool:
        return {"t": value}
    if kind is int:
        return {"i": str(value)}
    if kind is float:
        return {"f": repr(value)}
    if kind is complex:
        return {"c": [repr(value.real), repr(value.imag)]}
    if kind is str:
        return {"s": value}
    if kind is bytes:
        return {"b": base64.b64encode(value).decode("ascii")}
    if kind is list:
        return {"l": [encode(v, depth + 1) for v in value]}
    if kind is tuple:
        return {"u": [encode(v, depth + 1) for v in value]}
    if kind is set:
        return {"e": [encode(v, depth + 1) for v in value]}
    if kind is frozenset:
        return {"z": [encode(v, depth + 1) for v in value]}
    if kind is dict:
        return {"d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    raise NotPlainData("a %s is not plain data" % kind.__name__)


def _float(text):
    if text not in ("inf", "-inf", "nan") and not all(c in "0123456789.eE+-" for c in text):
        raise ValueError("bad float %r" % text)
    return float(text)


def decode(obj, depth=0):
    """Inverse of :func:`encode`; rejects anything malformed (the judge decodes untrusted output)."""
    if depth > MAX_DEPTH or type(obj) is not dict or len(obj) != 1:
        raise ValueError("malformed plain-data value")
    (tag, payload), = obj.items()
    if tag == "n" and payload is None:
        return None
    if tag == "t" and type(payload) is bool:
        return payload
    if tag == "i" and type(payload) is str and len(payload) < 100000:
        return int(payload)
    if tag == "f" and type(payload) is str:
        return _float(payload)
    if tag == "c" and type(payload) is list and len(payload) == 2:
        return complex(_float(payload[0]), _float(payload[1]))
    if tag == "s" and type(payload) is str:
        return payload
    if tag == "b" and type(payload) is str:
        return base64.b64decode(payload.encode("ascii"), validate=True)
    if type(payload) is list:
        if tag == "l":
            return [decode(v, depth + 1) for v in payload]
        if tag == "u":
            return tuple(decode(v, depth + 1) for v in payload)
        if tag == "e":
            return {decode(v, depth + 1) for v in payload}
        if tag == "z":
            return frozenset(decode(v, depth + 1) for v in payload)
        if tag == "d":
            result = {}
            for pair in payload:
                if type(pair) is not list or len(pair) != 2:
                    raise ValueError("malformed dict entry")
                result[decode(pair[0], depth + 1)] = decode(pair[1], depth + 1)
            return result
    raise ValueError("malformed plain-data value (tag %r)" % tag)


# ---------------------------------------------------------------- seccomp

_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# syscalls denied with EPERM: debugging other processes, namespaces and mounts, raising limits,
# kernel modules and keys, BPF, perf, clocks, reboot, swap, userfaultfd
_DENIED = {
    "x86_64": [101, 165, 166, 272, 308, 155, 161, 160, 310, 311, 246, 175, 313, 176, 321, 298, 250, 248, 249, 169,
               167, 168, 163, 164, 227, 323, 304, 303, 172, 173],
    "aarch64": [117, 40, 39, 97, 268, 41, 51, 164, 270, 271, 104, 105, 273, 106, 280, 241, 219, 217, 218, 142,
                224, 225, 89, 170, 112, 282, 265, 264],
}
_NR = {
    "x86_64": {"socket": 41, "socketpair": 53, "clone": 56, "clone3": 435, "prlimit64": 302},
    "aarch64": {"socket": 198, "socketpair": 199, "clone": 220, "clone3": 435, "prlimit64": 261},
}
_CLONE_NEW = 0x00020000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x04000000 | 0x08000000 | 0x02000000
_RET_ALLOW, _RET_KILL = 0x7FFF0000, 0x80000000


def _errno(code):
    return 0x00050000 | code


def seccomp_filter(machine):
    """BPF program: (code, jt, jf, k) tuples."""
    ld, jeq, jset, ret = 0x20, 0x15, 0x45, 0x06
    nr = _NR[machine]
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, _AUDIT_ARCH[machine]), (ret, 0, 0, _RET_KILL), (ld, 0, 0, 0)]
    if machine == "x86_64":  # the x32 ABI would bypass the syscall numbers below
        prog += [(0x35, 0, 1, 0x40000000), (ret, 0, 0, _RET_KILL)]
    for number in _DENIED[machine]:
        prog += [(jeq, 0, 1, number), (ret, 0, 0, _errno(1))]
    for name in ("socket", "socketpair"):  # only Unix-domain sockets
        prog += [(jeq, 0, 4, nr[name]), (ld, 0, 0, 16), (jeq, 1, 0, 1), (ret, 0, 0, _errno(97)), (ret, 0, 0, _RET_ALLOW),
                 (ld, 0, 0, 0)]
    prog += [(jeq, 0, 3, nr["clone"]), (ld, 0, 0, 16), (jset, 0, 1, _CLONE_NEW), (ret, 0, 0, _errno(1)), (ld, 0, 0, 0)]
    prog += [(jeq, 0, 1, nr["clone3"]), (ret, 0, 0, _errno(38))]  # ENOSYS: libc falls back to clone
    # prlimit64(pid, resource, new, old): reading limits (new == NULL) is fine, setting them is not
    prog += [(jeq, 0, 5, nr["prlimit64"]), (ld, 0, 0, 32), (jeq, 0, 2, 0), (ld, 0, 0, 36), (jeq, 1, 0, 0),
             (ret, 0, 0, _errno(1)), (ret, 0, 0, _RET_ALLOW)]
    prog += [(ret, 0, 0, _RET_ALLOW)]
    return prog


def install_seccomp():
    """Install the filter on this process (inherited by every child); returns an error text or None."""
    machine = platform.machine()
    if machine not in _AUDIT_ARCH:
        return "seccomp: unsupported architecture %s" % machine

    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

    program = seccomp_filter(machine)
    filters = (SockFilter * len(program))(*[SockFilter(*instruction) for instruction in program])
    fprog = SockFprog(len(program), filters)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        return "seccomp: PR_SET_NO_NEW_PRIVS failed (errno %d)" % ctypes.get_errno()
    if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        return "seccomp: filter rejected (errno %d)" % ctypes.get_errno()
    return None


# ---------------------------------------------------------------- serving


class Channel:
    def __init__(self):
        self.reader = os.fdopen(os.dup(0), "rb", buffering=0)
        self.writer = os.fdopen(os.dup(1), "wb", buffering=0)
        self._buffer = b""

    def receive(self):
        while b"\n" not in self._buffer:
            chunk = self.reader.read(1 << 16)
            if not chunk:
                raise EOFError
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def send(self, message):
        self.writer.write(json.dumps(message).encode() + b"\n")


def _error(kind, exc):
    return {"error": kind, "type": type(exc).__name__, "message": str(exc)[:2000],
            "traceback": "".join(traceback.format_exception(exc))[-4000:]}


def _classify(exc):
    return "memory_exceeded" if isinstance(exc, MemoryError) else "runtime_error"


class Candidate:
    def __init__(self):
        self.code = None
        self.namespace = {}
        self.mode = "function"

    def load(self, message):
        self.mode = message.get("mode", "function")
        if message.get("recursion_limit"):
            sys.setrecursionlimit(int(message["recursion_limit"]))
        if message.get("int_max_str_digits") is not None and hasattr(sys, "set_int_max_str_digits"):
            sys.set_int_max_str_digits(int(message["int_max_str_digits"]))
        source = message.get("preamble", "") + message["source"]
        try:
            self.code = compile(source, "<candidate>", "exec")
        except (SyntaxError, ValueError, OverflowError, MemoryError) as exc:
            return _error("compile_error" if not isinstance(exc, MemoryError) else "memory_exceeded", exc)
        if self.mode == "stdio":
            return {"ok": True, "callables": []}
        self.namespace = {"__name__": "__candidate__", "__builtins__": __builtins__}
        try:
            exec(self.code, self.namespace)
        except BaseException as exc:  # noqa: BLE001 - SystemExit from candidate code included
            return _error(_classify(exc), exc)
        names = sorted(k for k, v in self.namespace.items() if callable(v) and not k.startswith("__"))
        return {"ok": True, "callables": names}

    def call(self, message):
        target = message["target"]
        try:
            if "." in target:
                owner, method = target.split(".", 1)
                function = getattr(self.namespace[owner](), method)
            else:
                function = self.namespace[target]
            args = decode(message["args"])
            kwargs = decode(message["kwargs"])
        except BaseException as exc:  # noqa: BLE001
            return _error("runtime_error", exc)
        try:
            result = function(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001
            return _error("exception" if not isinstance(exc, MemoryError) else "memory_exceeded", exc)
        try:
            return {"ok": encode(result)}
        except NotPlainData as exc:
            return {"error": "not_plain", "type": "NotPlainData", "message": str(exc)}
        except RecursionError as exc:
            return {"error": "not_plain", "type": "RecursionError", "message": str(exc)}

    def run_asserts(self, message):
        results = []
        for test in message["tests"]:
            try:
                exec(compile(test, "<test>", "exec"), self.namespace)
                results.append({"passed": True})
            except BaseException as exc:  # noqa: BLE001
                results.append({"passed": False, "type": type(exc).__name__, "message": str(exc)[:500]})
        return {"ok": results}

    def run_stdio(self, message):
        stdin_read, stdin_write = os.pipe()
        out_read, out_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: the program as __main__
            try:
                os.close(stdin_write)
                os.close(out_read)
                os.dup2(stdin_read, 0)
                os.dup2(out_write, 1)
                # closefd=False: the replaced wrappers must not close fds 0/1 when collected
                sys.stdin = open(0, "r", encoding="utf-8", errors="replace", closefd=False)
                sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
                exec(self.code, {"__name__": "__main__", "__builtins__": __builtins__})
                sys.stdout.flush()
                os._exit(0)
            except SystemExit as exc:
                try:
                    sys.stdout.flush()
                except BaseException:  # noqa: BLE001
                    pass
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                os._exit(code)
            except MemoryError:
                os._exit(MEMORY_EXIT_CODE)
            except BaseException:  # noqa: BLE001
                traceback.print_exc()
                os._exit(1)
        os.close(stdin_read)
        os.close(out_write)
        data = message.get("stdin", "").encode()
        cap = int(message.get("output_cap", 1 << 20))
        output, truncated, written = b"", False, 0
        os.set_blocking(stdin_write, False)
        writers = [stdin_write] if data else []
        if not data:
            os.close(stdin_write)
        readers = [out_read]
        while readers:
            ready_r, ready_w, _ = select.select(readers, writers, [])
            for fd in ready_w:
                try:
                    written += os.write(fd, data[written : written + (1 << 16)])
                except (BrokenPipeError, BlockingIOError):
                    written = len(data)
                if written >= len(data):
                    os.close(fd)
                    writers = []
            for fd in ready_r:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    readers = []
                    break
                output += chunk
                if len(output) > cap:
                    truncated = True
                    os.kill(pid, signal.SIGKILL)
                    readers = []
                    break
        for fd in writers:
            os.close(fd)
        os.close(out_read)
        _, status = os.waitpid(pid, 0)
        return {"ok": {
            "stdout": output[:cap].decode("utf-8", errors="replace"),
            "truncated": truncated,
            "exit_code": os.waitstatus_to_exitcode(status),
        }}


def main():
    channel = Channel()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    log, _ = tempfile.mkstemp(prefix="candidate_output_", suffix=".txt")
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    setup = channel.receive()
    seccomp_error = install_seccomp() if setup.get("seccomp") else None
    channel.send({"ready": True, "seccomp": setup.get("seccomp") and seccomp_error is None, "seccomp_error": seccomp_error,
                  "uid": os.getuid(), "pid": os.getpid()})
    candidate = Candidate()
    handlers = {"load": candidate.load, "call": candidate.call, "run_stdio": candidate.run_stdio,
                "run_asserts": candidate.run_asserts}
    while True:
        try:
            message = channel.receive()
        except EOFError:
            break
        if message.get("op") == "exit":
            break
        handler = handlers.get(message.get("op"))
        if handler is None:
            channel.send({"error": "protocol", "message": "unknown op %r" % message.get("op")})
            continue
        try:
            channel.send(handler(message))
        except MemoryError as exc:
            channel.send(_error("memory_exceeded", exc))
    os._exit(0)


if __name__ == "__main__":
    main()
