"""``moe_reroute``: online test-time rerouting as an lm-eval model (see lm_eval_moe/reroute/rerouter.py).

Requests are batched (``batch_size``) and follow the task's generation kwargs (``until``, ``max_gen_toks``,
``do_sample``, ``temperature``, ``top_p``), so ``repeats`` with sampling gives self-consistency and
``--num_fewshot`` gives in-context examples, both combined with rerouting. Each response carries its cost
(extra forward/backward tokens and FLOPs of the optimisation counted separately) and, per Phase 1, the
layer weights and selected layers, the loss per step and after the update, and the delta norms, plus the
routing entropy of every generated block.
"""

from __future__ import annotations

from typing import Any

from lm_eval.api.instance import Instance
from lm_eval.models.utils import Collator, handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from tqdm import tqdm

from lm_eval_moe.generation.sampling import SamplingConfig
from lm_eval_moe.model_wrappers.args import parse_bool, parse_int
from lm_eval_moe.model_wrappers.base import MoEHFLMBase, repeat_indices, request_seed
from lm_eval_moe.reroute import RerouteConfig, Rerouter
from lm_eval_moe.response import MoEResponse


def reroute_config(steps: Any = 5, lr: Any = 0.05, interval: Any = 128, layer_selection: str = "soft",
                   layer_fraction: Any = 0.25, confidence_order: str = "paper", weight_decay: Any = 1e-8,
                   eps: Any = 1e-5, loss_window: Any = None, gradient_checkpointing: Any = False) -> RerouteConfig:
    """The rerouting model args, parsed (shared by moe_reroute and moe_des reroute=true)."""
    return RerouteConfig(
        steps=parse_int("steps", steps), lr=float(lr), interval=parse_int("interval", interval),
        layer_selection=layer_selection,  # type: ignore[arg-type]
        layer_fraction=float(layer_fraction), confidence_order=confidence_order,  # type: ignore[arg-type]
        weight_decay=float(weight_decay), eps=float(eps),
        loss_window=parse_int("loss_window", loss_window) if loss_window not in (None, "", "none") else None,
        gradient_checkpointing=parse_bool("gradient_checkpointing", gradient_checkpointing),
    )


class MoERerouteLM(MoEHFLMBase):
    model_name = "moe_reroute"

    def __init__(self, pretrained: Any, steps: Any = 5, lr: Any = 0.05, interval: Any = 128,
                 layer_selection: str = "soft", layer_fraction: Any = 0.25, confidence_order: str = "paper",
                 weight_decay: Any = 1e-8, eps: Any = 1e-5, loss_window: Any = None,
                 gradient_checkpointing: Any = False, seed: Any = 1234, **kwargs: Any) -> None:
        self.reroute_config = reroute_config(steps, lr, interval, layer_selection, layer_fraction, confidence_order,
                                             weight_decay, eps, loss_window, gradient_checkpointing)
        super().__init__(pretrained=pretrained, **kwargs)
        self.seed = parse_int("seed", seed)
        self.rerouter = Rerouter(self.model, self.tokenizer, self.moe, self.cost_model, self.reroute_config)

    def settings(self) -> dict[str, Any]:
        config = self.reroute_config
        return {**super().settings(), "steps": config.steps, "lr": config.lr, "interval": config.interval,
                "layer_selection": config.layer_selection, "layer_fraction": config.layer_fraction,
                "confidence_order": config.confidence_order, "weight_decay": config.weight_decay, "eps": config.eps,
                "loss_window": config.loss_window, "gradient_checkpointing": config.gradient_checkpointing,
                "seed": self.seed}

    def _generate(self, requests: list[Instance], disable_tqdm: bool) -> list[str]:
        seeds = [request_seed(self.seed, request, repeat) for request, repeat in zip(requests, repeat_indices(requests))]
        items = [(request.args[0], request.args[1], index) for index, request in enumerate(requests)]
        ordered = Collator(items, sort_fn=lambda item: (-len(self.tok_encode(item[0])), item[0]), group_by="gen_kwargs",
                           group_fn=lambda item: item[1])
        results: list[Any] = [None] * len(requests)
        progress = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="moe_reroute generate_until")
        eos_text = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        batch_size = self.batch_size if self.batch_size != "auto" else 1
        for chunk in ordered.get_batched(n=batch_size):
            contexts, all_kwargs, indices = zip(*chunk, strict=True)
            kwargs = normalize_gen_kwargs(dict(all_kwargs[0]), self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos_text)
            max_new = int(kwargs.pop("max_gen_toks"))
            sampling = SamplingConfig(temperature=float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0,
                                      top_p=float(kwargs.get("top_p", 1.0) or 1.0))
            prompts = [self.tok_encode(c, left_truncate_len=max(1, self.max_length - max_new)) for c in contexts]
            outcomes = self.rerouter.generate(prompts, max_new, sampling, [seeds[i] for i in indices],
                                              stop_strings=[s for s in until if s and s != eos_text],
                                              eos_ids={self.eot_token_id})
            for index, outcome in zip(indices, outcomes):
                self.totals.add(outcome.cost)
                text = postprocess_generated_text(self.tok_decode(outcome.tokens), until, None)
                meta = {"cost": outcome.cost.as_dict(),
                        "reroute": {"phases": outcome.phases, "block_entropy": outcome.block_entropy,
                                    "finish_reason": outcome.finish_reason}}
                results[index] = MoEResponse(text, meta)
                progress.update(1)
        progress.close()
        return results
