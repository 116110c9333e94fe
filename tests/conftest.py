"""Offline, single-threaded, deterministic test setup."""

import os

for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_name] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pathlib  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"benchmark data folder {SHARED_DATA} is missing (CI runs with ../shared beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> pathlib.Path:
    """A tiny OLMoE with the byte tokenizer saved on disk, for lm-eval runs."""
    from lm_eval_moe.testing import save_tiny_moe

    return save_tiny_moe(tmp_path_factory.mktemp("tiny_olmoe"), "olmoe", seed=0)
