"""vectorbt integration: the QML detector as an indicator, one-combination backtests and grid sweeps.

    >>> from qml_plugin import load_ohlcv
    >>> from qml_plugin.patterns import QMLParams
    >>> from qml_plugin.vbt import QML, backtest, sweep, trades_table
    >>> df = load_ohlcv("EURUSD_1h").iloc[:6000]
    >>> qml = QML.run(df.Open, df.High, df.Low, df.Close, swing_n=[2, 3, 5], head_min_atr=[0.3, 0.5],
    ...               param_product=True)                     # 6 columns of entries / levels
    >>> qml.entries.shape
    (6000, 6)
    >>> pf = backtest(df, QMLParams(swing_n=5))               # a vbt.Portfolio, QMLStrategy's trades
    >>> list(trades_table(pf).columns[:4])                    # compare with stats._trades
    ['Column', 'Size', 'EntryBar', 'ExitBar']

``sweep("configs/sweep.yaml")`` gives one row per grid combination, ``optimize("configs/optimize.yaml")``
a seeded search judged walk-forward.

What lives where:

- :mod:`.indicator` -- :data:`QML`, a ``vbt.IndicatorFactory`` indicator over every ``QMLParams``
  field, built on :func:`qml_plugin.patterns.qml.detect_arrays` (no second detector);
- :mod:`.engine` -- :func:`backtest` and the trade plan: the project's fill rules
  (:func:`~qml_plugin.patterns.label_patterns`) and one-position selection
  (:func:`~qml_plugin.tradesim.select_trades`) turned into exact orders for
  ``Portfolio.from_orders``; why not ``from_order_func`` is explained there;
- :mod:`.fast` -- the sweep's event-level fast path (numba), scored by :mod:`qml_plugin.tradesim`;
- :mod:`.grid` -- :func:`sweep`: a config's grid through the fast path on the §12 scheduler, its best
  rows re-simulated through the Portfolio (the engine of record), ranked, with DSR and PBO, written to
  CSV with a heatmap;
- :mod:`.overfit` -- the deflated Sharpe ratio and the probability of backtest overfitting;
- :mod:`.optimize` -- ``qml optimize``: Optuna TPE over ``QMLParams``, train / validation / holdout;
- :mod:`.predlog` -- the prediction log (SPEC §5 ``ml_predictions``): what the model scored, registered
  and logged once per run.

**The prediction log.** With the ML filter on, :func:`backtest` (``registry_db=``, ``run_id=``),
:func:`sweep` and ``qml optimize`` (``ml_data_collection: {enabled: true, db_path: ...}``; off by
default in a sweep config, on by default in an optimize config, as in a run config) register the
patterns the model scored, with their features and triple-barrier outcomes, and log one row per
scored pattern, model version and mode: ``model_id``, the three heads, the ``take`` / ``skip``
decision, ``acting`` and the top five contributions. With a registry, ``canary`` / ``shadow``
versions of a model folder score too and are logged with ``acting = false``, as in the mixins. The
same run logs under the same default run id, so running it again writes nothing new. Without a
registry (the default of :func:`backtest` and of a sweep) nothing is kept or written.

``ml.size_bands`` and ``ml.kill_switch`` (SPEC §13) are **refused** here, not honoured: the event
kernel trades one size per combination and cannot stop mid-run, so a config setting either is a
:class:`~qml_plugin.errors.ConfigError` naming it (``qml sweep``, ``qml optimize``, :func:`backtest`).
They apply in backtesting.py (the mixins; ``qml run`` on one market). The vectorbt side never logs
``reduce_size`` for that reason, and has no kill-switch trip to record.

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
from .predlog import backtest_run_id, grid_run_id

__all__ = ["QML", "OUTPUT_NAMES", "backtest", "trades_table", "portfolio_metrics", "verify", "EngineMismatchError",
           "EventBook", "sweep", "run_grid", "expand_grid", "heatmap_path", "METRICS", "FULL_SIZE",
           "deflated_sharpe", "expected_max_sharpe", "pbo", "backtest_run_id", "grid_run_id"]
