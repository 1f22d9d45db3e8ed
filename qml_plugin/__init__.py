"""qml-plugin: Quasimodo (QML) patterns, causal features, a pattern registry and an ML signal filter
for backtesting.py and vectorbt.

The data flows one way, and so do the imports:
data -> patterns -> labels -> features -> registry -> model -> filter -> engines (mixins, vbt) -> cli/report.
"""
from .data import bar_close_utc, list_datasets, load_ohlcv, validate_ohlcv
from .errors import ConfigError, DataError, InsufficientDataError, ModelError, RegistryError
from .universe import load_universe

__all__ = [
    "load_ohlcv", "validate_ohlcv", "list_datasets", "load_universe", "bar_close_utc",
    "DataError", "ConfigError", "InsufficientDataError", "ModelError", "RegistryError",
]
__version__ = "0.1.0"
