"""The sandbox around model-written code (docs/SANDBOX.md), host side.

Each worker slot keeps one ZYGOTE: a sandboxed ``python -I bootstrap.py`` started once, which forks a
fresh child per check and cleans up after it (``bootstrap.py``). The namespaces and the interpreter start
are paid once per slot; every check still begins from the same clean state.

Layers, probed once at start-up and reported in one log line and in every execution result:

1. always: a fresh interpreter running the trusted bootstrap, an allow-listed environment, only the
   control socket inherited, the candidate's own output kept inside the sandbox, the deadline enforced
   here; rlimits (CPU seconds, address space, file size, processes, open files, stack) per check;
2. namespaces with bubblewrap: no network, own PID namespace (every process of a check dies with it,
   double-forked daemons included), read-only system, private size-bounded tmpfs for /tmp and /dev/shm,
   no host home, repository or data. Fallback only where bubblewrap is ABSENT: ``unshare`` (PID, network,
   IPC namespaces; the file system is NOT isolated, and verdicts say ``forgeable``), then none. A layer
   that is installed but fails raises :class:`SandboxUnavailable` with its real error;
3. when started as root: a uid of this run per worker slot (random, unused), so rlimits bind and neither
   another slot nor another run on the machine shares it;
4. seccomp (installed by the bootstrap): no non-Unix sockets, io_uring, ptrace, mounts or namespaces, no
   raising of limits;
5. cgroups where writable: ``pids.max`` and a memory limit per worker slot, under a name of this run,
   removed at exit.

``mode="strict"`` refuses to run unless every layer is active; ``mode="none"`` (debugging only) runs the
bootstrap without namespaces or seccomp and says so on every sample.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import random
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

SandboxMode = Literal["auto", "strict", "allow_no_namespaces", "none"]
SANDBOX_MODES = ("auto", "strict", "allow_no_namespaces", "none")
BOOTSTRAP = Path(__file__).with_name("bootstrap.py")
#: uids of the checks are drawn from here, one block per run (far above ordinary and container-mapped ids)
UID_RANGE = (1 << 20, (1 << 31) - (1 << 16))
MAX_MESSAGE_DEPTH = 200  # nesting of one JSON message from the sandbox (values: 64 in the codec)
CONTROL_TIMEOUT = 30.0  # seconds the zygote may take to start or to clean up after a check


class SandboxUnavailable(RuntimeError):
    """The requested isolation cannot be provided on this machine."""


class SandboxStartError(RuntimeError):
    """Our infrastructure failed to start a sandbox (counted as sandbox_error, never as the model's)."""


class SandboxDied(RuntimeError):
    """The check's process ended while we waited for an answer."""

    def __init__(self, wait_status: int | None, detail: str = "") -> None:
        super().__init__(f"sandbox ended (wait status {wait_status}) {detail}".strip())
        self.wait_status = wait_status


class SandboxTimeout(RuntimeError):
    """The wall-clock deadline passed."""


class ResponseTooLarge(RuntimeError):
    """The sandbox sent more than the response cap."""


class ProtocolError(RuntimeError):
    """The sandbox sent something that is not a message of the protocol (malformed, too deep)."""


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int = 10
    wall_seconds: float = 30.0
    memory_bytes: int = 4 << 30
    file_bytes: int = 64 << 20
    processes: int = 256
    open_files: int = 256
    stack_bytes: int = 64 << 20  # also every thread's stack size (glibc): keep it moderate
    response_bytes: int = 64 << 20
    scratch_bytes: int = 512 << 20  # each of the sandbox's private /tmp and /dev/shm (bounded without cgroups too)

    def rlimits(self) -> dict[str, list[int]]:
        """Per-check rlimits (soft, hard): SIGXCPU at the CPU soft limit (a timeout), SIGKILL a second later."""
        return {"cpu": [self.cpu_seconds, self.cpu_seconds + 1], "as": [self.memory_bytes] * 2,
                "fsize": [self.file_bytes] * 2, "nproc": [self.processes] * 2, "nofile": [self.open_files] * 2,
                "stack": [self.stack_bytes] * 2, "core": [0, 0]}


@dataclass
class Layers:
    namespaces: str = "none"  # bwrap | unshare | none
    uid_drop: bool = False
    seccomp: bool = False
    rlimits: bool = True  # set by the bootstrap in every check
    cgroups: list[str] = field(default_factory=list)  # writable controllers
    notes: list[str] = field(default_factory=list)

    @property
    def filesystem_isolated(self) -> bool:
        return self.namespaces == "bwrap"

    def describe(self) -> str:
        parts = [
            f"namespaces={self.namespaces}",
            f"uid_drop={'yes' if self.uid_drop else 'no'}",
            f"seccomp={'yes' if self.seccomp else 'no'}",
            f"rlimits={'yes' if self.rlimits else 'no'}",
            f"cgroups={','.join(self.cgroups) or 'no'}",
        ]
        text = "sandbox layers: " + " ".join(parts)
        return text + ("; " + "; ".join(self.notes) if self.notes else "")

    @property
    def complete(self) -> bool:
        is_root = os.geteuid() == 0
        return (self.namespaces == "bwrap" and (self.uid_drop or not is_root) and self.seccomp and self.rlimits
                and bool(self.cgroups))


# ---------------------------------------------------------------- per-run resources


def _uids_in_use() -> set[int]:
    used = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as status:
                    used.update(int(v) for line in status if line.startswith("Uid:") for v in line.split()[1:])
            except OSError:
                continue
    return used


def _free_uid_block(size: int) -> int:
    """The first uid of ``size`` consecutive uids no process uses, drawn at random (another run on the machine
    draws its own block: a clash needs the same draw of about 2**31)."""
    used = _uids_in_use()
    while True:
        base = random.SystemRandom().randrange(UID_RANGE[0], UID_RANGE[1] - size)
        if not any(base <= uid < base + size for uid in used):
            return base


def _own_cgroup_parents() -> dict[str, Path]:
    """Where this process may create cgroups: v2 (one directory) or v1 (pids and memory controllers)."""
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():
        own = Path(open("/proc/self/cgroup").read().strip().split("::")[-1].strip() or "/")
        return {"unified": root / own.relative_to("/")}
    parents = {}
    for controller in ("pids", "memory"):
        base = root / controller
        if base.is_dir():
            own = next((line.split(":", 2)[2] for line in open("/proc/self/cgroup") if f":{controller}:" in line), "/")
            parents[controller] = base / own.strip().lstrip("/")
    return parents


def _kill_cgroup(directory: Path) -> int:
    """SIGKILL whatever is left in a cgroup; returns how many processes were found."""
    try:
        pids = [int(p) for p in (directory / "cgroup.procs").read_text().split()]
    except OSError:
        return 0
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)


class RunCgroups:
    """This run's cgroups, ``lm_eval_moe.<pid>.<random>/slot<N>``: limits per worker slot, names no other run
    shares, removed (after killing what is left) when the run ends."""

    def __init__(self, slots: int, limits: Limits) -> None:
        self.name = f"lm_eval_moe.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self.runs: dict[str, Path] = {}
        self.slots: dict[int, dict[str, Path]] = {slot: {} for slot in range(slots)}
        settings = {"unified": {"pids.max": str(limits.processes), "memory.max": str(limits.memory_bytes + (256 << 20))},
                    "pids": {"pids.max": str(limits.processes)},
                    "memory": {"memory.limit_in_bytes": str(limits.memory_bytes + (256 << 20))}}
        for controller, parent in _own_cgroup_parents().items():
            run = parent / self.name
            try:
                run.mkdir(parents=False)
                if controller == "unified":
                    (run / "cgroup.subtree_control").write_text("+pids +memory")
                for slot in range(slots):
                    directory = run / f"slot{slot}"
                    directory.mkdir()
                    for key, value in settings[controller].items():
                        (directory / key).write_text(value)
                    self.slots[slot][controller] = directory
                self.runs[controller] = run
            except OSError:
                for slot in range(slots):
                    self.slots[slot].pop(controller, None)
                self._remove(run)
        self.controllers = sorted(self.runs)

    @staticmethod
    def _remove(run: Path, patience: float = 10.0) -> None:
        """Kill what is left, wait until the killed processes are gone (reaped by their new parent), remove."""
        deadline = time.monotonic() + patience
        for directory in [*sorted(run.glob("slot*")), run]:
            while True:
                _kill_cgroup(directory)
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        logger.warning("cannot remove cgroup %s: processes are still in it", directory)
                        break
                    time.sleep(0.01)

    def close(self) -> None:
        for run in self.runs.values():
            self._remove(run)
        self.runs = {}


# ---------------------------------------------------------------- the check channel


class CheckChannel:
    """The judge's end of one check: newline-delimited JSON over a stream socket. Every send and receive is
    bounded by the deadline, checked before every chunk (data that keeps arriving never extends it), and
    costs time linear in the message; every message is bounded in size and depth. Any malformed input raises
    :class:`ProtocolError`; the end of the check's process raises :class:`SandboxDied` with its status."""

    CHUNK = 1 << 20

    def __init__(self, sock: socket.socket, zygote: Zygote, limits: Limits) -> None:
        self.sock, self.zygote, self.limits = sock, zygote, limits
        sock.setblocking(False)
        self._buffer = bytearray()
        self._scanned = 0  # the buffer holds no newline before this offset
        self._selector = selectors.DefaultSelector()

    def _wait(self, events: int, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SandboxTimeout
        self._selector.register(self.sock, events)
        try:
            ready = self._selector.select(timeout=remaining)
        finally:
            self._selector.unregister(self.sock)
        if not ready and time.monotonic() >= deadline:
            raise SandboxTimeout

    def _died(self, detail: str) -> SandboxDied:
        return SandboxDied(self.zygote.end_check(), detail)

    def send(self, message: dict[str, Any], deadline: float) -> None:
        data = memoryview(json.dumps(message).encode() + b"\n")
        while data:
            if time.monotonic() >= deadline:
                raise SandboxTimeout
            try:
                data = data[self.sock.send(data[: self.CHUNK]) :]
            except BlockingIOError:
                self._wait(selectors.EVENT_WRITE, deadline)
            except OSError:
                raise self._died("while sending") from None

    def receive(self, deadline: float) -> dict[str, Any]:
        while (newline := self._buffer.find(b"\n", self._scanned)) == -1:
            self._scanned = len(self._buffer)
            if time.monotonic() >= deadline:
                raise SandboxTimeout
            try:
                chunk = self.sock.recv(self.CHUNK)
            except BlockingIOError:
                self._wait(selectors.EVENT_READ, deadline)
                continue
            except OSError:
                chunk = b""
            if not chunk:
                raise self._died("while receiving")
            self._buffer += chunk
            if len(self._buffer) > self.limits.response_bytes:
                raise ResponseTooLarge
        line = bytes(self._buffer[:newline])
        del self._buffer[: newline + 1]
        self._scanned = 0
        return parse_message(line)

    def request(self, message: dict[str, Any], deadline: float) -> dict[str, Any]:
        self.send(message, deadline)
        return self.receive(deadline)

    def close(self) -> None:
        self._selector.close()
        self.sock.close()


def _depth(text: bytes) -> int:
    """Deepest bracket nesting of a JSON text (brackets inside strings included: an upper bound)."""
    depth = deepest = 0
    for byte in text.translate(None, b'"\\:,0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ -.+\n'):
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    return deepest


def parse_message(line: bytes) -> dict[str, Any]:
    if _depth(line) > MAX_MESSAGE_DEPTH:
        raise ProtocolError(f"message nested deeper than {MAX_MESSAGE_DEPTH} levels")
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise ProtocolError(f"unreadable message ({type(error).__name__})") from None
    if not isinstance(message, dict):
        raise ProtocolError("message is not an object")
    return message


# ---------------------------------------------------------------- zygotes


class Zygote:
    """One sandboxed bootstrap serving a worker slot, one check at a time (see module docstring)."""

    def __init__(self, command: list[str], env: dict[str, str], setup: dict[str, Any], limits: Limits,
                 cgroups: dict[str, Path], scratch: Path | None) -> None:
        self.limits, self.cgroups, self.scratch = limits, cgroups, scratch
        self.control, inside = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = subprocess.Popen(
                [*command, str(inside.fileno())], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, env=env, pass_fds=[inside.fileno()], start_new_session=True, cwd="/",
            )
        except OSError as error:
            self.control.close()
            raise SandboxStartError(f"cannot start the sandbox: {error}") from None
        finally:
            inside.close()
        self._status: int | None = None
        self._in_check = False
        try:
            self._send(setup)
            self.ready = self._receive(time.monotonic() + CONTROL_TIMEOUT)
        except SandboxStartError as error:
            detail = self.stderr_tail()
            self.kill()
            raise SandboxStartError(f"sandbox did not start ({error}): {detail[-800:]}") from None
        if not self.ready.get("ready"):
            self.kill()
            raise SandboxStartError(f"sandbox bootstrap answered {self.ready!r}")

    def _send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        try:
            socket.send_fds(self.control, [json.dumps(message).encode()], fds or [])
        except OSError as error:
            raise SandboxStartError(f"the sandbox's control socket failed: {error}") from None

    def _receive(self, deadline: float) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        self.control.settimeout(max(remaining, 0.001))
        try:
            data = self.control.recv(1 << 16)
        except (OSError, socket.timeout) as error:
            raise SandboxStartError(f"no answer from the sandbox ({type(error).__name__})") from None
        if not data:
            raise SandboxStartError(f"the sandbox ended (exit code {self.process.poll()})")
        try:
            return parse_message(data)
        except ProtocolError as error:
            raise SandboxStartError(str(error)) from None

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def begin_check(self) -> CheckChannel:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._send({"op": "check"}, [theirs.fileno()])
        finally:
            theirs.close()
        self._status, self._in_check = None, True
        return CheckChannel(ours, self, self.limits)

    def end_check(self) -> int | None:
        """Kill and clean what the check left; the wait status of its process (None if unknown). Idempotent
        within a check. A zygote that cannot clean up is killed (the runner starts another)."""
        if not self._in_check:
            return self._status
        self._in_check = False
        try:
            self._send({"op": "end"})
            answer = self._receive(time.monotonic() + CONTROL_TIMEOUT)
            self._status = answer.get("status") if isinstance(answer.get("status"), int) else None
            if not answer.get("clean"):
                raise SandboxStartError(f"cleaning up failed: {answer!r}")
        except SandboxStartError as error:
            logger.warning("sandbox slot restarts: %s", error)
            self.kill()
        return self._status

    def stderr_tail(self) -> str:
        """What the sandbox's start wrote to stderr (bubblewrap's own error text): read once the process has
        ended, waiting for it a moment and killing it if need be, so the text is never lost to a race."""
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill_tree()
        try:
            return self.process.stderr.read(1 << 16).decode(errors="replace")[-4000:]
        except (OSError, ValueError):
            return ""

    def kill_tree(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.process.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def kill(self) -> None:
        """End the whole tree: the PID namespace dies with its init; the slot's cgroups are swept as well."""
        self.kill_tree()
        for directory in self.cgroups.values():
            _kill_cgroup(directory)
        for handle in (self.control, self.process.stderr):
            try:
                handle.close()
            except OSError:
                pass
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def interpreter() -> str:
    """This interpreter's absolute path, ``..`` resolved but links kept (a venv's python is a link whose own
    location tells it its environment): bubblewrap executes the path as given, from ``/``."""
    return os.path.abspath(sys.executable)


#: where a check's POSIX message queues live: a private mqueue mount per sandbox (bwrap --mqueue; unshare
#: mounts one over the host's), so the zygote can see and remove them
MQUEUE = "/dev/mqueue"


class Sandbox:
    """Probes the layers, then builds one zygote per worker slot on demand (see module docstring)."""

    def __init__(self, mode: SandboxMode = "auto", limits: Limits | None = None, workers: int | None = None) -> None:
        if mode not in SANDBOX_MODES:
            raise ValueError(f"sandbox mode {mode!r}: expected one of {', '.join(SANDBOX_MODES)}")
        self.mode = mode
        self.limits = limits or Limits()
        self.workers = workers or os.cpu_count() or 1
        self.is_root = os.geteuid() == 0
        self.layers = Layers()
        # as root, every mode runs model code as uids of this run alone, never as root
        self.uid_base = _free_uid_block(self.workers) if self.is_root else None
        self.cgroups = RunCgroups(self.workers, self.limits) if mode != "none" else None
        self._scratch: dict[int, Path] = {}  # each slot's scratch directory on the host (no bwrap)
        self._closed = threading.Event()
        atexit.register(self.close)
        self._probe()
        if self.layers.notes:
            logger.warning(self.layers.describe())
        else:
            logger.info(self.layers.describe())
        if mode == "strict" and not self.layers.complete:
            self.close()
            raise SandboxUnavailable(f"strict sandbox mode, but not every layer is active: {self.layers.describe()}")

    def uid(self, slot: int) -> int | None:
        return None if self.uid_base is None else self.uid_base + slot

    # ---------------------------------------------------------------- commands
    def _env(self) -> dict[str, str]:
        return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}

    @staticmethod
    def _python(namespaces: str) -> list[str]:
        """Under bubblewrap the bootstrap is bound read-only at /sandbox; otherwise its source travels on the
        command line, because the check's uid may not be able to open anything of this installation (a
        checkout or venv inside a 0700 folder, as ``mktemp -d`` makes them)."""
        if namespaces == "bwrap":
            return [interpreter(), "-I", "/sandbox/bootstrap.py"]
        return [interpreter(), "-I", "-c", BOOTSTRAP.read_text(encoding="utf-8")]

    def _bwrap(self) -> list[str]:
        """bubblewrap applies its mounts in order: the private tmpfs mounts come FIRST, so that an interpreter
        under /tmp (a venv in a temporary checkout) is bound on top of them instead of hidden by them."""
        binds = ["/usr", "/bin", "/lib", "/lib64", "/lib32", "/etc/ld.so.cache", "/etc/alternatives"]
        prefixes = {sys.base_prefix, sys.prefix, str(Path(interpreter()).resolve().parent.parent)}
        command = [
            shutil.which("bwrap") or "bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session",
        ]
        if self.is_root:  # the zygote keeps only what it needs: become the check's uid, end the check's processes
            command += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                        "--cap-add", "CAP_KILL"]
        else:
            command.append("--unshare-user")
        scratch = str(self.limits.scratch_bytes)
        command += ["--proc", "/proc", "--dev", "/dev",
                    "--perms", "1777", "--size", scratch, "--tmpfs", "/tmp",
                    "--perms", "1777", "--size", scratch, "--tmpfs", "/dev/shm", "--mqueue", MQUEUE]
        for path in binds:
            command += ["--ro-bind-try", path, path]
        mounted = {"/proc", "/dev", "/dev/shm", "/tmp", MQUEUE, *binds}
        ancestors = sorted({str(p) for prefix in prefixes for p in Path(prefix).parents if str(p) != "/"}, key=len)
        for directory in ancestors:  # bwrap would create them 0700 root: the dropped uid could not pass
            if directory not in mounted:
                command += ["--perms", "0755", "--dir", directory]
        for prefix in sorted(prefixes):
            command += ["--ro-bind", prefix, prefix]
        command += ["--perms", "0755", "--dir", "/sandbox", "--ro-bind", str(BOOTSTRAP), "/sandbox/bootstrap.py",
                    "--chdir", "/tmp", "--clearenv"]
        for key, value in self._env().items():
            command += ["--setenv", key, value]
        return command + ["--"]

    def _unshare_mqueue(self, slot: int) -> Path:
        """Where the unshare fallback mounts its private mqueue file system: a directory in the slot's scratch
        (empty on the host; the mount exists only in the sandbox's mount namespace)."""
        return self._scratch[slot] / "mqueue"

    def _unshare(self, slot: int) -> list[str]:
        """PID, network, IPC and mount namespaces; a private mqueue mount (else the check's message queues
        could not be seen, or the host's would be); as root, the zygote and its checks run as the slot's uid
        without capabilities."""
        command = [shutil.which("unshare") or "unshare", "--fork", "--pid", "--mount-proc", "--net", "--ipc", "--uts",
                   "--kill-child"]
        if not self.is_root:
            command.append("--map-root-user")
        command += ["--", "/bin/sh", "-c", 'mount -t mqueue mqueue "$0" || exit 97; exec "$@"',
                    str(self._unshare_mqueue(slot))]
        if not self.is_root:
            return command
        uid = self.uid(slot)  # the zygote runs as the slot's uid (it is PID 1: its checks cannot signal it)
        return command + [shutil.which("setpriv") or "setpriv", f"--reuid={uid}", f"--regid={uid}",
                          "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]

    def command(self, slot: int, namespaces: str) -> list[str]:
        cgroups = self.cgroups.slots[slot] if self.cgroups else {}
        prefix: list[str] = []
        if cgroups:
            joins = "; ".join(f'echo $$ > "{d}/cgroup.procs"' for d in cgroups.values())
            prefix = ["/bin/sh", "-c", f'{joins}; exec "$@"', "sh"]
        if namespaces == "bwrap":
            prefix += self._bwrap()
        elif namespaces == "unshare":
            prefix += self._unshare(slot)
        return prefix + self._python(namespaces)

    def _setup(self, slot: int, namespaces: str, scratch: Path | None) -> dict[str, Any]:
        """What the zygote needs: limits, the checks' uid, where checks work and what is wiped after them."""
        isolated = namespaces in ("bwrap", "unshare")
        # the uid the zygote's checks drop to (unshare: the zygote itself already runs as it)
        uid = self.uid(slot) if namespaces != "unshare" else None
        if namespaces == "bwrap":  # private mounts
            work, wipe, sweep = "/tmp", ["/tmp", "/dev/shm"], []
        else:  # the host's file system: a scratch directory of the slot, and what the check's uid left elsewhere
            work, wipe, sweep = str(scratch), [str(scratch)], [tempfile.gettempdir(), "/dev/shm", "/var/tmp"]
        if namespaces == "bwrap":
            mqueue: str | None = MQUEUE
        elif namespaces == "unshare":
            mqueue = str(self._unshare_mqueue(slot))
        else:  # the host's, swept only of what the dedicated uid created
            mqueue = MQUEUE if os.path.isdir(MQUEUE) else None
        return {"op": "setup", "seccomp": self.mode != "none", "limits": self.limits.rlimits(), "uid": uid,
                "dedicated_uid": self.uid(slot), "scratch": work, "wipe": wipe, "sweep": sweep,
                "pid_namespace": isolated, "ipc_namespace": isolated, "mqueue": mqueue, "mqueue_private": isolated}

    # ---------------------------------------------------------------- zygotes
    def start(self, slot: int, namespaces: str | None = None) -> Zygote:
        """A zygote for ``slot``, ready for checks."""
        namespaces = namespaces or self.layers.namespaces
        if self.mode == "none":
            logger.warning("sandbox mode=none: running model code WITHOUT isolation (debugging only)")
        scratch = None
        if namespaces != "bwrap":
            scratch = Path(tempfile.mkdtemp(prefix="lm_eval_moe_sandbox_"))
            if namespaces == "unshare":
                (scratch / "mqueue").mkdir()
            if self.uid_base is not None:
                os.chown(scratch, self.uid(slot), self.uid(slot))
            self._scratch[slot] = scratch
        try:
            return Zygote(self.command(slot, namespaces), self._env(), self._setup(slot, namespaces, scratch),
                          self.limits, self.cgroups.slots[slot] if self.cgroups else {}, scratch)
        except SandboxStartError:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
            raise

    # ---------------------------------------------------------------- probing
    def _try(self, namespaces: str) -> dict[str, Any]:
        """Start a zygote with these namespaces and serve one probe check; its ready messages."""
        zygote = self.start(0, namespaces)
        try:
            channel = zygote.begin_check()
            try:
                ready = channel.receive(time.monotonic() + CONTROL_TIMEOUT)
            except (SandboxDied, SandboxTimeout, ResponseTooLarge, ProtocolError) as error:
                raise SandboxStartError(f"the probe check failed: {error}") from None
            finally:
                channel.close()
                zygote.end_check()
            return {**zygote.ready, "check": ready}
        finally:
            zygote.kill()

    def _probe(self) -> None:
        layers = self.layers
        if self.mode == "none":
            layers.notes.append("mode=none: NO ISOLATION, no seccomp (debugging only)")
            ready = self._try("none")
        else:
            ready = self._probe_namespaces()
        layers.uid_drop = self.is_root and ready["check"].get("uid", 0) != 0
        if self.is_root and not layers.uid_drop:
            self.close()
            raise SandboxUnavailable("the sandbox could not drop root for the checks: model code never runs as root")
        if self.mode == "none":
            return
        layers.seccomp = bool(ready["check"].get("seccomp"))
        if not layers.seccomp:
            error = str(ready["check"].get("seccomp_error") or "seccomp inactive")
            if "unsupported architecture" not in error:
                self.close()
                raise SandboxUnavailable(f"seccomp is supported here but failed: {error}")
            layers.notes.append(error)

    def _probe_namespaces(self) -> dict[str, Any]:
        """bubblewrap, else unshare; neither: refused unless the user opted in (``allow_no_namespaces``). A
        tool that is installed but fails is an error with its own message, never a fallback."""
        layers = self.layers
        layers.cgroups = self.cgroups.controllers
        if not layers.cgroups:
            layers.notes.append("cgroups not writable: no per-slot process and memory limits")
        for tool in ("bwrap", "unshare"):
            if shutil.which(tool):
                try:
                    ready = self._try(tool)
                except SandboxStartError as error:
                    self.close()
                    raise SandboxUnavailable(
                        f"{tool} is installed but the sandbox fails with it: {error}. Fix it (e.g. enable user "
                        "namespaces), or run with LM_EVAL_MOE_SANDBOX=none to debug without isolation") from None
                layers.namespaces = tool
                if tool == "unshare":
                    layers.notes.append("fallback unshare: PID/network/IPC isolated, file system NOT isolated "
                                        "(verdicts forgeable)")
                return ready
            layers.notes.append(f"{tool} not installed" + (": install the Debian package 'bubblewrap'"
                                                           if tool == "bwrap" else ""))
        if self.mode != "allow_no_namespaces":
            self.close()
            raise SandboxUnavailable(
                f"sandbox mode {self.mode}: neither bubblewrap nor unshare is installed: model-written code would run with no namespaces "
                "(network, processes and files of this machine reachable). Install the Debian package "
                "'bubblewrap', or opt in explicitly with LM_EVAL_MOE_SANDBOX=allow_no_namespaces (checks then run "
                "as an unprivileged uid, verdicts are marked forgeable and every result records the opt-in)")
        layers.notes.append("no namespaces (opted in: LM_EVAL_MOE_SANDBOX=allow_no_namespaces): network, processes "
                            "and files are NOT isolated" + ("" if self.is_root else "; not root: checks run as "
                                                            "this user, IPC objects are not cleaned between checks"))
        return self._try("none")

    def close(self) -> None:
        """Remove this run's cgroups (idempotent; also at interpreter exit)."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self.cgroups is not None:
            self.cgroups.close()
