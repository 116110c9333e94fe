"""Finished responses on disk as they complete, so that a killed run resumes where it stopped.

lm-eval's own request cache keys responses on the prompt alone (docs/LM_EVAL.md), so a run with other
settings would reuse them silently; this cache keys each response on the run's identity (model class,
every model arg, the method's settings, this package's version and commit) and the request (task,
document, repeat, prompt, generation kwargs). A run given the same ``response_cache`` folder again reads
what is there and generates the rest.

Layout: one JSON line per finished response in ``<folder>/rank<R>.jsonl`` (each data-parallel rank writes
its own file, locked while the run holds it; every rank reads all files, so a resume may split the
documents differently). Each line is written whole and flushed to disk before the next response starts;
a line cut short by a kill is skipped on reading. Responses are stored as JSON, and the responses a run
returns pass through the same JSON form, so a resumed run returns exactly what an uninterrupted one does.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import IO, Any

from lm_eval_moe.response import MoEResponse

logger = logging.getLogger(__name__)


class ResponseCacheError(RuntimeError):
    """The cache folder cannot be used (held by another run, not writable)."""


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


class ResponseCache:
    def __init__(self, folder: str | Path, identity: dict[str, Any], rank: int = 0) -> None:
        self.folder = Path(folder)
        self.identity = _canonical(identity)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.entries: dict[str, dict[str, Any]] = {}
        for path in sorted(self.folder.glob("rank*.jsonl")):
            self._read(path)
        self.path = self.folder / f"rank{rank}.jsonl"
        self._handle: IO[str] = self.path.open("a", encoding="utf-8")
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._handle.close()
            raise ResponseCacheError(f"response_cache {self.folder}: {self.path.name} is held by another run; "
                                     "give each concurrent run its own folder") from None
        if self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n"):
            self._handle.write("\n")  # end a line cut short by a kill, so the next entry starts its own
        self.written = 0

    def _read(self, path: Path) -> None:
        with path.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                    self.entries[entry["key"]] = entry
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut short by a kill

    def key(self, task: str | None, doc_id: Any, repeat: int, arguments: tuple) -> str:
        request = _canonical({"task": task, "doc_id": doc_id, "repeat": repeat, "arguments": list(arguments)})
        return hashlib.sha256(f"{self.identity}\n{request}".encode()).hexdigest()

    def get(self, key: str) -> tuple[MoEResponse, dict[str, Any]] | None:
        """(response, its effective generation settings) of a finished request, or None."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        return MoEResponse(entry["text"], entry["meta"]), entry["generation"]

    def put(self, key: str, response: MoEResponse, generation: dict[str, Any]) -> None:
        entry = {"key": key, "text": str(response), "meta": response.meta, "generation": generation}
        self._handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.entries[key] = entry
        self.written += 1

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()


def as_stored(text: str, meta: dict[str, Any]) -> MoEResponse:
    """The response as the cache returns it (JSON types: lists for tuples), for fresh responses too."""
    return MoEResponse(text, json.loads(json.dumps(meta)))
