"""Strict YAML configs: the run config (SPEC §7), the sweep config (§9) and the ``ml:`` block.

A config is data, never code: it is parsed with ``yaml.safe_load`` and checked against a declared
schema. A key that is not in the schema (a typo), a value of the wrong type, a number out of range
or a value outside its allowed set raises :class:`~qml_plugin.errors.ConfigError` naming the key
path, the bad value and what is allowed:

    ConfigError: ml.prediction_mode = 'filtr' is not allowed; allowed: filter, replace, score_enhancement

Loaders return plain nested dicts with every default filled in, so downstream code never guesses.
``strategy.class`` is only a *name*: :mod:`qml_plugin.cli` resolves it inside the ``strategies``
package (or a module named on the command line); nothing in a config is imported or executed here.

Choices where SPEC.md is silent:
- dates (``data.start``/``end``) accept YAML dates or ISO strings and come back as ``pd.Timestamp``;
- ``walk_forward`` (retrain period, minimum labels, embargo) and ``report`` sections configure
  ``qml run``; ``learn`` configures ``qml learn`` (drift thresholds and promotion gates).
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from .errors import ConfigError

__all__ = ["load_config", "load_sweep_config", "parse_ml_block", "MLConfig", "RUN_SCHEMA", "ML_SCHEMA"]

PREDICTION_MODES = ("filter", "replace", "score_enhancement")


@dataclass(frozen=True)
class F:
    """One schema field: its type, default and the allowed values or range."""

    type: Any
    default: Any = None
    choices: tuple | None = None
    lo: float | None = None
    hi: float | None = None
    nullable: bool = False
    lo_open: bool = False


ML_SCHEMA = {
    "enabled": F(bool, False),
    "model_path": F(str, "models/signal_quality", nullable=True),
    "prediction_mode": F(str, "score_enhancement", choices=PREDICTION_MODES),
    "ml_weight": F(float, 0.3, lo=0.0, hi=1.0),
    "confidence_threshold": F(float, 0.5, lo=0.0, hi=1.0),
    "on_model_error": F(str, "fail", choices=("fail", "baseline")),
    "allow_in_sample": F(bool, False),
    "size_by_score": F(bool, False),
    "embargo_bars": F(int, 0, lo=0),
    "model_name": F(str, "signal_quality"),
}

LEARN_SCHEMA = {
    "psi_threshold": F(float, 0.1, lo=0.0, lo_open=True),
    "ks_alpha": F(float, 0.05, lo=0.0, hi=1.0, lo_open=True),
    "min_drifting_features": F(int, 3, lo=1),
    "score_psi_threshold": F(float, 0.2, lo=0.0, lo_open=True),
    "recent_patterns": F(int, 300, lo=10),
    "holdout_fraction": F(float, 0.2, lo=0.05, hi=0.5),
    "min_samples": F(int, 200, lo=10),
    "min_auc_improvement": F(float, 0.0, lo=-1.0, hi=1.0),
    "refit_after_promotion": F(bool, False),
    "psi_bins": F(int, 10, lo=2, hi=100),
    "min_holdout_samples": F(int, 30, lo=10),
    "models_dir": F(str, "models/signal_quality"),
    "n_jobs": F(int, 1, lo=1, hi=256),
}

RUN_SCHEMA = {
    "data": {
        "source": F(str, "EURUSD_1h"),
        "resample": F(str, "4h", nullable=True),
        "start": F("date", None, nullable=True),
        "end": F("date", None, nullable=True),
    },
    "strategy": {
        "class": F(str, "qml_plugin.strategies.QMLStrategy"),
        "params": F(dict, {}),
    },
    "backtest": {
        "cash": F(float, 100_000.0, lo=0.0, lo_open=True),
        "commission": F(float, 0.0, lo=0.0, hi=0.1),
        "margin": F(float, 1.0, lo=0.0, hi=1.0, lo_open=True),
        "exclusive_orders": F(bool, False),
    },
    "ml_data_collection": {
        "enabled": F(bool, True),
        "db_path": F(str, "results/experiments.db"),
    },
    "ml": ML_SCHEMA,
    "walk_forward": {
        "retrain_every_months": F(int, 12, lo=1, hi=120),
        "min_train_labels": F(int, 100, lo=10),
        "random_seeds": F(int, 200, lo=10, hi=10_000),
    },
    "report": {
        "output": F(str, "results/report.html"),
    },
    "learn": LEARN_SCHEMA,
}

SWEEP_SCHEMA = {
    "data": RUN_SCHEMA["data"],
    "sweep": {
        "grid": F(dict, {"swing_n": [2, 3, 5]}),
        "commission": F(float, 0.0, lo=0.0, hi=0.1),
        "metric": F(str, "sharpe", choices=("n_trades", "win_rate", "profit_factor", "total_return", "sharpe",
                                            "max_drawdown")),
        "heatmap": F(list, None, nullable=True),
        "output": F(str, "results/sweep.csv"),
        "cash": F(float, 100_000.0, lo=0.0, lo_open=True),
    },
    "ml": ML_SCHEMA,
}


def _fail(path: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{path} = {value!r} is not allowed; allowed: {allowed}")


def _check_field(path: str, f: F, value: Any) -> Any:
    if value is None:
        if f.nullable:
            return None
        raise _fail(path, value, _describe(f))
    if f.type is bool:
        if not isinstance(value, bool):
            raise _fail(path, value, "true or false")
    elif f.type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(path, value, _describe(f))
    elif f.type is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(path, value, _describe(f))
    elif f.type is str:
        if not isinstance(value, str):
            raise _fail(path, value, _describe(f))
    elif f.type == "date":
        if isinstance(value, (_dt.date, str)):
            try:
                return pd.Timestamp(value)
            except (ValueError, TypeError):
                pass
        raise _fail(path, value, "a date such as 2018-12-31")
    elif f.type in (dict, list):
        if not isinstance(value, f.type):
            raise _fail(path, value, f"a {'mapping' if f.type is dict else 'list'}")
    if f.choices is not None and value not in f.choices:
        raise _fail(path, value, ", ".join(map(str, f.choices)))
    if f.lo is not None and (value < f.lo or (f.lo_open and value == f.lo)):
        raise _fail(path, value, _describe(f))
    if f.hi is not None and value > f.hi:
        raise _fail(path, value, _describe(f))
    return float(value) if f.type is float else value


def _describe(f: F) -> str:
    kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            dict: "a mapping", list: "a list", "date": "a date"}[f.type]
    if f.choices:
        return ", ".join(map(str, f.choices))
    if f.lo is not None and f.hi is not None:
        return f"{kind} in {'(' if f.lo_open else '['}{f.lo:g}, {f.hi:g}]"
    if f.lo is not None:
        return f"{kind} {'>' if f.lo_open else '>='} {f.lo:g}"
    return kind + (" or null" if f.nullable else "")


def validate(raw: Any, schema: dict, path: str = "") -> dict:
    """Check ``raw`` against ``schema`` and return a dict with every default filled in."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or 'config'} must be a mapping of keys, got {type(raw).__name__}: {raw!r}")
    unknown = sorted(set(map(str, raw)) - set(schema))
    if unknown:
        key = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ConfigError(f"unknown key {key!r}; allowed keys{' in ' + path if path else ''}: "
                          f"{', '.join(schema)}")
    out = {}
    for name, spec in schema.items():
        p = f"{path}.{name}" if path else name
        if isinstance(spec, dict):
            out[name] = validate(raw.get(name), spec, p)
        elif name in raw:
            out[name] = _check_field(p, spec, raw[name])
        else:
            out[name] = spec.default.copy() if isinstance(spec.default, (dict, list)) else spec.default
    return out


def _read(source: str | Path | dict | None) -> tuple[Any, str]:
    if source is None:
        return {}, "<defaults>"
    if isinstance(source, dict):
        return source, "<dict>"
    text = str(source)
    path = Path(text)
    if "\n" not in text and (path.suffix in (".yaml", ".yml") or path.exists()):
        if not path.is_file():
            raise ConfigError(f"config file not found: {text}")
        text, where = path.read_text(), str(path)
    else:
        where = "<yaml string>"
    try:
        return yaml.safe_load(text), where
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {' '.join(str(e).split())}") from None


def _load(source: str | Path | dict | None, schema: dict) -> dict:
    raw, where = _read(source)
    try:
        cfg = validate(raw, schema)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    _check_dates(cfg, where)
    return cfg


def load_config(source: str | Path | dict | None = None) -> dict:
    """Load and validate a run config (a path, a YAML string or a dict); defaults for what is absent."""
    return _load(source, RUN_SCHEMA)


def load_sweep_config(source: str | Path | dict | None = None) -> dict:
    """Load and validate a sweep config (SPEC §9)."""
    cfg = _load(source, SWEEP_SCHEMA)
    if not cfg["sweep"]["grid"]:
        where = source if isinstance(source, (str, Path)) and "\n" not in str(source) else "<config>"
        raise ConfigError(f"{where}: sweep.grid is empty; give at least one QMLParams field with a list of values")
    return cfg


def _check_dates(cfg: dict, where: str) -> None:
    s, e = cfg["data"]["start"], cfg["data"]["end"]
    if s is not None and e is not None and s >= e:
        raise ConfigError(f"{where}: data.start = {s.date()} must be before data.end = {e.date()}")


@dataclass(frozen=True)
class MLConfig:
    """The validated ``ml:`` block (SPEC §7) as an immutable object."""

    enabled: bool = False
    model_path: str | None = "models/signal_quality"
    prediction_mode: str = "score_enhancement"
    ml_weight: float = 0.3
    confidence_threshold: float = 0.5
    on_model_error: str = "fail"
    allow_in_sample: bool = False
    size_by_score: bool = False
    embargo_bars: int = 0
    model_name: str = "signal_quality"


def parse_ml_block(source: str | Path | dict | MLConfig | None) -> MLConfig:
    """An :class:`MLConfig` from a YAML path, a YAML string or a dict.

    The source may hold the block itself or a whole config with a top-level ``ml:`` key. ``None``
    means ML off.
    """
    if isinstance(source, MLConfig):
        return source
    raw, where = _read(source)
    if isinstance(raw, dict) and "ml" in raw and isinstance(raw["ml"], dict):
        raw = raw["ml"]
    try:
        block = validate(raw, ML_SCHEMA, "ml")
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return MLConfig(**block)
