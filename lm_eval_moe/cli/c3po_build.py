"""Build a C3PO reference set: problems a model solves, with their routing and question embeddings.

    lm-eval-moe c3po-build --model_args pretrained=allenai/OLMoE-1B-7B-0924-Instruct --task moe_gsm8k \\
        --apply_chat_template --count 100 --seed 1234 --output olmoe_gsm8k_refs.pt

As in the paper (docs/METHODS.md section 5): the problems come from a split disjoint from the evaluated
one (GSM8K train, MBPP validation; ``lm_eval_moe.tasks.data.reference_pool``), and the references are
``--count`` solved problems drawn at random (seeded): the pool is answered in a seeded random order until
that many are solved, which draws uniformly among the solved ones. Each problem is prompted exactly as the
evaluation prompts it (the task's prompt, zero-shot, with the chat template when ``--apply_chat_template``
is given, which the evaluation must then use too) and scored with the task's own checker. The set stores
the hashes of its questions, so ``moe_c3po`` refuses to evaluate any of them.
"""

from __future__ import annotations

import argparse
import logging
import random

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model_args", required=True, help="moe_hf model args, e.g. pretrained=...,expert_count=8")
    parser.add_argument("--task", required=True, help="the task the references are for (moe_gsm8k, moe_mbpp, "
                                                      "moe_demo_arith)")
    parser.add_argument("--count", type=int, default=100, help="solved references to keep (default: 100)")
    parser.add_argument("--max_tries", type=int, default=None, help="stop after trying this many problems "
                                                                    "(default: the whole pool)")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the random draw (default: 1234)")
    parser.add_argument("--apply_chat_template", action="store_true",
                        help="prompt with the model's chat template (use it in the evaluation as well)")
    parser.add_argument("--system_instruction", default=None, help="as lm_eval's --system_instruction")
    parser.add_argument("--layers", type=int, default=5, help="last MoE layers to record (default: 5)")
    parser.add_argument("--max_gen_toks", type=int, default=None, help="override the task's generation length")
    parser.add_argument("--include_path", default=None, help="extra task folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch_size", default="4")
    parser.add_argument("--output", required=True, help="where to write the reference set (.pt)")


def run(args: argparse.Namespace) -> int:
    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import simple_parse_args_string
    from tqdm import tqdm

    from lm_eval_moe._lm_eval_hook import tasks_dir
    from lm_eval_moe.model_wrappers.moe_hf import MoEHFLM
    from lm_eval_moe.problem_identity import problem_hash
    from lm_eval_moe.reroute.c3po import ReferenceSet, last_layers, prompt_features
    from lm_eval_moe.tasks.data import TaskDataError, reference_pool

    if args.count < 1:
        raise SystemExit(f"--count {args.count}: must be >= 1")
    paths = [str(tasks_dir())] + ([args.include_path] if args.include_path else [])
    task = TaskManager(include_defaults=False, include_path=paths).load([args.task])["tasks"][args.task]
    benchmark = (task.config.dataset_kwargs or {}).get("benchmark")
    try:
        pool = list(reference_pool(str(benchmark)))
    except TaskDataError as error:
        raise SystemExit(f"task {args.task}: {error}") from None
    pool_size = len(pool)
    random.Random(args.seed).shuffle(pool)
    pool = pool[: args.max_tries] if args.max_tries else pool
    lm = MoEHFLM(device=args.device, batch_size=args.batch_size, **simple_parse_args_string(args.model_args))
    kwargs = dict(task.config.generation_kwargs)
    if args.max_gen_toks:
        kwargs["max_gen_toks"] = args.max_gen_toks

    def prompt(doc: dict) -> str:
        return task.fewshot_context(doc, 0, system_instruction=args.system_instruction,
                                    apply_chat_template=args.apply_chat_template,
                                    chat_template=lm.apply_chat_template if args.apply_chat_template else None)

    solved, tried, chunk = [], 0, max(8, args.count)
    with tqdm(total=args.count, desc=f"c3po-build: solved {args.task} references") as progress:
        while len(solved) < args.count and tried < len(pool):
            docs = pool[tried : tried + chunk]
            tried += len(docs)
            requests = [Instance("generate_until", doc, (prompt(doc), dict(kwargs)), idx=0, metadata=(args.task, i, 1))
                        for i, doc in enumerate(docs)]
            for request, response in zip(requests, lm.generate_until(requests)):
                request.resps = [response]
            scoring = task._filters[0]  # the task's own filter chain (code tasks execute the programs here)
            scoring.apply(requests)
            for request in requests:
                metrics = task.process_results(request.doc, [request.filtered_resps[scoring.name]])
                if len(solved) < args.count and metrics["exact_match"] == 1.0:
                    solved.append(request.doc)
                    progress.update(1)
    logger.info("c3po-build: %d of %d tried %s reference problems solved (pool %d, seed %d)",
                len(solved), tried, benchmark, pool_size, args.seed)
    if not solved:
        raise SystemExit(f"the model solved none of the {tried} reference problems tried: no reference set to build")
    if len(solved) < args.count:
        logger.warning("c3po-build: only %d solved references (asked for %d)", len(solved), args.count)
    layers = last_layers(lm.moe, args.layers)
    embeddings, routing = [], []
    for start in range(0, len(solved), 8):
        ids, mask = lm.tok_batch_encode([prompt(doc) for doc in solved[start : start + 8]])
        features = prompt_features(lm.model, lm.moe, ids.to(lm.device), mask.to(lm.device), layers)
        embeddings.append(features[0])
        routing.append(features[1])
    metadata = {
        "model": args.model_args, "task": args.task, "benchmark": benchmark, "seed": args.seed, "pool": pool_size,
        "tried": tried, "solved": len(solved), "apply_chat_template": args.apply_chat_template,
        "system_instruction": args.system_instruction, "reference_ids": [doc["moe_id"] for doc in solved],
        "question_hashes": [problem_hash(doc) for doc in solved],
    }
    ReferenceSet(torch.cat(embeddings), torch.cat(routing), layers, metadata).save(args.output)
    print(f"wrote {len(solved)} references ({tried} tried, seed {args.seed}) for layers {layers} to {args.output}")
    return 0
