"""Build a C3PO reference set: the problems a model solves, with their routing and question embeddings.

    lm-eval-moe c3po-build --model_args pretrained=allenai/OLMoE-1B-7B-0924-Instruct --task moe_gsm8k \\
        --split fewshot --limit 100 --output olmoe_gsm8k_refs.pt

Problems come from the task's ``fewshot`` split (its training split where the benchmark has one) by
default; each is answered greedily with the task's prompt and scored with the task's own checker, and
only solved ones are kept (as the paper's "successful reference samples").
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model_args", required=True, help="moe_hf model args, e.g. pretrained=...,expert_count=8")
    parser.add_argument("--task", required=True, help="a task with exact_match (e.g. moe_gsm8k)")
    parser.add_argument("--split", default="fewshot", help="dataset split of the task (default: fewshot)")
    parser.add_argument("--limit", type=int, default=100, help="reference problems to try (default: 100)")
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

    from lm_eval_moe._lm_eval_hook import tasks_dir
    from lm_eval_moe.model_wrappers.moe_hf import MoEHFLM
    from lm_eval_moe.reroute.c3po import ReferenceSet, last_layers, prompt_features

    paths = [str(tasks_dir())] + ([args.include_path] if args.include_path else [])
    task = TaskManager(include_defaults=False, include_path=paths).load([args.task])["tasks"][args.task]
    if args.split not in task.dataset:
        raise SystemExit(f"task {args.task} has no split {args.split!r}; it has {', '.join(task.dataset)}")
    docs = list(task.dataset[args.split])[: args.limit]
    lm = MoEHFLM(device=args.device, batch_size=args.batch_size, **simple_parse_args_string(args.model_args))
    kwargs = dict(task.config.generation_kwargs)
    if args.max_gen_toks:
        kwargs["max_gen_toks"] = args.max_gen_toks
    requests = [Instance("generate_until", doc, (task.doc_to_text(doc), dict(kwargs)), idx=0, metadata=(args.task, i, 1))
                for i, doc in enumerate(docs)]
    responses = lm.generate_until(requests)
    solved = [doc for doc, response in zip(docs, responses) if task.process_results(doc, [response])["exact_match"] == 1.0]
    logger.info("c3po-build: %d of %d %s problems solved", len(solved), len(docs), args.task)
    if not solved:
        raise SystemExit("the model solved none of the reference problems: no reference set to build")
    layers = last_layers(lm.moe, args.layers)
    embeddings, routing = [], []
    for start in range(0, len(solved), 8):
        chunk = [task.doc_to_text(doc) for doc in solved[start : start + 8]]
        ids, mask = lm.tok_batch_encode(chunk)
        features = prompt_features(lm.model, lm.moe, ids.to(lm.device), mask.to(lm.device), layers)
        embeddings.append(features[0])
        routing.append(features[1])
    references = ReferenceSet(
        torch.cat(embeddings), torch.cat(routing), layers,
        {"model": args.model_args, "task": args.task, "split": args.split, "tried": len(docs), "solved": len(solved)},
    )
    references.save(args.output)
    print(f"wrote {len(solved)} references ({len(docs)} tried) for layers {layers} to {args.output}")
    return 0
