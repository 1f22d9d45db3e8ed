"""vectorbt engine: the QML indicator, backtest() against backtesting.py trade for trade, sweep() and its ML guard."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from backtesting import Backtest

from qml_plugin import ConfigError, ModelError, load_ohlcv
from qml_plugin.cli.main import main
from qml_plugin.features import FeatureExtractor
from qml_plugin.ml.model import SignalQualityModel
from qml_plugin.patterns import QMLParams, detect_patterns, label_patterns
from qml_plugin.strategies import QMLStrategy
from qml_plugin.vbt import METRICS, QML, backtest, portfolio_metrics, sweep, trades_table
from qml_plugin.vbt.indicator import one_pattern_per_bar

REPO = Path(__file__).resolve().parent.parent
CASH = 1e9  # whole units in backtesting.py: large cash keeps its rounding (and order rejections) out of the way

PARAM_SETS = {
    "defaults": QMLParams(),
    "short_swings_rr_target": QMLParams(swing_n=2, head_min_atr=0.3, target="rr", rr=1.5),
    "offset_entry_short_horizons": QMLParams(swing_n=5, entry_offset_atr=0.1, stop_buffer_atr=0.5, max_wait=10,
                                             max_hold=50, min_score=0.4),
}


def _slice(name: str, stop: int | None = None, start: int = 0) -> pd.DataFrame:
    full = load_ohlcv(name)
    df = full.iloc[start:stop]
    df.attrs.update(full.attrs)
    return df


@pytest.fixture(scope="module")
def data() -> dict[str, pd.DataFrame]:
    return {"EURUSD_1h": _slice("EURUSD_1h", 30_000), "BTCUSD_1h": _slice("BTCUSD_1h")}


def bt_trades(df: pd.DataFrame, params: QMLParams, **kw) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = Backtest(df, QMLStrategy, cash=CASH, commission=0.0).run(
            register_patterns=False, **{f: getattr(params, f) for f in QMLParams.fields()}, **kw)
    return stats._trades


def assert_same_trades(vbt_trades: pd.DataFrame, bt: pd.DataFrame) -> None:
    assert len(vbt_trades) == len(bt)
    np.testing.assert_array_equal(vbt_trades["EntryBar"], bt["EntryBar"])
    np.testing.assert_array_equal(vbt_trades["ExitBar"], bt["ExitBar"])
    np.testing.assert_array_equal(np.sign(vbt_trades["Size"]), np.sign(bt["Size"]))
    for col in ("EntryPrice", "ExitPrice", "ReturnPct"):
        np.testing.assert_allclose(vbt_trades[col], bt[col], rtol=1e-9, atol=1e-15, err_msg=col)


# ---------------------------------------------------------------------------------------------- indicator
def test_indicator_param_product_gives_one_column_per_combination_with_detection_bars_as_entries(data):
    df = data["EURUSD_1h"].iloc[:15_000]
    qml = QML.run(df["Open"], df["High"], df["Low"], df["Close"], swing_n=[2, 3, 5], head_min_atr=[0.3, 0.5],
                  param_product=True)
    assert qml.entries.shape == (len(df), 6)
    assert list(qml.entries.columns) == [(s, h) for s in (2, 3, 5) for h in (0.3, 0.5)]
    for swing_n, head in qml.entries.columns:
        pats = detect_patterns(df, QMLParams(swing_n=swing_n, head_min_atr=head))
        bars = np.flatnonzero(qml.entries[(swing_n, head)].to_numpy())
        np.testing.assert_array_equal(bars, np.unique(pats["detection_bar"]))
        kept = pats.iloc[one_pattern_per_bar(pats["detection_bar"].to_numpy(), pats["validity_score"].to_numpy(),
                                             pats["p1_bar"].to_numpy())]
        np.testing.assert_array_equal(qml.direction[(swing_n, head)].to_numpy()[bars], kept["direction"])
        np.testing.assert_allclose(qml.stop_price[(swing_n, head)].to_numpy()[bars], kept["stop"])
    assert qml.direction.to_numpy()[~qml.entries.to_numpy()].tolist() == [0] * int((~qml.entries.to_numpy()).sum())


def test_two_patterns_on_one_bar_keep_the_higher_score_then_the_earlier_p1():
    t = np.array([5, 5, 5, 9, 12, 12])
    score = np.array([0.4, 0.7, 0.7, 0.1, 0.5, 0.5])
    p1 = np.array([1, 3, 2, 4, 8, 6])
    assert one_pattern_per_bar(t, score, p1).tolist() == [2, 3, 5]


def test_indicator_passes_is_the_technical_rule_of_min_score():
    df = _slice("EURUSD_1h", 10_000)
    low, high = (QML.run(df["Open"], df["High"], df["Low"], df["Close"], min_score=m) for m in (0.2, 0.8))
    assert low.entries.equals(high.entries) and high.passes.sum() < low.passes.sum()
    assert (high.validity_score[high.passes] >= 0.8).all()


# ------------------------------------------------------------------------------------- cross-engine check
@pytest.mark.parametrize("params", PARAM_SETS.values(), ids=PARAM_SETS.keys())
@pytest.mark.parametrize("dataset", ["EURUSD_1h", "BTCUSD_1h"])
def test_vbt_trades_equal_backtesting_py_qmlstrategy_trades(data, dataset, params):
    df = data[dataset]
    pf = backtest(df, params, cash=CASH)
    bt = bt_trades(df, params)
    assert len(bt) >= 25
    assert_same_trades(trades_table(pf), bt)


def test_portfolio_frequency_is_the_datas_bar_whatever_the_index_resolution(data):
    df = data["EURUSD_1h"].iloc[:3000]
    for index in (df.index.as_unit("us"), df.index.as_unit("ns")):      # pandas 3 loads as us or ns
        pf = backtest(df.set_axis(index), cash=CASH)
        assert pf.wrapper.freq == pd.Timedelta(hours=1)


def test_a_trade_open_at_the_end_is_open_in_vbt_and_absent_from_backtesting_py_trades(data):
    df = data["EURUSD_1h"]
    closed = trades_table(backtest(df, cash=CASH))
    cut = closed.iloc[40]
    short = df.iloc[:int(cut["EntryBar"]) + 3]  # ends while that trade is still held
    vt = trades_table(backtest(short, cash=CASH), include_open=True)
    bt = bt_trades(short, QMLParams())
    assert vt["Status"].iloc[-1] == "Open" and (vt["Status"] == "Open").sum() == 1
    assert vt["EntryBar"].iloc[-1] == cut["EntryBar"]
    assert_same_trades(vt[vt["Status"] == "Closed"], bt)


def test_sizes_are_fractional_in_vbt_and_whole_units_in_backtesting_py_so_equity_differs_slightly(data):
    df = data["BTCUSD_1h"]
    pf = backtest(df, cash=100_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = Backtest(df, QMLStrategy, cash=100_000, commission=0.0).run(register_patterns=False)
    vt, bt = trades_table(pf), stats._trades
    assert (bt["Size"] == bt["Size"].round()).all() and (vt["Size"] != vt["Size"].round()).any()
    np.testing.assert_allclose(vt["ReturnPct"], bt["ReturnPct"], rtol=1e-9)  # per-trade returns: equal
    final_vbt, final_bt = pf.value().iloc[-1], stats["Equity Final [$]"]
    assert final_vbt != final_bt and abs(final_vbt / final_bt - 1) < 0.05


# -------------------------------------------------------------------------------------------------- sweep
def sweep_config(tmp_path: Path, **sweep_kw) -> dict:
    sw = {"grid": {"swing_n": [2, 3, 5], "head_min_atr": [0.3, 0.5], "target": ["swing", "rr"]},
          "metric": "sharpe", "heatmap": ["swing_n", "head_min_atr"], "output": str(tmp_path / "out" / "sweep.csv")}
    sw.update(sweep_kw)
    return {"data": {"source": "EURUSD_1h", "resample": None, "start": "2011-01-01", "end": "2012-06-30"},
            "sweep": sw}


def test_sweep_returns_one_row_per_combination_sorted_by_metric_and_writes_csv_and_heatmap(tmp_path):
    table = sweep(sweep_config(tmp_path), progress=False)
    assert list(table.columns) == ["swing_n", "head_min_atr", "target", *METRICS]
    assert METRICS == ["n_trades", "win_rate", "profit_factor", "total_return", "sharpe", "calmar", "max_drawdown",
                       "dsr"]
    assert len(table) == 12 and not table.duplicated(["swing_n", "head_min_atr", "target"]).any()
    s = table["sharpe"].dropna()
    assert (np.diff(s.to_numpy()) <= 0).all() and table["sharpe"].isna().sum() == len(table) - len(s)
    assert Path(table.attrs["csv"]).is_file() and Path(table.attrs["heatmap"]).name == "sweep_heatmap.png"
    assert Path(table.attrs["heatmap"]).stat().st_size > 1000
    assert pd.read_csv(table.attrs["csv"]).shape == table.shape
    assert 0 <= table.attrs["pbo"] <= 1 and table.attrs["verified"] == 10 and table["dsr"].between(0, 1).all()
    # a row is exactly backtest() of that combination, scored by the one definition
    row = table.iloc[0]
    df = load_ohlcv("EURUSD_1h").loc["2011-01-01":"2012-06-30"]
    pf = backtest(df, QMLParams(swing_n=int(row.swing_n), head_min_atr=float(row.head_min_atr), target=row.target))
    ref = portfolio_metrics(pf, df).iloc[0]
    assert row.n_trades == len(trades_table(pf)) and row.total_return == pytest.approx(pf.total_return() * 100)
    for col in ("sharpe", "calmar", "max_drawdown", "win_rate", "profit_factor"):
        assert row[col] == pytest.approx(ref[col], rel=1e-9), col
    days = pf.value().groupby(df.index.normalize()).last()          # daily mark-to-market equity, by hand
    rets = days.pct_change().fillna(days.iloc[0] / pf.init_cash - 1)
    per_year = len(days) / (((days.index[-1] - days.index[0]).days + 1) / 365.25)
    assert row.sharpe == pytest.approx(rets.mean() / rets.std() * np.sqrt(per_year), rel=1e-9)
    assert row.max_drawdown == pytest.approx((days / days.cummax().clip(lower=pf.init_cash) - 1).min() * 100)


def test_sweep_ranks_max_drawdown_least_negative_first(tmp_path):
    table = sweep(sweep_config(tmp_path, metric="max_drawdown", heatmap=None), progress=False, write=False)
    dd = table["max_drawdown"].to_numpy()
    assert (dd <= 0).all() and (np.diff(dd) <= 0).all() and dd[0] == dd.max()


def test_rr_changes_nothing_with_a_swing_target_but_changes_trades_with_an_rr_target(tmp_path):
    grid = {"swing_n": [3], "target": ["swing", "rr"], "rr": [1.5, 3.0]}
    table = sweep(sweep_config(tmp_path, grid=grid, heatmap=None), progress=False, write=False)
    by = table.set_index(["target", "rr"])[METRICS]
    assert by.loc[("swing", 1.5)].equals(by.loc[("swing", 3.0)])
    assert by.loc[("rr", 1.5), "n_trades"] != by.loc[("rr", 3.0), "n_trades"]


@pytest.mark.parametrize("grid, message", [
    ({"swing": [2, 3]}, "sweep.grid.swing is not a QMLParams field; allowed: swing_n, head_min_atr, max_span"),
    ({"swing_n": [2, 0]}, "sweep.grid.swing_n = 0 is not allowed; allowed: an integer >= 1"),
    ({"target": ["swing", "fib"]}, "sweep.grid.target = 'fib' is not allowed; allowed: 'swing' or 'rr'"),
    ({"rr": []}, "sweep.grid.rr = [] is empty"),
])
def test_bad_grid_is_a_config_error_naming_the_key_and_what_is_allowed(tmp_path, grid, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        sweep(sweep_config(tmp_path, grid=grid), progress=False, write=False)


def test_heatmap_params_must_be_two_grid_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"sweep.heatmap = \['swing_n', 'rr'\] is not allowed; allowed: two"):
        sweep(sweep_config(tmp_path, heatmap=["swing_n", "rr"]), progress=False, write=False)


def test_qml_sweep_command_prints_top_rows_and_paths_and_fails_in_one_line_on_a_bad_key(tmp_path, capsys):
    import yaml

    cfg = sweep_config(tmp_path, grid={"swing_n": [3, 5], "head_min_atr": [0.5]})
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["sweep", "--config", str(path), "--no-progress", "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert "2 combinations, ranked by sharpe" in out and "swing_n" in out and f"table: {tmp_path}" in out
    cfg["sweep"]["grid"] = {"swingn": [3]}
    path.write_text(yaml.safe_dump(cfg))
    assert main(["sweep", "--config", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sweep.grid.swingn is not a QMLParams field" in err


# ----------------------------------------------------------------------------------------- ML filter
TRAIN_END = "2009-12-31"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny model trained on EURUSD_1h 2007-2009 patterns (its trained_on_end is late 2009)."""
    train = load_ohlcv("EURUSD_1h").loc[:TRAIN_END]
    pats = detect_patterns(train)
    lab = label_patterns(train, pats)
    X = FeatureExtractor().extract(train, pats)
    ok = lab["label"].notna().to_numpy()
    model = SignalQualityModel(n_estimators=20, max_depth=2, n_jobs=1).fit(
        X[ok], lab["label"][ok], detection_times=lab["detection_time"][ok], exit_times=lab["exit_time"][ok])
    return model.save(tmp_path_factory.mktemp("model") / "v0001")


def ml_block(model_dir: Path, **kw) -> dict:
    return {"enabled": True, "model_path": str(model_dir), "prediction_mode": "filter",
            "confidence_threshold": 0.5, **kw}


def test_sweep_with_ml_refuses_a_model_trained_on_the_swept_period(tmp_path, model_dir):
    cfg = sweep_config(tmp_path, grid={"swing_n": [3, 5]}, heatmap=None)
    cfg["data"].update(start="2009-01-01", end="2010-06-30")
    cfg["ml"] = ml_block(model_dir)
    with pytest.raises(ModelError, match="cannot score the pattern detected at 2009-.*overlaps the model's "
                                         "training period.*allow_in_sample: true"):
        sweep(cfg, progress=False, write=False)
    cfg["ml"] = ml_block(model_dir, allow_in_sample=True)
    table = sweep(cfg, progress=False, write=False)
    assert (table["ml_status"] == "IN-SAMPLE").all() and table.attrs["ml_status"] == "IN-SAMPLE"


def test_sweep_with_ml_accepts_a_model_trained_before_the_swept_period_and_filters(tmp_path, model_dir):
    cfg = sweep_config(tmp_path, grid={"swing_n": [3, 5]}, heatmap=None)
    meta_end = pd.Timestamp(SignalQualityModel.load(model_dir).trained_on_end_)
    assert meta_end < pd.Timestamp(cfg["data"]["start"])
    plain = sweep(cfg, progress=False, write=False).set_index("swing_n")
    cfg["ml"] = ml_block(model_dir)
    table = sweep(cfg, progress=False, write=False)
    assert list(table.columns)[-1] == "ml_status" and (table["ml_status"] == "out-of-sample").all()
    assert not table.set_index("swing_n")["n_trades"].equals(plain["n_trades"])


def test_sweep_with_an_unusable_model_and_on_model_error_baseline_trades_unfiltered_and_says_so(tmp_path):
    cfg = sweep_config(tmp_path, grid={"swing_n": [3, 5]}, heatmap=None)
    plain = sweep(cfg, progress=False, write=False)
    cfg["ml"] = ml_block(tmp_path / "no_model", on_model_error="baseline")
    with pytest.warns(UserWarning, match="ML filter off, trading unfiltered"):
        table = sweep(cfg, progress=False, write=False)
    assert table["ml_status"].str.startswith("baseline: ml.model_path").all()
    assert table[METRICS].equals(plain[METRICS])


def test_vbt_with_ml_filter_trades_like_qmlstrategy_with_the_same_ml_block(model_dir):
    import yaml

    df = load_ohlcv("EURUSD_1h").loc["2011-01-01":"2012-06-30"]
    block = ml_block(model_dir)
    vt = trades_table(backtest(df, QMLParams(), ml=block, cash=CASH))
    bt = bt_trades(df, QMLParams(), ml_config=yaml.safe_dump({"ml": block}))
    assert_same_trades(vt, bt)
    assert len(vt) != len(trades_table(backtest(df, QMLParams(), cash=CASH)))


# ----------------------------------------------------------------------------------------- notebook
def test_sweep_notebook_runs(tmp_path):
    import nbclient
    import nbformat

    nb = nbformat.read(REPO / "notebooks" / "sweep.ipynb", as_version=4)
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=300,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert (tmp_path / "results" / "sweep_notebook_heatmap.png").is_file()
