"""Strict config loading: every bad key or value is named with what is allowed (SPEC §7)."""
from __future__ import annotations

import pandas as pd
import pytest

from qml_plugin.config import MLConfig, load_config, load_sweep_config, parse_ml_block
from qml_plugin.errors import ConfigError

GOOD = """
data: {source: EURUSD_1h, resample: 4h, start: 2007-01-01, end: 2018-12-31}
strategy: {class: qml_plugin.strategies.QMLStrategy, params: {swing_n: 3, rr: 2.0}}
backtest: {cash: 100000, commission: 0.0002, margin: 1.0, exclusive_orders: false}
ml_data_collection: {enabled: true, db_path: results/experiments.db}
ml:
  enabled: true
  model_path: models/signal_quality
  prediction_mode: score_enhancement
  ml_weight: 0.3
  confidence_threshold: 0.5
  on_model_error: fail
  allow_in_sample: false
  size_by_score: false
"""


def test_the_spec_example_loads_with_defaults_filled_in():
    cfg = load_config(GOOD)
    assert cfg["data"]["start"] == pd.Timestamp("2007-01-01")
    assert cfg["ml"]["prediction_mode"] == "score_enhancement" and cfg["ml"]["ml_weight"] == 0.3
    assert cfg["backtest"]["cash"] == 100000.0 and cfg["walk_forward"]["retrain_every_months"] == 12
    assert cfg["strategy"]["params"] == {"swing_n": 3, "rr": 2.0}


def test_defaults_alone_are_a_valid_config():
    cfg = load_config(None)
    assert cfg["data"]["source"] == "EURUSD_1h" and cfg["ml"]["enabled"] is False


@pytest.mark.parametrize("change,message", [
    ("ml: {prediction_mode: filtr}",
     r"ml.prediction_mode = 'filtr' is not allowed; allowed: filter, replace, score_enhancement"),
    ("ml: {ml_weight: 1.5}", r"ml.ml_weight = 1.5 is not allowed; allowed: a number in \[0, 1\]"),
    ("ml: {confidence_threshold: -0.1}",
     r"ml.confidence_threshold = -0.1 is not allowed; allowed: a number in \[0, 1\]"),
    ("ml: {enabled: 'yes'}", r"ml.enabled = 'yes' is not allowed; allowed: true or false"),
    ("ml: {on_model_error: ignore}", r"ml.on_model_error = 'ignore' is not allowed; allowed: fail, baseline"),
    ("ml: {ml_wieght: 0.3}", r"unknown key 'ml.ml_wieght'; allowed keys in ml: enabled, model_path"),
    ("dat: {source: EURUSD_1h}", r"unknown key 'dat'; allowed keys: data, strategy"),
    ("backtest: {cash: 0}", r"backtest.cash = 0 is not allowed; allowed: a number > 0"),
    ("backtest: {commission: abc}", r"backtest.commission = 'abc' is not allowed; allowed: a number in \[0, 0.1\]"),
    ("data: {start: 2019-01-01, end: 2018-01-01}", r"data.start = 2019-01-01 must be before data.end = 2018-01-01"),
    ("data: {start: yesterday-ish}", r"data.start = 'yesterday-ish' is not allowed; allowed: a date"),
    ("ml: [1, 2]", r"ml must be a mapping of keys, got list"),
    ("walk_forward: {retrain_every_months: 0}", r"walk_forward.retrain_every_months = 0 is not allowed"),
])
def test_bad_config_names_the_key_the_value_and_what_is_allowed(change, message):
    with pytest.raises(ConfigError, match=message):
        load_config(change)


def test_invalid_yaml_and_missing_file_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config("ml: {enabled: true\n  oops")
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(str(tmp_path / "nope.yaml"))


def test_config_file_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("ml: {prediction_mode: magic}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: ml.prediction_mode = 'magic'"):
        load_config(path)


def test_ml_block_parses_from_a_block_a_whole_config_or_nothing(tmp_path):
    assert parse_ml_block(None) == MLConfig()
    assert parse_ml_block("enabled: true\nprediction_mode: filter").prediction_mode == "filter"
    assert parse_ml_block(GOOD).enabled is True
    path = tmp_path / "ml.yaml"
    path.write_text("ml: {enabled: true, prediction_mode: replace}\n")
    assert parse_ml_block(str(path)).prediction_mode == "replace"
    with pytest.raises(ConfigError, match=r"ml.prediction_mode = 'x'"):
        parse_ml_block("prediction_mode: x")


def test_sweep_config_is_validated_the_same_way():
    cfg = load_sweep_config("sweep: {grid: {swing_n: [2, 3]}, metric: sharpe, heatmap: [swing_n, rr]}")
    assert cfg["sweep"]["grid"] == {"swing_n": [2, 3]} and cfg["ml"]["enabled"] is False
    with pytest.raises(ConfigError, match=r"sweep.metric = 'alpha' is not allowed; allowed: n_trades"):
        load_sweep_config("sweep: {metric: alpha}")
    with pytest.raises(ConfigError, match=r"sweep.grid is empty"):
        load_sweep_config("sweep: {grid: {}}")


def test_ml_config_defaults_are_the_schema_defaults():
    from qml_plugin.config import ML_SCHEMA

    assert MLConfig() == parse_ml_block("enabled: false") == MLConfig(**{k: f.default for k, f in ML_SCHEMA.items()})
