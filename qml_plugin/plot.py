"""Pattern charts: one QML pattern drawn on its candles, with bokeh (the library ``bt.plot()`` uses).

A QML pattern is a shape, and people judge shapes by looking at them. :func:`plot_pattern` draws one
pattern (a row of :func:`~qml_plugin.patterns.detect_patterns`, or of
:func:`~qml_plugin.patterns.label_patterns` once its outcome is known) on the candles around it:

- the three swings ``P1`` (left shoulder), ``P2`` and ``P3`` (the head), marked and joined;
- the **QML level** (``P1.price``) from P1 to the end of the order's waiting window;
- the **break of structure**: the bar whose close first crossed ``P2``, and the ``P2`` level up to it;
- the detection bar, and ``entry`` / ``stop`` / ``target`` from detection on;
- when labeled, the **fill** and the **exit** (with its reason and R multiple) as markers.

    >>> from qml_plugin import load_ohlcv
    >>> from qml_plugin.patterns import detect_patterns, label_patterns
    >>> df = load_ohlcv("EURUSD_1h").iloc[:3000]
    >>> pats = label_patterns(df, detect_patterns(df))
    >>> fig = plot_pattern(df, pats.iloc[0])
    >>> sorted(r.name for r in fig.renderers if r.name)[:4]
    ['break', 'candles', 'detection', 'entry']
    >>> html = pattern_html(fig)            # one self-contained page: bokeh's JavaScript inlined, no CDN
    >>> "cdn.bokeh.org" in html
    False

Every renderer carries a ``name`` (``candles``, ``wicks``, ``swings``, ``qml_level``, ``p2_level``, ``break``,
``detection``, ``entry``, ``stop``, ``target``, ``fill``, ``exit``) and its data in a ``ColumnDataSource`` with
``x`` in bar start times and ``y`` in prices, so a page, a test or a user can find and read each level.

Pages the package writes are **self-contained** (bokeh's INLINE resources): these machines, and many users',
have no internet, and a chart whose JavaScript comes from a CDN draws nothing there. Candles, scales and
interaction are left to bokeh; this module only decides what to draw.

Choices where SPEC.md is silent:
- the x axis is time (bar start, the frame's own clock); a candle is 70 % of the median bar spacing wide,
  so gaps (weekends) show as gaps;
- the window starts ``bars_before`` bars before P1 and, with ``bars_after=None``, ends 10 bars after the exit
  when the outcome is known, else ``max_wait`` bars after detection (20 when the pattern does not say);
- bullish patterns are drawn in green, bearish in red; stop red, target green, entry blue, whatever the side.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from bokeh.embed import components, file_html
from bokeh.models import ColumnDataSource, HoverTool, Span
from bokeh.plotting import figure
from bokeh.resources import INLINE

__all__ = ["plot_pattern", "pattern_html", "pattern_components"]

_UP, _DOWN = "#26a69a", "#ef5350"


def _get(pattern, key, default=None):
    v = pattern.get(key, default) if isinstance(pattern, Mapping) else getattr(pattern, "get", lambda k, d: d)(key,
                                                                                                              default)
    return default if v is None or (isinstance(v, float) and np.isnan(v)) else v


def _window(n: int, pattern, bars_before: int, bars_after: int | None) -> tuple[int, int]:
    p1, det = int(_get(pattern, "p1_bar")), int(_get(pattern, "detection_bar"))
    lo = max(0, p1 - int(bars_before))
    if bars_after is not None:
        hi = det + int(bars_after)
    elif _get(pattern, "exit_bar") is not None:
        hi = int(_get(pattern, "exit_bar")) + 10
    else:
        hi = det + int(_get(pattern, "max_wait", 20))
    return lo, min(n - 1, max(hi, det))


def plot_pattern(ohlcv: pd.DataFrame, pattern, *, bars_before: int = 60, bars_after: int | None = None,
                 title: str | None = None, width: int = 900, height: int = 420):
    """A bokeh figure of one pattern on its candles (see the module docstring for what is drawn).

    ``ohlcv`` is the frame the pattern was detected on (bar numbers in ``pattern`` index its rows);
    ``pattern`` a row (Series or dict) of ``detect_patterns`` or ``label_patterns``.
    """
    for key in ("p1_bar", "p2_bar", "p3_bar", "detection_bar", "p1_price", "p2_price", "p3_price"):
        if _get(pattern, key) is None:
            from .errors import DataError

            raise DataError(f"plot_pattern: the pattern has no {key!r}; pass a row of detect_patterns or "
                            f"label_patterns (columns p1_bar .. p3_price, detection_bar, entry, stop, target)")
    n = len(ohlcv)
    if int(_get(pattern, "detection_bar")) >= n:
        from .errors import DataError

        raise DataError(f"plot_pattern: detection_bar {int(_get(pattern, 'detection_bar'))} is beyond the frame "
                        f"({n} bars); pass the frame the pattern was detected on")
    lo, hi = _window(n, pattern, bars_before, bars_after)
    win = ohlcv.iloc[lo:hi + 1]
    t = pd.DatetimeIndex(win.index) if isinstance(win.index, pd.DatetimeIndex) else pd.Index(np.arange(lo, hi + 1))
    at = (lambda b: ohlcv.index[int(b)]) if isinstance(ohlcv.index, pd.DatetimeIndex) else (lambda b: int(b))
    step = (np.median(np.diff(t.asi8)) / 1e6 if isinstance(t, pd.DatetimeIndex) and len(t) > 1 else 1.0)
    x_type = "datetime" if isinstance(t, pd.DatetimeIndex) else "linear"
    direction = int(_get(pattern, "direction", 1))
    ptype = _get(pattern, "pattern_type", "bullish_qml" if direction > 0 else "bearish_qml")
    fig = figure(x_axis_type=x_type, width=width, height=height, tools="xpan,xwheel_zoom,box_zoom,reset,save",
                 title=title or f"{_get(pattern, 'symbol', '')} {ptype} detected {at(_get(pattern, 'detection_bar'))}",
                 active_scroll="xwheel_zoom")
    up = (win["Close"] >= win["Open"]).to_numpy()
    src = ColumnDataSource(dict(x=t, open=win["Open"].to_numpy(), high=win["High"].to_numpy(),
                                low=win["Low"].to_numpy(), close=win["Close"].to_numpy(),
                                top=np.maximum(win["Open"], win["Close"]).to_numpy(),
                                bottom=np.minimum(win["Open"], win["Close"]).to_numpy(),
                                color=np.where(up, _UP, _DOWN)))
    fig.segment("x", "high", "x", "low", source=src, color="color", name="wicks")
    bodies = fig.vbar("x", step * 0.7, "top", "bottom", source=src, fill_color="color", line_color="color",
                      name="candles")
    fig.add_tools(HoverTool(renderers=[bodies], tooltips=[("time", "@x{%F %H:%M}"), ("open", "@open"),
                                                          ("high", "@high"), ("low", "@low"), ("close", "@close")],
                            formatters={"@x": "datetime"}))
    color = _UP if direction > 0 else _DOWN
    bars = [int(_get(pattern, k)) for k in ("p1_bar", "p2_bar", "p3_bar")]
    prices = [float(_get(pattern, k)) for k in ("p1_price", "p2_price", "p3_price")]
    sw = ColumnDataSource(dict(x=[at(b) for b in bars], y=prices, label=["P1", "P2", "P3 (head)"]))
    fig.line("x", "y", source=sw, color=color, line_width=2, line_alpha=0.6)
    fig.scatter("x", "y", source=sw, size=11, color=color, marker="circle", name="swings", legend_label="P1 P2 P3")
    fig.text("x", "y", text="label", source=sw, text_font_size="9pt", x_offset=4,
             y_offset=-8 if direction > 0 else 14)

    det = int(_get(pattern, "detection_bar"))
    end = at(hi)

    def level(name, x0, x1, y, col, dash="solid", legend=None):
        s = ColumnDataSource(dict(x0=[x0], x1=[x1], y=[float(y)]))
        return fig.segment("x0", "y", "x1", "y", source=s, color=col, line_width=2, line_dash=dash, name=name,
                           legend_label=legend or name)

    level("qml_level", at(bars[0]), end, prices[0], color, "dashed", "QML level")
    brk = int(_get(pattern, "break_bar", det))
    level("p2_level", at(bars[1]), at(brk), prices[1], "#888888", "dotted", "P2 / break level")
    fig.scatter(x=[at(brk)], y=[float(ohlcv["Close"].iloc[brk])], marker="diamond", size=12, color="#555555",
                name="break", legend_label="break of structure")
    fig.add_layout(Span(location=at(det), dimension="height", line_color="#999999", line_dash="dashed"))
    fig.scatter(x=[at(det)], y=[float(ohlcv["Close"].iloc[det])], marker="triangle" if direction > 0 else
                "inverted_triangle", size=10, color="#333333", name="detection", legend_label="detected")
    for name, col in (("entry", "#1f77b4"), ("stop", _DOWN), ("target", _UP)):
        if _get(pattern, name) is not None:
            level(name, at(det), end, _get(pattern, name), col, "solid" if name == "entry" else "dashdot")
    if _get(pattern, "fill_bar") is not None and _get(pattern, "fill_price") is not None:
        fig.scatter(x=[at(_get(pattern, "fill_bar"))], y=[float(_get(pattern, "fill_price"))], marker="circle_cross",
                    size=13, fill_color="white", line_color="#1f77b4", line_width=2, name="fill", legend_label="fill")
    if _get(pattern, "exit_bar") is not None and _get(pattern, "exit_price") is not None:
        r = _get(pattern, "r_multiple")
        label = f"exit ({_get(pattern, 'exit_reason', '')}{'' if r is None else f', {float(r):+.2f} R'})"
        fig.scatter(x=[at(_get(pattern, "exit_bar"))], y=[float(_get(pattern, "exit_price"))], marker="x",
                    size=14, line_width=3, color=_UP if (r or 0) > 0 else _DOWN, name="exit", legend_label=label)
    fig.legend.location = "top_left"
    fig.legend.click_policy = "hide"
    fig.legend.label_text_font_size = "8pt"
    fig.yaxis.axis_label = "price"
    return fig


def pattern_html(fig, *, title: str = "QML pattern") -> str:
    """A standalone HTML page of ``fig`` with bokeh's JavaScript inlined (works offline)."""
    return file_html(fig, INLINE, title)


def pattern_components(figs) -> tuple[str, str | tuple | dict]:
    """``(script, divs)`` to embed figures in another page; the page must include ``INLINE.render()``."""
    return components(figs)
