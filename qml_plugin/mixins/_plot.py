"""What ``bt.plot()`` shows of the patterns: indicators declared with backtesting.py's own ``Strategy.I()``.

* **Levels** (six lines overlaid on the candles): each traded pattern's QML level, head and break
  level, entry, stop and target, drawn from its detection bar for as long as its order is live
  (pending, then the open trade with its stop and target), NaN elsewhere. The values are written
  once, after the last bar, from the mixins' record of which order was for which pattern and when
  it ended; nothing is computed per bar.
* **ML score** (its own panel, only when the ML filter is on): every pattern's ``ml_confidence`` as a
  marker at its detection bar, whether the mode took it or not.

Neither indicator is kept as a strategy attribute, so backtesting.py neither slices them each bar
nor counts them in its indicator warm-up: declaring them changes no trade. Drawing is left to
backtesting.py's plotting (bokeh).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

LEVEL_COLUMNS = ("p1_price", "p3_price", "p2_price", "entry", "stop", "target")
LEVEL_NAMES = ["QML level", "head", "break level", "entry", "stop", "target"]
"""Legend names of the six level lines, in the order of :data:`LEVEL_COLUMNS`."""
LEVEL_COLORS = ["darkorange", "black", "purple", "royalblue", "red", "green"]
SCORE_NAME = "ML score (ml_confidence)"


def declare_levels(strategy) -> list | None:
    """The six level lines (NaN until filled), or None when the strategy's patterns lack the levels.

    Six one-line indicators rather than one six-line one, so the columns backtesting.py adds to
    ``stats._trades`` for every indicator read ``Entry_QML level``, ``Exit_stop`` ...
    """
    pats = getattr(strategy, "patterns", None)
    if not isinstance(pats, pd.DataFrame) or not len(pats) or not set(LEVEL_COLUMNS) <= set(pats.columns):
        return None
    n = len(strategy.data)
    return [strategy.I(np.full, n, np.nan, name=name, overlay=True, color=color)
            for name, color in zip(LEVEL_NAMES, LEVEL_COLORS)]


def declare_score(strategy, detection_bars: np.ndarray, ml_confidence: np.ndarray):
    """The ML score panel: ``ml_confidence`` at each pattern's detection bar (the highest, if several)."""
    score = np.full(len(strategy.data), np.nan)
    ok = np.isfinite(ml_confidence)
    bars = detection_bars[ok].astype(int)
    order = np.argsort(ml_confidence[ok], kind="stable")      # the highest of a bar is written last
    score[bars[order]] = ml_confidence[ok][order]
    return strategy.I(lambda: score, name=SCORE_NAME, overlay=False, scatter=True, color="teal")


def fill_levels(levels, patterns: pd.DataFrame, spans: list[tuple[int, int, int]]) -> None:
    """Write pattern ``k``'s levels into bars ``start..end`` for each ``(k, start, end)`` span."""
    values = patterns[list(LEVEL_COLUMNS)].to_numpy(float)
    last = len(levels[0]) - 1
    for k, start, end in spans:
        a, b = max(int(start), 0), min(int(end), last)
        for line, value in zip(levels, values[k]):
            line[a:b + 1] = value
