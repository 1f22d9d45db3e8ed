"""Is the ML filter better than chance? The random-filter band, and mode trades without an engine.

A filter that keeps 15 % of the technical candidates changes the trade list a lot, and some of that
change is luck. :func:`random_filter_band` answers "what would a filter that keeps the same share
of candidates *at random* have done?" for many seeds, with the same one-position rule
(:func:`qml_plugin.tradesim.select_trades`) and the same metrics
(:func:`qml_plugin.tradesim.trade_metrics`). ``qml run`` prints its median and 5-95 % band next to
the real ML modes; the null and planted-signal tests use it to check that ML beats chance only
when there is something to learn.

**Under sizing bands** (``ml.size_bands``) a full-size random filter would be more invested than the
model beside it. With ``size_bands=`` each seed keeps as many candidates as ``filter`` kept and gives
them the filter's own band sizes in random order (:func:`_band_sizes`): the same total exposure, only
who gets which size is chance (sizes drawn from the filter's distribution would make the exposure
itself random). The kept sets are drawn as without bands, so without them every number is unchanged.

:func:`mode_trades` gives the trades of a mode from the labeled patterns directly (the simulator
reproduces backtesting.py's ``QMLStrategy`` trades exactly; a test checks it), for studies that
need many runs, such as the null test over many seeds.

The universe verdict (:mod:`qml_plugin.job.verdict`, SPEC §11) builds on the statistics at the end of
this module, each a few vectorized lines on numpy / scipy: :func:`random_keep` (random filters that
keep, in every market, as many candidates as the mode kept there), :func:`p_random`, :func:`holm`,
:func:`block_bootstrap_ci` (market-month blocks), :func:`minimum_detectable_effect`, and the daily-equity
figures :func:`equal_weight_portfolio` / :func:`equity_figures`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from numba import njit
from scipy.stats import norm

from .filter import decide, random_filter_mask, size_band
from .tradesim import (
    FULL_SIZE,
    Market,
    daily_equity,
    equity_stats_nb,
    levels_placeable,
    select_nb,
    select_trades,
    selection_order,
    trade_metrics,
    trade_selector,
)

__all__ = ["mode_trades", "random_filter_band", "placeable", "random_keep", "random_keep_sums", "p_random", "holm",
           "block_bootstrap_ci", "minimum_detectable_effect", "equal_weight_portfolio", "equity_figures",
           "replay_trades", "utc_daily_equity", "holm_seeds"]


def placeable(labeled: pd.DataFrame) -> np.ndarray:
    """Patterns whose levels backtesting.py accepts (:func:`.tradesim.levels_placeable`)."""
    return levels_placeable(*(labeled[k].to_numpy() for k in ("direction", "entry", "stop", "target")))


def _in_period(labeled: pd.DataFrame, start) -> np.ndarray:
    if start is None:
        return np.ones(len(labeled), bool)
    return (labeled["detection_time"] >= start).to_numpy()


def mode_trades(labeled: pd.DataFrame, proba, *, mode: str | None, min_score: float = 0.5, ml_weight: float = 0.3,
                confidence_threshold: float = 0.5, max_wait: int = 20, start=None, size_bands=None) -> pd.DataFrame:
    """Closed trades (rows of ``labeled``) a one-position strategy makes under ``mode``, entered from ``start``.

    ``size_bands`` (with a mode): a pattern below the lowest band is skipped, as the mixin skips it; the
    trades' sizes are ``size_band(proba, size_bands)`` at their rows (:func:`qml_plugin.filter.size_band`).
    """
    take, score = decide(labeled["validity_score"], proba, mode=mode, min_score=min_score, ml_weight=ml_weight,
                         confidence_threshold=confidence_threshold)
    if size_bands is not None and mode is not None:
        take = take & (size_band(proba, size_bands) > 0)
    chosen = select_trades(labeled, take & placeable(labeled), score, max_wait=max_wait)
    closed = labeled["exit_bar"].notna().to_numpy()
    return labeled[chosen & closed & _in_period(labeled, start)]


def random_filter_band(labeled: pd.DataFrame, proba, *, ohlcv: pd.DataFrame | Market, min_score: float = 0.5,
                       confidence_threshold: float = 0.5, max_wait: int = 20, start=None, end=None, seeds: int = 200,
                       size_bands=None) -> tuple[pd.DataFrame, float, pd.Series]:
    """Metrics of ``seeds`` random filters with the ``filter`` mode's pass rate among technical candidates.

    Before ``start`` (no model yet) the random filter, like every mode, equals the technical rule.
    ``ohlcv`` is the series ``labeled`` was detected on (each seed is scored on its daily
    mark-to-market equity, :func:`qml_plugin.tradesim.trade_metrics`). ``size_bands`` (the validated
    ``ml.size_bands``): the ``filter`` mode keeps what also reaches the lowest band, and each seed
    gives its kept candidates the filter's band sizes in random order (:func:`_band_sizes`).
    Returns ``(per_seed_metrics, pass_rate, daily_equity_of_the_median_seed)``; the metrics are
    :data:`qml_plugin.tradesim.TABLE_COLUMNS` plus ``exposure``, the summed equity share of the
    seed's counted trades (``FULL_SIZE`` per trade without bands).
    """
    v = labeled["validity_score"]
    technical, _ = decide(v, proba, mode=None, min_score=min_score)
    filtered, _ = decide(v, proba, mode="filter", min_score=min_score, confidence_threshold=confidence_threshold)
    band = None if size_bands is None else size_band(proba, size_bands)
    if band is not None:
        filtered = filtered & (band > 0)       # below the lowest band the filter skips (the mixin's rule)
    period = _in_period(labeled, start)
    cand = technical & period
    rate = float((filtered & period).sum() / max(cand.sum(), 1))
    ok = placeable(labeled)
    counted = labeled["exit_bar"].notna().to_numpy() & period     # closed trades entered in the period
    before = technical & ~period
    select = trade_selector(labeled, v.to_numpy(float), max_wait=max_wait)   # prepared once for all seeds
    market = Market.of(ohlcv)
    fills = labeled[["fill_bar", "exit_bar", "fill_price", "exit_price", "direction"]]
    ml_sizes = None if band is None else band[filtered & period]      # the filter's sizes, in pattern order
    rows, picks = [], []
    for seed in range(seeds):
        kept = random_filter_mask(cand, rate, seed)
        traded = select((kept | before) & ok) & counted
        size = FULL_SIZE if band is None else FULL_SIZE * _band_sizes(kept, ml_sizes, seed)[traded]
        rows.append({**trade_metrics(fills[traded], market, start=start, end=end, size=size),
                     "exposure": float(np.sum(np.broadcast_to(size, int(traded.sum()))))})
        picks.append((traded, size))
    res = pd.DataFrame(rows)
    k = int(np.argmin(np.abs(res["return_pct"].to_numpy() - res["return_pct"].median())))
    traded, size = picks[k]
    return res, rate, daily_equity(fills[traded], market, start=start, end=end, size=size)


def _band_sizes(kept: np.ndarray, ml_sizes: np.ndarray, seed: int) -> np.ndarray:
    """Per-pattern band size of one random seed: its kept candidates get ``ml_sizes`` shuffled, the rest 1.0.

    The seed keeps as many candidates as ``filter`` kept, so the shuffle hands out exactly the filter's
    sizes. Its own stream (``default_rng((seed, 1))``) leaves the kept set as drawn without bands."""
    out = np.ones(len(kept))
    idx = np.flatnonzero(kept)
    draw = np.random.default_rng((seed, 1)).permutation(np.asarray(ml_sizes, dtype=float))
    if len(draw) != len(idx):                  # rounding of the pass rate: recycle the filter's sizes
        draw = np.resize(draw, len(idx)) if len(draw) else np.ones(len(idx))
    out[idx] = draw
    return out


# --- The statistics of the universe verdict (SPEC §11), shared by job/verdict.py and the tests. ---

@njit(cache=True)
def _draw(members, offsets, keep, seeds, seed, values, n_items, want_mask):
    """Partial Fisher-Yates per (seed, group): ``min(k, n - k)`` swaps pick the kept (or the dropped) members.

    Returns ``(sums, mask)``: the kept values' sum per (seed, group), and the kept mask when asked."""
    np.random.seed(seed)
    n_groups = len(keep)
    sums = np.zeros((seeds, n_groups))
    mask = np.zeros((seeds if want_mask else 0, n_items), np.bool_)
    perm = members.copy()
    for g in range(n_groups):
        a, b = offsets[g], offsets[g + 1]
        n, k = b - a, keep[g]
        total = 0.0
        for i in range(a, b):
            total += values[perm[i]]
        flip = 2 * k > n                      # draw the n - k dropped members instead
        m = n - k if flip else k
        for s in range(seeds):
            part = 0.0
            for i in range(m):
                j = a + i + np.random.randint(0, n - i)
                perm[a + i], perm[j] = perm[j], perm[a + i]
                part += values[perm[a + i]]
            sums[s, g] = total - part if flip else part
            if want_mask:
                if flip:
                    for i in range(a, b):
                        mask[s, perm[i]] = True
                    for i in range(m):
                        mask[s, perm[a + i]] = False
                else:
                    for i in range(m):
                        mask[s, perm[a + i]] = True
    return sums, mask


def _random_subsets(pool, groups, keep, values, seeds: int, rng: np.random.Generator, want_mask: bool):
    pool = np.asarray(pool, dtype=bool)
    groups = np.asarray(groups, dtype=np.int64)
    keep = np.asarray(keep, dtype=np.int64)
    members = np.flatnonzero(pool)
    members = members[np.argsort(groups[members], kind="stable")]
    sizes = np.bincount(groups[members], minlength=len(keep))[: len(keep)]
    bad = np.flatnonzero((keep < 0) | (keep > sizes))
    if len(bad):
        g = int(bad[0])
        raise ValueError(f"group {g}: cannot keep {keep[g]} of {sizes[g]} pool members")
    values = np.zeros(len(pool)) if values is None else np.nan_to_num(np.asarray(values, dtype=float))
    return _draw(members, np.r_[0, np.cumsum(sizes)], keep, int(seeds), int(rng.integers(2**31 - 1)), values,
                 len(pool), want_mask)


def random_keep(pool, groups, keep, *, seeds: int, rng: np.random.Generator) -> np.ndarray:
    """``seeds`` random filters as a boolean matrix ``(seeds, n)``: in each group, ``keep[g]`` of its pool members.

    ``pool`` is a boolean mask over ``n`` items (the candidates a mode draws from), ``groups`` an
    integer code per item (``0 .. G-1``, the market), ``keep`` the number the mode kept in each group
    (length ``G``). Row ``s`` keeps, in every group, a uniformly random subset of exactly ``keep[g]``
    pool members (without replacement), so a random filter is credited for nothing but chance *within*
    each group. One compiled pass (numba, a partial Fisher-Yates shuffle per seed and group: the work
    is the number kept, not the pool's size); ``rng`` seeds it.

    >>> m = random_keep(np.array([1, 1, 1, 0, 1], bool), np.array([0, 0, 0, 0, 1]), [2, 1], seeds=3,
    ...                 rng=np.random.default_rng(0))
    >>> m.sum(axis=1).tolist(), bool(m[:, 3].any())
    ([3, 3, 3], False)
    """
    return _random_subsets(pool, groups, keep, None, seeds, rng, True)[1]


def random_keep_sums(values, pool, groups, keep, *, seeds: int, rng: np.random.Generator) -> np.ndarray:
    """What :func:`random_keep` keeps, summed: ``values`` kept per (seed, group), shape ``(seeds, G)``.

    The pattern level needs only these sums (mean R of a random filter = its R sum over its count), so
    no ``(seeds, n)`` matrix is built: 1,000 seeds over 2,500 patterns take a few milliseconds.
    """
    return _random_subsets(pool, groups, keep, values, seeds, rng, False)[0]


def p_random(observed: float, random_means) -> float:
    """One-sided Monte-Carlo p-value: the share of random filters whose mean R is at least the mode's.

    The mode itself counts as one more draw (``(1 + #{random >= observed}) / (1 + seeds)``, Phipson &
    Smyth 2010), so the p-value is never 0 and, when the mode has no skill, ``P(p <= a) <= a`` exactly.
    NaN when the mode kept nothing.

    >>> p_random(0.3, [0.1, 0.2, 0.3, 0.4])
    0.6
    """
    r = np.asarray(random_means, dtype=float)
    if np.isnan(observed) or len(r) == 0:
        return float("nan")
    r = r[~np.isnan(r)]
    return float((1 + (r >= observed - 1e-12).sum()) / (1 + len(r)))


def holm(p) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control); NaN entries stay NaN and are not counted.

    Sorted ascending, the ``i``-th smallest of ``m`` p-values becomes ``max_{j <= i} min(1, (m - j) p_(j))``.

    >>> holm([0.01, 0.04, 0.03, 0.005]).round(3).tolist()
    [0.03, 0.06, 0.06, 0.02]
    """
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    order = np.argsort(q, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((len(q) - np.arange(len(q))) * q[order]))
    res = np.empty(len(q))
    res[order] = adj
    out[ok] = res
    return out


def block_bootstrap_ci(values, blocks, *, level: float = 0.95, n_boot: int = 2000,
                       rng: np.random.Generator) -> tuple[float, float]:
    """Percentile CI of the mean of ``values``, resampling whole ``blocks`` (e.g. market-months) with replacement.

    Trades of one market and month share news and regimes, so they are not independent draws; resampling
    blocks keeps that dependence inside each replicate. Each replicate's mean is its total over its
    count (blocks of unequal size weigh by their size, as in the sample mean). ``(nan, nan)`` for fewer
    than 2 blocks or ``n_boot = 0``. Vectorized: one ``(n_boot, blocks)`` draw of block indices.
    """
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan")
    codes = pd.factorize(np.asarray(blocks))[0]
    sums, counts = np.bincount(codes, weights=v), np.bincount(codes).astype(float)
    nb = len(sums)
    if nb < 2 or n_boot < 1:
        return float("nan"), float("nan")
    pick = rng.integers(0, nb, (n_boot, nb))
    means = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [a, 1.0 - a])
    return float(lo), float(hi)


def minimum_detectable_effect(sd: float, n: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest difference in mean R between ``n`` chosen and ``n`` unpaired random items that a two-sided
    z-test at ``alpha`` detects with probability ``power``: ``(z_{1-alpha/2} + z_power) * sd * sqrt(2 / n)``.

    ``sd`` is the pooled standard deviation of R. With ``sd = 1.2`` R and 300 trades it is about 0.27 R:
    an edge smaller than that is invisible in this data, whatever the table says.

    >>> round(minimum_detectable_effect(1.2, 300), 3)
    0.274
    """
    if n < 2 or not np.isfinite(sd):
        return float("nan")
    return float((norm.ppf(1.0 - alpha / 2.0) + norm.ppf(power)) * sd * np.sqrt(2.0 / n))


def equal_weight_portfolio(curves: list[pd.Series]) -> pd.Series:
    """Equal-weight, buy-and-hold portfolio of curves that each start at 1.0 (a curve before its start counts
    1.0, after its end its last value): the mean of the curves over the union of their days."""
    days = np.unique(np.concatenate([c.index.to_numpy() for c in curves]))
    total = np.zeros(len(days))
    for c in curves:
        v = c.to_numpy(float)
        at = np.searchsorted(c.index.to_numpy(), days, side="right") - 1      # last value on or before each day
        total += np.where(at >= 0, v[np.maximum(at, 0)], 1.0)
    return pd.Series(total / len(curves), index=pd.DatetimeIndex(days))


def utc_daily_equity(trades: pd.DataFrame, ohlcv: pd.DataFrame, *, start=None, end=None, commission: float = 0.0,
                     size: float = FULL_SIZE) -> pd.Series:
    """One dataset's daily mark-to-market equity on the UTC calendar: what the verdict's trade rows score.

    The curve is :func:`qml_plugin.tradesim.daily_equity` (THE scored equity: cash plus the open position at
    the close of the last bar of each day the market has bars, ``commission`` paid on each side) of
    ``trades`` (labeled patterns or backtesting.py's ``stats._trades``, bars of ``ohlcv``; a labeled
    pattern's ``fill_price`` is the price paid, spread included, as backtesting.py's ``EntryPrice`` is),
    over ``start .. end`` (naive stamps in the frame's clock; trades entered before ``start`` are left out).
    Each day-end is stamped with its bar's **start** in UTC (the frame's ``attrs["tz"]``, UTC when absent),
    so curves of markets in different zones meet on the same UTC days (a New York bar starts and an FX bar
    starts on the same date in UTC as in their own clocks). The curve opens with the starting equity, 1.0,
    on the UTC day before its first day-end, so the first day's return counts.

        >>> idx = pd.date_range("2024-01-01", periods=48, freq="h")
        >>> bars = pd.DataFrame({"Close": np.r_[np.full(24, 100.0), np.full(24, 110.0)]}, index=idx)
        >>> t = pd.DataFrame({"fill_bar": [2], "exit_bar": [47], "fill_price": [100.0], "exit_price": [110.0],
        ...                   "direction": [1]})
        >>> utc_daily_equity(t, bars, size=1.0).round(6).tolist()
        [1.0, 1.0, 1.1]
    """
    eq = daily_equity(trades, ohlcv, start=start, end=end, commission=commission, size=size)
    stamps = pd.DatetimeIndex(eq.index).tz_localize(ohlcv.attrs.get("tz") or "UTC", nonexistent="shift_forward",
                                                    ambiguous=np.zeros(len(eq), dtype=bool)).tz_convert("UTC")
    if len(stamps) == 0:
        return pd.Series([], index=stamps, dtype=float, name="equity")
    opening = stamps[:1].normalize() - pd.Timedelta(1, "ns")
    return pd.Series(np.r_[1.0, eq.to_numpy(float)], index=opening.append(stamps), name="equity")


def holm_seeds(rows: int, *, alpha: float = 0.05, draws: int = 10) -> int:
    """Random filters per row that let Holm's correction over ``rows`` rows pass a row at ``alpha``.

    A Monte-Carlo ``p_random`` is at least ``1 / (seeds + 1)`` (its resolution), and Holm compares the
    smallest of ``rows`` p-values with ``alpha / rows``; so with too few seeds no row can pass, whatever
    the model does (200 seeds and 15 rows: 1/201 = 0.005 > 0.05/15 = 0.0033). This is the smallest count
    at which the best row still passes when up to ``draws - 1`` of its random filters reach its mean R:
    ``seeds + 1 >= draws * rows / alpha``.

    >>> holm_seeds(15), holm_seeds(1)
    (2999, 199)
    """
    return int(np.ceil(draws * max(int(rows), 1) / alpha - 1e-9)) - 1


def equity_figures(curve: pd.Series | None) -> dict:
    """Total return %, Sharpe and max drawdown % of a daily mark-to-market equity curve (one value per day
    the market has bars), scored by THE one definition, :func:`qml_plugin.tradesim.equity_stats_nb` (SPEC §9):
    Sharpe = mean / SD of the daily returns times the square root of such days per calendar year, counted as
    :class:`qml_plugin.tradesim.Market` counts them (so BTC's weekends count, an equity's do not). The first
    day is the starting equity.
    """
    if curve is None or len(curve) < 2:
        return {"total_return": np.nan, "sharpe": np.nan, "max_drawdown": np.nan}
    v = curve.to_numpy(float)
    days = pd.DatetimeIndex(curve.index)
    per_year = len(days) / (((days[-1] - days[0]).days + 1) / 365.25)
    total, sharpe, _, dd, *_ = equity_stats_nb(v[1:], v[0], per_year)
    return {"total_return": float(total), "sharpe": float(sharpe), "max_drawdown": float(dd)}


@njit(cache=True)
def _replay_nb(order, t, fill, exit_, max_wait, big, masks, r):
    out = np.zeros((masks.shape[0], 3))
    for s in range(masks.shape[0]):
        chosen = select_nb(order, t, masks[s], fill, exit_, max_wait, big)
        for k in range(r.shape[0]):
            if chosen[k] and not np.isnan(r[k]):
                out[s, 0] += r[k]
                out[s, 1] += 1.0
                out[s, 2] += r[k] * r[k]
    return out


def replay_trades(labeled: pd.DataFrame, masks: np.ndarray, r, *, score=None, max_wait: int = 20) -> np.ndarray:
    """The one-position rule (:func:`qml_plugin.tradesim.select_nb`) replayed for every row of ``masks``.

    ``masks`` is ``(seeds, n)``: each seed's decisions over the ``n`` patterns of one dataset
    (``labeled``: ``detection_bar``, ``p1_bar``, ``fill_bar``, ``exit_bar``; ``score`` ranks same-bar
    patterns, default ``validity_score``). A trade is a chosen pattern with a known ``r``. Returns
    ``(seeds, 3)``: the trades' R sum, count and sum of squares per seed, in one compiled pass.
    """
    score = labeled["validity_score"].to_numpy(float) if score is None else np.asarray(score, float)
    t = labeled["detection_bar"].to_numpy(np.int64)
    order = selection_order(t, score, labeled["p1_bar"].to_numpy(np.int64))
    fill = labeled["fill_bar"].fillna(-1).to_numpy(np.int64)
    exit_ = labeled["exit_bar"].fillna(-1).to_numpy(np.int64)
    return _replay_nb(order, t, fill, exit_, int(max_wait), np.iinfo(np.int64).max,
                      np.ascontiguousarray(masks, dtype=np.bool_), np.asarray(r, dtype=np.float64))
