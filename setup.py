"""Packaging glue that setup.cfg cannot express.

1. The repository folders ``model_wrappers/``, ``tasks/`` and ``recipes/`` install as
   ``lm_eval_moe.model_wrappers``, ``lm_eval_moe.tasks`` and ``lm_eval_moe.recipes`` (package_dir in
   setup.cfg); their sub-packages are listed here.
2. ``lm_eval_moe.pth`` is installed next to the package so that the stock ``lm_eval`` CLI finds our
   models and tasks (lm-eval 0.4.13 has no plugin discovery). The .pth line only installs a lazy
   import observer (``lm_eval_moe/_lm_eval_hook.py``); nothing heavy runs at interpreter start.
   Its PEP 829 companion ``lm_eval_moe.start`` names the same entry point: Pythons that run ``.start``
   files (3.15+) call it and ignore the ``.pth`` import line, which they will stop running; older ones run
   the ``.pth`` line. For PEP 660 editable installs setuptools drops files copied into build_lib, so both
   files are written into the editable wheel's root instead.
3. A built (non-editable) install gets ``lm_eval_moe/_build_commit.txt``, the git commit it was built from,
   which results record (``lm_eval_moe/provenance.py``; an editable install reads its live checkout).
"""

import subprocess
import warnings
from pathlib import Path

from setuptools import find_namespace_packages, setup
from setuptools.command.build_py import build_py
from setuptools.warnings import InformationOnly

# setuptools' note on every editable install through a meta path finder (the package_dir mapping above needs
# one): a folder named like the package in the working directory could shadow it. Ours is the package itself,
# and the mapped folders resolve from the repository root as from anywhere else (the test suite runs there).
warnings.filterwarnings("ignore", message="Editable installation", category=InformationOnly)

PTH_NAME = "lm_eval_moe.pth"
# site.py executes .pth lines that start with "import"; the try turns a broken install into one line on
# stderr instead of a traceback on every Python start.
PTH_LINE = (
    'import sys; exec("try:\\n import lm_eval_moe._lm_eval_hook as h; h.install()\\n'
    'except Exception as e:\\n sys.stderr.write(f\'lm_eval_moe.pth: hook not installed ({e!r}); '
    'lm_eval will not see moe_* models unless lm_eval_moe.register() is called\\\\n\')")\n'
)


START_NAME = "lm_eval_moe.start"
#: PEP 829: one ``pkg.mod:callable`` entry point per line, called with no arguments at interpreter start
START_LINE = "lm_eval_moe._lm_eval_hook:install\n"

BUILD_COMMIT_NAME = "_build_commit.txt"


def _source_commit() -> str:
    """The commit of the source tree being built (``-dirty`` with uncommitted changes), or why not."""
    root = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (built outside a git checkout)"
    return f"{head}-dirty" if dirty else head


def _packages() -> list[str]:
    """Every folder that ships files, as a package (the task YAML folders and the demo models' folder hold only
    data: listing them keeps setuptools from warning that they are absent)."""
    packages = find_namespace_packages(include=["lm_eval_moe", "lm_eval_moe.*"], exclude=["*.__pycache__"])
    for folder in ("model_wrappers", "tasks", "recipes"):
        packages.append(f"lm_eval_moe.{folder}")
        packages += [f"lm_eval_moe.{folder}.{sub}" for sub in find_namespace_packages(where=folder, exclude=["*.__pycache__"])]
    return [name for name in packages if all(part.isidentifier() for part in name.split("."))]


class BuildPyWithPth(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            target = Path(self.get_finalized_command("install").install_lib)
        else:
            target = Path(self.build_lib)
        target.mkdir(parents=True, exist_ok=True)
        (target / PTH_NAME).write_text(PTH_LINE)
        (target / START_NAME).write_text(START_LINE)
        if not getattr(self, "editable_mode", False):
            (target / "lm_eval_moe" / BUILD_COMMIT_NAME).write_text(_source_commit())

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = [*super().get_outputs(include_bytecode), *(str(Path(self.build_lib) / name) for name in (PTH_NAME, START_NAME))]
        if not getattr(self, "editable_mode", False):
            outputs.append(str(Path(self.build_lib) / "lm_eval_moe" / BUILD_COMMIT_NAME))
        return outputs


setup(packages=_packages(), cmdclass={"build_py": BuildPyWithPth})
