"""Parameter sweeps: a ``QMLParams`` grid through vectorbt's Portfolio, one row per combination.

    >>> table = sweep("configs/sweep.yaml")                        # doctest: +SKIP
    >>> table.head()        # grid params, n_trades, win_rate, profit_factor, total_return, sharpe, max_drawdown

The config is the §9 sweep config (:func:`qml_plugin.config.load_sweep_config`; a path, a YAML
string or a dict). ``sweep.grid`` maps ``QMLParams`` fields to lists of values; the grid is their
cartesian product, in the order the keys are written. Each combination's trades come from
:class:`~qml_plugin.vbt.engine.PatternBook` (the same trades as ``QMLStrategy`` in backtesting.py);
combinations are then simulated as the columns of one ``Portfolio.from_orders`` call (in blocks of
:data:`COLUMNS_PER_CALL` to bound memory). Detection runs once per distinct set of detection
fields, and combinations whose trades are identical share one Portfolio column: ``rr`` only
matters with ``target: rr``, so ``rr: [1.5, 2, 3]`` with the default ``target: swing`` gives three
identical rows per (swing_n, head_min_atr), computed once.

With ``ml.enabled: true`` the ML filter of §7 is applied to every combination's patterns
(:func:`qml_plugin.filter.decide`, the same rule as in backtesting.py). Features are extracted and
scored once for the patterns of all combinations, with the out-of-sample guard of
:func:`qml_plugin.scoring.score_patterns`: a single model trained on the swept period is refused
with a :class:`~qml_plugin.errors.ModelError`, or, with ``allow_in_sample: true``, accepted and
flagged ``IN-SAMPLE`` in the ``ml_status`` column (added only when ML is on).

Metrics, per column of the Portfolio (equity metrics from vectorbt's methods, trade metrics from its
closed-trade records):

=================  ========================================================================
``n_trades``       closed trades (a trade still open at the end is valued, not counted)
``win_rate``       % of closed trades with PnL > 0
``profit_factor``  gross profit / gross loss of closed trades (inf without a loss)
``total_return``   % change of equity, first bar to last
``sharpe``         bar-return Sharpe, annualized with the data's own bars per calendar year
                   (NaN when the equity never moves)
``max_drawdown``   % (<= 0) deepest fall of equity from its running peak
=================  ========================================================================

Rows are sorted by ``sweep.metric``, best first: descending for every metric. For
``max_drawdown`` (negative) descending means the least negative drawdown first, i.e. best first as
well. NaN (e.g. no trades) sorts last. The table is written to ``sweep.output`` (CSV) and a heatmap
of ``sweep.metric`` over the two ``sweep.heatmap`` params to ``<output stem>_heatmap.png`` next to
it; other params are aggregated by the best (max) value of the metric in each cell.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm
from vectorbt.returns import nb as returns_nb

from ..config import load_sweep_config, parse_ml_block
from ..data import load_data
from ..errors import ConfigError
from ..patterns import QMLParams
from .engine import PatternBook, bars_per_year, run_portfolio

__all__ = ["sweep", "expand_grid", "METRICS", "COLUMNS_PER_CALL", "heatmap_path"]

METRICS = ["n_trades", "win_rate", "profit_factor", "total_return", "sharpe", "max_drawdown"]
"""Metric columns of :func:`sweep`, in order."""

COLUMNS_PER_CALL = 64
"""Combinations simulated per ``Portfolio.from_orders`` call (bounds memory at bars x 64 floats)."""


def expand_grid(grid: dict[str, Any]) -> list[QMLParams]:
    """Every combination of ``grid`` (field -> list of values) as ``QMLParams``, the first key varying slowest.

        >>> [p.swing_n for p in expand_grid({"swing_n": [2, 3], "rr": [1.5]})]
        [2, 3]

    A key that is not a ``QMLParams`` field, an empty list or a value ``QMLParams`` rejects is a
    :class:`ConfigError` naming the key.
    """
    fields = QMLParams.fields()
    values: dict[str, list] = {}
    for key, vals in grid.items():
        if key not in fields:
            raise ConfigError(f"sweep.grid.{key} is not a QMLParams field; allowed: {', '.join(fields)}")
        vals = list(vals) if isinstance(vals, (list, tuple)) else [vals]
        if not vals:
            raise ConfigError(f"sweep.grid.{key} = [] is empty; give a list of at least one value")
        for v in vals:
            try:
                QMLParams(**{key: v})
            except ValueError as e:
                allowed = str(e).split("allowed:", 1)[-1].strip()
                raise ConfigError(f"sweep.grid.{key} = {v!r} is not allowed; allowed: {allowed}") from None
        values[key] = vals
    return [QMLParams(**dict(zip(values, combo, strict=True))) for combo in itertools.product(*values.values())]


def heatmap_path(output: str | Path) -> Path:
    """The heatmap next to a CSV ``output``: ``results/sweep.csv`` -> ``results/sweep_heatmap.png``."""
    output = Path(output)
    return output.with_name(f"{output.stem}_heatmap.png")


def sweep(config: dict | str | Path, *, ohlcv: pd.DataFrame | None = None, progress: bool = True,
          write: bool = True) -> pd.DataFrame:
    """Run the sweep config's grid through vectorbt's Portfolio and return one row per combination.

    ``ohlcv`` replaces the config's ``data:`` section (e.g. a frame already in memory);
    ``write=False`` skips the CSV and the heatmap. The written paths are in ``table.attrs``
    (``"csv"``, ``"heatmap"``), as is ``"ml_status"``.
    """
    cfg = load_sweep_config(config)
    sw = cfg["sweep"]
    grid = expand_grid(sw["grid"])
    keys = list(sw["grid"])
    heat = _heatmap_params(sw["heatmap"], keys)
    ml = parse_ml_block(cfg["ml"])
    df = load_data(cfg["data"]) if ohlcv is None else ohlcv
    book = PatternBook(df, ml)
    book.score(grid)  # ML: one feature extraction and one guarded model pass, before any trade
    columns = pd.MultiIndex.from_tuples([tuple(getattr(p, k) for k in keys) for p in grid], names=keys)
    ann_factor = bars_per_year(df)
    parts = []
    with tqdm(total=len(grid), desc="qml sweep", unit="combo", disable=not progress, leave=False) as bar:
        for lo in range(0, len(grid), COLUMNS_PER_CALL):
            block = grid[lo:lo + COLUMNS_PER_CALL]
            plans = [book.plan(p) for p in block]
            # combinations with identical trades (e.g. rr with target: swing) are simulated once
            trades = [b"".join(a.tobytes() for a in plan.values()) for plan in plans]
            first = {t: i for i, t in reversed(list(enumerate(trades)))}
            unique = sorted(set(first.values()))
            pf = run_portfolio(df, [plans[i] for i in unique], pd.Index(unique), commission=sw["commission"],
                               cash=sw["cash"])
            parts.append(_metrics(pf, ann_factor).loc[[first[t] for t in trades]].set_axis(
                columns[lo:lo + COLUMNS_PER_CALL]))
            bar.update(len(block))
    table = pd.concat(parts).reset_index()
    table["n_trades"] = table["n_trades"].astype(np.int64)
    if ml.enabled:
        table["ml_status"] = book.ml_status
    table = table.sort_values(sw["metric"], ascending=False, na_position="last", kind="stable").reset_index(drop=True)
    table.attrs["ml_status"] = book.ml_status
    if write:
        csv = Path(sw["output"])
        csv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(csv, index=False)
        table.attrs["csv"] = str(csv)
        if heat is not None:
            table.attrs["heatmap"] = str(plot_heatmap(table, heat, sw["metric"], heatmap_path(csv),
                                                      best_of_others=len(keys) > 2))
    return table


def _metrics(pf: Any, ann_factor: float) -> pd.DataFrame:
    """The six table metrics of every column of ``pf``, from vectorbt's equity and closed-trade records.

    The equity metrics are vectorbt's own kernels (``returns_nb``, ``sharpe_ratio_nb``,
    ``max_drawdown_nb``; what ``pf.sharpe_ratio()`` etc. call) applied to one ``pf.value()``, which
    skips the pandas wrapping and benchmark series of each accessor call. Trade counts and sums use
    ``np.bincount`` per column: ``MappedArray.sum`` builds a fresh numba reducer that recompiles in
    every process.
    """
    value = np.asarray(pf.value(), dtype=np.float64).reshape(len(pf.wrapper.index), -1)
    init = np.asarray(pf.init_cash, dtype=np.float64).reshape(-1)
    returns = returns_nb.returns_nb(value, init)
    sharpe = returns_nb.sharpe_ratio_nb(returns, ann_factor, 0.0, 1)
    rec = pf.trades.closed.records
    cols, pnl, c = rec["col"], rec["pnl"], value.shape[1]
    n = np.bincount(cols, minlength=c)
    wins = np.bincount(cols, weights=(pnl > 0).astype(float), minlength=c)
    gain = np.bincount(cols, weights=np.where(pnl > 0, pnl, 0.0), minlength=c)
    loss = np.bincount(cols, weights=np.where(pnl < 0, -pnl, 0.0), minlength=c)
    with np.errstate(divide="ignore", invalid="ignore"):
        win_rate = np.where(n > 0, wins / np.maximum(n, 1) * 100, np.nan)
        profit_factor = np.where(loss > 0, gain / loss, np.where(gain > 0, np.inf, np.nan))
    return pd.DataFrame({
        "n_trades": n,
        "win_rate": win_rate,
        "profit_factor": profit_factor,
        "total_return": (value[-1] / init - 1.0) * 100,
        "sharpe": np.where(np.isfinite(sharpe), sharpe, np.nan),  # vectorbt says inf for a flat equity
        "max_drawdown": returns_nb.max_drawdown_nb(returns) * 100,
    }, index=pf.wrapper.columns)


def _heatmap_params(heatmap: list | None, keys: list[str]) -> list[str] | None:
    if heatmap is None:
        return keys[:2] if len(keys) >= 2 else None
    if len(heatmap) != 2 or len(set(heatmap)) != 2 or any(h not in keys for h in heatmap):
        raise ConfigError(f"sweep.heatmap = {heatmap!r} is not allowed; allowed: two different grid keys "
                          f"from {', '.join(keys)}")
    return list(heatmap)


def plot_heatmap(table: pd.DataFrame, params: list[str], metric: str, path: str | Path, *,
                 best_of_others: bool = True) -> Path:
    """PNG heatmap of ``metric`` over two params (rows x columns), best value over the other params."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pivot = table.pivot_table(index=params[0], columns=params[1], values=metric, aggfunc="max", dropna=False)
    fig = Figure(figsize=(1.4 + 1.1 * pivot.shape[1], 1.2 + 0.8 * pivot.shape[0]), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    values = np.ma.masked_invalid(pivot.to_numpy(float))
    span = (values.min(), values.max()) if values.count() else (0.0, 1.0)
    img = ax.imshow(values, cmap="viridis", aspect="auto", vmin=span[0], vmax=span[1] if span[1] > span[0] else None)
    ax.set_xticks(range(pivot.shape[1]), [f"{v:g}" if isinstance(v, float) else str(v) for v in pivot.columns])
    ax.set_yticks(range(pivot.shape[0]), [f"{v:g}" if isinstance(v, float) else str(v) for v in pivot.index])
    ax.set_xlabel(params[1])
    ax.set_ylabel(params[0])
    for (i, j), v in np.ndenumerate(pivot.to_numpy(float)):
        dark = np.isnan(v) or img.norm(v) < 0.6  # white text on the dark end of viridis, black on the bright end
        ax.text(j, i, "nan" if np.isnan(v) else f"{v:.3g}", ha="center", va="center", color="w" if dark else "k",
                fontsize=9)
    ax.set_title(f"{metric} (best over the other params)" if best_of_others else metric, fontsize=10)
    fig.colorbar(img, ax=ax)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
