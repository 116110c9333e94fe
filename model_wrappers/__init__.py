"""lm-eval model classes (``moe_hf``, ...): translate lm-eval requests into lm_eval_moe engine calls."""
