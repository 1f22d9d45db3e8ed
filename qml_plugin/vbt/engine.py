"""QML trades through vectorbt's Portfolio: the project's fill rules, vectorbt's accounting.

**Design choice.** vectorbt 1.2's ``from_signals`` has no limit orders and measures stops as
fractions of the close, so it cannot express "buy limit at the QML level for 20 bars, stop and
target at absolute prices". Two routes remain: an order function for ``Portfolio.from_order_func``
that replays the bars, or computing the trades with the project's own rules and feeding them to
``Portfolio.from_orders``. We take the second:

1. :func:`~qml_plugin.patterns.label_patterns` gives every pattern its fill and exit bar and price
   under backtesting.py 0.6's rules (limit fill at ``min(Open, entry)``, stop and target from the bar
   after the fill, stop first on a bar touching both, timeout at the next Open);
2. :func:`~qml_plugin.tradesim.select_trades` keeps the patterns a one-position-at-a-time strategy
   trades (higher score, then earlier ``p1_bar``; no new order while a trade or an order is live);
3. each chosen trade becomes two orders at exact bars and prices: a ``targetpercent`` order of
   ``+/-size`` of equity at the fill bar and a ``targetpercent`` 0 at the exit bar;
   ``Portfolio.from_orders`` then does cash, units, fees, equity, drawdowns and statistics.

Why: the fill rules then exist once in the project (two numba kernels, already checked trade for
trade against backtesting.py), instead of a third copy in an order function that could drift; the
selection walks patterns, not bars; and one ``from_orders`` call takes many parameter combinations
as columns. The price: vectorbt sees only the orders, not the pending limit orders behind them (its
order records have no "cancelled" entries).

Sizes: ``0.9999`` of equity per trade (``QMLStrategy``'s default ``size``), or the mode's score with
``ml.size_by_score``. vectorbt holds fractional units where backtesting.py rounds down to whole
units, so per-trade prices and returns agree but equity and PnL differ slightly.

``ml.size_bands`` and ``ml.kill_switch`` (SPEC §13) are **refused**, not honoured, by the whole
vectorbt side (:func:`backtest`, ``qml sweep``, ``qml optimize``): a config setting either is a
``ConfigError`` naming it (:data:`NOT_HONOURED`). They apply in backtesting.py (the mixins, ``qml run``).

A trade still open at the end of the data stays open in vectorbt (``Status == Open``, valued at
the last close); backtesting.py (``finalize_trades=False``) leaves it out of ``stats._trades``.
:func:`trades_table` therefore omits open trades unless ``include_open=True``.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import vectorbt as vbt

from ..config import MLConfig, parse_ml_block
from ..data import bar_duration, validate_ohlcv
from ..filter import decide, refuse_unsupported, size_fraction
from ..patterns import QMLParams, detect_patterns, label_patterns
from ..patterns.qml import detect_arrays
from ..tradesim import FULL_SIZE, Market, equity_stats_nb, levels_placeable, select_trades, trade_stats_nb
from .fast import NOT_HONOURED

__all__ = ["backtest", "trades_table", "portfolio_metrics", "verify", "EngineMismatchError", "FULL_SIZE"]

MLLike = MLConfig | dict | str | Path | None
"""An ``ml:`` block: an :class:`MLConfig`, a dict, a YAML path or string; None = ML off."""


def backtest(ohlcv: pd.DataFrame, params: QMLParams | None = None, ml: MLLike = None, commission: float = 0.0,
             cash: float = 100_000, *, registry_db: str | Path | None = None,
             run_id: str | None = None) -> vbt.Portfolio:
    """One parameter combination through ``Portfolio.from_orders``: the same trades as ``QMLStrategy``.

        >>> from qml_plugin import load_ohlcv
        >>> pf = backtest(load_ohlcv("EURUSD_1h").iloc[:5000], QMLParams(swing_n=5))
        >>> bool((trades_table(pf)["EntryBar"] < trades_table(pf)["ExitBar"]).all())
        True

    ``commission`` is a fraction of each order's value (backtesting.py's ``commission``), ``cash``
    the starting equity. With an ``ml`` block whose model is in-sample or unusable the run warns
    (``IN-SAMPLE`` / ``on_model_error: baseline``) or raises :class:`~qml_plugin.errors.ModelError`.

    ``registry_db`` (a registry path or URL): the patterns the model scored are registered with their
    features and triple-barrier outcomes, and every scoring event goes to the prediction log under
    ``run_id`` (default :func:`qml_plugin.vbt.predlog.backtest_run_id`: the same inputs give the same
    id, so a rerun writes nothing new); see :mod:`qml_plugin.vbt.predlog`. The Portfolio is unchanged.
    """
    params = params or QMLParams()
    if not isinstance(params, QMLParams):
        raise TypeError(f"params must be a QMLParams, got {type(params).__name__}")
    validate_ohlcv(ohlcv)
    ml_cfg = parse_ml_block(ml) if ml is not None else MLConfig()
    if registry_db is not None:
        from .predlog import check_target

        registry_db, run_id = check_target(ohlcv, registry_db, run_id)
    book = PatternBook(ohlcv, ml_cfg, registry_db=registry_db, keep_events=registry_db is not None)
    plan = book.plan(params)
    if book.ml_status not in ("off", "out-of-sample"):
        warnings.warn(f"ML filter status: {book.ml_status}", UserWarning, stacklevel=2)
    if registry_db is not None and ml_cfg.enabled:
        from .predlog import backtest_run_id, log_events, scoring_events

        log_events(registry_db, scoring_events(book, [params]), run_id or backtest_run_id(ohlcv, params, ml_cfg))
    name = ohlcv.attrs.get("symbol") or "QML"
    return run_portfolio(ohlcv, [plan], pd.Index([name]), commission=commission, cash=cash, single=True)


class PatternBook:
    """Patterns, outcomes and ML scores of one series, cached per parameter subset.

    Detection depends on the detection fields only (and on ``rr`` only when ``target="rr"``),
    outcomes also on ``max_wait`` / ``max_hold``, decisions also on ``min_score``; a grid that varies
    ``rr`` with ``target="swing"`` or only ``min_score`` therefore detects once.

    ``registry_db``: the registry whose ``ml_model_versions`` statuses decide which versions of a
    folder act and which score quietly (canary / shadow), as in the mixins. ``keep_events=True``
    keeps each scoring pass (:class:`~qml_plugin.scoring.Scorer` and features) for
    :func:`qml_plugin.vbt.predlog.scoring_events`; off (the default) nothing is kept.
    """

    def __init__(self, ohlcv: pd.DataFrame, ml: MLConfig | None = None, *, registry_db: str | None = None,
                 keep_events: bool = False) -> None:
        self.ohlcv = ohlcv
        self.ml = ml or MLConfig()
        refuse_unsupported(self.ml, **NOT_HONOURED)
        self.ml_status = "off"
        self.registry_db = registry_db
        self.keep_events = keep_events
        self.passes: list[dict] = []              # keep_events: one entry per scoring pass
        self.pass_of: dict[tuple, tuple[int, int, int]] = {}   # detection key -> (pass, first row, end row)
        self._hlc = tuple(ohlcv[k].to_numpy(np.float64) for k in ("High", "Low", "Close"))
        self._patterns: dict[tuple, pd.DataFrame] = {}
        self._labeled: dict[tuple, pd.DataFrame] = {}
        self._confidence: dict[tuple, np.ndarray | None] = {}  # None: model unusable, baseline
        self._expected_r: dict[tuple, np.ndarray | None] = {}   # the expected_r head, for expected_value

    @staticmethod
    def detection_key(p: QMLParams) -> tuple:
        return (p.swing_n, float(p.head_min_atr), p.max_span, float(p.entry_offset_atr), float(p.stop_buffer_atr),
                p.target, float(p.rr) if p.target == "rr" else None)

    def patterns(self, p: QMLParams) -> pd.DataFrame:
        key = self.detection_key(p)
        if key not in self._patterns:
            if self.ml.enabled:  # pattern ids and full columns are needed for features and the guard
                self._patterns[key] = detect_patterns(self.ohlcv, p)
            else:
                self._patterns[key] = pd.DataFrame(detect_arrays(*self._hlc, p))
        return self._patterns[key]

    def labeled(self, p: QMLParams) -> pd.DataFrame:
        key = (self.detection_key(p), p.max_wait, p.max_hold)
        if key not in self._labeled:
            self._labeled[key] = label_patterns(self.ohlcv, self.patterns(p), max_wait=p.max_wait, max_hold=p.max_hold)
        return self._labeled[key]

    def score(self, grid: Sequence[QMLParams]) -> None:
        """ML confidence of every pattern of ``grid``: one feature extraction and one model pass for all."""
        if not self.ml.enabled:
            return
        from ..features import FeatureExtractor
        from ..scoring import score_or_baseline

        keys = list(dict.fromkeys(self.detection_key(p) for p in grid))
        todo = [k for k in keys if k not in self._confidence]
        if not todo:
            return
        by_key = {self.detection_key(p): p for p in grid}
        frames = [self.patterns(by_key[k]) for k in todo]
        allpats = pd.concat(frames, ignore_index=True)
        extractor = FeatureExtractor()
        feats = extractor.extract(self.ohlcv, allpats)
        scorer, self.ml_status = score_or_baseline(self.ml, self.ohlcv, allpats, feats, registry_db=self.registry_db)
        conf = None if scorer is None else scorer.confidence.to_numpy(dtype=float)
        exp_r = None if scorer is None or scorer.expected_r is None else scorer.expected_r.to_numpy(dtype=float)
        bounds = np.cumsum([0, *map(len, frames)])
        if self.keep_events and scorer is not None:
            self.passes.append({"scorer": scorer, "schema": extractor.schema_hash})
        for k, a, b in zip(todo, bounds[:-1], bounds[1:], strict=True):
            self._confidence[k] = conf[a:b] if conf is not None else None
            self._expected_r[k] = exp_r[a:b] if exp_r is not None else None
            if self.keep_events and scorer is not None:
                self.pass_of[k] = (len(self.passes) - 1, int(a), int(b))

    def confidence(self, p: QMLParams) -> np.ndarray | None:
        """ML confidence of ``p``'s patterns (None: model unusable, the technical rule trades)."""
        self.score([p])
        return self._confidence[self.detection_key(p)]

    def expected_r(self, p: QMLParams) -> np.ndarray | None:
        """The ``expected_r`` head on ``p``'s patterns (None: model unusable; NaN where the model lacks the head)."""
        self.score([p])
        return self._expected_r[self.detection_key(p)]

    def plan(self, p: QMLParams) -> dict[str, np.ndarray]:
        """The trades ``QMLStrategy`` makes with ``p``: bars, prices, direction and size of each, as arrays."""
        lab = self.labeled(p)
        d = lab["direction"].to_numpy(np.int64)
        entry, stop, target = (lab[k].to_numpy(float) for k in ("entry", "stop", "target"))
        tradable = levels_placeable(d, entry, stop, target)
        mode, conf = None, None
        if self.ml.enabled:
            conf = self.confidence(p)
            mode = self.ml.prediction_mode if conf is not None else None
        take, score = decide(lab["validity_score"].to_numpy(float), conf if conf is not None else np.nan,
                             mode=mode, min_score=float(p.min_score), ml_weight=self.ml.ml_weight,
                             confidence_threshold=self.ml.confidence_threshold,
                             expected_r=self.expected_r(p) if mode else None, min_expected_r=self.ml.min_expected_r)
        chosen = select_trades(lab, take & tradable, score, p.max_wait)
        traded = chosen & (lab["status"].to_numpy() == "filled")
        size = size_fraction(score) if (self.ml.size_by_score and mode is not None) else np.full(len(d), FULL_SIZE)
        exit_bar = lab["exit_bar"].to_numpy(float)[traded]
        return {
            "fill_bar": lab["fill_bar"].to_numpy(float)[traded].astype(np.int64),
            "fill_price": lab["fill_price"].to_numpy(float)[traded],
            "exit_bar": np.where(np.isnan(exit_bar), -1, exit_bar).astype(np.int64),
            "exit_price": lab["exit_price"].to_numpy(float)[traded],
            "direction": d[traded],
            "size": size[traded],
        }


def run_portfolio(ohlcv: pd.DataFrame, plans: Sequence[dict], columns: pd.Index, *, commission: float = 0.0,
                  cash: float = 100_000, single: bool = False) -> vbt.Portfolio:
    """One ``Portfolio.from_orders`` call with one column per plan (a plan = :meth:`PatternBook.plan`)."""
    n, c = len(ohlcv), len(plans)
    size = np.full((n, c), np.nan)
    price = np.full((n, c), np.inf)
    for j, plan in enumerate(plans):  # a loop over parameter combinations; the bars are array-indexed
        size[plan["fill_bar"], j] = plan["direction"] * plan["size"]
        price[plan["fill_bar"], j] = plan["fill_price"]
        closed = plan["exit_bar"] >= 0
        size[plan["exit_bar"][closed], j] = 0.0
        price[plan["exit_bar"][closed], j] = plan["exit_price"][closed]
    n_orders = int(np.count_nonzero(~np.isnan(size)))
    if single:
        close: Any = ohlcv["Close"].rename(columns[0])
        size, price = size[:, 0], price[:, 0]
    else:  # close carries the column labels; size and price stay raw arrays (no pandas copies)
        close = pd.DataFrame(np.repeat(ohlcv["Close"].to_numpy(np.float64)[:, None], c, axis=1), index=ohlcv.index,
                             columns=columns, copy=False)
    return vbt.Portfolio.from_orders(
        close, size, size_type="targetpercent", price=price, direction="both", fees=float(commission),
        init_cash=float(cash), freq=bar_duration(ohlcv) or pd.Timedelta(hours=1), max_orders=max(n_orders, 1))


def bars_per_year(ohlcv: pd.DataFrame) -> float:
    """Bars per calendar year in this series (a 24x5 FX hourly series has ~6,200, not 8,760)."""
    span = (ohlcv.index[-1] - ohlcv.index[0]) / pd.Timedelta(days=365.25)
    return (len(ohlcv) - 1) / span if span > 0 else float("nan")


def trades_table(pf: vbt.Portfolio, *, include_open: bool = False) -> pd.DataFrame:
    """vectorbt's trades under backtesting.py's ``stats._trades`` names, to compare the two engines.

    Columns ``Column, Size`` (negative = short), ``EntryBar, ExitBar, EntryPrice, ExitPrice, PnL,
    ReturnPct`` (a fraction, like backtesting.py), ``EntryTime, ExitTime, Duration, Status``. Open
    trades (still held at the last bar) are left out unless ``include_open``, as backtesting.py
    leaves them out of ``_trades`` by default.
    """
    rec = pf.trades.records
    idx = pf.wrapper.index
    cols = pf.wrapper.columns
    sign = np.where(rec["direction"] == 0, 1.0, -1.0)
    out = pd.DataFrame({
        "Column": cols[rec["col"]] if len(cols) > 1 else np.full(len(rec), cols[0] if len(cols) else 0),
        "Size": rec["size"] * sign,
        "EntryBar": rec["entry_idx"].astype(np.int64),
        "ExitBar": rec["exit_idx"].astype(np.int64),
        "EntryPrice": rec["entry_price"],
        "ExitPrice": rec["exit_price"],
        "PnL": rec["pnl"],
        "ReturnPct": rec["return"],
        "EntryTime": idx[rec["entry_idx"]],
        "ExitTime": idx[rec["exit_idx"]],
        "Status": np.where(rec["status"] == 1, "Closed", "Open"),
    })
    out["Duration"] = out["ExitTime"] - out["EntryTime"]
    if not include_open:
        out = out[out["Status"] == "Closed"]
    return out.sort_values(["Column", "EntryBar"], kind="stable").reset_index(drop=True)


class EngineMismatchError(RuntimeError):
    """The sweep's fast path and vectorbt's Portfolio disagree on a combination: a bug, never bad input."""


def _column_trades(pf: vbt.Portfolio, col: int) -> tuple[np.ndarray, ...]:
    """``(entry_bar, exit_bar, entry_price, exit_price, direction)`` of one Portfolio column; open = -1 / NaN."""
    rec = pf.trades.values
    rec = rec[rec["col"] == col]
    rec = rec[np.argsort(rec["entry_idx"], kind="stable")]
    open_ = rec["status"] != 1
    return (rec["entry_idx"].astype(np.int64), np.where(open_, -1, rec["exit_idx"]).astype(np.int64),
            rec["entry_price"].astype(float), np.where(open_, np.nan, rec["exit_price"]),
            np.where(rec["direction"] == 0, 1.0, -1.0))


def portfolio_metrics(pf: vbt.Portfolio, ohlcv: pd.DataFrame | Market, *, commission: float = 0.0) -> pd.DataFrame:
    """The sweep's metrics of every column of ``pf``, scored by :mod:`qml_plugin.tradesim`'s one definition.

    The equity is ``pf.value()`` at each day's last bar, the trades ``pf.trades``; a trade still open at
    the end is valued, not counted. Columns are :data:`qml_plugin.vbt.fast.FAST_METRICS`.

        >>> from qml_plugin import load_ohlcv
        >>> df = load_ohlcv("EURUSD_1h").iloc[:5000]
        >>> list(portfolio_metrics(backtest(df), df).columns[:5])
        ['n_trades', 'win_rate', 'profit_factor', 'total_return', 'sharpe']
    """
    from .fast import FAST_METRICS

    market = Market.of(ohlcv)
    value = np.asarray(pf.value(), dtype=np.float64).reshape(len(pf.wrapper.index), -1)
    init = np.asarray(pf.init_cash, dtype=np.float64).reshape(-1)
    rows = []
    for j in range(value.shape[1]):
        _, _, ep, xp, d = _column_trades(pf, j)
        stats = equity_stats_nb(value[market.day_end, j], float(init[j]), market.days_per_year)
        n, win, pf_ = trade_stats_nb(ep, xp, d, float(commission))
        total, sharpe, calmar, dd, sr, skew, kurt, n_days = stats
        rows.append([n, win, pf_, total, sharpe, calmar, dd, sr, skew, kurt, n_days])
    return pd.DataFrame(rows, columns=FAST_METRICS, index=pf.wrapper.columns)


def verify(ohlcv: pd.DataFrame, params: Sequence[QMLParams], fast: Sequence[tuple], *, ml: MLConfig | None = None,
           commission: float = 0.0, cash: float = 100_000.0, rtol: float = 1e-9, registry_db: str | None = None) -> int:
    """Re-simulate ``params`` through vectorbt's Portfolio and raise unless the fast path agrees.

    ``fast`` holds :meth:`qml_plugin.vbt.fast.EventBook.simulate`'s output per combination. The
    Portfolio's trades come from :class:`PatternBook` (``label_patterns`` and ``select_trades``, not
    the fast path's kernel); its equity from vectorbt's own accounting. Trades must match exactly
    (bars, direction) and to ``rtol`` (prices); metrics to ``rtol`` (1e-9), NaN and inf included.
    Returns the number of combinations checked; raises :class:`EngineMismatchError` naming the
    combination and what differs. ``registry_db``: the registry the fast path's scores used (its statuses
    decide which versions act), so both engines score alike.
    """
    from .fast import FAST_METRICS

    if not params:
        return 0
    book = PatternBook(ohlcv, ml, registry_db=registry_db)
    book.score(params)
    pf = run_portfolio(ohlcv, [book.plan(p) for p in params], pd.RangeIndex(len(params)), commission=commission,
                       cash=cash)
    theirs = portfolio_metrics(pf, ohlcv, commission=commission).to_numpy()
    for j, (p, got) in enumerate(zip(params, fast, strict=True)):
        ours, eb, xb, ep, xp, d, _daily = got
        ref = _column_trades(pf, j)
        where = f"sweep fast path != vectorbt Portfolio for {p}"
        if len(ref[0]) != len(eb):
            raise EngineMismatchError(f"{where}: {len(eb)} trades vs {len(ref[0])} in the Portfolio")
        for name, a, b in zip(("entry bar", "exit bar", "entry price", "exit price", "direction"),
                              (eb, xb, ep, xp, d), ref, strict=True):
            same = np.array_equal(a, b) if name.endswith(("bar", "direction")) else \
                np.allclose(a, b, rtol=rtol, atol=0.0, equal_nan=True)
            if not same:
                k = int(np.flatnonzero(~np.isclose(a, b, rtol=rtol, atol=0.0, equal_nan=True))[0])
                raise EngineMismatchError(f"{where}: trade {k} {name} {a[k]!r} vs {b[k]!r}")
        bad = ~np.isclose(ours, theirs[j], rtol=rtol, atol=1e-12, equal_nan=True)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise EngineMismatchError(f"{where}: {FAST_METRICS[i]} {ours[i]!r} vs {theirs[j, i]!r}")
    return len(params)
