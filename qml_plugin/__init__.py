"""qml-plugin: Quasimodo (QML) patterns, causal features, a pattern registry and an ML signal filter
for backtesting.py and vectorbt.

The data flows one way, and so do the imports:
data -> patterns -> labels -> features -> registry -> model -> filter -> engines (mixins, vbt) -> cli/report.
"""
from .data import list_datasets, load_ohlcv, validate_ohlcv
from .errors import ConfigError, DataError, InsufficientDataError, ModelError, RegistryError

__all__ = [
    "load_ohlcv", "validate_ohlcv", "list_datasets",
    "DataError", "ConfigError", "InsufficientDataError", "ModelError", "RegistryError",
]
__version__ = "0.1.0"
