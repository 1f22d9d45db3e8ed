"""The report's charts (SPEC §14), drawn with bokeh and embedded with its INLINE resources (no CDN).

Each function returns a bokeh figure (or layout) that :func:`sections_html` turns into HTML for the
``qml run`` report; the page must then carry ``INLINE.render()`` once (``sections_html`` returns it with
the divs). What they show, and why a careful reader wants it:

- :func:`equity_with_band`: each mode's equity curve in front of the random filter's 5-95 % band, so an
  "improvement" can be seen against what chance alone gives over the same period;
- :func:`r_distribution`: the distribution of R per trade by mode (a mean can hide a few outliers);
- :func:`calibration_curve`: observed win rate against predicted ``ml_confidence`` in 10 equal-count bins,
  with the expected calibration error in the title;
- :func:`gallery`: the six highest- and six lowest-scored out-of-sample patterns, each drawn with
  :func:`qml_plugin.plot.plot_pattern` and its outcome.

    >>> import numpy as np
    >>> from qml_plugin.ml.metrics import calibration_table
    >>> rng = np.random.default_rng(0)
    >>> p = rng.uniform(size=500); y = (rng.uniform(size=500) < p).astype(int)
    >>> calibration_curve(calibration_table(y, p), ece=0.031).title.text
    'Calibration (out of sample): ECE 0.031, 500 predictions'

Statistics are left to numpy; drawing to bokeh.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from bokeh.embed import components
from bokeh.layouts import column, gridplot
from bokeh.models import ColumnDataSource, Div
from bokeh.palettes import Category10_10
from bokeh.plotting import figure
from bokeh.resources import INLINE

from .plot import plot_pattern

__all__ = ["equity_with_band", "r_distribution", "calibration_curve", "gallery",
           "sections_html"]


def equity_with_band(equity: Mapping[str, pd.Series], band: pd.DataFrame | None = None, *,
                     title: str = "Equity (1.0 = start of the out-of-sample period)", width: int = 1000,
                     height: int = 420):
    """Equity curves by mode, with the random filter's band (``band`` columns ``p05``, ``p95``) shaded behind."""
    fig = figure(x_axis_type="datetime", width=width, height=height, title=title,
                 tools="xpan,xwheel_zoom,box_zoom,reset,save")
    if band is not None and len(band):
        b = band.sort_index()
        fig.varea(x=b.index, y1=b["p05"].to_numpy(float), y2=b["p95"].to_numpy(float), fill_color="#bbbbbb",
                  fill_alpha=0.45, legend_label="random filter 5-95 %", name="random_band")
    for i, (name, curve) in enumerate(equity.items()):
        if len(curve):
            bold = name == "baseline" or "band" in str(name)
            fig.step(curve.index, curve.to_numpy(float), mode="after", color=Category10_10[i % 10],
                     line_width=2.6 if bold else 1.4, legend_label=str(name), name=f"equity:{name}")
    fig.legend.location = "top_left"
    fig.legend.click_policy = "hide"
    fig.legend.label_text_font_size = "8pt"
    return fig


def r_distribution(r_by_mode: Mapping[str, Sequence[float]], *, bins: int = 24, width: int = 1000,
                   height: int = 320):
    """Histogram of R per trade for each mode, on one shared set of bins (R clipped to [-2, 6] for display)."""
    vals = {k: np.clip(np.asarray(v, float)[np.isfinite(np.asarray(v, float))], -2, 6) for k, v in r_by_mode.items()}
    edges = np.linspace(-2, 6, bins + 1)
    fig = figure(width=width, height=height, title="R per trade by mode (share of the mode's trades)",
                 x_axis_label="R multiple (net)", tools="save,reset")
    for i, (name, v) in enumerate(vals.items()):
        if len(v) == 0:
            continue
        counts, _ = np.histogram(v, edges)
        src = ColumnDataSource(dict(left=edges[:-1], right=edges[1:], top=counts / len(v)))
        fig.quad(left="left", right="right", bottom=0, top="top", source=src, fill_alpha=0.25,
                 color=Category10_10[i % 10], legend_label=f"{name} (n={len(v)}, mean {v.mean():+.2f} R)",
                 name=f"r:{name}")
    if fig.legend:
        fig.legend.label_text_font_size = "8pt"
        fig.legend.click_policy = "hide"
    return fig


def calibration_curve(table: pd.DataFrame | Sequence[Mapping], *, ece: float | None = None,
                      ece_reference: float | None = None, width: int = 460, height: int = 420):
    """Observed win rate against predicted probability, one point per bin of ``table``.

    ``table`` has ``mean_predicted``, ``observed_rate`` and ``n`` per bin (what
    :func:`qml_plugin.ml.metrics.calibration_table` returns); ``ece`` (and, when given, the 95th percentile
    of a perfectly calibrated model's ECE for as many predictions, ``ece_reference``) go in the title.
    Binning and the ECE itself are the metrics module's job, so the report and the table agree.
    """
    cal = pd.DataFrame(list(table) if not isinstance(table, pd.DataFrame) else table)
    n = int(cal["n"].sum()) if "n" in cal else 0
    text = "Calibration (out of sample)"
    if ece is not None:
        text += f": ECE {ece:.3f}" + ("" if ece_reference is None else f" (perfect model's 95 %: {ece_reference:.3f})")
    fig = figure(width=width, height=height, x_range=(0, 1), y_range=(0, 1), tools="save,reset",
                 title=f"{text}, {n:,} predictions", x_axis_label="predicted ml_confidence",
                 y_axis_label="observed win rate")
    fig.line([0, 1], [0, 1], line_dash="dashed", color="grey")
    src = ColumnDataSource({c: cal[c].to_numpy(float) for c in ("mean_predicted", "observed_rate")})
    fig.line("mean_predicted", "observed_rate", source=src, line_width=2)
    fig.scatter("mean_predicted", "observed_rate", source=src, size=8, name="calibration")
    return fig


def gallery(patterns: pd.DataFrame, frames: Mapping[str, pd.DataFrame], *, score: str = "ml_confidence",
            n: int = 6, width: int = 480, height: int = 260):
    """The ``n`` highest- and ``n`` lowest-``score`` patterns drawn with their outcomes, in two rows of charts.

    Only patterns with a known outcome (finite ``r_multiple``) are shown. ``patterns`` are labeled
    out-of-sample pattern rows (``label_patterns`` columns plus ``score`` and a
    ``dataset`` key into ``frames``, the frame each pattern was detected on).
    """
    known = np.isfinite(patterns[score].to_numpy(float)) & np.isfinite(patterns["r_multiple"].to_numpy(float))
    ranked = patterns[known].sort_values(score, kind="mergesort")
    best, worst = ranked.tail(n).iloc[::-1], ranked.head(n)
    rows = []
    for name, part in (("highest", best), ("lowest", worst)):
        figs = []
        for _, p in part.iterrows():
            df = frames.get(p["dataset"])
            if df is None:
                continue
            r = p.get("r_multiple")
            outcome = f"{p.get('exit_reason', 'exit')} {float(r):+.2f} R"
            fig = plot_pattern(df, p, bars_before=30, width=width, height=height,
                               title=f"{p['dataset']} {p['detection_time']:%Y-%m-%d} {score} {p[score]:.2f}: "
                                     f"{outcome}")
            fig.legend.visible = False
            fig.toolbar_location = None
            fig.name = f"gallery:{name}"
            figs.append(fig)
        rows.append(Div(text=f"<h3>{len(figs)} {name}-scored out-of-sample patterns</h3>"))
        if figs:
            rows.append(gridplot(figs, ncols=3, toolbar_location=None))
    return column(*rows)


def sections_html(sections: Mapping[str, object]) -> tuple[str, str]:
    """``(head, body)`` HTML for titled bokeh sections: ``head`` holds bokeh's INLINE JavaScript (once)."""
    script, divs = components(dict(sections))
    body = "\n".join(f'<section class="chart" data-section="{i}"><h2>{title}</h2>{divs[title]}</section>'
                     for i, title in enumerate(sections))
    return INLINE.render() + script, body
