"""The one place that knows how the installed transformers names the KV cache of a forward call.

transformers 5.24 renamed ``past_key_values`` to ``cache`` (argument and output field) and warns on the old
name until its removal in 5.40; earlier 5.x releases know only ``past_key_values``. Every forward call of
this package that passes or reads a cache goes through :func:`cache_argument` and :func:`returned_cache`.
"""

from __future__ import annotations

from typing import Any

import transformers
from packaging.version import Version

#: The keyword a model's ``forward`` takes its cache under.
CACHE_ARGUMENT = "cache" if Version(transformers.__version__).release >= (5, 24) else "past_key_values"


def cache_argument(cache: Any) -> dict[str, Any]:
    """``model(..., **cache_argument(cache))``."""
    return {CACHE_ARGUMENT: cache}


def returned_cache(output: Any) -> Any:
    """The cache a forward with ``use_cache=True`` returned."""
    return output[CACHE_ARGUMENT] if CACHE_ARGUMENT in output.keys() else None
