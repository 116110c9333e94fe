"""lm_eval_moe's task YAMLs (found by the stock ``lm_eval`` without ``--include_path``) and their glue."""
