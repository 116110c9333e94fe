"""The sandbox around model-written code (docs/SANDBOX.md), host side.

Layers, probed once at start-up and reported in one log line:

1. always: a fresh ``python -I`` running the trusted bootstrap, an allow-listed environment, no
   inherited descriptors, capped output, the deadline enforced here, the whole tree killed at the end;
   rlimits (CPU seconds, address space, file size, processes, open files, stack) set by ``prlimit``;
2. namespaces with bubblewrap: no network, own PID namespace (killing it ends every descendant, double-
   forked daemons included), read-only system, private tmpfs for /tmp, no host home or repository.
   Fallback: ``unshare`` (PID, network, IPC namespaces; the file system is NOT isolated);
3. when started as root: an unprivileged uid per worker slot (``setpriv``), so rlimits bind and a
   fork bomb in one slot cannot starve another;
4. seccomp (installed by the bootstrap): no non-Unix sockets, ptrace, mounts or namespaces, no raising
   of limits;
5. cgroups where writable: ``pids.max`` and a memory limit per worker slot, and a sweep of leftovers.

``mode="strict"`` refuses to run unless every layer is active; ``mode="none"`` (debugging only) runs
the bootstrap as a plain subprocess and says so every time it starts one.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

SandboxMode = Literal["auto", "strict", "none"]
BOOTSTRAP = Path(__file__).with_name("bootstrap.py")
BASE_UID = 61000
CGROUP_NAME = "lm_eval_moe_sandbox"


class SandboxUnavailable(RuntimeError):
    """The requested isolation cannot be provided on this machine."""


class SandboxStartError(RuntimeError):
    """Our infrastructure failed to start a sandbox (counted as sandbox_error, never as the model's)."""


class SandboxDied(RuntimeError):
    """The sandboxed process ended while we waited for an answer."""

    def __init__(self, exit_code: int | None, detail: str = "") -> None:
        super().__init__(f"sandbox ended (exit code {exit_code}) {detail}".strip())
        self.exit_code = exit_code


class SandboxTimeout(RuntimeError):
    """The wall-clock deadline passed."""


class ResponseTooLarge(RuntimeError):
    """The sandbox sent more than the response cap."""


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


@dataclass
class Layers:
    namespaces: str = "none"  # bwrap | unshare | none
    uid_drop: bool = False
    seccomp: bool = False
    rlimits: bool = False
    cgroups: list[str] = field(default_factory=list)  # writable controllers
    notes: list[str] = field(default_factory=list)

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


def _cgroup_dirs(group: str) -> dict[str, Path]:
    """Writable cgroups ``group`` under ours: v2 (one directory) or v1 (pids and memory controllers)."""
    root = Path("/sys/fs/cgroup")
    found: dict[str, Path] = {}
    candidates = []
    if (root / "cgroup.controllers").exists():
        own = Path(open("/proc/self/cgroup").read().strip().split("::")[-1].strip() or "/")
        candidates.append(("unified", root / own.relative_to("/") / CGROUP_NAME))
    else:
        for controller in ("pids", "memory"):
            base = root / controller
            if base.is_dir():
                own = next((line.split(":", 2)[2] for line in open("/proc/self/cgroup") if f":{controller}:" in line), "/")
                candidates.append((controller, base / own.strip().lstrip("/") / CGROUP_NAME))
    for controller, parent in candidates:
        try:
            directory = parent / group
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "cgroup.procs").stat()
            found[controller] = directory
        except OSError:
            continue
    return found


def _configure_cgroups(dirs: dict[str, Path], limits: Limits) -> list[str]:
    active = []
    for name, directory in dirs.items():
        settings = {
            "unified": {"pids.max": str(limits.processes), "memory.max": str(limits.memory_bytes + (256 << 20))},
            "pids": {"pids.max": str(limits.processes)},
            "memory": {"memory.limit_in_bytes": str(limits.memory_bytes + (256 << 20))},
        }[name]
        try:
            for key, value in settings.items():
                (directory / key).write_text(value)
            active.append(name)
        except OSError:
            continue
    return active


def _sweep(dirs: dict[str, Path]) -> int:
    """Kill whatever is left in a slot's cgroups; returns how many processes were found."""
    left = 0
    for directory in dirs.values():
        try:
            pids = [int(p) for p in (directory / "cgroup.procs").read_text().split()]
        except OSError:
            continue
        for pid in pids:
            left += 1
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return left


class SandboxProcess:
    """One sandboxed bootstrap: request/response over its stdin/stdout, with deadlines."""

    def __init__(self, command: list[str], env: dict[str, str], limits: Limits, cgroups: dict[str, Path]) -> None:
        self.limits = limits
        self.cgroups = cgroups
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            close_fds=True, start_new_session=True, cwd="/",
        )
        self._buffer = b""
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.process.stdout, selectors.EVENT_READ)
        self.started = time.monotonic()

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.process.stdin.write(json.dumps(message).encode() + b"\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise SandboxDied(self.process.poll(), "while sending") from None

    def receive(self, deadline: float) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SandboxTimeout
            if not self._selector.select(timeout=remaining):
                continue
            chunk = os.read(self.process.stdout.fileno(), 1 << 16)
            if not chunk:
                try:
                    code = self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    code = None
                raise SandboxDied(code)
            self._buffer += chunk
            if len(self._buffer) > self.limits.response_bytes:
                raise ResponseTooLarge
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return {"error": "protocol", "message": "unreadable response"}
        return message if isinstance(message, dict) else {"error": "protocol", "message": "response is not an object"}

    def request(self, message: dict[str, Any], deadline: float) -> dict[str, Any]:
        self.send(message)
        return self.receive(deadline)

    def stderr_tail(self) -> str:
        try:
            return self.process.stderr.read(4000).decode(errors="replace") if self.process.poll() is not None else ""
        except (OSError, ValueError):
            return ""

    def kill(self) -> None:
        """End the whole tree: the PID namespace dies with its init; cgroups are swept as well."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.process.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        _sweep(self.cgroups)
        self._selector.close()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            try:
                stream.close()
            except OSError:
                pass


class Sandbox:
    """Builds sandboxed bootstrap processes for worker slots (see module docstring)."""

    def __init__(self, mode: SandboxMode = "auto", limits: Limits | None = None, workers: int | None = None) -> None:
        if mode not in ("auto", "strict", "none"):
            raise ValueError(f"sandbox mode {mode!r}: expected auto, strict or none")
        self.mode = mode
        self.limits = limits or Limits()
        self.workers = workers or os.cpu_count() or 1
        self.is_root = os.geteuid() == 0
        self.layers = Layers()
        # two cgroup generations per slot: a slot's spare sandbox starts while the previous one still
        # runs, and sweeping the finished one must not kill the spare
        self._slot_cgroups: dict[tuple[int, int], dict[str, Path]] = {}
        self._generation: dict[int, int] = {}
        self._probe()
        if self.layers.notes:
            logger.warning(self.layers.describe())
        else:
            logger.info(self.layers.describe())
        if mode == "strict" and not self.layers.complete:
            raise SandboxUnavailable(f"strict sandbox mode, but not every layer is active: {self.layers.describe()}")

    # ---------------------------------------------------------------- commands
    def _env(self) -> dict[str, str]:
        return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}

    def _prlimit(self) -> list[str]:
        tool = shutil.which("prlimit")
        if tool is None:
            return []
        limits = self.limits
        values = {"as": limits.memory_bytes, "fsize": limits.file_bytes, "nproc": limits.processes,
                  "nofile": limits.open_files, "stack": limits.stack_bytes, "core": 0}
        # CPU: SIGXCPU at the soft limit (reported as a timeout), SIGKILL one second later at the hard one
        cpu = [f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 1}"]
        return [tool, *cpu] + [f"--{name}={value}:{value}" for name, value in values.items()] + ["--"]

    def _python(self) -> list[str]:
        return [sys.executable, "-I", "/sandbox/bootstrap.py" if self.layers.namespaces == "bwrap" else str(BOOTSTRAP)]

    def _bwrap(self) -> list[str]:
        """bubblewrap applies its mounts in order: the private tmpfs mounts come FIRST, so that an interpreter
        under /tmp (a venv in a temporary checkout) is bound on top of them instead of hidden by them."""
        binds = ["/usr", "/bin", "/lib", "/lib64", "/lib32", "/etc/ld.so.cache", "/etc/alternatives"]
        prefixes = {sys.base_prefix, sys.prefix, str(Path(sys.executable).resolve().parent.parent)}
        command = [
            shutil.which("bwrap") or "bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session",
        ]
        if not self.is_root:
            command.append("--unshare-user")
        scratch = str(self.limits.scratch_bytes)
        command += ["--proc", "/proc", "--dev", "/dev",
                    "--perms", "1777", "--size", scratch, "--tmpfs", "/tmp",
                    "--perms", "1777", "--size", scratch, "--tmpfs", "/dev/shm"]
        for path in binds:
            command += ["--ro-bind-try", path, path]
        mounted = {"/proc", "/dev", "/dev/shm", "/tmp", *binds}
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

    def _unshare(self) -> list[str]:
        command = [shutil.which("unshare") or "unshare", "--fork", "--pid", "--mount-proc", "--net", "--ipc", "--uts",
                   "--kill-child"]
        if not self.is_root:
            command.append("--map-root-user")
        return command + ["--"]

    def _drop_uid(self, slot: int) -> list[str]:
        uid = BASE_UID + slot
        return [shutil.which("setpriv") or "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]

    def command(self, slot: int, cgroups: dict[str, Path]) -> list[str]:
        namespaces = self.layers.namespaces
        prefix: list[str] = []
        if cgroups:
            joins = "; ".join(f'echo $$ > "{d}/cgroup.procs"' for d in cgroups.values())
            prefix = ["/bin/sh", "-c", f'{joins}; exec "$@"', "sh"]
        if self.mode == "none":
            return prefix + self._python()
        command = prefix + self._prlimit()
        if namespaces == "bwrap":
            command += self._bwrap()
        elif namespaces == "unshare":
            command += self._unshare()
        if self.is_root and shutil.which("setpriv"):
            command += self._drop_uid(slot)
        return command + self._python()

    # ---------------------------------------------------------------- probing
    def _try(self, namespaces: str) -> dict[str, Any] | None:
        previous = self.layers.namespaces
        self.layers.namespaces = namespaces
        try:
            process = self.start(0, check=False)
        except SandboxStartError:
            self.layers.namespaces = previous
            return None
        try:
            ready = process.request({"op": "load", "mode": "function", "source": "import os\nuid = os.getuid\n"},
                                    time.monotonic() + 20)
            ready = {**process.ready, "load": ready}
        except (SandboxDied, SandboxTimeout, ResponseTooLarge):
            self.layers.namespaces = previous
            return None
        finally:
            process.kill()
        return ready

    def _probe(self) -> None:
        layers = self.layers
        if self.mode == "none":
            layers.notes.append("mode=none: NO ISOLATION (debugging only)")
            return
        for slot in range(self.workers):
            for generation in (0, 1):
                dirs = _cgroup_dirs(f"slot{slot}g{generation}")
                active = _configure_cgroups(dirs, self.limits)
                self._slot_cgroups[(slot, generation)] = {name: dirs[name] for name in active}
                if slot == 0 and generation == 0:
                    layers.cgroups = active
        layers.rlimits = bool(self._prlimit())
        if not layers.rlimits:
            layers.notes.append("prlimit (util-linux) missing: no CPU/memory/process limits")
        ready = self._try("bwrap") if shutil.which("bwrap") else None
        if ready is None:
            layers.notes.append("bubblewrap unavailable or refused: install the Debian package 'bubblewrap'")
            ready = self._try("unshare") if shutil.which("unshare") else None
            if ready is not None:
                layers.notes.append("fallback unshare: PID/network isolated, file system NOT isolated")
        if ready is None:
            layers.namespaces = "none"
            layers.notes.append("no namespaces: network, processes and files are NOT isolated")
            ready = self._try("none")
        if ready is None:
            raise SandboxUnavailable("cannot start even an unisolated sandboxed interpreter")
        layers.seccomp = bool(ready.get("seccomp"))
        if not layers.seccomp:
            layers.notes.append(str(ready.get("seccomp_error") or "seccomp unavailable"))
        layers.uid_drop = self.is_root and ready.get("uid", 0) != 0
        if self.is_root and not layers.uid_drop:
            layers.notes.append("running as root without a uid drop: rlimits do not bind")

    # ---------------------------------------------------------------- processes
    def start(self, slot: int, check: bool = True) -> SandboxProcess:
        """A sandbox whose bootstrap is up and waiting for ``load``."""
        if self.mode == "none":
            logger.warning("sandbox mode=none: running model code WITHOUT isolation (debugging only)")
        generation = self._generation.get(slot, 1) ^ 1
        self._generation[slot] = generation
        cgroups = self._slot_cgroups.get((slot, generation), {})
        try:
            process = SandboxProcess(self.command(slot, cgroups), self._env(), self.limits, cgroups)
        except OSError as error:
            raise SandboxStartError(f"cannot start the sandbox: {error}") from None
        try:
            process.send({"op": "setup", "seccomp": self.mode != "none"})
            ready = process.receive(time.monotonic() + 30)
        except (SandboxDied, SandboxTimeout, ResponseTooLarge) as error:
            detail = process.stderr_tail()
            process.kill()
            raise SandboxStartError(f"sandbox did not start ({error}): {detail[-500:]}") from None
        if not ready.get("ready"):
            process.kill()
            raise SandboxStartError(f"sandbox bootstrap answered {ready!r}")
        if check and self.mode != "none" and self.layers.seccomp and not ready.get("seccomp"):
            process.kill()
            raise SandboxStartError(f"seccomp failed in this sandbox: {ready.get('seccomp_error')}")
        process.ready = ready  # type: ignore[attr-defined]
        return process
