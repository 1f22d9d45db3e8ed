"""vectorbt integration: the QML detector as an indicator, one-combination backtests and grid sweeps.

    >>> from qml_plugin.vbt import QML, backtest, sweep, trades_table
    >>> qml = QML.run(df.Open, df.High, df.Low, df.Close, swing_n=[2, 3, 5], head_min_atr=[0.3, 0.5],
    ...               param_product=True)                     # 6 columns of entries / levels
    >>> pf = backtest(df, QMLParams(swing_n=5))               # a vbt.Portfolio, QMLStrategy's trades
    >>> trades_table(pf)                                      # compare with stats._trades
    >>> sweep("configs/sweep.yaml")                           # one row per grid combination

What lives where:

- :mod:`.indicator` -- :data:`QML`, a ``vbt.IndicatorFactory`` indicator over every ``QMLParams``
  field, built on :func:`qml_plugin.patterns.qml.detect_arrays` (no second detector);
- :mod:`.engine` -- :func:`backtest` and the trade plan: the project's fill rules
  (:func:`~qml_plugin.patterns.label_patterns`) and one-position selection
  (:func:`~qml_plugin.tradesim.select_trades`) turned into exact orders for
  ``Portfolio.from_orders``; why not ``from_order_func`` is explained there;
- :mod:`.grid` -- :func:`sweep`: a config's grid as the columns of the Portfolio, ranked, written to
  CSV with a heatmap.

What this package leaves to others: detection and labels to :mod:`qml_plugin.patterns`, the three
ML modes to :mod:`qml_plugin.filter`, model loading and the out-of-sample guard to
:mod:`qml_plugin.scoring`, and cash, units, fees, equity and statistics to vectorbt.
"""
from __future__ import annotations

from .engine import FULL_SIZE, EngineMismatchError, backtest, portfolio_metrics, trades_table, verify
from .fast import EventBook
from .grid import METRICS, expand_grid, heatmap_path, run_grid, sweep
from .indicator import OUTPUT_NAMES, QML
from .overfit import deflated_sharpe, expected_max_sharpe, pbo

__all__ = ["QML", "OUTPUT_NAMES", "backtest", "trades_table", "portfolio_metrics", "verify", "EngineMismatchError",
           "EventBook", "sweep", "run_grid", "expand_grid", "heatmap_path", "METRICS", "FULL_SIZE",
           "deflated_sharpe", "expected_max_sharpe", "pbo"]
