#!/usr/bin/env bash
# One command for a newcomer: a fresh virtual environment with the package and what its tests need, then the
# main job (Dynamic Experts Search) on the embedded tiny models and the demo task, offline on CPU in minutes.
#
#   bash quickstart.sh            # then: . .venv/bin/activate && python -m pytest -q
#
# Uses an installed torch if the environment has one; otherwise installs torch 2.13.0 (on a machine without a
# local wheel, pip fetches it from PyPI: install the CPU or CUDA build you want first if you care).
set -euo pipefail
cd "$(dirname "$0")"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# one CPU thread unless you chose: the demo's matrices are tiny, and on a shared or busy machine torch's default of
# one thread per core makes them wait on each other (README "Quickstart")
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[test]"      # the package, plus pytest and matplotlib for the tests and plots

lm_eval --model moe_des \
  --model_args pretrained=tiny-arith-moe-anyk,verifier=tiny-arith-prm,budget=8,keep=2,max_steps=5,max_step_tokens=40,expert_counts=1-4 \
  --tasks moe_demo_arith --limit 50 --device cpu --batch_size 8 --log_samples --output_path results/quickstart
echo "quickstart: expected exact_match 0.8400 ± 0.0524 and coverage 0.8600 (42 and 43 of 50 problems; the same on any machine)"
