"""A run killed part way resumes from its response cache: what was finished is read back, not generated
again, and the results equal an uninterrupted run's; other settings never see those responses."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from lm_eval_moe.response import RESOURCE_METRICS, MoEResponse
from lm_eval_moe.response_cache import ResponseCache, ResponseCacheError
from lm_eval_moe.testing import reproducible_sample

DES_ARGS = ("pretrained=tiny-arith-moe,verifier=tiny-arith-prm,budget=4,keep=2,max_steps=3,max_step_tokens=40,"
            "expert_counts=1-4,temperature=0.8,search_batch_size=2")
LIMIT = 10


def _command(model_args: str, output) -> list[str]:
    return [sys.executable, "-m", "lm_eval", "--model", "moe_des", "--model_args", model_args, "--device", "cpu",
            "--tasks", "moe_demo_arith", "--limit", str(LIMIT), "--log_samples", "--output_path", str(output)]


def _env():
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")


def _samples(output) -> dict[int, dict]:
    (path,) = output.rglob("samples_moe_demo_arith_*.jsonl")
    samples = map(reproducible_sample, map(json.loads, path.read_text().splitlines()))
    return {sample["doc_id"]: sample for sample in samples}


@pytest.mark.slow  # three subprocess lm_eval runs, one killed
def test_a_killed_des_run_resumes_with_the_same_results(tmp_path):
    cache = tmp_path / "cache"
    args = f"{DES_ARGS},response_cache={cache}"
    killed = subprocess.Popen(_command(args, tmp_path / "out"), env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    rank_file = cache / "rank0.jsonl"
    while time.monotonic() < deadline and killed.poll() is None:
        if rank_file.is_file() and len(rank_file.read_text().splitlines()) >= 4:
            break
        time.sleep(0.2)
    assert killed.poll() is None, "the run ended before it could be killed"
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    finished_before = len(rank_file.read_text().splitlines())
    assert 4 <= finished_before < LIMIT and not list((tmp_path / "out").rglob("results_*.json"))

    resumed = subprocess.run(_command(args, tmp_path / "out"), env=_env(), cwd=tmp_path, capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reported = re.search(r"(\d+) of (\d+) responses read from the response cache .*?(\d+) to generate", resumed.stderr)
    assert reported and [int(g) for g in reported.groups()] == [finished_before, LIMIT, LIMIT - finished_before]
    entries = [json.loads(line) for line in rank_file.read_text().splitlines()]
    assert len(entries) == LIMIT == len({entry["key"] for entry in entries})  # each request generated once

    plain = subprocess.run(_command(DES_ARGS, tmp_path / "plain"), env=_env(), cwd=tmp_path, capture_output=True,
                           text=True)
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert _samples(tmp_path / "out") == _samples(tmp_path / "plain")
    (resumed_results,) = (tmp_path / "out").rglob("results_*.json")
    (plain_results,) = (tmp_path / "plain").rglob("results_*.json")
    totals = [{k: v for k, v in json.loads(p.read_text())["config"]["lm_eval_moe"]["totals"].items() if k not in RESOURCE_METRICS}
              for p in (resumed_results, plain_results)]
    assert totals[0] == totals[1]


def _request(cache: ResponseCache, **changes) -> str:
    request = {"task": "t", "doc_id": 3, "repeat": 0, "arguments": ("Problem: 1+1", {"until": ["\n"]})}
    request.update(changes)
    return cache.key(request["task"], request["doc_id"], request["repeat"], request["arguments"])


def test_the_key_holds_settings_version_and_request(tmp_path):
    identity = {"model_class": "moe_des", "model_args": {"budget": "4"}, "settings": {"budget": 4},
                "lm_eval_moe": {"lm_eval_moe": "0.1.0", "lm_eval_moe_commit": "abc"}}
    cache = ResponseCache(tmp_path / "a", identity)
    key = _request(cache)
    cache.put(key, MoEResponse("two", {"cost": {"flops": 1.0}, "candidates": [{"expert_count": [1, 2]}]}), {"k": 1})
    cache.close()
    again = ResponseCache(tmp_path / "a", identity)
    response, generation = again.get(key)
    assert str(response) == "two" and response.meta["candidates"] == [{"expert_count": [1, 2]}] and generation == {"k": 1}
    for other in ({**identity, "settings": {"budget": 8}}, {**identity, "model_args": {"budget": "8"}},
                  {**identity, "lm_eval_moe": {"lm_eval_moe": "0.1.1", "lm_eval_moe_commit": "abc"}},
                  {**identity, "lm_eval_moe": {"lm_eval_moe": "0.1.0", "lm_eval_moe_commit": "def"}}):
        changed = ResponseCache(tmp_path / "a", other, rank=1)
        assert changed.get(_request(changed)) is None
        changed.close()
    for change in ({"repeat": 1}, {"doc_id": 4}, {"task": "u"}, {"arguments": ("Problem: 1+2", {"until": ["\n"]})},
                   {"arguments": ("Problem: 1+1", {"until": ["\n\n"]})}):
        assert again.get(_request(again, **change)) is None
    again.close()


def test_a_cut_line_is_skipped_and_a_held_folder_refused(tmp_path):
    identity = {"model_class": "moe_hf"}
    cache = ResponseCache(tmp_path, identity)
    cache.put(_request(cache), MoEResponse("x", {"cost": {}}), {})
    with pytest.raises(ResponseCacheError, match="held by another run"):
        ResponseCache(tmp_path, identity)
    cache.close()
    with (tmp_path / "rank0.jsonl").open("a") as handle:
        handle.write('{"key": "cut sho')
    reread = ResponseCache(tmp_path, identity)
    assert str(reread.get(_request(reread))[0]) == "x" and len(reread.entries) == 1
    reread.put(_request(reread, doc_id=9), MoEResponse("y", {"cost": {}}), {})
    reread.close()
    last = ResponseCache(tmp_path, identity)
    assert str(last.get(_request(last, doc_id=9))[0]) == "y"  # written on a line of its own after the cut one
    last.close()
