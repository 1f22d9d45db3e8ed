"""Parameter sweeps: a ``QMLParams`` grid scored from events, checked against vectorbt, its overfitting said.

    table = sweep("configs/sweep.yaml")
    table.head()     # grid params, n_trades, win_rate, profit_factor, total_return, sharpe, calmar,
                     # max_drawdown, dsr;  table.attrs["pbo"], table.attrs["verified"]

The config is the §9 sweep config (:func:`qml_plugin.config.load_sweep_config`; a path, a YAML
string or a dict). ``sweep.grid`` maps ``QMLParams`` fields to lists of values; the grid is their
cartesian product, in the order the keys are written.

**How a row is computed.** Each combination's trades and metrics come from its patterns' events
(:mod:`qml_plugin.vbt.fast`: detection once per distinct ``swing_n, head_min_atr, max_span``,
levels once per distinct level fields; the walk, fills, exits, daily equity and score in one numba
kernel). Blocks of combinations are work units on the §12 scheduler (``compute:`` or the
``compute=`` argument: serial, processes or Dask); the table does not depend on which.
**The engine of record** stays vectorbt's Portfolio: the ``sweep.verify_top`` best rows (default 10)
are re-simulated through ``Portfolio.from_orders`` with trades from ``label_patterns`` /
``select_trades`` (:func:`qml_plugin.vbt.engine.verify`), and the sweep raises
:class:`~qml_plugin.vbt.engine.EngineMismatchError` if a trade or a metric differs (1e-9).

With ``ml.enabled: true`` the ML filter of §7 is applied to every combination's patterns
(:func:`qml_plugin.filter.decide`, the same rule as in backtesting.py), scored once with the
out-of-sample guard of :func:`qml_plugin.scoring.score_patterns`: a single model trained on the swept
period is refused with a :class:`~qml_plugin.errors.ModelError`, or, with ``allow_in_sample: true``,
accepted and flagged ``IN-SAMPLE`` in the ``ml_status`` column (added only when ML is on).

Metrics, one definition (:mod:`qml_plugin.tradesim`), per combination:

=================  ========================================================================
``n_trades``       closed trades (a trade still open at the end is valued, not counted)
``win_rate``       % of closed trades with a return > 0
``profit_factor``  sum of winning trade returns / |sum of losing ones| (inf without a loss)
``total_return``   % change of equity, start to last bar
``sharpe``         daily mark-to-market Sharpe over the market's own calendar days, annualized
                   with that market's days per year (NaN when the equity never moves)
``calmar``         annualized return / |max drawdown|
``max_drawdown``   % (<= 0) deepest fall of the daily equity from its running peak
``dsr``            deflated Sharpe ratio (:func:`~qml_plugin.vbt.overfit.deflated_sharpe`): the
                   probability that the row's true Sharpe is above zero given the grid's number of
                   distinct combinations and the variance of their Sharpes
=================  ========================================================================

``table.attrs``: ``pbo`` (probability of backtest overfitting, CSCV over 16 blocks of the daily
returns, :func:`~qml_plugin.vbt.overfit.pbo`), ``pbo_logits`` (the in-sample best's out-of-sample
rank logits, one per split), ``n_trials`` (distinct combinations, by their daily returns),
``verified`` (rows re-simulated through the Portfolio), ``ml_status``, the written paths
(``csv``, ``heatmap``) and, when the grid's scoring events were logged (``ml_data_collection``,
:mod:`qml_plugin.vbt.predlog`), ``predictions``: ``run_id``, ``db``, ``patterns``, ``rows``, ``seconds``.

Rows are sorted by ``sweep.metric``, best first: descending for every metric (for ``max_drawdown``,
negative, the least negative first). NaN sorts last. The table is written to ``sweep.output`` (CSV)
and a heatmap of ``sweep.metric`` over the two ``sweep.heatmap`` params to ``<output stem>_heatmap.png``
next to it (other params: the best value in each cell), with the PBO and the best row's DSR in its title.
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from ..compute import Scheduler
from ..config import MLConfig, load_sweep_config, parse_ml_block
from ..data import load_data
from ..errors import ConfigError
from ..filter import refuse_unsupported
from ..patterns import QMLParams
from .engine import verify
from .fast import FAST_METRICS, NOT_HONOURED, EventBook
from .overfit import BLOCKS, block_sums, deflated_sharpe, pbo_from_sums

__all__ = ["sweep", "expand_grid", "METRICS", "heatmap_path", "run_grid", "overfit_note", "BLOCK", "GridReturns",
           "returns_digest", "trial_count"]

METRICS = ["n_trades", "win_rate", "profit_factor", "total_return", "sharpe", "calmar", "max_drawdown", "dsr"]
"""Metric columns of :func:`sweep`, in order."""

BLOCK = 250
"""Most combinations per work unit (a unit detects once per structure key it holds)."""


class GridReturns(NamedTuple):
    """What PBO and the distinct-trial count need of a grid's daily returns, without the daily returns.

    ``s1`` / ``s2``: per CSCV block, the sum and the sum of squares of each combination's daily returns
    (blocks x combinations, :func:`~qml_plugin.vbt.overfit.block_sums`); ``days``: days per block;
    ``digests``: one :func:`returns_digest` per combination. ``pbo_from_sums(s1, s2, days)`` is the PBO.
    """

    s1: np.ndarray
    s2: np.ndarray
    days: np.ndarray
    digests: list


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




def _unit(shared: tuple, block: list[QMLParams]) -> tuple:
    """Work unit: one block of combinations on the shared series -> what the table needs of each.

    ``shared`` = ``(ohlcv, ml, commission, cash, scores)`` reaches each worker once per sweep
    (:meth:`~qml_plugin.compute.Scheduler.map`'s ``shared``); a block is a list of ``QMLParams``.
    Returns ``(metrics, s1, s2, days, digests, ml_status)``: the metric rows, the CSCV block sums of
    each combination's daily returns (:func:`~qml_plugin.vbt.overfit.block_sums`, blocks x
    combinations), and a digest of each daily-return series (distinct trials): a few dozen numbers per
    combination travel back, not thousands of daily returns.
    """
    ohlcv, ml, commission, cash, scores = shared
    book = EventBook(ohlcv, ml, scores=scores)
    book.prepare(block)
    metrics = np.empty((len(block), len(FAST_METRICS)))
    s1 = np.empty((BLOCKS, len(block)))
    s2 = np.empty((BLOCKS, len(block)))
    days = np.zeros(BLOCKS, np.int64)
    digests = []
    for j, p in enumerate(block):
        out, *_, daily = book.simulate(p, commission=commission, cash=cash)
        r = daily / np.r_[cash, daily[:-1]] - 1.0
        metrics[j] = out
        s1[:, j], s2[:, j], days = block_sums(r)
        digests.append(returns_digest(r))
    return metrics, s1, s2, days, digests, book.ml_status


def returns_digest(returns: np.ndarray) -> bytes:
    """A 16-byte digest of one daily-return series: equal series, equal digests (the distinct-trial count)."""
    return hashlib.blake2b(np.ascontiguousarray(returns, np.float64).tobytes(), digest_size=16).digest()


def _blocks(grid: list[QMLParams], parallel: int) -> list[np.ndarray]:
    """Combination indices per unit, grouped by level key so each unit detects and prices as little as it can.

    Serial: blocks of :data:`BLOCK` (the progress bar's steps). In parallel: about four blocks per
    worker (few, large units; four so that a slow block does not leave a worker idle), at most
    ``4 * BLOCK`` combinations each (bounded memory per unit on huge grids).
    """
    order = sorted(range(len(grid)), key=lambda i: repr(EventBook.level_key(grid[i])))
    size = BLOCK if parallel <= 1 else max(1, min(4 * BLOCK, math.ceil(len(grid) / (4 * parallel))))
    return [np.array(order[lo:lo + size]) for lo in range(0, len(order), size)]


def run_grid(ohlcv: pd.DataFrame, grid: list[QMLParams], *, ml: MLConfig | None = None, commission: float = 0.0,
             cash: float = 100_000.0, compute: dict | Scheduler | None = None, progress: bool = True,
             ml_book=None) -> tuple[np.ndarray, GridReturns, str]:
    """Fast-path metrics (combinations x ``FAST_METRICS``), :class:`GridReturns` and the ML status of ``grid``.

    The library core of :func:`sweep` and ``qml optimize``: blocks of combinations run as work units
    on :class:`~qml_plugin.compute.Scheduler` (``compute``: ``scheduler``, ``workers``, ``address``;
    default serial; or a Scheduler already entered, whose workers then serve several grids); the series,
    the costs and the ML scores go to each worker once per grid, the blocks are about four per worker.
    Results come back in ``grid``'s order whatever the scheduler. ``ml_book``: the driver's
    :class:`~qml_plugin.vbt.engine.PatternBook` to score with (the sweep's, keeping its events for the
    prediction log); None = a fresh one.
    """
    ml = ml or MLConfig()
    own = not isinstance(compute, Scheduler)
    if own:
        compute = {"scheduler": "serial", **(compute or {})}
        sch = Scheduler(compute["scheduler"], workers=compute.get("workers"), address=compute.get("address"),
                        progress=progress, inherit=True)      # the units run numba and numpy, never XGBoost
    else:
        sch = compute
    parallel = 1 if sch.scheduler == "serial" else (sch.workers or 2)
    blocks = _blocks(grid, parallel)
    scores = EventBook(ohlcv, ml, ml_book=ml_book).scores(grid) if ml.enabled else None   # on the driver only
    shared = (ohlcv, ml, float(commission), float(cash), scores)        # sent to each worker once
    with sch if own else contextlib.nullcontext(sch):
        results = sch.map(_unit, [[grid[i] for i in b] for b in blocks], shared=shared,
                          label=lambda u: f"combinations from {u[0]} ({len(u)} in all)", desc="qml sweep")
    metrics = np.empty((len(grid), len(FAST_METRICS)))
    s1 = np.zeros((BLOCKS, len(grid)))
    s2 = np.zeros((BLOCKS, len(grid)))
    digests: list = [b""] * len(grid)
    for b, (m, a1, a2, _, dg, _) in zip(blocks, results, strict=True):
        metrics[b], s1[:, b], s2[:, b] = m, a1, a2
        for i, d in zip(b, dg, strict=True):
            digests[i] = d
    days = results[0][3] if results else np.zeros(BLOCKS, np.int64)
    return metrics, GridReturns(s1, s2, days, digests), results[0][5] if results else "off"


def sweep(config: dict | str | Path, *, ohlcv: pd.DataFrame | None = None, progress: bool = True,
          write: bool = True, compute: dict | None = None, run_id: str | None = None) -> pd.DataFrame:
    """Run the sweep config's grid and return one row per combination (see the module docstring).

    ``ohlcv`` replaces the config's ``data:`` section (e.g. a frame already in memory);
    ``write=False`` skips the CSV, the heatmap and the prediction log; ``compute`` (``{"scheduler": "dask",
    "workers": 2}``) replaces the config's ``compute:`` section. Raises
    :class:`~qml_plugin.vbt.engine.EngineMismatchError` if a verified row disagrees with vectorbt.

    With ``ml_data_collection: {enabled: true, db_path: ...}`` and the ML filter on, the grid's scoring
    events go to the prediction log under ``run_id`` (default
    :func:`~qml_plugin.vbt.predlog.grid_run_id`), one row per distinct pattern, model version and mode
    (:mod:`qml_plugin.vbt.predlog`); ``table.attrs["predictions"]`` says what was written.
    """
    cfg = load_sweep_config(config)
    sw = cfg["sweep"]
    grid = expand_grid(sw["grid"])
    keys = list(sw["grid"])
    heat = _heatmap_params(sw["heatmap"], keys)
    ml = parse_ml_block(cfg["ml"])
    refuse_unsupported(ml, **NOT_HONOURED)          # before any data is loaded
    df = load_data(cfg["data"]) if ohlcv is None else ohlcv
    compute = compute if compute is not None else cfg.get("compute")
    col = cfg.get("ml_data_collection") or {}
    db = col.get("db_path") if write and col.get("enabled") and ml.enabled else None
    book = None
    if db is not None:                               # collection off: no book kept, nothing else done
        from .engine import PatternBook
        from .predlog import check_target

        db, run_id = check_target(df, db, run_id, key="ml_data_collection.db_path")
        book = PatternBook(df, ml, registry_db=db, keep_events=True)
    metrics, rets, ml_status = run_grid(df, grid, ml=ml, commission=sw["commission"], cash=sw["cash"],
                                        compute=compute, progress=progress, ml_book=book)
    fm = pd.DataFrame(metrics, columns=FAST_METRICS)
    n_trials, sr_var = trial_count(rets.digests, fm["sr"].to_numpy())
    fm["dsr"] = deflated_sharpe(fm["sr"], n_obs=fm["n_days"], skew=fm["skew"], kurtosis=fm["kurtosis"],
                                n_trials=n_trials, sr_variance=sr_var)
    table = pd.concat([pd.DataFrame({k: [getattr(p, k) for p in grid] for k in keys}), fm[METRICS]], axis=1)
    table["n_trades"] = table["n_trades"].astype(np.int64)
    if ml.enabled:
        table["ml_status"] = ml_status
    order = table[sw["metric"]].sort_values(ascending=False, na_position="last", kind="stable").index.to_numpy()
    table = table.loc[order].reset_index(drop=True)
    prob, logits = pbo_from_sums(rets.s1, rets.s2, rets.days)
    table.attrs.update(pbo=prob, pbo_logits=logits, n_trials=n_trials, ml_status=ml_status)
    table.attrs["verified"] = verify_rows(df, [grid[i] for i in order[:max(int(sw.get("verify_top", 10)), 0)]],
                                          ml=ml, commission=sw["commission"], cash=sw["cash"], registry_db=db)
    if book is not None:
        from .predlog import grid_run_id, log_events, scoring_events

        table.attrs["predictions"] = log_events(db, scoring_events(book, grid),
                                                run_id or grid_run_id("sweep", df, grid, ml))
    if write:
        csv = Path(sw["output"])
        csv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(csv, index=False)
        table.attrs["csv"] = str(csv)
        if heat is not None:
            table.attrs["heatmap"] = str(plot_heatmap(table, heat, sw["metric"], heatmap_path(csv),
                                                      best_of_others=len(keys) > 2, note=overfit_note(table)))
    return table


def verify_rows(ohlcv: pd.DataFrame, params: list[QMLParams], *, ml: MLConfig | None = None,
                commission: float = 0.0, cash: float = 100_000.0, registry_db: str | None = None) -> int:
    """Fast path again for ``params``, then :func:`~qml_plugin.vbt.engine.verify` against the Portfolio."""
    book = EventBook(ohlcv, ml, registry_db=registry_db)
    book.prepare(params)
    fast = [book.simulate(p, commission=commission, cash=cash) for p in params]
    return verify(ohlcv, params, fast, ml=ml, commission=commission, cash=cash, registry_db=registry_db)


def trial_count(digests: list, sr: np.ndarray) -> tuple[int, float]:
    """Distinct combinations (by the digests of their daily returns) and the variance of their per-day Sharpes.

    The DSR's inputs: ``digests`` holds one :func:`returns_digest` per combination, ``sr`` their
    per-day Sharpes; combinations with equal daily returns count once.
    """
    if len(digests) == 0:
        return len(sr), 0.0
    seen: dict[bytes, int] = {}
    for j, d in enumerate(digests):
        seen.setdefault(d, j)
    first = np.fromiter(seen.values(), dtype=np.int64)
    s = np.asarray(sr, float)[first]
    s = s[np.isfinite(s)]
    return int(len(first)), float(np.var(s, ddof=1)) if len(s) > 1 else 0.0


def overfit_note(table: pd.DataFrame) -> str:
    """``PBO 0.62 (CSCV, 16 blocks, 240 distinct combinations); best row's DSR 0.41``, as ``qml sweep`` prints it."""
    best = table["dsr"].iloc[0] if len(table) else float("nan")
    return (f"PBO {table.attrs.get('pbo', float('nan')):.2f} (CSCV, 16 blocks, {table.attrs.get('n_trials', 0)} "
            f"distinct combinations); best row's DSR {best:.2f}")


def _heatmap_params(heatmap: list | None, keys: list[str]) -> list[str] | None:
    if heatmap is None:
        return keys[:2] if len(keys) >= 2 else None
    if len(heatmap) != 2 or len(set(heatmap)) != 2 or any(h not in keys for h in heatmap):
        raise ConfigError(f"sweep.heatmap = {heatmap!r} is not allowed; allowed: two different grid keys "
                          f"from {', '.join(keys)}")
    return list(heatmap)


def plot_heatmap(table: pd.DataFrame, params: list[str], metric: str, path: str | Path, *,
                 best_of_others: bool = True, note: str | None = None) -> Path:
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
    title = f"{metric} (best over the other params)" if best_of_others else metric
    ax.set_title(title + (f"\n{note}" if note else ""), fontsize=9)
    fig.colorbar(img, ax=ax)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
