"""Checkpoint names this package ships, resolved to their folders, and near misses caught early.

The shipped tiny demo models answer to short names wherever a checkpoint is expected (``pretrained=``,
``verifier=``, ``tokenizer=``); any other name is a local path or a hub id, passed through unchanged. A name
that is no folder but one typo away from a shipped name is an error with the suggestion, before anything
is loaded (otherwise the hub is retried for minutes and the error speaks of connections). The table is
data: the demo package itself is never imported here.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from lm_eval_moe.model_args import ModelArgError

PACKAGE = Path(__file__).resolve().parent
#: short name -> folder, relative to the lm_eval_moe package
SHIPPED = {
    "tiny-arith-moe": "demo/models/tiny-arith-moe",
    "tiny-arith-moe-anyk": "demo/models/tiny-arith-moe-anyk",  # trained with k drawn from 1-4 per batch
    "tiny-arith-prm": "demo/models/tiny-arith-prm",
}


def looks_like_a_path(name: str) -> bool:
    """Whether ``name`` can only mean a local folder: a hub id is ``name`` or ``org/name``, never absolute,
    relative to ``.``/``..``/``~``, deeper than one slash, or under a folder that exists here."""
    if name.startswith(("/", "./", "../", "~", ".\\")) or name in (".", "..") or "\\" in name:
        return True
    parts = name.split("/")
    return len(parts) > 2 or (len(parts) == 2 and Path(parts[0]).is_dir())


def resolve_checkpoint(name: Any, arg: str = "pretrained") -> Any:
    """The shipped folder for a short name; a path or hub id unchanged; a near miss of a short name, or a local
    folder that does not exist, refused by name (transformers would call the latter a malformed repo id)."""
    if not isinstance(name, str):
        return name
    if name in SHIPPED:
        path = PACKAGE / SHIPPED[name]
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"the shipped checkpoint {name!r} is missing from {path}: reinstall lm_eval_moe, "
                                    "or rebuild it with `python -m lm_eval_moe.demo.train`")
        return str(path)
    if Path(name).expanduser().exists():
        return name
    if looks_like_a_path(name):
        path = Path(name).expanduser().absolute()
        missing = next((parent for parent in [*reversed(path.parents), path] if not parent.exists()), path)
        raise ModelArgError(f"model arg {arg}={name!r}: no such folder ({path}; {missing} does not exist). "
                            "A hub id has the form 'org/name'.")
    close = difflib.get_close_matches(name, SHIPPED, n=1, cutoff=0.8)
    if close:
        raise ModelArgError(f"model arg {arg}={name!r} is neither a folder nor a shipped checkpoint: did you mean "
                            f"{close[0]!r}? Shipped: {', '.join(SHIPPED)}")
    return name

