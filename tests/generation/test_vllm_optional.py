"""vLLM is optional: nothing of it is imported unless backend=vllm is asked for, and asking without it
installed (or with an unsupported version, or with settings it cannot honour) fails with the reason."""

import subprocess
import sys
import types

import pytest

from lm_eval_moe.model_args import ModelArgError


def test_search_classes_do_not_import_vllm():
    code = ("import sys, lm_eval_moe.model_wrappers.moe_search, lm_eval_moe.generation.vllm_engine; "
            "print('vllm' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_backend_vllm_without_vllm_names_the_install(tiny_model_dir, monkeypatch):
    from lm_eval_moe.generation.vllm_engine import VLLMBackendError
    from lm_eval_moe.model_wrappers.moe_search import MoEDESLM

    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed
    with pytest.raises(VLLMBackendError, match=r"pip install 'lm_eval_moe\[vllm\]'"):
        MoEDESLM(pretrained=str(tiny_model_dir), verifier="majority", backend="vllm", device="cpu")


def test_unsupported_vllm_version_is_refused(monkeypatch):
    from lm_eval_moe.generation.vllm_engine import VLLMBackendError, require_vllm

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(__version__="0.31.2"))
    with pytest.raises(VLLMBackendError, match=r"vLLM 0.31.2 is not supported .* supported: 0.32.x, 0.33.x"):
        require_vllm()


@pytest.mark.parametrize("args, message", [
    (dict(backend="sglang"), "backend='sglang': expected one of hf, vllm"),
    (dict(backend="vllm", reroute=True), "reroute=true needs router-logit biases"),
])
def test_bad_backend_settings(tiny_model_dir, args, message):
    from lm_eval_moe.model_wrappers.moe_search import MoEDESLM

    with pytest.raises(ModelArgError, match=message):
        MoEDESLM(pretrained=str(tiny_model_dir), verifier="majority", device="cpu", **args)


def test_c3po_refuses_vllm(tiny_model_dir):
    """C3PO re-mixes routing weights per batch in the HF forward: vLLM cannot do that."""
    from lm_eval_moe.model_wrappers.moe_c3po import MoEC3POLM

    with pytest.raises(ModelArgError, match="moe_c3po changes routing per batch"):
        MoEC3POLM(pretrained=str(tiny_model_dir), references="unused.json", backend="vllm", device="cpu")


def test_results_name_every_vllm_engine_setting():
    """A vLLM run's reported settings carry every engine setting it was loaded with (given or default); an HF
    run's carry the backend alone."""
    from lm_eval_moe.generation.settings import PlainSettings
    from lm_eval_moe.search.settings import SearchSettings

    vllm = PlainSettings.from_model_args({"backend": "vllm", "vllm_tensor_parallel_size": "2"}).reported_backend()
    assert vllm == {"backend": "vllm", "vllm_max_model_len": None, "vllm_gpu_memory_utilization": None,
                    "vllm_tensor_parallel_size": 2, "vllm_seed": 0}
    search = SearchSettings.from_model_args({"backend": "vllm", "vllm_max_model_len": "512", "verifier": "majority",
                                             "strategy": "self_consistency"}).reported_backend()
    assert search["vllm_max_model_len"] == 512 and search["vllm_tensor_parallel_size"] == 1
    assert PlainSettings.from_model_args({}).reported_backend() == {"backend": "hf"}
