"""Errors that are part of qml-plugin's interface.

Every message names the thing at fault (key, value, timestamp, pattern id) and what would be
accepted, so a user can fix the input without reading our code. All of them subclass
``ValueError`` (or ``RuntimeError`` for model problems) so generic handlers still work, and the CLI
turns any of them into one line on stderr and exit code 2. Any other exception is a bug: the CLI
prints its traceback and exits 1 (SPEC §15).

    >>> issubclass(ConfigError, QMLError) and issubclass(ConfigError, ValueError)
    True
"""
from __future__ import annotations


class QMLError(Exception):
    """Base class of every error qml-plugin raises on purpose."""


class DataError(QMLError, ValueError):
    """OHLCV input that cannot be used: missing columns, NaN, bad prices, unsorted or duplicate index."""


class ConfigError(QMLError, ValueError):
    """A YAML config or a strategy setting that is not valid. The message names the key path."""


class InsufficientDataError(QMLError, ValueError):
    """Too few labeled patterns to train or evaluate a model."""


class ModelError(QMLError, RuntimeError):
    """A saved model that cannot be used: tampered file, missing features, wrong format."""


class RegistryError(QMLError, ValueError):
    """A registry call with bad input: unknown pattern id, unknown label, unusable database file."""


class UsageError(QMLError, ValueError):
    """A command-line argument or an interactive answer that cannot be used (e.g. stdin closed mid-session)."""
