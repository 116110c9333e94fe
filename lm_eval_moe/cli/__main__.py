"""``python -m lm_eval_moe.cli``: the ``lm-eval-moe`` command (what ``reproduce`` launches its sweeps with)."""

import sys

from lm_eval_moe.cli import main

sys.exit(main())
