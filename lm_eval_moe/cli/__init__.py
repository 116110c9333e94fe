"""``lm-eval-moe``: commands around lm-eval runs: leaderboards, the papers' analyses, regression gates, paper reproduction recipes,
settings sweeps on one loaded model, C3PO reference sets."""

from __future__ import annotations

import argparse
import logging
import sys

from lm_eval_moe.cli import analyze, c3po_build, leaderboard, regress, reproduce, sweep

COMMANDS = {"leaderboard": leaderboard, "analyze": analyze, "regress": regress, "reproduce": reproduce,
            "sweep": sweep, "c3po-build": c3po_build}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lm-eval-moe", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=module.__doc__.strip().splitlines()[0],
                                            description=module.__doc__))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return int(COMMANDS[args.command].run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
