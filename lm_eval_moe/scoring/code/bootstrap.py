"""Trusted bootstrap that runs INSIDE the sandbox (``python -I bootstrap.py``) in front of candidate code.

It is self-contained (standard library only) because the sandbox sees nothing of this package. It runs as a
zygote: started once per worker slot, it waits for checks, and for every check the host
asks for, forks a fresh child that serves that one check and dies; the zygote never runs candidate code.
After each check it kills every other process of the sandbox, wipes the scratch directories and removes
System V IPC objects, so every check starts from the same clean state at the cost of a fork, not of a new
namespace and interpreter.

Control (host <-> zygote): a Unix SEQPACKET socket whose descriptor number is the first argument; one JSON
object per packet. ``{"op": "setup", ...}`` (once), ``{"op": "check"}`` with a fresh stream socket attached
(SCM_RIGHTS) -> a child serves the check on it; ``{"op": "end"}`` -> the check's processes are killed and
cleaned, answered ``{"clean": true, "status": <wait status of the check's child>}``; ``{"op": "exit"}``.

Check channel (host judge <-> child), one JSON object per line:

* ``load``: compile the candidate (and, in function mode, run its module body);
* ``call``: call a candidate function (or ``Class.method`` on a fresh instance) on plain-data arguments and
  return plain data; anything else is an error, never a value;
* ``run_stdio``: run the program as ``__main__`` in a forked child with the given stdin and return its
  (capped) stdout;
* ``run_asserts``: the fallback for tests that need candidate-defined objects: run assertion strings in
  the candidate's namespace (these verdicts are forgeable, and reported as such);
* ``exit``.

The judge never trusts what comes back beyond its plain-data value: verdicts are computed outside. The
codec (:func:`encode` / :func:`decode`) is shared with the judge, which imports this module.
"""

import base64
import ctypes
import errno
import json
import os
import platform
import resource
import select
import signal
import socket
import sys
import time
import traceback

MAX_DEPTH = 64
MEMORY_EXIT_CODE = 120  # a stdio child that ran out of memory
OUTPUT_LIMIT_EXIT_CODE = 121  # a stdio child whose writes hit the file-size limit
CHANNEL_FD = 3  # the check channel inside a check child

# ---------------------------------------------------------------- plain-data codec


class NotPlainData(TypeError):
    """A value that is not plain data (int, float, str, bytes, bool, None, list, tuple, dict, set,
    frozenset, complex), with exact types: subclasses are refused."""


def encode(value, depth=0):
    """Plain data as JSON-ready tags. Integers travel in hex: decimal conversion of ints over 4,300 digits
    is refused by Python (``sys.set_int_max_str_digits``), power-of-two bases are not limited."""
    if depth > MAX_DEPTH:
        raise NotPlainData("value nested deeper than %d levels" % MAX_DEPTH)
    kind = type(value)
    if value is None:
        return {"n": None}
    if kind is bool:
        return {"t": value}
    if kind is int:
        return {"i": format(value, "x")}
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
    if type(text) is not str or len(text) > 64 or (
            text not in ("inf", "-inf", "nan") and not all(c in "0123456789.eE+-" for c in text)):
        raise ValueError("bad float %r" % (text,))
    return float(text)


_HEX = frozenset("0123456789abcdef")


def _int(text):
    digits = text[1:] if text.startswith("-") else text
    if not digits or len(digits) > 1 << 20 or not _HEX.issuperset(digits):
        raise ValueError("bad integer")
    return int(text, 16)


def decode(obj, depth=0):
    """Inverse of :func:`encode`; rejects anything malformed (the judge decodes untrusted output)."""
    if depth > MAX_DEPTH or type(obj) is not dict or len(obj) != 1:
        raise ValueError("malformed plain-data value")
    (tag, payload), = obj.items()
    if tag == "n" and payload is None:
        return None
    if tag == "t" and type(payload) is bool:
        return payload
    if tag == "i" and type(payload) is str:
        return _int(payload)
    if tag == "f":
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
    raise ValueError("malformed plain-data value (tag %r)" % (tag,))


# ---------------------------------------------------------------- seccomp

_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# syscalls denied with EPERM: debugging other processes, namespaces and mounts, raising limits, kernel
# modules and keys, BPF, perf, clocks, reboot, swap, userfaultfd, and io_uring (its operations bypass the
# per-syscall rules below: it opens inet sockets without a socket() call)
_DENIED = {
    "x86_64": [101, 165, 166, 272, 308, 155, 161, 160, 310, 311, 246, 175, 313, 176, 321, 298, 250, 248, 249, 169,
               167, 168, 163, 164, 227, 323, 304, 303, 172, 173, 425, 426, 427],
    "aarch64": [117, 40, 39, 97, 268, 41, 51, 164, 270, 271, 104, 105, 273, 106, 280, 241, 219, 217, 218, 142,
                224, 225, 89, 170, 112, 282, 265, 264, 425, 426, 427],
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


# ---------------------------------------------------------------- one check (in a forked child)


class Channel:
    """The check's stream socket: newline-delimited JSON (linear in the message size both ways)."""

    def __init__(self, fd):
        self.fd = fd
        self._buffer = bytearray()
        self._scanned = 0

    def receive(self):
        while True:
            newline = self._buffer.find(b"\n", self._scanned)
            if newline != -1:
                break
            self._scanned = len(self._buffer)
            chunk = os.read(self.fd, 1 << 20)
            if not chunk:
                raise EOFError
            self._buffer += chunk
        line = bytes(self._buffer[:newline])
        del self._buffer[: newline + 1]
        self._scanned = 0
        return json.loads(line)

    def send(self, message):
        data = memoryview(json.dumps(message).encode() + b"\n")
        while data:
            data = data[os.write(self.fd, data):]


def _error(kind, exc):
    return {"error": kind, "type": type(exc).__name__, "message": str(exc)[:2000],
            "traceback": "".join(traceback.format_exception(exc))[-4000:]}


def _kind(exc, default):
    """The error kind of an exception: resource exhaustion is named as such, never as the program's error."""
    if isinstance(exc, MemoryError):
        return "memory_exceeded"
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:  # RLIMIT_FSIZE (Python ignores SIGXFSZ)
        return "output_limit_exceeded"
    return default


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
        except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError) as exc:
            return _error(_kind(exc, "compile_error"), exc)
        if self.mode == "stdio":
            return {"ok": True, "callables": []}
        self.namespace = {"__name__": "__candidate__", "__builtins__": __builtins__}
        try:
            exec(self.code, self.namespace)
        except BaseException as exc:  # noqa: BLE001 - SystemExit from candidate code included
            return _error(_kind(exc, "runtime_error"), exc)
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
            return _error(_kind(exc, "runtime_error"), exc)
        try:
            result = function(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001
            return _error(_kind(exc, "exception"), exc)
        try:
            return {"ok": encode(result)}
        except (NotPlainData, RecursionError) as exc:
            return {"error": "not_plain", "type": type(exc).__name__, "message": str(exc)[:500]}

    def run_asserts(self, message):
        results = []
        for test in message["tests"]:
            try:
                exec(compile(test, "<test>", "exec"), self.namespace)
                results.append({"passed": True})
            except BaseException as exc:  # noqa: BLE001
                results.append({"passed": False, "type": type(exc).__name__, "message": str(exc)[:500]})
        return {"ok": results}

    def _stdio_child(self, stdin_read, stdin_write, out_read, out_write):
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
            os._exit(exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1))
        except MemoryError:
            os._exit(MEMORY_EXIT_CODE)
        except OSError as exc:
            os._exit(OUTPUT_LIMIT_EXIT_CODE if exc.errno == errno.EFBIG else 1)
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
            os._exit(1)

    def run_stdio(self, message):
        stdin_read, stdin_write = os.pipe()
        out_read, out_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: the program as __main__
            self._stdio_child(stdin_read, stdin_write, out_read, out_write)
        os.close(stdin_read)
        os.close(out_write)
        data = memoryview(message.get("stdin", "").encode())
        cap = int(message.get("output_cap", 1 << 20))
        output, truncated, written = bytearray(), False, 0
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
            "stdout": bytes(output[:cap]).decode("utf-8", errors="replace"),
            "truncated": truncated,
            "exit_code": os.waitstatus_to_exitcode(status),
        }}


def _set_limits(limits):
    """Per-check resource limits, set in the check's child before any candidate code (lowering is allowed;
    the seccomp filter forbids raising them again)."""
    names = {"cpu": resource.RLIMIT_CPU, "as": resource.RLIMIT_AS, "fsize": resource.RLIMIT_FSIZE,
             "nproc": resource.RLIMIT_NPROC, "nofile": resource.RLIMIT_NOFILE, "stack": resource.RLIMIT_STACK,
             "core": resource.RLIMIT_CORE}
    for name, (soft, hard) in limits.items():
        resource.setrlimit(names[name], (soft, hard))


def serve_check(channel_fd, setup):
    """The body of a check's child: bound resources, become the sandbox user, redirect the candidate's own
    output into the scratch directory, install the seccomp filter (last: it forbids setting limits), then
    answer the judge until it says exit."""
    os.dup2(channel_fd, CHANNEL_FD)
    os.closerange(CHANNEL_FD + 1, 1 << 16)
    os.setsid()
    _set_limits(setup.get("limits", {}))
    uid = setup.get("uid")
    if uid is not None and os.getuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    os.umask(0o077)
    work = os.path.join(setup["scratch"], "check")
    os.makedirs(work, exist_ok=True)
    os.chdir(work)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    log = os.open(os.path.join(work, "candidate_output.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    os.environ.update({"HOME": work, "TMPDIR": work})
    seccomp_error = install_seccomp() if setup.get("seccomp") else "seccomp off (mode=none)"
    channel = Channel(CHANNEL_FD)
    channel.send({"ready": True, "uid": os.getuid(), "pid": os.getpid(), "seccomp": seccomp_error is None,
                  "seccomp_error": seccomp_error})
    candidate = Candidate()
    handlers = {"load": candidate.load, "call": candidate.call, "run_stdio": candidate.run_stdio,
                "run_asserts": candidate.run_asserts}
    while True:
        try:
            message = channel.receive()
        except (EOFError, ValueError, RecursionError):
            break
        op = message.get("op") if type(message) is dict else None
        if op == "exit":
            break
        handler = handlers.get(op)
        if handler is None:
            channel.send({"error": "protocol", "message": "unknown op %r" % (op,)})
            continue
        try:
            channel.send(handler(message))
        except BaseException as exc:  # noqa: BLE001 - e.g. MemoryError while answering
            try:
                channel.send(_error(_kind(exc, "runtime_error"), exc))
            except BaseException:  # noqa: BLE001
                break
    os._exit(0)


# ---------------------------------------------------------------- the zygote


def _others(keep):
    """Processes of the sandbox's PID namespace other than ``keep`` (its /proc shows only the namespace)."""
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit() and int(entry) not in keep]


def _processes_of(uid, keep):
    """Processes whose real uid is ``uid`` (outside a PID namespace: the host's), other than ``keep``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in keep:
            continue
        try:
            with open("/proc/%s/status" % entry) as status:
                uids = next(line for line in status if line.startswith("Uid:")).split()[1:]
        except (OSError, StopIteration):
            continue
        if uid in (int(uids[0]), int(uids[2])):
            found.append(int(entry))
    return found


def _kill_until_gone(remaining, keep=()):
    """SIGKILL through kill(-1) (it spares the caller and PID 1, and reaches only the processes this uid may
    signal), until ``remaining`` finds none, a fork bomb included; reap what is ours. False if some process
    would not die (the host then ends the whole sandbox)."""
    keep = {1, os.getpid(), *keep}
    for _ in range(5000):
        try:
            os.kill(-1, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        _reap()
        if not remaining(keep):
            return True
        time.sleep(0.001)
    return False


def _reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


_WIPE_PREFIX = ".lm_eval_moe_wipe_"


def _stat_at(directory_fd, name):
    try:
        return os.stat(name, dir_fd=directory_fd, follow_symlinks=False)
    except OSError:
        return None


def _wipe(directory, keep=frozenset()):
    """Remove everything under ``directory`` that belongs to this user except the names in ``keep``, never
    following links and never entering another file system (a bind mount), whatever the depth: directories
    are emptied through descriptors (no path is ever longer than one name), and the subdirectories of each
    are first moved up to ``directory`` itself, so a chain deeper than PATH_MAX is flattened one level per
    pass and every entry is visited once."""
    uid = os.getuid()
    try:
        top = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return
    moved = 0
    try:
        device = os.fstat(top).st_dev
        pending = [entry.name for entry in os.scandir(top) if entry.name not in keep]
        while pending:
            name = pending.pop()
            info = _stat_at(top, name)
            if info is None or info.st_uid != uid or info.st_dev != device:
                continue
            if info.st_mode & 0o170000 != 0o040000:  # not a directory
                try:
                    os.unlink(name, dir_fd=top)
                except OSError:
                    pass
                continue
            try:
                os.chmod(name, 0o700, dir_fd=top)  # a directory the check made unreadable
                child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top)
            except OSError:
                continue
            try:
                for entry in os.scandir(child):
                    inner = _stat_at(child, entry.name)
                    if inner is None or inner.st_uid != uid or inner.st_dev != device:
                        continue
                    if inner.st_mode & 0o170000 != 0o040000:
                        try:
                            os.unlink(entry.name, dir_fd=child)
                        except OSError:
                            pass
                        continue
                    while True:  # up to the top, under a name no entry there has
                        moved += 1
                        target = "%s%d" % (_WIPE_PREFIX, moved)
                        if _stat_at(top, target) is None:
                            break
                    try:
                        os.rename(entry.name, target, src_dir_fd=child, dst_dir_fd=top)
                        pending.append(target)
                    except OSError:
                        pass
            except OSError:
                pass
            finally:
                os.close(child)
            try:
                os.rmdir(name, dir_fd=top)
            except OSError:
                pass
    except OSError:
        pass
    finally:
        os.close(top)


def _owner(path):
    try:
        return os.lstat(path).st_uid
    except OSError:
        return None


def _left_in(directory, keep=frozenset()):
    """Entries of this user still in ``directory``, but the names in ``keep``."""
    try:
        entries = os.listdir(directory)
    except OSError:
        return []
    uid = os.getuid()
    return [name for name in entries if name not in keep and _owner(os.path.join(directory, name)) == uid]


def _unescape_mount(field):
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def scratch_layout(roots):
    """What a wipe must leave standing under each scratch root: the directories the sandbox itself made to
    hold its mounts (an interpreter under /tmp is bound on top of the private /tmp). Returns {directory to
    wipe: names in it to keep}; a mount below a root is never entered."""
    try:
        with open("/proc/self/mountinfo") as listing:
            mounts = [_unescape_mount(line.split()[4]) for line in listing]
    except OSError:
        mounts = []
    layout = {root: set() for root in roots}
    for mount in mounts:
        for root in roots:
            if not mount.startswith(root.rstrip("/") + "/"):
                continue
            directory = root
            for part in mount[len(root.rstrip("/")) + 1 :].split("/"):
                layout.setdefault(directory, set()).add(part)
                directory = os.path.join(directory, part)
    mount_points = set(mounts)
    return {directory: frozenset(keep) for directory, keep in layout.items()
            if directory in roots or directory not in mount_points}


#: /proc/sysvipc table -> (owner uid column, creator uid column, IPC_RMID call)
def _ipc_tables():
    libc = ctypes.CDLL(None, use_errno=True)
    return {"shm": (7, 9, lambda i: libc.shmctl(i, 0, None)), "sem": (4, 6, lambda i: libc.semctl(i, 0, 0)),
            "msg": (7, 9, lambda i: libc.msgctl(i, 0, None))}


def _ipc_objects(mine_only):
    """System V IPC objects (table, id) visible here: all of them, or those this user owns or created (a
    program may give an object away with IPC_SET, but never change its creator)."""
    uid, objects = os.getuid(), []
    for table, (owner, creator, _) in _ipc_tables().items():
        try:
            with open("/proc/sysvipc/" + table) as listing:
                rows = [line.split() for line in listing.read().splitlines()[1:]]
        except OSError:
            continue
        for fields in rows:
            if len(fields) > creator and (not mine_only or uid in (int(fields[owner]), int(fields[creator]))):
                objects.append((table, int(fields[1])))
    return objects


def _remove_ipc():
    """System V shared memory, semaphores and message queues this user owns or created (they outlive
    processes); the creator may remove an object whose owner it changed."""
    tables = _ipc_tables()
    for table, identifier in _ipc_objects(mine_only=True):
        tables[table][2](identifier)


def _kill_check(setup, child):
    """End every process of a check: the whole PID namespace but the zygote when there is one; outside one,
    every process of the check's dedicated uid (run by the cleaner as that uid, see :func:`clean`); else the
    check's own session (a double-forked daemon may survive, as the layer report says)."""
    if setup.get("pid_namespace"):
        return _kill_until_gone(lambda keep: _others(keep))
    try:
        os.killpg(child, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    _reap()
    return True


def _clear(setup):
    """Run as the check's uid once its processes are gone: remove its files, IPC objects and message queues,
    then make sure none is left (False otherwise: the host ends the sandbox, taking its tmpfs and IPC
    namespace with it). Shared host places (the fallback without file-system isolation) are swept only of
    what the run's dedicated uid owns, and never as root or as the harness's own user."""
    dedicated = setup.get("dedicated_uid") is not None and os.getuid() == setup["dedicated_uid"]
    places = dict(setup["layout"])
    if dedicated:
        places.update({directory: frozenset() for directory in setup.get("sweep", ())})
    mqueue = setup.get("mqueue")
    if mqueue and (setup.get("mqueue_private") or dedicated):
        places[mqueue] = frozenset()
    for directory, keep in places.items():
        _wipe(directory, keep)
    private_ipc = bool(setup.get("ipc_namespace"))
    if private_ipc or dedicated:
        _remove_ipc()
    if any(_left_in(directory, keep) for directory, keep in places.items()):
        return False
    return not (private_ipc or dedicated) or not _ipc_objects(mine_only=not private_ipc)


def clean(setup, child):
    """After a check: nothing of it survives (False if something would not die or would not go). The host
    decides what may be wiped: see :func:`_clear`."""
    if not _kill_check(setup, child):
        return False
    uid = setup.get("uid")
    if uid is not None and os.getuid() == 0:  # everything left belongs to the check's uid: clean as that uid
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                if setup.get("pid_namespace"):
                    gone = _kill_until_gone(lambda keep: _others({*keep, os.getppid()}), keep=(os.getppid(),))
                else:  # the host's PID space: every process of the dedicated uid is the check's
                    gone = _kill_until_gone(lambda keep: _processes_of(uid, keep))
                code = 0 if gone and _clear(setup) else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        return status == 0 and _kill_check(setup, child)
    return _clear(setup)


def zygote(control_fd):
    control = socket.socket(fileno=control_fd)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)  # stderr stays: the host reads it when the zygote fails to start
    setup = json.loads(control.recv(1 << 16))
    setup["layout"] = scratch_layout(setup.get("wipe", ()))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: no /proc/<zygote>/mem or fd access for the checks
    control.send(json.dumps({"ready": True, "uid": os.getuid(), "pid": os.getpid()}).encode())
    child, status = None, None
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(control, 1 << 16, 1)
        except OSError:
            break
        if not data:
            break
        message = json.loads(data)
        op = message.get("op")
        if op == "check" and fds:
            status = None
            child = os.fork()
            if child == 0:
                try:
                    control.close()
                    serve_check(fds[0], setup)
                except BaseException:  # noqa: BLE001 - before the redirect, stderr is the host's pipe
                    traceback.print_exc()
                finally:
                    os._exit(1)
            os.close(fds[0])
        elif op == "end":
            if child is not None:
                try:
                    os.kill(child, signal.SIGKILL)  # no effect on a child that already died: its status stays
                except ProcessLookupError:
                    pass
                _, status = os.waitpid(child, 0)
                cleaned = clean(setup, child)
                child = None
            else:
                cleaned = True
            control.send(json.dumps({"clean": cleaned, "status": status}).encode())
        elif op == "exit":
            break
        else:
            for fd in fds:
                os.close(fd)
            control.send(json.dumps({"error": "protocol", "message": "unknown op %r" % (op,)}).encode())
    os._exit(0)


if __name__ == "__main__":
    zygote(int(sys.argv[1]))
