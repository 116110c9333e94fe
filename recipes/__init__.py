"""Reproduction recipes: one YAML per table of the DES and rerouting papers (see lm_eval_moe.reproduce)."""
