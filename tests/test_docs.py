"""The repository stands on its own: nothing points outside it, every cited document exists, and the README's
demo table and plot are those of the committed results."""

import importlib.util
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _tracked(*patterns: str) -> list[Path]:
    listed = subprocess.run(["git", "ls-files", *patterns], cwd=REPO, capture_output=True, text=True, check=True)
    return [REPO / name for name in listed.stdout.split() if (REPO / name).is_file()]


def test_no_file_points_outside_the_repository():
    outside = re.compile(r"\.\./shared|shared/(data|design)|/work/shared|[\"']shared[\"']\s*/\s*[\"'](data|design)")
    files = [path for path in _tracked("*.py", "*.md", "*.yaml", "*.cfg", "*.toml", "*.sh", ".ci/*")
             if path != Path(__file__).resolve()]  # this file spells the patterns out
    hits = [f"{path.relative_to(REPO)}:{number}" for path in files
            for number, line in enumerate(path.read_text().splitlines(), 1) if outside.search(line)]
    assert hits == []


def test_every_cited_document_exists():
    cited = re.compile(r"docs/([A-Z_]+\.md)")
    missing = {f"{path.relative_to(REPO)}: docs/{name}" for path in _tracked("*.py", "*.md", "*.yaml")
               for name in cited.findall(path.read_text()) if not (REPO / "docs" / name).is_file()}
    assert missing == set()
    for name in ("METHODS", "SANDBOX", "ARCHITECTURE", "MOE_FAMILIES", "LM_EVAL", "ENGINES"):
        assert (REPO / "docs" / f"{name}.md").is_file(), name


def test_readme_demo_table_and_plot_match_the_committed_results():
    spec = importlib.util.spec_from_file_location("regenerate", REPO / "docs" / "demo" / "regenerate.py")
    regenerate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(regenerate)
    from lm_eval_moe.leaderboard.plots import png_source

    analyses = regenerate.analyses_block(regenerate.analyses(regenerate.committed_runs()))
    for path, text in regenerate.documents(regenerate.table(), analyses, regenerate.table(regenerate.EXCERPT)).items():
        assert path.read_text() == text, f"{path} is stale: python docs/demo/regenerate.py"
    assert png_source(regenerate.PLOT.read_bytes()) == regenerate.results_digest()


def test_the_model_arg_reference_is_what_the_code_declares():
    spec = importlib.util.spec_from_file_location("model_args_doc", REPO / "docs" / "model_args.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert generator.OUTPUT.read_text() == generator.reference(), "docs/MODEL_ARGS.md is stale: python docs/model_args.py"


def test_the_readme_is_a_front_door():
    """At most 300 lines; what the package is (DES, rerouting, C3PO) comes first; every relative link resolves."""
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    opening = text[: text.index("## Install")]
    assert all(name in opening for name in ("Dynamic Experts Search", "rerouting", "C3PO"))
    for document in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "tasks" / "README.md"]:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", document.read_text()):
            if not target.startswith("http"):
                assert (document.parent / target).exists(), f"{document.relative_to(REPO)} links {target}"
