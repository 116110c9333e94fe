"""The house rules, checked on the code itself: layers that import only downwards and no package cycle, thin
model classes that only translate (the settings protocol lives on the settings, each method's run beside
it), and one home for each rule the redesign gathered."""

import ast
from pathlib import Path

from conftest import REPO

#: lower layers first; a module may import its own layer and those before it, never one after it
LAYERS = [
    {"model_args", "kv_cache", "response", "response_cache", "checkpoints", "problem_identity", "provenance", "logs",
     "run_identity", "printed_results",
     "resources"},
    {"moe"},
    {"cost", "run_record"},
    {"generation"},
    {"scoring", "verifiers"},
    {"reroute", "search"},
    {"leaderboard"},
    {"demo", "testing"},
    {"cli", "model_wrappers", "tasks", "recipes", "reproduce"},
]
PACKAGE_DIRS = {"model_wrappers": REPO / "model_wrappers", "tasks": REPO / "tasks", "recipes": REPO / "recipes"}


def _modules():
    roots = [(REPO / "lm_eval_moe", "lm_eval_moe"), *((path, f"lm_eval_moe.{name}") for name, path in PACKAGE_DIRS.items())]
    for root, package in roots:
        for path in root.rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            yield package + "".join(f".{p}" for p in parts if p != "__init__"), path


def _unit(module: str) -> str:
    """The layer unit of a module: lm_eval_moe.<top>."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "lm_eval_moe"


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = module.rsplit(".", node.level)[0] + "." + node.module if node.level else node.module
            found.add(base)
    return {name for name in found if name.startswith("lm_eval_moe.")}


def test_no_module_imports_a_higher_layer_and_no_package_cycle():
    rank = {unit: index for index, layer in enumerate(LAYERS) for unit in layer}
    edges: dict[str, set[str]] = {}
    upward = []
    for module, path in _modules():
        if "_lm_eval_hook" in module or module == "lm_eval_moe":
            continue
        source = _unit(module)
        for target in _imports(path, module):
            unit = _unit(target)
            if unit in ("lm_eval_moe", "_lm_eval_hook") or unit == source:
                continue
            edges.setdefault(source, set()).add(unit)
            if rank[unit] > rank[source]:
                upward.append(f"{module} -> {target}")
    assert upward == []

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})) for nxt in edges.get(start, ()))

    assert [unit for unit in edges if reaches(unit, unit, {unit})] == []
    assert "demo" not in {u for source, targets in edges.items() if source not in ("tasks", "testing") for u in targets}


def _source(relative: str) -> str:
    return (REPO / relative).read_text()


def test_model_classes_only_translate():
    """The lm-eval faces are small, hold no settings protocol of their own (the settings objects parse, name,
    validate and check k) and no method logic (no generation loop, no PRM, no cost ledger)."""
    sizes = {path.name: len(path.read_text().splitlines()) for path in (REPO / "model_wrappers").glob("*.py")}
    assert sum(sizes.values()) <= 700, sizes
    for path in (REPO / "model_wrappers").glob("*.py"):
        text = path.read_text()
        for forbidden in ("take_settings", "dataclasses.fields", "check_expert_count", "CostLedger(", "load_verifier",
                          "sample_rows", "torch.no_grad"):
            assert forbidden not in text, (path.name, forbidden)


def test_each_rule_has_one_home():
    homes = {  # a rule -> (the one module that may spell it, how it is spelt)
        "text config": ("lm_eval_moe/moe/settings.py", "get_text_config"),
        "pad id": ("lm_eval_moe/generation/special_tokens.py", "tokenizer.pad_token_id"),
        "stop window": ("lm_eval_moe/generation/stops.py", "STOP_WINDOW"),
        "seeds": ("lm_eval_moe/generation/sampling.py", "blake2b"),
        "per-layer k label": ("lm_eval_moe/model_args.py", '":".join(map(str'),
        "k range": ("lm_eval_moe/model_args.py", "out of range for this model"),
        "strategy table": ("lm_eval_moe/search/strategies.py", "STRATEGIES: dict"),
        "honoured generation kwargs": ("lm_eval_moe/generation/gen_kwargs.py", "GenerationConfig()"),
        "logged records": ("lm_eval_moe/response.py", 'RECORDS_KEY = "'),
    }
    spellings = {name: [] for name in homes}
    for module, path in _modules():
        text = path.read_text()
        for name, (_, spelling) in homes.items():
            if spelling in text:
                spellings[name].append(str(path.relative_to(REPO)))
    for name, (home, _) in homes.items():
        assert spellings[name] == [home], (name, spellings[name])


def test_searches_vote_with_the_tasks_key_and_ask_the_verifiers_protocol():
    for path in (REPO / "lm_eval_moe" / "search").glob("*.py"):
        assert not any(target.startswith("lm_eval_moe.scoring") for target in _imports(path, "lm_eval_moe.search.x")), path
    assert "isinstance(verifier" not in _source("lm_eval_moe/search/driver.py")
