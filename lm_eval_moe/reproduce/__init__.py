"""Expanding reproduction recipes into lm_eval runs, and the table of ours beside the published numbers."""
