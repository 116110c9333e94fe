"""Our log lines where lm-eval's appear: lm-eval configures only its own ``lm_eval`` logger (level and a
handler, no propagation), so records of ``lm_eval_moe.*`` would reach Python's last-resort handler, which
drops everything below WARNING (which sandbox layers are active, which k set, what a resume reads back)."""

from __future__ import annotations

import logging


def follow_lm_eval() -> None:
    """Give the ``lm_eval_moe`` logger lm-eval's handlers and level, once lm-eval has configured them."""
    ours, theirs = logging.getLogger("lm_eval_moe"), logging.getLogger("lm_eval")
    if not theirs.handlers or ours.handlers:
        return
    for handler in theirs.handlers:
        ours.addHandler(handler)
    ours.setLevel(theirs.level or logging.INFO)
    ours.propagate = False
