"""Settings of plain generation (``moe_hf``) and of the generation backend every method shares."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from lm_eval_moe.model_args import (
    ModelArgSettings, arg, choice, optional_float, optional_positive_int, parse_int, positive_int,
)
from lm_eval_moe.moe.settings import RoutingSettings


@dataclass(frozen=True)
class BackendSettings(ModelArgSettings):
    backend: str = arg("hf", choice("hf", "vllm"), "generation backend: hf (transformers) or vllm", load_time=True)
    vllm_max_model_len: int | None = arg(None, optional_positive_int, "vLLM max_model_len", load_time=True)
    vllm_gpu_memory_utilization: float | None = arg(None, optional_float, "vLLM gpu_memory_utilization",
                                                    load_time=True)
    vllm_tensor_parallel_size: int = arg(1, positive_int, "vLLM tensor_parallel_size", load_time=True)

    def reported_backend(self) -> dict[str, Any]:
        """The backend and, for vLLM, every engine setting it was loaded with (``vllm_*``), for the results."""
        engine = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
                  if self.backend == "vllm" and field.name.startswith("vllm_")}
        return {"backend": self.backend, **engine}


@dataclass(frozen=True)
class PlainSettings(RoutingSettings, BackendSettings):
    """``moe_hf``: transformers' generate (or one vLLM engine) at a chosen k."""

    vllm_seed: int = arg(0, parse_int, "seed of vLLM's sampler (backend=vllm, do_sample=true)", load_time=True)
