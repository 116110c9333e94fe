"""What the installed ``lm_eval_moe.pth`` hook costs every Python start, measured with ``-X importtime``.

A fresh venv gets a NON-editable install of this checkout (dependencies are not needed: the hook imports
none of them); ``python -X importtime -c pass`` is then run repeatedly and the cumulative import time of
the modules the .pth line imports (``lm_eval_moe`` and ``lm_eval_moe._lm_eval_hook``, with everything they
pull in) is read from its report. Also reported: the whole interpreter start with and without the hook.

    python benchmarks/bench_hook_import.py [--runs 30]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOOK_MODULES = ("lm_eval_moe", "lm_eval_moe._lm_eval_hook")
LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


def hook_microseconds(report: str) -> tuple[int, list[str]]:
    """Cumulative microseconds of the top-level imports the .pth line makes, and every module imported
    under them (indented deeper in the report)."""
    total, pulled, inside = 0, [], None
    for self_us, cumulative, indent, name in reversed([LINE.match(l).groups() for l in report.splitlines()
                                                       if LINE.match(l)]):
        depth = len(indent)
        if inside is not None and depth > inside:
            pulled.append(name)
            continue
        inside = None
        if name in HOOK_MODULES:
            total += int(cumulative)
            inside = depth
            pulled.append(name)
    return total, pulled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_hook_") as folder:
        venv = Path(folder) / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        wheels = Path(folder) / "wheels"  # built by this env's setuptools, installed like any wheel
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                        "-w", str(wheels), str(REPO)], check=True, cwd=folder)
        subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q",
                        *map(str, wheels.glob("*.whl"))], check=True, cwd=folder)
        site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
        pth = Path(site) / "lm_eval_moe.pth"
        assert pth.is_file(), "the install wrote no lm_eval_moe.pth"
        hook, modules = [], set()
        for _ in range(args.runs):
            report = subprocess.run([python, "-X", "importtime", "-c", "pass"], capture_output=True, text=True,
                                    check=True).stderr
            microseconds, pulled = hook_microseconds(report)
            hook.append(microseconds)
            modules.update(pulled)
        starts = {}
        for label in ("with hook", "without hook"):
            if label == "without hook":
                pth.rename(pth.with_suffix(".off"))
            times = []
            for _ in range(args.runs):
                began = time.perf_counter()
                subprocess.run([python, "-c", "pass"], check=True)
                times.append(time.perf_counter() - began)
            starts[label] = statistics.median(times) * 1000
    print(f"hook import (median of {args.runs}, -X importtime cumulative): {statistics.median(hook) / 1000:.2f} ms "
          f"(min {min(hook) / 1000:.2f}, max {max(hook) / 1000:.2f})")
    print(f"modules the .pth line imports: {', '.join(sorted(modules))}")
    print(f"interpreter start, median wall: {starts['with hook']:.1f} ms with the hook, "
          f"{starts['without hook']:.1f} ms without")


if __name__ == "__main__":
    main()
