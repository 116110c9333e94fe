"""Reasoning task YAMLs, data loading and the gold self-check over the full local data."""

import json
import os

import pytest
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager

from lm_eval_moe._lm_eval_hook import tasks_dir
from lm_eval_moe.response import MoEResponse
from lm_eval_moe.scoring.equivalence import normalize_latex, parse_number
from lm_eval_moe.tasks import reasoning
from lm_eval_moe.tasks.data import DATA_DIR_ENV, TaskDataError, load_benchmark

BENCHMARKS = {  # benchmark -> (its answer checker, expected test rows)
    "math500": ("math", 500),
    "gsm8k": ("numeric", 1319),
    "svamp": ("numeric", 1000),
    "aime24": ("aime", 30),
    "aime25": ("aime", 30),
}


@pytest.fixture(autouse=True)
def local_data(benchmark_data, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(benchmark_data))


def _answer(gold: str) -> str:
    return f"Let me work through it.\n\nSo the final answer is $\\boxed{{{gold}}}$."


def _different(gold: str, others: list[str]) -> str:
    """An answer that is certainly not the gold one: gold+1 for numbers, else another problem's answer
    that differs as a string and as a number."""
    value = parse_number(gold)
    if value is not None:
        return str(value + 1)
    for other in others:
        if normalize_latex(other) != normalize_latex(gold) and normalize_latex(other).lstrip("x=") != normalize_latex(gold):
            return other
    raise AssertionError(f"no different answer for {gold!r}")


@pytest.mark.parametrize("benchmark", sorted(BENCHMARKS))
def test_gold_self_check_over_the_full_benchmark(benchmark, capsys):
    checker, rows = BENCHMARKS[benchmark]
    docs = load_benchmark(benchmark)["test"]
    assert len(docs) == rows and {doc["moe_answer_key"] for doc in docs} == {checker}
    process = reasoning.process_answer
    golds = [d["moe_gold"] for d in docs]
    failures, accepted_wrong = [], []
    for index, doc in enumerate(docs):
        if process(doc, [_answer(doc["moe_gold"])])["exact_match"] != 1.0:
            failures.append((index, doc["moe_gold"]))
        wrong = _different(doc["moe_gold"], golds[index + 1 :] + golds[:index])
        if process(doc, [_answer(wrong)])["exact_match"] != 0.0:
            accepted_wrong.append((index, doc["moe_gold"], wrong))
    with capsys.disabled():
        print(f"\n[gold self-check] {benchmark}: {rows - len(failures)}/{rows} gold answers accepted, "
              f"{len(accepted_wrong)} different answers accepted")
    assert failures == [] and accepted_wrong == []


def test_gold_self_check_mmlu_redux_ok_subset(capsys):
    subjects = sorted(p.stem for p in (tasks_dir() / "mmlu_redux").glob("moe_mmlu_redux_*.yaml"))
    total = failures = 0
    for name in subjects:
        subject = name.removeprefix("moe_mmlu_redux_")
        for doc in load_benchmark("mmlu_redux", subject=subject)["test"]:
            total += 1
            wrong = "ABCD"[("ABCD".index(doc["moe_gold"]) + 1) % 4]
            right = reasoning.process_answer(doc, [f"Reasoning.\n\nThe answer is $\\boxed{{{doc['moe_gold']}}}$."])
            other = reasoning.process_answer(doc, [f"Reasoning.\n\nThe answer is $\\boxed{{{wrong}}}$."])
            failures += right["exact_match"] != 1.0 or other["exact_match"] != 0.0
    with capsys.disabled():
        print(f"\n[gold self-check] mmlu_redux: {total - failures}/{total} ok-annotated questions scored right")
    assert len(subjects) == 57 and total == 5330 and failures == 0


def test_every_task_runs_on_a_tiny_model_with_group_aggregates(tiny_model_dir, data_dir_with_lcb, monkeypatch):
    from lm_eval_moe.model_wrappers.moe_hf import MoEHFLM

    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir_with_lcb))
    lm = MoEHFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=4, max_length=512)
    out = simple_evaluate(
        model=lm, tasks=["moe_reasoning"], limit=3, log_samples=True, gen_kwargs="max_gen_toks=8", confirm_run_unsafe_code=True,
        task_manager=TaskManager(include_defaults=False, include_path=str(tasks_dir()), metadata={"release": "release_v2"}),
    )
    groups = {"moe_reasoning", "moe_math", "moe_knowledge", "moe_mmlu_redux", "moe_code"}
    leaves = [name for name in out["results"] if name not in groups]
    assert len(leaves) == 5 + 57 + 3 and groups <= set(out["results"])
    for group in groups:
        metrics = ["exact_match", "coverage", "pass@1", "precision"]
        metrics += [] if group in ("moe_code", "moe_reasoning") else ["maj@1"]
        for metric in metrics:
            assert f"{metric},extract_answer" in out["results"][group], (group, metric)
    sample = out["samples"]["moe_gsm8k"][0]
    assert sample["generated_tokens"] > 0 and sample["flops"] > 0 and sample["routed_expert_tokens"] > 0
    assert out["results"]["moe_reasoning"]["exact_match,extract_answer"] == pytest.approx(
        sum(out["results"][t]["exact_match,extract_answer"] * 3 for t in leaves) / (3 * len(leaves))
    )


def test_fewshot_uses_gsm8k_worked_solutions_not_the_problem_itself():
    manager = TaskManager(include_defaults=False, include_path=str(tasks_dir()))
    task = manager.load(["moe_gsm8k"])["tasks"]["moe_gsm8k"]
    task.set_config("num_fewshot", 2)
    doc = task.dataset["test"][0]
    context = task.fewshot_context(doc, num_fewshot=2)
    assert context.count("Problem:") == 3 and context.count("The final answer is $\\boxed{") == 2
    assert context.endswith(reasoning.math_prompt(doc))
    assert context.count(doc["moe_question"]) == 1


def test_logged_samples_hold_the_answer_and_keep_every_search_candidate():
    """What --log_samples writes (lm-eval's own sanitising and JSON dump): the selected answer in filtered_resps,
    as stock answer tasks hold it, and every candidate with its verdict in moe_records."""
    from lm_eval.utils import handle_non_serializable, sanitize_list

    candidates = [{"text": _answer(x), "expert_count": k, "score": 0.5, "step_scores": [0.5], "step_count": 3,
                   "finish_reason": "eos", "answer": x} for x, k in (("8", 2), ("7", 4))]
    response = MoEResponse(_answer("8"), {"candidates": candidates, "cost": {"flops": 5.0}})
    doc = {"moe_gold": "7", "moe_answer_key": "numeric"}
    filtered = reasoning.ExtractAnswer().apply([[response]], [doc])
    metrics = reasoning.process_answer(doc, filtered)
    logged = json.loads(json.dumps({"filtered_resps": sanitize_list(filtered), **metrics}, default=handle_non_serializable))
    assert logged["filtered_resps"] == ["8"]
    [record] = logged["moe_records"]
    assert record["response"] == _answer("8") and record["cost"] == {"flops": 5.0}
    assert [c["verdict"]["correct"] for c in record["candidates"]] == [False, True]
    assert [{k: v for k, v in c.items() if k != "verdict"} for c in record["candidates"]] == candidates
    assert metrics["coverage"] == 1.0 and metrics["exact_match"] == 0.0


def test_filtered_answer_of_repeats_is_their_majority_and_of_silence_is_invalid():
    doc = {"moe_gold": "7", "moe_answer_key": "numeric"}
    [voted, silent] = reasoning.ExtractAnswer().apply([[_answer("8"), _answer("7"), _answer("7")], ["no idea"]],
                                                      [doc, doc])
    assert voted == "7" and len(voted.records) == 3
    assert silent == reasoning.NO_ANSWER


def test_scores_plain_strings_from_other_models_without_cost_metrics():
    doc = {"moe_gold": "7", "moe_answer_key": "numeric"}
    metrics = reasoning.process_answer(doc, ["The answer is \\boxed{7}."])
    assert metrics["exact_match"] == 1.0 and "generated_tokens" not in metrics


def test_repeats_select_the_majority_and_search_candidates_count():
    doc = {"moe_gold": "7", "moe_answer_key": "numeric"}
    repeats = [_answer("8"), _answer("7"), _answer("7")]
    assert reasoning.process_answer(doc, repeats)["exact_match"] == 1.0
    search = MoEResponse(_answer("8"), {"candidates": [{"text": _answer(x)} for x in "8787"], "cost": {"flops": 5.0}})
    metrics = reasoning.process_answer(doc, [search])
    assert metrics["exact_match"] == 0.0 and metrics["coverage"] == 1.0 and metrics["precision"] == 0.5
    assert not any(name.startswith(("pass@", "maj@")) for name in metrics)  # search candidates are not independent
    assert metrics["flops"] == 5.0


def test_malformed_rows_and_missing_files_name_the_problem(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(TaskDataError, match="has no gsm8k/test.jsonl"):
        load_benchmark("gsm8k")
    (tmp_path / "gsm8k").mkdir()
    rows = [{"question": "q", "answer": "2 + 2 = 4\n#### 4"}, {"question": "q", "answer": "no marker"}]
    (tmp_path / "gsm8k" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(TaskDataError, match="row 1 .* no '####' line"):
        load_benchmark("gsm8k")
    with pytest.raises(TaskDataError, match="unknown benchmark 'gsm9k'"):
        load_benchmark("gsm9k")


def test_mmlu_error_type_spellings_are_normalised(benchmark_data):
    raw = [json.loads(line) for line in (benchmark_data / "mmlu_redux/annotation_csv_snapshot/anatomy.jsonl").open()]
    spellings = {r["error_type"] for r in raw if r["error_type"].strip().lower() == "ok"}
    kept = load_benchmark("mmlu_redux", subject="anatomy")["test"]
    assert len(kept) == sum(r["error_type"].strip().lower().replace(" ", "_") == "ok" for r in raw)
    assert len(spellings) >= 1 and os.environ[DATA_DIR_ENV]


def test_chat_template_wraps_the_same_prompt(tiny_model_dir):
    from lm_eval_moe.model_wrappers.moe_hf import MoEHFLM

    lm = MoEHFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=2, max_length=1024)
    out = simple_evaluate(
        model=lm, tasks=["moe_svamp"], limit=2, log_samples=True, apply_chat_template=True,
        gen_kwargs="max_gen_toks=8", task_manager=TaskManager(include_defaults=False, include_path=str(tasks_dir())),
    )
    prompt = out["samples"]["moe_svamp"][0]["arguments"][0][0]
    assert prompt.startswith("<|user|>\n" + reasoning.MATH_INSTRUCTION) and prompt.endswith("<|assistant|>\n")
