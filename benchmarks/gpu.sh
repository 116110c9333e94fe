#!/usr/bin/env bash
# Every GPU benchmark as one script, for a lent device: OLMoE-1B-7B's and Qwen3-30B-A3B's shapes (random
# weights, bfloat16, built on the GPU), the tables of benchmarks/RESULTS.md's GPU section (mixed-k vs uniform k
# with the decode step's share of the memory bandwidth, cached vs re-read prefixes, DES vs Best-of-N and each
# strategy's rate against plain sampling), plus rerouting on the OLMoE shape. Needs torch with CUDA, transformers
# 5.x and safetensors (lm-eval is not needed); each table goes to $OUT (or benchmarks/gpu_results/). Qwen3-30B-A3B's
# shape needs about 65 GB of GPU memory. Written on a CPU-only day (2026-12-07): its first GPU run is untimed.
#
#     bash benchmarks/gpu.sh                     # both shapes
#     POLICIES=olmoe-1b-7b bash benchmarks/gpu.sh  # one
set -euo pipefail
cd "$(dirname "$0")"
out=${OUT:-gpu_results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONPATH="$(cd .. && pwd)${PYTHONPATH:+:$PYTHONPATH}"  # the package from this checkout, nothing installed
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} | tee "$out/device.txt"
for policy in ${POLICIES:-olmoe-1b-7b qwen3-30b-a3b}; do
    common=(--policy "$policy" --device cuda --dtype bfloat16)
    python bench_mixed_k.py "${common[@]}" --repeats 20 --batch 8 --tokens 512 | tee "$out/mixed_k_$policy.txt"
    python bench_prefixes.py "${common[@]}" --repeats 1 | tee "$out/prefixes_$policy.txt"
    python bench_search.py "${common[@]}" --budget 16 --steps 4 --step-tokens 32 --problems 4 --repeats 3 \
        | tee "$out/search_$policy.txt"
done
python bench_reroute.py --policy olmoe-1b-7b --device cuda --dtype bfloat16 --batch 4 | tee "$out/reroute_olmoe-1b-7b.txt"
