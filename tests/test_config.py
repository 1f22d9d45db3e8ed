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


# --- the keys SPEC §7, §9, §11-§13 added -------------------------------------------------------------
@pytest.mark.parametrize("change,message", [
    # NaN and inf fail every number check
    ("ml: {ml_weight: .nan}", r"ml.ml_weight = nan is not allowed; allowed: a finite number in \[0, 1\]"),
    ("backtest: {cash: .inf}", r"backtest.cash = inf is not allowed; allowed: a finite number > 0"),
    ("backtest: {commission: .nan}",
     r"backtest.commission = nan is not allowed; allowed: a finite number in \[0, 0.1\]"),
    ("backtest: {margin: -.inf}", r"backtest.margin = -inf is not allowed; allowed: a finite number in \(0, 1\]"),
    ("learn: {psi_threshold: .nan}", r"learn.psi_threshold = nan is not allowed"),
    ("ml: {min_expected_r: .inf}", r"ml.min_expected_r = inf is not allowed; allowed: a finite number"),
    # data
    ("data: {tz: Mars/Olympus}", r"data.tz = 'Mars/Olympus' is not allowed; allowed: an IANA time zone name"),
    ("data: {bad_prints: ignore}", r"data.bad_prints = 'ignore' is not allowed; allowed: warn, repair, fail"),
    ("data: {resample: 4x}", r"data.resample = '4x' is not allowed; allowed: a pandas frequency such as 4h"),
    ("data: {source: []}", r"data.source = \[\] is not allowed; allowed: a dataset name, a path, a glob"),
    ("data: {source: [AAPL_1h, AAPL_1h]}", r"data.source = \['AAPL_1h', 'AAPL_1h'\] is not allowed; .*without repeats"),
    # backtest costs
    ("backtest: {costs: {EURUSD_1h: {spread: -1}}}",
     r"backtest.costs.EURUSD_1h.spread = -1 is not allowed; allowed: a number in \[0, 0.1\] or null"),
    ("backtest: {costs: {EURUSD_1h: {spred: 0.1}}}",
     r"unknown key 'backtest.costs.EURUSD_1h.spred'; allowed keys in backtest.costs.EURUSD_1h: commission, spread"),
    ("backtest: {costs: [1]}", r"backtest.costs = \[1\] is not allowed; allowed: a mapping \{default: "),
    # ml: embargo, sizing bands, kill switch
    ("ml: {embargo: 1M}", r"ml.embargo = '1M' is not allowed; allowed: a duration such as 1d, 4h, 30min or 1w"),
    ("ml: {embargo: 5}", r"ml.embargo = 5 is not allowed; allowed: a duration"),
    ("ml: {min_regime_labels: 0}", r"ml.min_regime_labels = 0 is not allowed; allowed: an integer >= 1"),
    ("ml: {regime_models: maybe}", r"ml.regime_models = 'maybe' is not allowed; allowed: true or false"),
    ("ml: {size_bands: [{min: 0.4, size: 0.5}, {min: 0.6, size: 1.0}]}",
     r"ml.size_bands: min must strictly decrease from band to band; got mins 0.4, 0.6"),
    ("ml: {size_bands: [{min: 0.6, size: 1.0}], size_by_score: true}",
     r"ml.size_bands and ml.size_by_score are both set"),
    ("ml: {size_bands: [{min: 0.6}]}", r"ml.size_bands\[0\].size is required"),
    ("ml: {size_bands: [{min: 0.6, size: 0}]}",
     r"ml.size_bands\[0\].size = 0 is not allowed; allowed: a number in \(0, 1\]"),
    ("ml: {size_bands: [{min: 1.5, size: 1}]}",
     r"ml.size_bands\[0\].min = 1.5 is not allowed; allowed: a number in \[0, 1\]"),
    ("ml: {size_bands: []}", r"ml.size_bands = \[\] is not allowed; allowed: a non-empty list of \{min, size\} bands"),
    ("ml: {kill_switch: {action: halt}}",
     r"ml.kill_switch.consecutive_losses and ml.kill_switch.max_drawdown_pct are both null"),
    ("ml: {kill_switch: {consecutive_losses: 0}}",
     r"ml.kill_switch.consecutive_losses = 0 is not allowed; allowed: an integer >= 1 or null"),
    ("ml: {kill_switch: {max_drawdown_pct: 150}}",
     r"ml.kill_switch.max_drawdown_pct = 150 is not allowed; allowed: a number in \(0, 100\] or null"),
    ("ml: {kill_switch: {consecutive_losses: 3, action: stop}}",
     r"ml.kill_switch.action = 'stop' is not allowed; allowed: baseline, halt"),
    ("ml: {kill_switch: true}", r"ml.kill_switch must be a mapping of keys, got bool"),
    ("ml: {size_bands: 0.5}", r"ml.size_bands = 0.5 is not allowed; allowed: a non-empty list of \{min, size\} bands"),
    ("ml: {size_bands: [0.6]}", r"ml.size_bands\[0\] must be a mapping of keys, got float"),
    ("ml: {size_bands: [{min: 0.6, size: 1, max: 2}]}",
     r"unknown key 'ml.size_bands\[0\].max'; allowed keys in ml.size_bands\[0\]: min, size"),
    ("ml: {kill_switch: {consecutive_losses: 2.5}}",
     r"ml.kill_switch.consecutive_losses = 2.5 is not allowed; allowed: an integer >= 1 or null"),
    ("ml: {kill_switch: {max_drawdown_pct: 0}}",
     r"ml.kill_switch.max_drawdown_pct = 0 is not allowed; allowed: a number in \(0, 100\] or null"),
    ("ml: {kill_switch: {max_drawdown_pct: .nan}}", r"ml.kill_switch.max_drawdown_pct = nan is not allowed"),
    ("ml: {kill_switch: {losses: 3}}", r"unknown key 'ml.kill_switch.losses'; allowed keys in ml.kill_switch: "
                                       r"consecutive_losses, max_drawdown_pct, action"),
    # walk_forward, compute
    ("walk_forward: {scheme: pooledd}",
     r"walk_forward.scheme = 'pooledd' is not allowed; allowed: one of pooled, per_market, leave_market_out"),
    ("walk_forward: {scheme: [pooled, pooled]}", r"walk_forward.scheme = \['pooled', 'pooled'\] is not allowed"),
    ("walk_forward: {embargo: 2x}", r"walk_forward.embargo = '2x' is not allowed; allowed: a duration"),
    ("compute: {scheduler: threads}",
     r"compute.scheduler = 'threads' is not allowed; allowed: serial, processes, dask"),
    ("compute: {workers: 0}", r"compute.workers = 0 is not allowed; allowed: an integer >= 1 or null"),
    # strategy.params: no mixin settings, no methods, values checked like QMLParams
    ("strategy: {params: {registry_db: x.db}}",
     r"strategy.params.registry_db is a mixin setting, not a strategy parameter; "
     r"set it with ml_data_collection.db_path"),
    ("strategy: {params: {ml_config: x.yaml}}", r"strategy.params.ml_config is a mixin setting"),
    ("strategy: {params: {next: 1}}", r"strategy.params.next names backtesting.Strategy.next, a method or property"),
    ("strategy: {params: {swing_n: 0}}", r"strategy.params.swing_n = 0 is not allowed; allowed: an integer >= 1"),
    ("strategy: {params: {rr: .nan}}", r"strategy.params.rr = nan is not allowed; allowed: one finite number"),
    ("strategy: {params: {rr: [1, 2]}}", r"strategy.params.rr = \[1, 2\] is not allowed"),
])
def test_new_keys_name_the_key_the_value_and_what_is_allowed(change, message):
    with pytest.raises(ConfigError, match=message):
        load_config(change)


def test_new_keys_have_their_spec_defaults():
    cfg = load_config(None)
    assert cfg["data"]["bad_prints"] == "warn" and cfg["data"]["tz"] is None
    assert cfg["walk_forward"]["scheme"] == ["pooled", "per_market"] and cfg["walk_forward"]["embargo"] is None
    assert cfg["compute"] == {"scheduler": "processes", "workers": None, "address": None}
    ml = cfg["ml"]
    assert (ml["min_expected_r"], ml["regime_models"], ml["min_regime_labels"]) == (0.0, False, 50)
    assert ml["size_bands"] is None and ml["kill_switch"] is None and ml["embargo"] is None
    assert cfg["backtest"]["costs"] == {}
    assert cfg["report"] == {"output": "results/report.html", "output_dir": "results/runs"}
    assert load_config("walk_forward: {scheme: leave_market_out}")["walk_forward"]["scheme"] == ["leave_market_out"]
    full = load_config("ml: {prediction_mode: expected_value, kill_switch: {consecutive_losses: 3, "
                       "max_drawdown_pct: 10.0}, size_bands: [{min: 0.6, size: 1.0}, {min: 0.4, size: 0.5}]}")["ml"]
    assert full["kill_switch"] == {"consecutive_losses": 3, "max_drawdown_pct": 10.0, "action": "baseline"}
    assert full["size_bands"] == [{"min": 0.6, "size": 1.0}, {"min": 0.4, "size": 0.5}]


def test_embargo_is_a_duration_and_embargo_bars_a_deprecated_alias():
    from qml_plugin.config import embargo_timedelta

    with pytest.warns(DeprecationWarning, match="ml.embargo_bars is deprecated; use ml.embargo"):
        ml = load_config("ml: {embargo_bars: 3}")["ml"]
    assert ml["embargo_bars"] == 3 and ml["embargo"] is None
    assert embargo_timedelta(ml, pd.Timedelta("4h")) == pd.Timedelta("12h")
    with pytest.warns(DeprecationWarning, match="ignored: ml.embargo is set and wins"):
        both = parse_ml_block("embargo: 1d\nembargo_bars: 3")
    assert embargo_timedelta(both, pd.Timedelta("4h")) == pd.Timedelta(days=1)
    assert embargo_timedelta(parse_ml_block(None)) == pd.Timedelta(0)
    with pytest.raises(ConfigError, match="ml.embargo_bars = 3 needs the data's bar duration"):
        embargo_timedelta(ml)


def test_costs_inherit_dataset_then_default_then_backtest_commission():
    from qml_plugin.config import dataset_costs

    bt = load_config("backtest: {commission: 0.001, costs: {default: {spread: 0.0001}, "
                     "EURUSD_1h: {commission: 0.0, spread: 0.00008}}}")["backtest"]
    assert dataset_costs(bt, "EURUSD_1h") == {"commission": 0.0, "spread": 0.00008}
    assert dataset_costs(bt, "AAPL_1d") == {"commission": 0.001, "spread": 0.0001}
    assert dataset_costs(load_config(None)["backtest"], "X_1h") == {"commission": 0.0, "spread": 0.0}


def test_output_paths_that_are_folders_or_files_are_refused_at_load(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    (tmp_path / "afile").write_text("x")
    for change, message in [
        ("report: {output: results}", r"report.output = 'results' is not allowed; allowed: a file path such as "
                                      r"results/report.html or null \(that path is an existing directory\)"),
        ("ml_data_collection: {db_path: results}", r"ml_data_collection.db_path = 'results' is not allowed; .*"
                                                   r"existing directory"),
        ("report: {output_dir: afile}", r"report.output_dir = 'afile' is not allowed; .*existing file"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config(change)
    with pytest.raises(ConfigError, match=r"sweep.output = 'results' is not allowed; .*existing directory"):
        load_sweep_config("sweep: {output: results}")
    assert load_config("ml_data_collection: {db_path: 'postgresql://u@localhost/db'}")  # a URL is not a path


def test_a_yaml_alias_bomb_is_one_short_config_error():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))
    with pytest.raises(ConfigError, match=r"expands to more than 100,000 values \(YAML aliases\?\)") as e:
        load_config(bomb)
    assert len(str(e.value)) < 300
    with pytest.raises(ConfigError, match="characters; a config is at most 1,000,000"):
        load_config("x: " + "y" * 1_000_001)


def test_bad_values_are_cut_to_about_200_characters():
    with pytest.raises(ConfigError) as e:
        load_config("ml: {prediction_mode: " + "x" * 5000 + "}")
    assert "(5,002 characters)" in str(e.value) and len(str(e.value)) < 450
    for raw in ({"ml": {"k" * 5000: 1}}, {"strategy": {"params": {"k" * 5000: 1}}}):   # keys are cut as well
        with pytest.raises(ConfigError, match="characters") as e:
            load_config(raw)
        assert len(str(e.value)) < 600


def test_config_resolution_is_one_rule_for_names_and_paths(tmp_path, monkeypatch):
    from qml_plugin.config import resolve_config

    monkeypatch.chdir(tmp_path)
    assert resolve_config("qml_baseline.yaml").is_file()                  # a bare name: the shipped file
    assert resolve_config("configs/sweep.yaml").name == "sweep.yaml"      # the repository's spelling of it
    assert resolve_config(None, default="qml_with_ml.yaml").name == "qml_with_ml.yaml"
    with pytest.raises(ConfigError, match="config file not found: missing_dir/qml_baseline.yaml; give the path"):
        resolve_config("missing_dir/qml_baseline.yaml")
    with pytest.raises(ConfigError, match="config file not found: missing_dir/qml_baseline.yaml"):
        load_config("missing_dir/qml_baseline.yaml")
    (tmp_path / "qml_baseline.yaml").write_text("ml: {enabled: true}\n")   # a local file wins over the shipped
    assert resolve_config("qml_baseline.yaml") == tmp_path.joinpath("qml_baseline.yaml").relative_to(tmp_path)
    assert parse_ml_block("qml_baseline.yaml").enabled is True
    assert parse_ml_block("qml_with_ml.yaml").enabled is True            # shipped, found from any folder
    with pytest.raises(ConfigError, match="config file not found: qml_with_ml; give the path"):   # no suffix
        parse_ml_block("qml_with_ml")
    with pytest.raises(ConfigError, match="is a folder; give a YAML file"):
        resolve_config(str(tmp_path))


def test_sweep_grid_and_optimize_space_are_checked_against_qmlparams():
    from qml_plugin.config import load_optimize_config, space_dimensions

    for change, message in [
        ("sweep: {grid: {swng_n: [1]}}", r"sweep.grid.swng_n is not a QMLParams field; allowed: swing_n, head_min_atr"),
        ("sweep: {grid: {swing_n: [0]}}", r"sweep.grid.swing_n = 0 is not allowed; allowed: an integer >= 1"),
        ("sweep: {metric: alpha}", r"sweep.metric = 'alpha' is not allowed; .*sharpe, calmar, max_drawdown, dsr"),
        ("sweep: {verify_top: -1}", r"sweep.verify_top = -1 is not allowed; allowed: an integer >= 0"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_sweep_config(change)
    assert load_sweep_config(None)["sweep"]["verify_top"] == 10
    for change, message in [
        ("optimize: {space: {swing_n: [2, 6.5]}}", r"optimize.space.swing_n = 6.5 is not allowed; allowed: an integer"),
        ("optimize: {space: {swing_n: [6, 2]}}", r"optimize.space.swing_n = \[6, 2\] is not allowed; .*low < high"),
        ("optimize: {space: {target: [swing, bad]}}",
         r"optimize.space.target = 'bad' is not allowed; allowed: 'swing'"),
        ("optimize: {space: {foo: [1, 2]}}", r"optimize.space.foo is not a QMLParams field"),
        ("optimize: {space: {head_min_atr: [-1, 2]}}", r"optimize.space.head_min_atr = -1 is not allowed"),
        ("optimize: {split: [0.6, 0.2, 0.3]}", r"optimize.split = \[0.6, 0.2, 0.3\] is not allowed; allowed: three "
                                               r"positive fractions"),
        ("optimize: {split: [0.6, 0.4, 0]}", r"optimize.split = \[0.6, 0.4, 0\] is not allowed; allowed: three"),
        ("optimize: {trials: 0}", r"optimize.trials = 0 is not allowed; allowed: an integer >= 1"),
        ("optimize: {objective: dsr}", r"optimize.objective = 'dsr' is not allowed; allowed: sharpe, calmar, "
                                       r"profit_factor, total_return"),
        ("optimize: {space: {rr: [1, 3]}, fixed: {rr: 2}}", r"optimize.space.rr and optimize.fixed.rr are both set"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_optimize_config(change)
    opt = load_optimize_config(None)["optimize"]
    assert (opt["split"], opt["trials"], opt["objective"], opt["seed"], opt["top_k"], opt["output_dir"]) == \
        ([0.6, 0.2, 0.2], 100, "sharpe", 0, 10, "results")
    dims = space_dimensions({"swing_n": [2, 6], "head_min_atr": [0.2, 1], "target": ["swing", "rr"],
                             "max_wait": [5, 10, 20]})
    assert dims["swing_n"] == {"type": "int", "low": 2, "high": 6, "choices": None}
    assert dims["head_min_atr"] == {"type": "float", "low": 0.2, "high": 1, "choices": None}
    assert dims["target"]["choices"] == ["swing", "rr"] and dims["max_wait"]["type"] == "categorical"


def test_sections_built_directly_raise_config_errors_too():
    with pytest.raises(ConfigError, match=r"ml.ml_weight = 2 is not allowed; allowed: a number in \[0, 1\]"):
        MLConfig(ml_weight=2)
