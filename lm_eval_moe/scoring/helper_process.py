"""The bounded-call helper's own entry point (``python -m lm_eval_moe.scoring.helper_process``).

Reads ``(length, pickle((function, args)))`` frames on stdin and answers ``(length, pickle(("ok", value) |
("error", text)))`` on stdout, one call at a time, until stdin closes. Started only by
:mod:`lm_eval_moe.scoring.bounded`, which trusts it as its own code: the pickles carry a reference to one of
our checking functions and the strings to check, never code.
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import resource
import struct
import sys

_HEADER = struct.Struct("!Q")


def _read(stream, size: int) -> bytes | None:
    data = stream.read(size)
    return data if len(data) == size else None


def serve() -> None:
    memory = int(os.environ.get("LM_EVAL_MOE_HELPER_MEMORY", "0"))
    if memory:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    logging.disable(logging.WARNING)  # math-verify's parse warnings on model text are not the user's concern
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    try:
        for module in filter(None, os.environ.get("LM_EVAL_MOE_HELPER_PRELOAD", "").split(",")):
            importlib.import_module(module)
        _send(replies, ("ok", "ready"))
    except BaseException as error:  # noqa: BLE001 - reported to the caller, which names it
        _send(replies, ("error", f"preloading failed: {type(error).__name__}: {error}"))
        return
    while (header := _read(requests, _HEADER.size)) is not None:
        request = _read(requests, _HEADER.unpack(header)[0])
        if request is None:
            return
        try:
            function, args = pickle.loads(request)
            reply = ("ok", function(*args))
        except BaseException as error:  # noqa: BLE001 - the caller gets every failure as its CheckFailed
            reply = ("error", f"{type(error).__name__}: {str(error)[:500]}")
        _send(replies, reply)


def _send(replies, reply: tuple[str, object]) -> None:
    try:
        data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:  # noqa: BLE001 - an unpicklable value
        data = pickle.dumps(("error", f"unpicklable result ({type(error).__name__})"))
    replies.write(_HEADER.pack(len(data)) + data)
    replies.flush()


if __name__ == "__main__":
    serve()
