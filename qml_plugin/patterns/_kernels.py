"""Numba kernels behind swings, QML detection and outcome labels.

Plain arrays in, plain arrays out; the pandas wrapping lives in ``swings.py``, ``qml.py`` and
``labels.py``. Every kernel is ``@njit(cache=True)`` so a second process loads the compiled code
from ``__pycache__`` instead of recompiling.

Everything here walks forward in time and reads bars ``<= t`` only for a value known at ``t``:
the swing sequence is updated in order of confirmation (``bar + n``), and a candidate pattern
scans forward from its head just far enough to find its break of structure.
"""
from __future__ import annotations

import numpy as np
from numba import njit

HIGH = 1
LOW = -1


@njit(cache=True)
def atr14(high, low, close):
    """Wilder's ATR(14): TR[0] = H-L; ATR[13] = mean(TR[0..13]); ATR[i] = (13 ATR[i-1] + TR[i]) / 14."""
    return atr(high, low, close, 14)


@njit(cache=True)
def atr(high, low, close, w):
    """Wilder's ATR(w): TR[0] = H-L; ATR[w-1] = mean(TR[0..w-1]); ATR[i] = ((w-1) ATR[i-1] + TR[i]) / w.

    The project's one ATR: the detector's ATR14 and the features' ``Bars.atr(w)`` both come from here.
    """
    n = high.shape[0]
    out = np.full(n, np.nan)
    if n < w:
        return out
    tr = np.empty(n)
    tr[0] = high[0] - low[0]
    for i in range(1, n):
        a = high[i] - low[i]
        b = abs(high[i] - close[i - 1])
        c = abs(low[i] - close[i - 1])
        tr[i] = max(a, max(b, c))
    s = 0.0
    for i in range(w):
        s += tr[i]
    out[w - 1] = s / w
    for i in range(w, n):
        out[i] = ((w - 1.0) * out[i - 1] + tr[i]) / w
    return out


@njit(cache=True)
def _is_swing(x, i, n, sign):
    """Bar i beats the n bars before it strictly and the n bars after it weakly (sign=+1 high, -1 low)."""
    v = sign * x[i]
    for k in range(i - n, i):
        if sign * x[k] >= v:
            return False
    for k in range(i + 1, i + n + 1):
        if sign * x[k] > v:
            return False
    return True


@njit(cache=True)
def scan(high, low, close, atr, n, detect, head_min_atr, max_span):
    """Build the alternating swing sequence and, if ``detect``, the QML patterns it produces.

    Returns ``(sw_bar, sw_kind, sw_price, sw_confirmed, sw_replaced, pat)`` where the swing arrays
    list every swing ever accepted, in order, with ``sw_replaced`` = confirmed bar of the replacing
    swing (-1 if none); ``pat`` is an (m, 6) int64 array of ``[i1, i2, i3, break_bar, detection_bar,
    direction]`` with ``i*`` indices into the swing arrays.
    """
    N = high.shape[0]
    cap = 2 * N + 2
    sw_bar = np.empty(cap, np.int64)
    sw_kind = np.empty(cap, np.int64)
    sw_price = np.empty(cap, np.float64)
    sw_conf = np.empty(cap, np.int64)
    sw_rep = np.empty(cap, np.int64)
    seq = np.empty(cap, np.int64)  # indices of the current (un-replaced) sequence
    pat = np.empty((cap, 6), np.int64)
    m = 0
    k = 0
    s = 0
    for i in range(n, N - n):
        is_h = _is_swing(high, i, n, 1)
        is_l = _is_swing(low, i, n, -1)
        if not (is_h or is_l):
            continue
        first = HIGH
        if is_h and is_l:
            if s > 0 and sw_kind[seq[s - 1]] == HIGH:
                first = LOW
        elif is_l:
            first = LOW
        for step in range(2):
            kind = first if step == 0 else -first
            if kind == HIGH and not is_h:
                continue
            if kind == LOW and not is_l:
                continue
            price = high[i] if kind == HIGH else low[i]
            changed = False
            if s > 0 and sw_kind[seq[s - 1]] == kind:
                last = seq[s - 1]
                if kind * price > kind * sw_price[last]:
                    sw_rep[last] = i + n
                    sw_bar[k] = i
                    sw_kind[k] = kind
                    sw_price[k] = price
                    sw_conf[k] = i + n
                    sw_rep[k] = -1
                    seq[s - 1] = k
                    k += 1
                    changed = True
            else:
                sw_bar[k] = i
                sw_kind[k] = kind
                sw_price[k] = price
                sw_conf[k] = i + n
                sw_rep[k] = -1
                seq[s] = k
                s += 1
                k += 1
                changed = True
            if changed and detect and s >= 3:
                res = _candidate(high, low, close, atr, seq[s - 3], seq[s - 2], seq[s - 1],
                                 sw_bar, sw_kind, sw_price, sw_conf, head_min_atr, max_span)
                if res[0] >= 0:
                    pat[m, 0] = seq[s - 3]
                    pat[m, 1] = seq[s - 2]
                    pat[m, 2] = seq[s - 1]
                    pat[m, 3] = res[0]
                    pat[m, 4] = res[1]
                    pat[m, 5] = -sw_kind[seq[s - 1]]
                    m += 1
    return (sw_bar[:k], sw_kind[:k], sw_price[:k], sw_conf[:k], sw_rep[:k], pat[:m])


@njit(cache=True)
def _candidate(high, low, close, atr, i1, i2, i3, sw_bar, sw_kind, sw_price, sw_conf, head_min_atr, max_span):
    """Check the last three swings as a QML candidate; return (break_bar, detection_bar) or (-1, -1).

    Bullish when the head P3 is a low (P2 > P1 > P3), bearish mirrored. Detection is at
    ``t = max(P3.confirmed, break)`` if the head is not exceeded on ``P3.bar+1 .. t`` and
    ``t - P1.bar <= max_span``.
    """
    d = -sw_kind[i3]  # +1 bullish (head is a low), -1 bearish
    p1 = sw_price[i1]
    p2 = sw_price[i2]
    p3 = sw_price[i3]
    b3 = sw_bar[i3]
    if not (d * p2 > d * p1 and d * p1 > d * p3):
        return (-1, -1)
    a = atr[b3]
    if np.isnan(a) or d * (p1 - p3) < head_min_atr * a:
        return (-1, -1)
    cb = sw_conf[i3]
    last = min(high.shape[0] - 1, sw_bar[i1] + max_span)
    brk = -1
    for j in range(b3 + 1, last + 1):
        if (d == 1 and low[j] < p3) or (d == -1 and high[j] > p3):
            return (-1, -1)
        if brk < 0 and d * close[j] > d * p2:
            brk = j
        if brk >= 0 and j >= cb:
            return (brk, j)
    return (-1, -1)


@njit(cache=True)
def outcome_one(open_, high, low, t, d, e, sl, tp, max_wait, max_hold):
    """Triple-barrier outcome of one pattern detected at bar ``t`` (backtesting.py 0.6's rules).

    Returns ``(fill_bar, fill_price, exit_bar, exit_price, reason)``: -1 / NaN where undefined,
    reason 0 none (expired or open) / 1 stop / 2 target / 3 timeout. The one copy of the fill and
    exit rules: :func:`outcomes` (labels) and the sweep's event-level fast path both call it.
    """
    N = open_.shape[0]
    f = -1
    fp = np.nan
    for j in range(t + 1, min(t + max_wait, N - 1) + 1):
        if (d == 1 and low[j] <= e) or (d == -1 and high[j] >= e):
            f = j
            fp = min(open_[j], e) if d == 1 else max(open_[j], e)
            break
    if f < 0:
        return -1, np.nan, -1, np.nan, 0
    for j in range(f + 1, min(f + max_hold, N - 1) + 1):
        if d == 1:
            if low[j] <= sl:
                return f, fp, j, min(open_[j], sl), 1
            if high[j] >= tp:
                return f, fp, j, max(open_[j], tp), 2
        else:
            if high[j] >= sl:
                return f, fp, j, max(open_[j], sl), 1
            if low[j] <= tp:
                return f, fp, j, min(open_[j], tp), 2
    if f + max_hold + 1 <= N - 1:
        return f, fp, f + max_hold + 1, open_[f + max_hold + 1], 3
    return f, fp, -1, np.nan, 0


@njit(cache=True)
def outcomes(open_, high, low, t, direction, entry, stop, target, max_wait, max_hold):
    """Triple-barrier outcome of each pattern with backtesting.py 0.6's fill rules (commission 0).

    Returns ``(status, fill_bar, fill_price, exit_bar, exit_price, reason)`` with status 0 expired /
    1 filled, reason 0 none (open) / 1 stop / 2 target / 3 timeout, -1 / NaN where undefined.
    """
    m = t.shape[0]
    status = np.zeros(m, np.int64)
    fill_bar = np.full(m, -1, np.int64)
    fill_price = np.full(m, np.nan)
    exit_bar = np.full(m, -1, np.int64)
    exit_price = np.full(m, np.nan)
    reason = np.zeros(m, np.int64)
    for k in range(m):
        f, fp, x, xp, why = outcome_one(open_, high, low, t[k], direction[k], entry[k], stop[k], target[k],
                                        max_wait, max_hold)
        if f >= 0:
            status[k] = 1
            fill_bar[k] = f
            fill_price[k] = fp
            exit_bar[k] = x
            exit_price[k] = xp
            reason[k] = why
    return status, fill_bar, fill_price, exit_bar, exit_price, reason


@njit(cache=True)
def mix64(prefix, a, b, c, e):
    """Deterministic 64-bit ids: splitmix64 over a prefix and four int64 values, vectorized."""
    m = a.shape[0]
    out = np.empty(m, np.uint64)
    for k in range(m):
        h = np.uint64(prefix)
        for v in (a[k], b[k], c[k], e[k]):
            h ^= np.uint64(v) + np.uint64(0x9E3779B97F4A7C15) + (h << np.uint64(6)) + (h >> np.uint64(2))
            z = h
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            h = z ^ (z >> np.uint64(31))
        out[k] = h
    return out


@njit(cache=True)
def range_extreme(high, low, start, end, direction):
    """Highest High (direction +1) or lowest Low (-1) over bars ``start .. end`` (both included)."""
    m = start.shape[0]
    out = np.empty(m)
    for k in range(m):
        if direction[k] == 1:
            v = -np.inf
            for j in range(start[k], end[k] + 1):
                v = max(v, high[j])
        else:
            v = np.inf
            for j in range(start[k], end[k] + 1):
                v = min(v, low[j])
        out[k] = v
    return out
