"""Numba kernels for the feature families: the recursive and windowed loops numpy cannot vectorize.

This module owns the *loops* and nothing else: Wilder / EMA recursions, rolling regressions, the
age of a window's extreme, mean absolute deviation, run lengths, and the per-pattern scan of the
bars between a head and its detection. Plain float64 arrays in, new arrays out; naming, pandas and
units live in :mod:`.indicators` and the family modules. Plain rolling sums, means, standard
deviations and correlations are left to pandas' rolling windows (compensated, cython). Rolling
percentile ranks are here (:func:`rolling_rank_codes`): counting with a Fenwick tree is
O(n log n) whatever the window: 4-5 ms per 37k bars where pandas' skiplist took 14-19 ms.

Every kernel walks forward in time and the value at bar ``t`` reads bars ``<= t`` only, always in
the same order, so truncating the input never changes an earlier output, bit for bit (the
causality invariant that :mod:`tests.test_features` checks). ``cache=True`` stores the compiled
code in ``__pycache__`` so a second process does not recompile; nothing is compiled at import.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def smooth(x, n, wilder):
    """Wilder (``((n-1) y + x) / n``) or EMA (``y + 2/(n+1) (x - y)``) recursion over ``x``.

    Seeded with the mean of the first ``n`` non-NaN values (so ``smooth(tr, 14, True)`` is SPEC's
    ATR14 exactly); NaN before the seed. A NaN input after the seed holds the last value.
    """
    out = np.full(x.shape[0], np.nan)
    alpha = 2.0 / (n + 1.0)
    count = 0
    acc = 0.0
    y = np.nan
    for i in range(x.shape[0]):
        xi = x[i]
        if np.isnan(xi):
            if count >= n:
                out[i] = y
            continue
        if count < n:
            acc += xi
            count += 1
            if count == n:
                y = acc / n
                out[i] = y
            continue
        if wilder:
            y = ((n - 1.0) * y + xi) / n
        else:
            y = y + alpha * (xi - y)
        out[i] = y
    return out


@njit(cache=True)
def rolling_linreg(y, w):
    """Least-squares line through the last ``w`` values of ``y`` against bar number.

    Returns ``(slope, r2)``: slope in units of ``y`` per bar, R^2 in [0, 1] (0 for a flat window).
    The window is re-centred on its first value before summing, so a large level (a cumulative
    volume, a price of 50 000) costs no precision. NaN when the window is incomplete or holds NaN.
    """
    n = y.shape[0]
    slope = np.full(n, np.nan)
    r2 = np.full(n, np.nan)
    xm = (w - 1.0) / 2.0
    sxx = w * (w * w - 1.0) / 12.0
    for t in range(w - 1, n):
        s = t - w + 1
        base = y[s]
        sy = 0.0
        ok = True
        for j in range(w):
            v = y[s + j]
            if np.isnan(v):
                ok = False
                break
            sy += v - base
        if not ok:
            continue
        ym = sy / w
        sxy = 0.0
        syy = 0.0
        for j in range(w):
            d = y[s + j] - base - ym
            sxy += (j - xm) * d
            syy += d * d
        slope[t] = sxy / sxx
        r2[t] = sxy * sxy / (sxx * syy) if syy > 0.0 else 0.0
    return slope, r2


@njit(cache=True)
def rolling_rank_codes(codes, w, min_periods):
    """Percentile rank (0, 1] of each value among the last ``w`` values, ties at their mean rank.

    ``codes`` are the values' dense ranks (0 = smallest, equal values share a code) and -1 for
    a missing value, which is skipped. The value at bar ``t`` is ``(less + (equal + 1) / 2) / count`` over the
    window's non-NaN values (``equal`` counts bar ``t`` itself), i.e. pandas'
    ``rolling(w, min_periods).rank(pct=True)``. NaN when bar ``t`` is missing or fewer than
    ``min_periods`` values are known. Only comparisons between window values enter the counts,
    so the codes of later bars never change an earlier output.
    """
    n = codes.shape[0]
    size = 1
    for i in range(n):
        if codes[i] + 1 > size:
            size = codes[i] + 1
    tree = np.zeros(size + 1, dtype=np.int64)       # Fenwick tree over codes, 1-based
    out = np.full(n, np.nan)
    count = 0
    for t in range(n):
        c = codes[t]
        if c >= 0:
            k = c + 1
            while k <= size:
                tree[k] += 1
                k += k & -k
            count += 1
        if t >= w:
            old = codes[t - w]
            if old >= 0:
                k = old + 1
                while k <= size:
                    tree[k] -= 1
                    k += k & -k
                count -= 1
        if c < 0 or count < min_periods:
            continue
        less = 0
        k = c                                        # prefix sum of codes < c
        while k > 0:
            less += tree[k]
            k -= k & -k
        upto = 0
        k = c + 1                                    # prefix sum of codes <= c
        while k > 0:
            upto += tree[k]
            k -= k & -k
        out[t] = (less + (upto - less + 1) / 2.0) / count
    return out


@njit(cache=True)
def extreme_age(x, w, find_max):
    """Bars since the highest (``find_max``) or lowest value of the last ``w`` bars, 0..w-1.

    Ties go to the most recent bar. NaN before the window is complete.
    """
    n = x.shape[0]
    out = np.full(n, np.nan)
    for t in range(w - 1, n):
        best = x[t]
        age = 0
        for k in range(1, w):
            v = x[t - k]
            if (find_max and v > best) or (not find_max and v < best):
                best = v
                age = k
        out[t] = age
    return out


@njit(cache=True)
def rolling_mad(x, w):
    """Mean absolute deviation of the last ``w`` values around their own mean (CCI's denominator)."""
    n = x.shape[0]
    out = np.full(n, np.nan)
    for t in range(w - 1, n):
        s = 0.0
        for k in range(t - w + 1, t + 1):
            s += x[k]
        m = s / w
        d = 0.0
        for k in range(t - w + 1, t + 1):
            d += abs(x[k] - m)
        out[t] = d / w
    return out


@njit(cache=True)
def run_length(flag):
    """Number of consecutive True values of ``flag`` ending at each bar (0 where it is False)."""
    out = np.zeros(flag.shape[0])
    run = 0.0
    for i in range(flag.shape[0]):
        run = run + 1.0 if flag[i] else 0.0
        out[i] = run
    return out


@njit(cache=True)
def bars_in_state(code):
    """Bars since ``code`` last changed (1 on the first bar of a state); NaN where ``code`` is NaN."""
    out = np.full(code.shape[0], np.nan)
    run = 0.0
    prev = np.nan
    for i in range(code.shape[0]):
        c = code[i]
        if np.isnan(c):
            run = 0.0
        else:
            run = run + 1.0 if c == prev else 1.0
            out[i] = run
        prev = c
    return out


@njit(cache=True)
def pattern_scan(open_, high, low, close, direction, p2_price, p3_bar, det_bar):
    """For each pattern, walk its bars ``p3_bar+1 .. det_bar`` (never beyond detection).

    Returns ``(break_bar, extreme_price, extreme_bar)``: the first bar whose Close is beyond ``P2``
    in the pattern's direction (-1 when none), and the highest High (bullish) / lowest Low
    (bearish) over ``p3_bar .. det_bar``, with its bar (the latest on ties).
    """
    m = direction.shape[0]
    brk = np.full(m, -1, dtype=np.int64)
    ext = np.full(m, np.nan)
    ext_bar = np.full(m, -1, dtype=np.int64)
    for i in range(m):
        d = direction[i]
        s = p3_bar[i]
        best = high[s] if d > 0 else -low[s]
        best_bar = s
        for k in range(s + 1, det_bar[i] + 1):
            if brk[i] < 0 and d * (close[k] - p2_price[i]) > 0.0:
                brk[i] = k
            v = high[k] if d > 0 else -low[k]
            if v >= best:
                best = v
                best_bar = k
        ext[i] = best if d > 0 else -best
        ext_bar[i] = best_bar
    return brk, ext, ext_bar

