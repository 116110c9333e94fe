"""The embedded demo: a tiny MoE policy and a tiny PRM trained by this project on arithmetic word problems.

Their short names (``tiny-arith-moe``, ``tiny-arith-prm``) resolve in :mod:`lm_eval_moe.checkpoints`: the
engine (moe, generation, search, verifiers, reroute, scoring) and the model classes never import this
package; only the demo task's data (``tasks/data.py``) reads its problem generator.
"""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).parent / "models"

#: The project's CI score gate: DES with the shipped models on the first GATE_LIMIT held-out problems
#: (tests/demo/test_demo_gate.py against tests/demo/baselines/demo; benchmarks/demo_spread.py measures its tolerance).
GATE_MODEL_ARGS = ("pretrained=tiny-arith-moe,verifier=tiny-arith-prm,budget=8,keep=2,max_steps=5,max_step_tokens=40,"
                   "expert_counts=1-4,temperature=0.8")
GATE_SEED = 1
GATE_LIMIT = 50
