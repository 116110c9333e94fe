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
BENCHMARK_DATA = REPO / "tests" / "data"


@pytest.fixture(scope="session")
def benchmark_data() -> pathlib.Path:
    """The public benchmark files shipped with the tests (tests/data/PROVENANCE.md), in the layout that
    ``LM_EVAL_MOE_DATA_DIR`` expects."""
    return BENCHMARK_DATA


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
def verifier_dirs(tmp_path_factory) -> dict[str, pathlib.Path]:
    """A tiny random checkpoint of every verifier format, in a folder named after it (Math-Shepherd's detection
    reads 'shepherd' in the name)."""
    from lm_eval_moe.testing import TINY_VERIFIER_KINDS, save_tiny_prm

    return {kind: save_tiny_prm(tmp_path_factory.mktemp(f"{kind}_verifier"), kind, seed=3 + index)
            for index, kind in enumerate(TINY_VERIFIER_KINDS)}


@pytest.fixture(scope="session")
def rlhflow_prm_dir(tmp_path_factory) -> pathlib.Path:
    from lm_eval_moe.testing import save_tiny_prm

    return save_tiny_prm(tmp_path_factory.mktemp("rlhflow_prm"), "rlhflow_prm", seed=2)


def lcb_rows() -> list[dict]:
    """Small LiveCodeBench problems in the dataset's exact row format (stdio and functional)."""
    import json

    from lm_eval_moe.scoring.code.livecodebench import encode_private_tests

    def row(qid, date, content, starter, tests_public, tests_private, metadata):
        return {
            "question_title": qid, "question_content": content, "platform": "atcoder" if not starter else "leetcode",
            "question_id": qid, "contest_id": "c1", "contest_date": date, "starter_code": starter,
            "difficulty": "easy", "public_test_cases": json.dumps(tests_public),
            "private_test_cases": encode_private_tests(tests_private), "metadata": json.dumps(metadata),
        }

    stdio = lambda i, o: {"input": i, "output": o, "testtype": "stdin"}  # noqa: E731
    functional = lambda i, o: {"input": i, "output": o, "testtype": "functional"}  # noqa: E731
    return [
        row("abc001_a", "2023-06-01T00:00:00", "Read two integers A and B and print A+B.", "",
            [stdio("1 2\n", "3\n")], [stdio("10 20\n", "30\n"), stdio("-5 5\n", "0\n")], {}),
        row("abc002_b", "2024-09-15T00:00:00", "Read N then N numbers; print their sum and mean (3 decimals).", "",
            [stdio("3\n1 2 3\n", "6 2.000\n")], [stdio("2\n1 2\n", "3 1.5\n")], {}),
        row("lc_two_sum", "2024-10-01T00:00:00", "Return indices of the two numbers that add up to target.",
            "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        ",
            [functional("[2, 7, 11, 15]\n9", "[0, 1]")], [functional("[3, 2, 4]\n6", "[1, 2]"),
                                                         functional("[3, 3]\n6", "[0, 1]")], {"func_name": "twoSum"}),
    ]


LCB_SOLUTIONS = {
    "abc001_a": "a, b = map(int, input().split())\nprint(a + b)\n",
    "abc002_b": "n = int(input())\nxs = list(map(int, input().split()))\nprint(sum(xs), f'{sum(xs) / n:.3f}')\n",
    "lc_two_sum": "class Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n"
                  "        for i, x in enumerate(nums):\n            if target - x in seen:\n"
                  "                return [seen[target - x], i]\n            seen[x] = i\n",
}


@pytest.fixture(scope="session")
def data_dir_with_lcb(tmp_path_factory, benchmark_data) -> pathlib.Path:
    """tests/data plus a livecodebench/ folder (test.jsonl = release_v1, test2.jsonl = v2 delta)."""
    import json

    root = tmp_path_factory.mktemp("data")
    for entry in benchmark_data.iterdir():
        (root / entry.name).symlink_to(entry)
    folder = root / "livecodebench"
    folder.mkdir()
    rows = lcb_rows()
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    (folder / "test2.jsonl").write_text(json.dumps(rows[2]) + "\n")
    return root
