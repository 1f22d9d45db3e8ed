"""The one positive-integer check of the pattern layer (swing ``n``, ``max_span``, ``max_wait``, ``max_hold``)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError


def positive_int(name: str, value: Any) -> int:
    """``value`` as an ``int`` if it is an integer >= 1 (bools refused), else a :class:`ConfigError`.

    >>> positive_int("max_wait", np.int64(5))
    5
    >>> positive_int("max_wait", 2.0)
    Traceback (most recent call last):
    ...
    qml_plugin.errors.ConfigError: max_wait=2.0 is not valid; allowed: an integer >= 1
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name}={value!r} is not valid; allowed: an integer >= 1")
    return int(value)
