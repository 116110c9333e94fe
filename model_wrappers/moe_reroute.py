"""``moe_reroute``: online test-time rerouting as an lm-eval model (the method: lm_eval_moe/reroute/method.py).

Requests are batched (``batch_size``, an integer: each batch is optimised together) and follow the task's
generation kwargs (``until``, ``max_gen_toks``, ``do_sample``, ``temperature``, ``top_p``, ``top_k``; anything
else is refused, naming it), so ``repeats`` with sampling gives self-consistency and ``--num_fewshot`` gives
in-context examples, both combined with rerouting. Each response carries its cost (the optimisation's
forward/backward tokens and FLOPs counted separately) and, per Phase 1, the layer weights and selected
layers, the loss per step and after the update, and the delta norms, plus the routing entropy of every
generated block.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lm_eval.api.instance import Instance
from lm_eval.models.utils import Collator, postprocess_generated_text
from tqdm import tqdm

from lm_eval_moe.generation.sampling import SamplingConfig
from lm_eval_moe.model_args import ModelArgError
from lm_eval_moe.model_wrappers.base import MoEHFLMBase, request_seed
from lm_eval_moe.reroute.method import RerouteMethod
from lm_eval_moe.reroute.settings import RerouteMethodSettings
from lm_eval_moe.run_record import Generated


class MoERerouteLM(MoEHFLMBase):
    model_name = "moe_reroute"
    settings_type = RerouteMethodSettings

    def __init__(self, pretrained: Any, **model_args: Any) -> None:
        if str(model_args.get("batch_size", 1)).startswith("auto"):
            raise ModelArgError("moe_reroute optimises each batch together and needs an integer batch_size, not auto")
        super().__init__(pretrained=pretrained, **model_args)

    def build_method(self) -> None:
        self.method = RerouteMethod(self.model, self.tokenizer, self.moe, self.cost_model, self.method_settings)

    def reported_settings(self) -> dict[str, Any]:
        return {**super().reported_settings(), **self.method.report()}

    def _generate(self, requests: list[Instance], repeats: list[int], disable_tqdm: bool) -> Iterator[Generated]:
        seeds = [request_seed(self.method_settings.seed, request, repeat) for request, repeat in zip(requests, repeats)]
        items = [(request.args[0], request.args[1], index) for index, request in enumerate(requests)]
        ordered = Collator(items, sort_fn=lambda item: (-len(self.tok_encode(item[0])), item[0]), group_by="gen_kwargs",
                           group_fn=lambda item: item[1])
        progress = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="moe_reroute generate_until")

        def show_phase(phase: int, live: int, tokens: int) -> None:
            progress.set_postfix_str(f"phase {phase}: optimising {live} live rows, {tokens} tokens so far")

        eos_text = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        for chunk in ordered.get_batched(n=int(self.batch_size)):
            contexts, all_kwargs, indices = zip(*chunk, strict=True)
            until, max_new, kwargs = self.request_kwargs(all_kwargs[0])
            sampled = bool(kwargs.get("do_sample"))
            sampling = SamplingConfig(temperature=float(kwargs.get("temperature", 0.0)) if sampled else 0.0,
                                      top_p=float(kwargs.get("top_p", 1.0) or 1.0), top_k=int(kwargs.get("top_k", 0) or 0))
            effective = {"max_gen_toks": max_new, "temperature": sampling.temperature, "top_p": sampling.top_p,
                         "top_k": sampling.top_k}
            prompts = [self.tok_encode(c, left_truncate_len=max(1, self.max_length - max_new)) for c in contexts]
            rows = self.method.generate(prompts, max_new, sampling, [seeds[i] for i in indices],
                                        [s for s in until if s and s != eos_text], self.eos_ids, on_phase=show_phase)
            for index, row in zip(indices, rows):
                yield Generated(index, postprocess_generated_text(self.tok_decode(row.tokens), until, None), row.meta,
                                effective)
                progress.update(1)
        progress.close()
