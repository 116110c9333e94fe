"""lm-eval's own tools read our outputs as they read a stock task's: samples hold the extracted answer in
``filtered_resps`` (the records in ``moe_records``), ``lm_eval.utils`` finds and tabulates the results, the
printed table shows the measures that apply, ``--gen_kwargs`` a method would not honour are refused before
anything loads, and every task names its dataset's source."""

from __future__ import annotations

import json
from pathlib import Path

import lm_eval
import pytest
from lm_eval import simple_evaluate, utils
from lm_eval.loggers import EvaluationTracker
from lm_eval.tasks import TaskManager

from lm_eval_moe._lm_eval_hook import tasks_dir
from lm_eval_moe.model_args import ModelArgError
from lm_eval_moe.printed_results import printed_view
from lm_eval_moe.scoring import CHECKERS
from lm_eval_moe.tasks.data import DATA_DIR_ENV

STOCK_GSM8K = Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k.yaml"


@pytest.fixture
def local_data(benchmark_data, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(benchmark_data))


def _evaluate(model, task: str, include_path: Path | None = None, **kwargs):
    manager = TaskManager(include_path=str(include_path) if include_path else None)
    return simple_evaluate(model=model, tasks=[task], limit=3, log_samples=True, task_manager=manager,
                           gen_kwargs="max_gen_toks=16", bootstrap_iters=0, **kwargs)


def _stock_gsm8k_on_local_data(folder: Path, benchmark_data: Path) -> Path:
    """lm-eval's own gsm8k (its prompt, filters and metric) reading the shipped GSM8K files."""
    data = benchmark_data / "gsm8k"
    (folder / "stock_gsm8k_local.yaml").write_text(
        f"include: {STOCK_GSM8K}\ntask: stock_gsm8k_local\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data / 'test.jsonl'}\n"
        "training_split: null\nfewshot_split: test\n"
        "num_fewshot: 0\n"
    )
    return folder


def test_samples_hold_the_extracted_answer_as_stock_gsm8k_under_hf(tiny_model_dir, qwen_prm_dir, benchmark_data,
                                                                    local_data, tmp_path):
    from lm_eval.models.huggingface import HFLM

    from lm_eval_moe.model_wrappers.moe_hf import MoEHFLM
    from lm_eval_moe.model_wrappers.moe_search import MoEDESLM

    stock = _evaluate(HFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=3), "stock_gsm8k_local",
                      _stock_gsm8k_on_local_data(tmp_path, benchmark_data))
    stock_sample = stock["samples"]["stock_gsm8k_local"][0]
    check = CHECKERS["numeric"]
    for lm in (MoEHFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=3),
               MoEDESLM(pretrained=str(tiny_model_dir), verifier=str(qwen_prm_dir), budget=4, keep=2, max_steps=2,
                        max_step_tokens=8, expert_counts="1|2", device="cpu")):
        ours = _evaluate(lm, "moe_gsm8k")
        for sample in ours["samples"]["moe_gsm8k"]:
            # the shape stock gsm8k logs: one string per request, the answer the filter extracted
            assert type(sample["filtered_resps"]) is type(stock_sample["filtered_resps"]) is list
            assert len(sample["filtered_resps"]) == len(stock_sample["filtered_resps"]) == 1
            assert isinstance(sample["filtered_resps"][0], str) and sample["filter"] == "extract_answer"
            [record] = sample["moe_records"]
            assert record["response"] == sample["resps"][0][0]
            assert sample["filtered_resps"][0] == (check.read(record["response"]).answer or "[invalid]")
            assert record["verdict"]["correct"] == bool(sample["exact_match"])
        logged = json.loads(json.dumps(ours["samples"]["moe_gsm8k"], default=utils.handle_non_serializable))
        assert logged[0]["filtered_resps"] == ours["samples"]["moe_gsm8k"][0]["filtered_resps"]


def test_lm_eval_utils_find_and_tabulate_our_results(tiny_model_dir, local_data, tmp_path):
    from lm_eval_moe.model_wrappers.moe_hf import MoEHFLM

    results = _evaluate(MoEHFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=3), "moe_gsm8k")
    samples = results.pop("samples")
    tracker = EvaluationTracker(output_path=str(tmp_path / "out"))
    tracker.save_results_aggregated(results=results, samples=samples)
    tracker.save_results_samples(task_name="moe_gsm8k", samples=samples["moe_gsm8k"])
    files = [str(path.relative_to(tmp_path)) for path in (tmp_path / "out").rglob("*") if path.is_file()]
    [latest] = [utils.get_latest_filename(utils.get_results_filenames(files))]
    [samples_file] = utils.get_sample_results_filenames(files)
    assert utils.get_file_task_name(samples_file) == "moe_gsm8k"
    assert utils.get_file_datetime(samples_file) in latest  # the samples file of that results file
    loaded = json.loads((tmp_path / latest).read_text())
    table = utils.make_table(loaded)
    rows = [line for line in table.splitlines() if line.startswith("|") and "extract_answer" in line]
    assert {row.split("|")[5].strip() for row in rows} == {"exact_match", "cost"}  # greedy: accuracy and cost
    assert "peak_rss_mb" not in table and "peak_rss_mb,extract_answer" in loaded["results"]["moe_gsm8k"]
    assert set(loaded["higher_is_better"]["moe_gsm8k"]) == {
        key.split(",")[0] for key in loaded["results"]["moe_gsm8k"] if "," in key and "_stderr" not in key
    } - {"moe_records"}


def test_the_printed_table_shows_pass_and_majority_at_k_and_coverage_where_they_apply():
    metrics = {"alias": "moe_gsm8k", "moe_records,extract_answer": 4.0, "exact_match,extract_answer": 0.5,
               "exact_match_stderr,extract_answer": 0.2, "pass@4,extract_answer": 0.75, "maj@4,extract_answer": 0.5,
               "coverage,extract_answer": 0.75, "num_candidates,extract_answer": 4.0, "precision,extract_answer": 0.4,
               "flops,extract_answer": 2e9, "wall_seconds,extract_answer": 1.5, "verdicts_sandbox_error,extract_answer": 0.0,
               "router_entropy_first_block,extract_answer": 1.2}
    stock = {"alias": "gsm8k", "exact_match,strict-match": 0.1, "exact_match,flexible-extract": 0.2}
    view = printed_view({"results": {"moe_gsm8k": metrics, "gsm8k": stock}, "versions": {}})
    shown = {key.split(",")[0] for key in view["results"]["moe_gsm8k"] if "," in key}
    assert shown == {"exact_match", "exact_match_stderr", "pass@4", "maj@4", "coverage", "cost"}
    assert view["results"]["moe_gsm8k"]["cost,extract_answer"] == "2e+09 policy FLOPs, 1.50 s per sample"
    assert view["results"]["gsm8k"] == stock  # other tasks print as lm-eval prints them


@pytest.mark.parametrize(("model", "model_args", "gen_kwargs", "named"), [
    ("moe_hf", "", "max_new_token=5", "'max_new_tokens'"),
    ("moe_hf", "backend=vllm", "num_beams=2", "'num_beams'"),
    ("moe_des", ",verifier=majority,budget=4", "temprature=0.7", "'temperature'"),
    ("moe_search", ",strategy=best_of_n,verifier=likelihood,budget=4", "top_q=0.9", "'top_p'"),
    ("moe_reroute", "", "repetition_penalty=1.1", "'repetition_penalty'"),
    ("moe_c3po", ",references=refs.json", "tempreature=1", "'temperature'"),
])
def test_gen_kwargs_a_method_would_not_honour_are_refused_before_any_checkpoint_loads(model, model_args, gen_kwargs,
                                                                                       named, tmp_path):
    missing = tmp_path / "no_such_checkpoint"  # never loaded: the refusal comes first
    args = f"pretrained={missing}" + (f",{model_args}" if model_args and not model_args.startswith(",") else model_args)
    with pytest.raises(ModelArgError, match=named):
        simple_evaluate(model=model, model_args=args, tasks=["moe_gsm8k"], gen_kwargs=gen_kwargs)


def test_moe_hf_honours_what_transformers_generate_takes(tiny_model_dir, local_data):
    from lm_eval_moe.model_wrappers.moe_hf import MoEHFLM

    lm = MoEHFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=3)
    out = simple_evaluate(model=lm, tasks=["moe_gsm8k"], limit=1, gen_kwargs="max_gen_toks=4,repetition_penalty=1.3",
                          task_manager=TaskManager())
    assert "exact_match,extract_answer" in out["results"]["moe_gsm8k"]


def test_every_task_names_its_datasets_source():
    from lm_eval_moe.tasks.data import _benchmark

    manager = TaskManager(include_defaults=False, include_path=str(tasks_dir()))
    sources = {"livecodebench": ("livecodebench/code_generation_lite", None), "demo_arith": ("lm_eval_moe.demo.arith", None)}
    names = [name for name in manager.all_subtasks if name.startswith("moe_")]
    assert len(names) == 5 + 57 + 3 + 1
    for name in names:
        config = manager.task_index[name].cfg
        benchmark = config["dataset_kwargs"]["benchmark"]
        if benchmark in sources:
            expected = sources[benchmark]
        else:
            spec = _benchmark(benchmark, config["dataset_kwargs"].get("subject"))
            expected = (spec.hub_path, spec.hub_name)
        assert (config["dataset_path"], config.get("dataset_name")) == expected, name
