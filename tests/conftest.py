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


TINY_TASK_YAML = """task: moe_test_echo
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 8
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


@pytest.fixture(scope="session")
def tiny_task_dir(tmp_path_factory) -> pathlib.Path:
    """An --include_path folder with one tiny generative task over a local JSONL file."""
    import json

    folder = tmp_path_factory.mktemp("tiny_task")
    data = folder / "echo.jsonl"
    rows = [{"question": f"{a}+{b}", "answer": str(a + b)} for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "moe_test_echo.yaml").write_text(TINY_TASK_YAML.format(data=data))
    return folder


@pytest.fixture(scope="session")
def qwen_prm_dir(tmp_path_factory) -> pathlib.Path:
    from lm_eval_moe.testing import save_tiny_prm

    return save_tiny_prm(tmp_path_factory.mktemp("qwen_prm"), "qwen_prm", seed=1)


@pytest.fixture(scope="session")
def rlhflow_prm_dir(tmp_path_factory) -> pathlib.Path:
    from lm_eval_moe.testing import save_tiny_prm

    return save_tiny_prm(tmp_path_factory.mktemp("rlhflow_prm"), "rlhflow_prm", seed=2)
