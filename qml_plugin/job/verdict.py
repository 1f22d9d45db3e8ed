"""The verdict of a universe run (SPEC §11): does the model choose better than chance, and how sure are we?

The universe run (:mod:`qml_plugin.job`) backtests every market, trains walk-forward models under one or
more schemes, and hands this module what happened out of sample. :func:`verdict_table` turns it into
**the verdict table**: for each level (``pattern``, ``trade``), scheme and mode, one row pooled over
markets (``market == "all"``) and one per market, each next to the **random filter** that keeps, in every
market, as many of that market's candidates as the mode kept there, drawn from the pool the mode draws
from, so the model is credited only for choosing *within* markets. One row is the **primary test**
(pooled scheme, the config's ``ml.prediction_mode``, pattern level); every other row is exploratory and
its ``p_random`` is Holm-corrected across them. :mod:`qml_plugin.job.verdict_text` presents the table: the
primary result in words (``verdict_sentence``), rounded for print and the report (``format_verdict``), and as
CSV (``write_verdict_csv``).

What it leaves to others: the decisions themselves come from :func:`qml_plugin.filter.decide` (the caller
fills the ``taken_<mode>`` columns with it, so the verdict judges exactly what the backtests did); the
one-position rule of the trade-level random filter is :func:`qml_plugin.tradesim.select_nb`; the
statistics (:func:`~qml_plugin.comparison.random_keep`, ``p_random``, Holm, the block bootstrap, the
minimum detectable effect) are in :mod:`qml_plugin.comparison`; ECE is :mod:`qml_plugin.ml.calibration`.

Input ``patterns`` (required): one row per out-of-sample pattern per scheme (a pattern appears once in
each scheme that scored it; out of sample = detected after the scheme's first admissible model):

==========================  =================  =========================================================
column                      dtype              meaning
==========================  =================  =========================================================
``scheme``                  str                ``pooled`` / ``per_market`` / ``leave_market_out``
``dataset``                 str                ``SYMBOL_TIMEFRAME`` (``AAPL_1h``)
``market``                  str                the symbol (``AAPL``): AAPL_1h and AAPL_1d are one market
``known_at_utc``            datetime64[UTC]    close of the detection bar (tz-aware); gives the month block
``r_net``                   float              R multiple net of costs; NaN = no outcome (expired / open)
``placeable``               bool               levels an order accepts (``tradesim.levels_placeable``)
``technical``               bool               the technical rule: ``validity_score >= min_score``
``taken_<mode>``            bool               the mode's decision, for each of :data:`MODES`
==========================  =================  =========================================================

Pools (SPEC §11): ``filter`` and ``expected_value`` draw from ``technical & placeable``; ``replace`` and
``score_enhancement`` from every ``placeable`` pattern. A taken pattern outside its mode's pool is a bug
of the caller (``ValueError``). At the pattern level only patterns with a known outcome count, on both
sides: the mode's set is ``taken & r_net known``, and the random filter draws from ``pool & r_net known``.

For the **trade level** (optional) also pass, in ``patterns``, the columns the one-position simulator needs
(``detection_bar``, ``p1_bar``, ``fill_bar``, ``exit_bar`` as bar positions within the dataset, NaN when
never filled / never exited, and ``validity_score``, which ranks patterns of the same bar), and:

- ``trades``: one row per closed trade the backtest made out of sample: ``scheme``, ``mode`` (one of
  :data:`MODES`, or ``baseline`` for the technical rule, reported without a random filter), ``dataset``,
  ``market``, ``entry_time_utc`` (tz-aware; gives the month block), ``r_net`` (float, R net of costs);
- ``equity``: daily (or finer) mark-to-market equity per (scheme, mode, dataset) over the out-of-sample
  period: ``scheme``, ``mode``, ``dataset``, ``market``, ``time_utc`` (tz-aware), ``equity`` (float, any
  scale), as :func:`qml_plugin.comparison.utc_daily_equity` gives it (THE scored equity of
  :mod:`qml_plugin.tradesim`, daily mark-to-market, on UTC days; the universe run passes one curve per
  dataset, flat where the mode traded nothing). Each curve is read as its last value per UTC day, divided by
  its first value. Without ``equity`` the trade rows' ``total_return``,
  ``sharpe`` and ``max_drawdown`` are NaN: the verdict never scores a second, closed-trade equity.

The trade-level random filter keeps, in every market, as many pool members (known outcome or not: an
order that expires is a candidate in a backtest too) as the mode took there, then replays the
one-position rule per dataset (ranking same-bar patterns by ``validity_score``); its trades are the
chosen patterns with a known ``r_net``. The replay starts flat at the first out-of-sample pattern, where
a backtest may still hold a position: a small difference, the same for every seed.

Output: one DataFrame with :data:`VERDICT_COLUMNS`, rows ordered level (pattern first), scheme, mode,
``market`` (``all`` first). ``win_rate`` is in percent (R > 0); ``profit_factor`` is on R (sum of winning R
over the sum of losing R); ``mean_r`` with ``mean_r_lo`` / ``mean_r_hi`` its 95 % CI (bootstrap over
market-month blocks); ``total_return`` and ``max_drawdown`` in percent and ``sharpe`` from the daily
equity (trade level only; pooled = an equal-weight portfolio of the per-market curves, each market's own
curve the equal-weight mean of its datasets'); ``random_median`` / ``random_p05`` / ``random_p95`` the
random filters' mean R; ``p_random`` (:func:`~qml_plugin.comparison.p_random`, one-sided: is the mode
better than chance? The share of random filters with a mean R at least the mode's, counting the mode as one
of the draws, ``(1 + #) / (1 + seeds)``, so it is never 0 and is exact under the null); ``p_holm``
(Holm-adjusted ``p_random``: the pooled rows other than the primary, one per level, scheme and mode, form one
family, and each of those questions' per-market rows another; on the primary row its own ``p_random``, the
one pre-registered test); ``mde`` (pooled rows only:
:func:`~qml_plugin.comparison.minimum_detectable_effect` from the pooled SD of the mode's R and the pool's);
``primary`` (True on at most one row; none when the pooled scheme was not run). Mode rows with no pool
(``n_pool == 0``) have NaN statistics; a mode that kept its whole pool in every market of a row made no choice
there, and its ``p_random`` is NaN (the band is the mode itself).
"""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from ..comparison import (
    block_bootstrap_ci,
    equal_weight_portfolio,
    equity_figures,
    holm,
    minimum_detectable_effect,
    p_random,
    random_keep,
    random_keep_sums,
    replay_trades,
)

__all__ = ["MODES", "POOLS", "VERDICT_COLUMNS", "verdict_table", "pattern_rows", "trade_rows"]

MODES = ("filter", "score_enhancement", "replace", "expected_value")
"""The ML modes the verdict judges, in table order (SPEC §7)."""

POOLS = {"filter": "technical", "expected_value": "technical", "score_enhancement": "placeable",
         "replace": "placeable"}
"""Which candidates each mode chooses from, so its random filter draws from the same: ``POOLS["filter"]``."""

VERDICT_COLUMNS = ["level", "scheme", "mode", "market", "pool", "n_pool", "n", "win_rate", "profit_factor", "mean_r",
                   "mean_r_lo", "mean_r_hi", "total_return", "sharpe", "max_drawdown", "random_median", "random_p05",
                   "random_p95", "p_random", "p_holm", "mde", "primary"]
"""Columns of :func:`verdict_table`, in order."""

_PATTERN_NEEDS = ["scheme", "dataset", "market", "known_at_utc", "r_net", "placeable", "technical"]
_SIM_NEEDS = ["detection_bar", "p1_bar", "fill_bar", "exit_bar", "validity_score"]


def _need(frame: pd.DataFrame, cols: list[str], name: str) -> None:
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}; see qml_plugin.job.verdict's docstring for the interface")


def _utc(s: pd.Series, name: str) -> pd.Series:
    if not isinstance(s.dtype, pd.DatetimeTZDtype):
        raise ValueError(f"{name} must be tz-aware (UTC) timestamps, got dtype {s.dtype}")
    return s.dt.tz_convert("UTC")


def _bool(frame: pd.DataFrame, col: str) -> np.ndarray:
    v = frame[col]
    if v.isna().any():
        raise ValueError(f"column {col!r} holds missing values; it must be bool")
    return v.to_numpy(bool)


def _rng(seed: int, *keys: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32("/".join(keys).encode())])


def _blocks(market_codes: np.ndarray, times: pd.Series) -> np.ndarray:
    """Market-month block of each row: trades of one market and month are not independent."""
    return market_codes.astype(np.int64) * 100_000 + (times.dt.year * 12 + times.dt.month).to_numpy(np.int64)


def _per_trade(r: np.ndarray, blocks: np.ndarray, rng: np.random.Generator, n_boot: int, level: float) -> dict:
    """The per-trade figures of a row: n, win rate, profit factor, mean R and its block-bootstrap CI."""
    n = len(r)
    if n == 0:
        return {"n": 0, "win_rate": np.nan, "profit_factor": np.nan, "mean_r": np.nan, "mean_r_lo": np.nan,
                "mean_r_hi": np.nan}
    gains, losses = r[r > 0].sum(), -r[r < 0].sum()
    lo, hi = block_bootstrap_ci(r, blocks, level=level, n_boot=n_boot, rng=rng)
    return {"n": n, "win_rate": float((r > 0).mean() * 100.0),
            "profit_factor": float(gains / losses) if losses > 0 else (np.inf if gains > 0 else np.nan),
            "mean_r": float(r.mean()), "mean_r_lo": lo, "mean_r_hi": hi}


def _band(observed: float, means: np.ndarray, chose: bool) -> dict:
    """The random filters' median and 5-95 % band of mean R, and ``p_random``: NaN when the mode made no choice
    (it kept its whole pool in every market, so every random filter is the mode itself)."""
    m = means[~np.isnan(means)]
    if len(m) == 0:
        return {"random_median": np.nan, "random_p05": np.nan, "random_p95": np.nan, "p_random": np.nan}
    q05, q50, q95 = np.quantile(m, [0.05, 0.5, 0.95])
    return {"random_median": float(q50), "random_p05": float(q05), "random_p95": float(q95),
            "p_random": p_random(observed, m) if chose else np.nan}


def _pooled_sd(a: np.ndarray, b_var: float) -> float:
    return float(np.sqrt((np.var(a, ddof=1) + b_var) / 2.0)) if len(a) > 1 else np.nan


def pattern_rows(patterns: pd.DataFrame, *, seeds: int = 2000, n_boot: int = 2000, level: float = 0.95,
                 alpha: float = 0.05, power: float = 0.8, seed: int = 0) -> pd.DataFrame:
    """Pattern-level rows of the verdict (meta-labeling's own test), without ``p_holm`` / ``primary``.

    Every out-of-sample pattern with a known outcome that the mode would take, without the one-position
    rule, against ``seeds`` random subsets of the same size per market from the same pool. One
    ``baseline`` row per scheme (the technical rule's patterns) is shown for reference, with no random
    filter.
    """
    _need(patterns, _PATTERN_NEEDS + [f"taken_{m}" for m in MODES], "patterns")
    rows = []
    for scheme, sub in patterns.groupby("scheme", sort=False):
        codes, markets = pd.factorize(sub["market"], sort=True)
        r = sub["r_net"].to_numpy(float)
        known = ~np.isnan(r)
        blocks = _blocks(codes, _utc(sub["known_at_utc"], "patterns.known_at_utc"))
        placeable, technical = _bool(sub, "placeable"), _bool(sub, "technical")
        base = {"level": "pattern", "scheme": scheme}
        for mode in ("baseline",) + MODES:
            pool = placeable & (technical if POOLS.get(mode, "technical") == "technical" else True)
            taken = pool if mode == "baseline" else _bool(sub, f"taken_{mode}")
            stray = taken & ~pool
            if stray.any():
                raise ValueError(f"scheme {scheme!r}, mode {mode!r}: {int(stray.sum())} taken patterns lie outside "
                                 f"the mode's pool ({POOLS[mode]} & placeable), e.g. row {sub.index[stray][0]!r}")
            pool, taken = pool & known, taken & known
            rng = _rng(seed, "pattern", str(scheme), mode)
            keep = np.bincount(codes[taken], minlength=len(markets))
            room = keep < np.bincount(codes[pool], minlength=len(markets))       # markets where it chose
            if mode != "baseline":
                sums = random_keep_sums(r, pool, codes, keep, seeds=seeds, rng=rng)   # (seeds, markets)
            for g in [-1, *range(len(markets))]:
                inside = np.ones(len(r), bool) if g < 0 else codes == g
                sel, in_pool = taken & inside, pool & inside
                row = base | {"mode": mode, "market": "all" if g < 0 else markets[g],
                              "pool": "technical" if mode == "baseline" else POOLS[mode], "n_pool": int(in_pool.sum())}
                row |= _per_trade(r[sel], blocks[sel], rng, n_boot, level)
                if mode != "baseline":
                    k = keep.sum() if g < 0 else keep[g]
                    means = (sums.sum(axis=1) if g < 0 else sums[:, g]) / k if k else np.full(seeds, np.nan)
                    row |= _band(row["mean_r"], means, bool(room.any() if g < 0 else room[g]))
                    if g < 0:
                        row["mde"] = minimum_detectable_effect(
                            _pooled_sd(r[sel], float(np.var(r[in_pool], ddof=1)) if in_pool.sum() > 1 else np.nan),
                            int(sel.sum()), alpha=alpha, power=power)
                rows.append(row)
    return pd.DataFrame(rows)


def _daily(curve: pd.DataFrame) -> pd.Series:
    """A curve's last value per UTC day (days it has values), divided by its first."""
    t = _utc(curve["time_utc"], "equity.time_utc").to_numpy("datetime64[ns]")
    v = curve["equity"].to_numpy(float)
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    day = t.astype("datetime64[D]")
    last = np.flatnonzero(np.r_[day[1:] != day[:-1], True])
    return pd.Series(v[last] / v[last[0]], index=pd.DatetimeIndex(day[last].astype("datetime64[ns]")))


def _random_trades(sub: pd.DataFrame, codes: np.ndarray, n_markets: int, masks: np.ndarray, max_wait: int):
    """Replay the one-position rule for every seed's random decisions, dataset by dataset: R sums, counts and
    R^2 sums per (seed, market)."""
    sums, counts, squares = (np.zeros((len(masks), n_markets)) for _ in range(3))
    r = sub["r_net"].to_numpy(float)
    sim = sub[_SIM_NEEDS]
    for _, idx in sub.groupby("dataset", sort=False).indices.items():
        cols = slice(idx[0], idx[-1] + 1) if idx[-1] - idx[0] + 1 == len(idx) else idx   # a slice copies fast
        out = replay_trades(sim.iloc[idx], masks[:, cols], r[idx], max_wait=max_wait)
        g = codes[idx][0]
        sums[:, g] += out[:, 0]
        counts[:, g] += out[:, 1]
        squares[:, g] += out[:, 2]
    return sums, counts, squares


def trade_rows(patterns: pd.DataFrame, trades: pd.DataFrame, equity: pd.DataFrame | None = None, *,
               seeds: int = 500, max_wait: int = 20, n_boot: int = 2000, level: float = 0.95, alpha: float = 0.05,
               power: float = 0.8, seed: int = 0) -> pd.DataFrame:
    """Trade-level rows of the verdict (what a trader would have earned), without ``p_holm`` / ``primary``.

    One row per (scheme, mode) found in ``trades`` (``baseline`` included, without a random filter), and per
    mode of :data:`MODES` with a ``taken_<mode>`` column for every scheme of ``patterns`` (``n = 0`` where it
    made no trade), pooled then per
    market of that scheme's patterns. ``max_wait`` is the strategy's order expiry in bars.
    """
    _need(patterns, _PATTERN_NEEDS + _SIM_NEEDS, "patterns")
    _need(trades, ["scheme", "mode", "dataset", "market", "entry_time_utc", "r_net"], "trades")
    if equity is not None:
        _need(equity, ["scheme", "mode", "dataset", "market", "time_utc", "equity"], "equity")
    rows = []
    by_row = trades.groupby(["scheme", "mode"], sort=False).indices
    pairs = list(by_row) + [(sc, m) for sc in patterns["scheme"].unique() for m in MODES
                            if (sc, m) not in by_row and f"taken_{m}" in patterns.columns]
    for scheme, mode in pairs:                 # a mode that made no trade still has its rows (n = 0)
        tr = trades.iloc[by_row[(scheme, mode)]] if (scheme, mode) in by_row else trades.iloc[:0]
        sub = patterns[patterns["scheme"] == scheme].reset_index(drop=True)
        if len(sub) == 0 and mode != "baseline":
            raise ValueError(f"trades name scheme {scheme!r} but patterns hold none of its rows")
        markets = pd.Index(sorted(set(sub["market"]) | set(tr["market"])))
        codes = markets.get_indexer(sub["market"])
        tcodes = markets.get_indexer(tr["market"])
        r_tr = tr["r_net"].to_numpy(float)
        blocks = _blocks(tcodes, _utc(tr["entry_time_utc"], "trades.entry_time_utc"))
        rng = _rng(seed, "trade", str(scheme), str(mode))
        curves: dict[str, list[pd.Series]] = {}
        if equity is not None:
            eq = equity[(equity["scheme"] == scheme) & (equity["mode"] == mode)]
            for (market, _), c in eq.groupby(["market", "dataset"], sort=True):
                curves.setdefault(market, []).append(_daily(c))
        per_market = {m: equal_weight_portfolio(c) for m, c in curves.items()}
        pool = _bool(sub, "placeable") & (_bool(sub, "technical") if POOLS.get(mode) != "placeable" else True)
        if mode in MODES:
            taken = _bool(sub, f"taken_{mode}")
            if (taken & ~pool).any():
                raise ValueError(f"scheme {scheme!r}, mode {mode!r}: taken patterns outside the mode's pool")
            keep = np.bincount(codes[taken], minlength=len(markets))
            room = keep < np.bincount(codes[pool], minlength=len(markets))
            masks = random_keep(pool, codes, keep, seeds=seeds, rng=rng)
            sums, counts, squares = _random_trades(sub, codes, len(markets), masks, max_wait)
        for g in [-1, *range(len(markets))]:
            sel = np.ones(len(r_tr), bool) if g < 0 else tcodes == g
            row = {"level": "trade", "scheme": scheme, "mode": mode, "market": "all" if g < 0 else markets[g],
                   "pool": POOLS.get(mode, "technical"),
                   "n_pool": int(pool.sum() if g < 0 else (pool & (codes == g)).sum())}
            row |= _per_trade(r_tr[sel], blocks[sel], rng, n_boot, level)
            curve = (equal_weight_portfolio(list(per_market.values())) if per_market else None) if g < 0 \
                else per_market.get(markets[g])
            row |= equity_figures(curve)
            if mode in MODES:
                s, c, q = (x.sum(axis=1) if g < 0 else x[:, g] for x in (sums, counts, squares))
                with np.errstate(invalid="ignore", divide="ignore"):
                    row |= _band(row["mean_r"], np.where(c > 0, s / np.maximum(c, 1), np.nan),
                                 bool(room.any() if g < 0 else room[g]))
                if g < 0 and c.sum() > 1:
                    var_random = (q.sum() - s.sum() ** 2 / c.sum()) / (c.sum() - 1)
                    row["mde"] = minimum_detectable_effect(_pooled_sd(r_tr[sel], var_random), int(sel.sum()),
                                                           alpha=alpha, power=power)
            rows.append(row)
    return pd.DataFrame(rows)


def verdict_table(patterns: pd.DataFrame, *, trades: pd.DataFrame | None = None, equity: pd.DataFrame | None = None,
                  primary_mode: str, seeds: int = 2000, trade_seeds: int = 500, max_wait: int = 20,
                  n_boot: int = 2000, level: float = 0.95, alpha: float = 0.05, power: float = 0.8,
                  seed: int = 0) -> pd.DataFrame:
    """The verdict table of a universe run (module docstring: inputs, columns, rules).

    ``primary_mode`` is the config's ``ml.prediction_mode``: the primary test is the pooled scheme's
    pattern-level row of that mode, pooled over markets. ``seeds`` random filters per pattern-level row
    (``trade_seeds`` per trade-level row, each a full one-position replay), ``n_boot`` bootstrap
    replicates per CI, all drawn from generators seeded by ``seed`` and the row's level, scheme and mode:
    the same inputs give the same table, whichever scheduler produced them. A Monte-Carlo p-value is at
    least ``1 / (seeds + 1)``, so Holm over ``m`` rows needs ``seeds + 1 > m / alpha`` before any row can
    pass: the defaults allow that for the 15 pooled exploratory rows at both levels, and for ~20 markets at
    the pattern level; :func:`~qml_plugin.comparison.holm_seeds` gives the count for a family of ``m`` rows
    (the universe run uses it), :func:`~qml_plugin.job.verdict_text.resolution_note` says it in words.
    ``table.attrs`` records these settings (``seeds``, ``trade_seeds``, ``n_boot``, ...).
    """
    if primary_mode not in MODES:
        raise ValueError(f"primary_mode = {primary_mode!r}; allowed: {', '.join(MODES)}")
    parts = [pattern_rows(patterns, seeds=seeds, n_boot=n_boot, level=level, alpha=alpha, power=power, seed=seed)]
    if trades is not None:
        parts.append(trade_rows(patterns, trades, equity, seeds=trade_seeds, max_wait=max_wait, n_boot=n_boot,
                                level=level, alpha=alpha, power=power, seed=seed))
    table = pd.concat(parts, ignore_index=True).reindex(columns=VERDICT_COLUMNS)
    order = pd.DataFrame({"level": table["level"].map({"pattern": 0, "trade": 1}),
                          "scheme": pd.factorize(table["scheme"])[0],
                          "mode": table["mode"].map({m: i for i, m in enumerate(("baseline",) + MODES)}),
                          "market": table["market"] != "all", "name": table["market"]})
    table = table.loc[order.sort_values(list(order.columns), kind="stable").index].reset_index(drop=True)
    table["primary"] = ((table["level"] == "pattern") & (table["scheme"] == "pooled")
                        & (table["mode"] == primary_mode) & (table["market"] == "all"))
    p = table["p_random"].to_numpy(float)
    pooled, prim = (table["market"] == "all").to_numpy(), table["primary"].to_numpy()
    adjusted = np.where(prim, p, np.nan)
    family = pooled & ~prim                                    # the exploratory questions: one per level/scheme/mode
    adjusted[family] = holm(p[family])
    for _, idx in table[~pooled].groupby(["level", "scheme", "mode"], sort=False).indices.items():
        rows = np.flatnonzero(~pooled)[idx]                    # a question's per-market breakdown
        adjusted[rows] = holm(p[rows])
    table["p_holm"] = adjusted
    for col in ("n", "n_pool"):
        table[col] = table[col].astype(np.int64)
    table.attrs.update(seeds=int(seeds), trade_seeds=int(trade_seeds) if trades is not None else 0,
                       n_boot=int(n_boot), level=float(level), alpha=float(alpha), power=float(power),
                       primary_mode=primary_mode, seed=int(seed))
    return table
