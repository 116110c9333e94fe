"""Leaderboards and regression gates over lm-eval results."""

from lm_eval_moe.leaderboard.results import ResultsError, Run, TaskResult, load_run, load_runs

__all__ = ["ResultsError", "Run", "TaskResult", "load_run", "load_runs"]
