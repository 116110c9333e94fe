"""What produced a response: the identity of a run, computed in one place and used wherever an earlier run's
output could stand in for a new one (the response cache, a sweep's "finished" check) and shown in every
results file (``config.lm_eval_moe.run_identity``).

A run is identified by its model class, every model arg, the method's settings (given or default), the
CONTENT of what it loads (a local folder: the sha256 of its files, each hashed once and memoised on path,
size, mtime and inode, so a 60 GB checkpoint is not rehashed on every start; a hub model: the commit of its
snapshot) for the policy, the tokenizer and the verifier, and this package's code (its version, commit and
the sha256 of its source files, so two different uncommitted edits are two identities). Each request adds
what it asks (task, document, repeat, prompt with its few-shot examples and chat template, generation
kwargs); a sweep point adds its lm-eval settings (tasks, limit, few-shot, seeds, ...).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from lm_eval_moe.provenance import package_commit, software

logger = logging.getLogger(__name__)

CACHE_DIR_ENV = "LM_EVAL_MOE_CACHE_DIR"
#: the package's own source (not the demo checkpoints, which are content-hashed as checkpoints when loaded)
SOURCE_SUFFIXES = (".py", ".yaml", ".jinja")


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def digest(identity: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(identity).encode()).hexdigest()


def _memo_path() -> Path:
    root = os.environ.get(CACHE_DIR_ENV) or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                         os.path.expanduser("~/.cache"), "lm_eval_moe")
    return Path(root) / "file_hashes.json"


def _sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            hasher.update(block)
    return hasher.hexdigest()


class FileHashes:
    """sha256 of files, memoised on (real path, size, mtime, inode) in a JSON file of the user's cache: a file
    that did not change is never read again, a file rewritten in place (new mtime) always is."""

    def __init__(self, memo: Path) -> None:
        self.memo = memo
        try:
            self.known: dict[str, str] = json.loads(memo.read_text())
        except (OSError, ValueError):
            self.known = {}
        self.changed = False

    def of(self, path: Path) -> str:
        info = path.stat()
        key = f"{path.resolve()}|{info.st_size}|{info.st_mtime_ns}|{info.st_ino}"
        if key not in self.known:
            self.known[key] = _sha256(path)
            self.changed = True
        return self.known[key]

    def save(self) -> None:
        if not self.changed:
            return
        try:
            self.memo.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=self.memo.parent, delete=False, suffix=".tmp") as handle:
                json.dump(self.known, handle)
            os.replace(handle.name, self.memo)  # atomic: a concurrent run reads the old or the new memo
        except OSError as error:
            logger.warning("could not save the file-hash memo %s (%s): files will be hashed again", self.memo, error)


def folder_sha256(folder: Path) -> str:
    """sha256 over every file of a checkpoint folder (relative path and content hash; hidden folders such as
    .git or .cache skipped)."""
    hashes = FileHashes(_memo_path())
    combined = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts[:-1]):
            continue
        combined.update(f"{relative}\0{hashes.of(path)}\n".encode())
    hashes.save()
    return combined.hexdigest()


def hub_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit of a hub snapshot: the revision itself when it is a commit, the locally cached snapshot the
    revision points to (offline), else the hub's answer; None when neither is available."""
    if revision and len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
        return revision
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True)).name
    except Exception:  # noqa: BLE001 - not cached here: ask the hub
        pass
    try:
        from huggingface_hub import HfApi

        return HfApi().model_info(repo_id, revision=revision).sha
    except Exception:  # noqa: BLE001 - offline and not cached
        return None


def checkpoint_identity(name: Any, revision: str | None = None) -> dict[str, Any] | None:
    """The content identity of a checkpoint argument: a local folder's files, or a hub snapshot's commit."""
    if name is None or not isinstance(name, (str, os.PathLike)):
        return None if name is None else {"object": type(name).__name__}
    path = Path(name).expanduser()
    if path.is_dir():
        return {"folder": str(path.resolve()), "sha256": folder_sha256(path)}
    if path.is_file():
        return {"file": str(path.resolve()), "sha256": FileHashes(_memo_path()).of(path)}
    return {"hub": str(name), "revision": revision, "commit": hub_commit(str(name), revision)}


def _source_files(roots: list[Path]) -> list[Path]:
    return sorted({path for root in roots for path in root.rglob("*")
                   if path.suffix in SOURCE_SUFFIXES and "models" not in path.relative_to(root).parts[:-1]
                   and "__pycache__" not in path.parts})


@cache
def code_identity() -> dict[str, str]:
    """This package's version, commit and the sha256 of its source files as imported (an editable checkout's
    live files, or an installed build's)."""
    import lm_eval_moe

    package = Path(lm_eval_moe.__file__).resolve().parent
    roots = [package]
    for face in ("model_wrappers", "tasks", "recipes"):
        try:
            module = __import__(f"lm_eval_moe.{face}", fromlist=["__file__"])
            roots.append(Path(module.__file__).resolve().parent)
        except ImportError:
            continue
    return {"version": software()["lm_eval_moe"], "commit": package_commit(), "source_sha256": source_sha256(roots)}


def source_sha256(roots: list[Path]) -> str:
    """sha256 over the source files under ``roots`` (name and content): any edit, a comment included, changes it."""
    hasher = hashlib.sha256()
    for path in _source_files(roots):
        hasher.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return hasher.hexdigest()


def model_identity(model_class: str, model_args: dict[str, Any], settings: Any, checkpoint: Any,
                   revision: str | None = None, tokenizer: Any = None,
                   loaded: dict[str, Any] | None = None) -> dict[str, Any]:
    """The identity of a loaded (or about to be loaded) model with its method (see module docstring).
    ``loaded``: what else the method reads (a verifier, a reference set), each by the name it was given."""
    fields = dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else dict(settings or {})
    fields.pop("given_args", None)
    identity = {
        "model_class": model_class,
        "model_args": {key: str(value) for key, value in sorted(model_args.items())},
        "settings": fields,
        "checkpoint": checkpoint_identity(checkpoint, revision),
        "code": code_identity(),
    }
    if tokenizer is not None and str(tokenizer) != str(checkpoint):
        identity["tokenizer"] = checkpoint_identity(tokenizer, revision)
    for role, name in sorted((loaded or {}).items()):
        identity[role] = checkpoint_identity(name)
    return identity


def differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """The keys (dotted) whose values differ between two identities, for a message."""
    found = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}: {canonical(a)[:80]} -> {canonical(b)[:80]}")
    return found
