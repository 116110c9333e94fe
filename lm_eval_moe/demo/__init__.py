"""The embedded demo: a tiny MoE policy and a tiny PRM trained by this project on arithmetic word problems.

Short names usable wherever a checkpoint is expected (``pretrained=``, ``verifier=``): ``tiny-arith-moe``
and ``tiny-arith-prm``. Any other name (a local path or a hub id) passes through unchanged.
"""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).parent / "models"
SHORT_NAMES = ("tiny-arith-moe", "tiny-arith-prm")

#: The project's CI score gate: DES with the shipped models on the first GATE_LIMIT held-out problems
#: (tests/test_demo_gate.py against tests/baselines/demo; benchmarks/demo_spread.py measures its tolerance).
GATE_MODEL_ARGS = ("pretrained=tiny-arith-moe,verifier=tiny-arith-prm,budget=8,keep=2,max_steps=5,max_step_tokens=40,"
                   "expert_counts=1-4,temperature=0.8")
GATE_SEED = 1
GATE_LIMIT = 50


def resolve_model_name(name):
    """The shipped folder for a short name; anything else unchanged."""
    if isinstance(name, str) and name in SHORT_NAMES:
        path = MODELS_DIR / name
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"the shipped model {name!r} is missing from {path}: reinstall lm_eval_moe, or "
                                    "rebuild it with `python -m lm_eval_moe.demo.train`")
        return str(path)
    return name
