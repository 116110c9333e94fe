"""The stock ``lm_eval`` CLI finds our models and tasks after ``pip install .`` / ``pip install -e .``."""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("PYTHONPATH", None)
    return env


def _python_check(python: str, code: str) -> str:
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, env=_env(), cwd="/")
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


RESOLVE = (
    "from lm_eval.api.registry import get_model;"
    "print(get_model('moe_hf').__name__, get_model('hf').__name__, get_model('dummy').__name__)"
)


def _cli_run(python: str, model_dir: Path, task_dir: Path, out_dir: Path) -> dict:
    command = [
        python, "-m", "lm_eval", "--model", "moe_hf",
        "--model_args", f"pretrained={model_dir},expert_count=2", "--device", "cpu",
        "--tasks", "moe_test_echo", "--include_path", str(task_dir),
        "--limit", "2", "--output_path", str(out_dir),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=_env(), cwd="/")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    (results_file,) = out_dir.rglob("results_*.json")
    return json.loads(results_file.read_text())


def test_models_resolve_in_this_environment():
    assert _python_check(sys.executable, RESOLVE).split() == ["MoEHFLM", "HFLM", "DummyLM"]


def test_hook_costs_little_at_interpreter_start():
    """The .pth hook must not import lm_eval or torch on every Python start."""
    out = _python_check(sys.executable, "import sys; print('lm_eval' in sys.modules, 'torch' in sys.modules)")
    assert out.split() == ["False", "False"]  # its time: benchmarks/bench_hook_import.py


def test_the_pth_line_imports_only_the_hook():
    """What the .pth line costs every Python start: our two small modules and nothing else (no logging,
    pathlib, typing or importlib.abc; benchmarks/bench_hook_import.py measures the time)."""
    code = (
        "import sys; before = set(sys.modules); "
        "import lm_eval_moe._lm_eval_hook as hook; hook.install(); "
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    result = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=dict(
        _env(), PYTHONPATH=str(REPO)), cwd="/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["lm_eval_moe", "lm_eval_moe._lm_eval_hook"]


def test_a_failed_registration_is_a_visible_warning():
    code = (
        "import warnings, lm_eval_moe._lm_eval_hook as hook\n"
        "def broken():\n    raise ImportError('lm_eval.models is broken')\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    hook._run_visibly(broken)\n"
        "print(caught[0].category.__name__, '|', caught[0].message)\n"
    )
    out = _python_check(sys.executable, code)
    assert out.startswith("RuntimeWarning | lm_eval_moe could not register with lm-eval (broken: ImportError")
    assert "lm_eval_moe.register()" in out


def test_nothing_is_registered_twice_when_lm_eval_discovers_plugins():
    """An lm-eval with entry-point discovery (``registry.load_plugins``; a task manager that loads plugin
    tasks) gets nothing from the hook; register() stays idempotent on 0.4.13."""
    code = (
        "import lm_eval.api.registry as registry, lm_eval.tasks.manager as manager, lm_eval_moe\n"
        "from lm_eval_moe import _lm_eval_hook as hook\n"
        "print(hook.lm_eval_discovers_models(), hook.lm_eval_discovers_tasks())\n"
        "lm_eval_moe.register(); lm_eval_moe.register()\n"
        "names = [n for n in registry.model_registry if n.startswith('moe_')]\n"
        "print(len(names) == len(set(names)) == len(hook.MODEL_TARGETS), "
        "getattr(manager.TaskManager.__init__, '__wrapped__', None) is not None "
        "and getattr(manager.TaskManager.__init__.__wrapped__, '_lm_eval_moe_wrapped', False))\n"
        "registry.load_plugins = lambda *a, **k: []\n"
        "manager.TaskManager.load_plugin_tasks = lambda self: None\n"
        "print(hook.lm_eval_discovers_models(), hook.lm_eval_discovers_tasks())\n"
        "for name in hook.MODEL_TARGETS:\n"
        "    del registry.model_registry._objs[name]\n"
        "hook.register_models()\n"
        "print(any(name in registry.model_registry for name in hook.MODEL_TARGETS))\n"
    )
    lines = _python_check(sys.executable, code).splitlines()
    assert lines[0] == "False False"  # lm-eval 0.4.13: no discovery, the hook registers
    assert lines[1] == "True False"  # every name once; TaskManager.__init__ wrapped once, not twice
    assert lines[2] == "True True"
    assert lines[3] == "False"  # lm-eval loads our entry points itself: the hook adds nothing


#: what a Python that implements PEP 829 does with site-packages, without running any .pth import line that a
#: ``<name>.start`` file replaces: path lines extend sys.path, other packages' import lines still run (the
#: deprecation period; ``strict``: after it, none run), then every .start entry point is called
PEP_829_STARTUP = """
import os, pkgutil, sys
site, strict = {site!r}, {strict!r}
sys.path.append(site)
names = sorted(os.listdir(site))
for name in (n for n in names if n.endswith('.pth')):
    replaced = name[:-4] + '.start' in names
    for line in open(os.path.join(site, name)):
        line = line.rstrip()
        if line.startswith(('import ', 'import\t')):
            if not (replaced or strict):
                exec(line)
        elif line and not line.startswith('#'):
            sys.path.append(os.path.join(site, line))
for name in (n for n in names if n.endswith('.start')):
    for line in open(os.path.join(site, name)):
        if line.strip() and not line.startswith('#'):
            pkgutil.resolve_name(line.strip())()
"""


def _pep_829_check(python: str, site: str, code: str, strict: bool = False) -> str:
    result = subprocess.run([python, "-S", "-c", PEP_829_STARTUP.format(site=site, strict=strict) + code],
                            capture_output=True, text=True, env=_env(), cwd="/")
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_pythons_that_run_start_files_instead_of_pth_lines_still_see_our_models_and_tasks():
    """PEP 829 (Python 3.15+): a ``.start`` file replaces the ``.pth`` import line of the same name, which later
    Pythons stop running; without it our models and tasks would vanish silently there."""
    site = sysconfig.get_paths()["purelib"]
    assert Path(site, "lm_eval_moe.start").read_text() == "lm_eval_moe._lm_eval_hook:install\n"
    code = RESOLVE + ";from lm_eval.tasks import TaskManager;print(getattr(TaskManager.__init__, '_lm_eval_moe_wrapped', False))"
    assert _pep_829_check(sys.executable, site, code).split() == ["MoEHFLM", "HFLM", "DummyLM", "True"]


def test_packaged_tasks_are_visible_without_include_path():
    code = (
        "from lm_eval.tasks import TaskManager;"
        "from lm_eval_moe._lm_eval_hook import tasks_dir;"
        "tm = TaskManager.__init__; print(getattr(tm, '_lm_eval_moe_wrapped', False), tasks_dir() is not None)"
    )
    assert _python_check(sys.executable, code).split() == ["True", "True"]


def test_stock_cli_runs_moe_hf(tiny_model_dir, tiny_task_dir, tmp_path):
    results = _cli_run(sys.executable, tiny_model_dir, tiny_task_dir, tmp_path / "out")
    assert results["config"]["lm_eval_moe"]["expert_count"] == [2, 2]
    assert "exact_match,none" in results["results"]["moe_test_echo"]


@pytest.mark.slow  # a fresh venv and a CLI run per install kind
@pytest.mark.parametrize("editable", [False, True], ids=["install", "editable"])
def test_fresh_venv_install_then_stock_cli(editable, tiny_model_dir, tiny_task_dir, tmp_path):
    """A new venv gets only our package (dependencies come from this env's site-packages through a
    path file, to keep the test offline and fast); the .pth hook must do the rest."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    site = _python_check(python, "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    Path(site, "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # this env's pip and setuptools drive the install into the new interpreter, offline
    install = [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-build-isolation",
               "--no-index", "-q"]
    install += ["-e", str(REPO)] if editable else [str(REPO)]
    result = subprocess.run(install, capture_output=True, text=True, env=_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ours = [line for line in (result.stdout + result.stderr).splitlines()
            if "Warning" in line or "!!" in line]  # a clean install: no packaging warning of ours
    assert ours == [], "\n".join(ours)
    assert Path(site, "lm_eval_moe.pth").is_file() and Path(site, "lm_eval_moe.start").is_file()
    if not editable:  # after PEP 829's deprecation period no .pth import line runs; the .start entry point does
        code = RESOLVE.replace("get_model('dummy').__name__", "get_model('moe_des').__name__")
        assert _pep_829_check(python, site, code, strict=True).split() == ["MoEHFLM", "HFLM", "MoEDESLM"]
    located = _python_check(python, "import lm_eval_moe, os; print(os.path.dirname(lm_eval_moe.__file__))").strip()
    assert (Path(located) == REPO / "lm_eval_moe") is editable
    assert _python_check(python, RESOLVE).split() == ["MoEHFLM", "HFLM", "DummyLM"]
    results = _cli_run(python, tiny_model_dir, tiny_task_dir, tmp_path / "out")
    assert results["config"]["lm_eval_moe"]["family"] == "OLMoE"
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    commit = results["config"]["lm_eval_moe"]["provenance"]["software"]["lm_eval_moe_commit"]
    assert commit.removesuffix("-dirty") == head  # a built install from its stamp, an editable one live
