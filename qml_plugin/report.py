"""The self-contained HTML report of ``qml run``: table, equity curves, calibration, feature importances.

One file, no external assets: figures are drawn with matplotlib (Agg backend) and embedded as
base64 PNGs, tables are plain HTML. Open it in any browser, attach it to an e-mail, archive it.
The report shows the same comparison table the CLI prints, including the random-filter band, and
says in words which period is out of sample. A universe run adds its verdict (:func:`verdict_html`):
the primary test in words, the pooled verdict table, the per-market rows, and the calibration error
next to the noise a perfectly calibrated model would show.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import pandas as pd

from .figures import calibration_curve, equity_with_band, gallery, r_distribution, sections_html

__all__ = ["write_report", "format_table", "verdict_html", "bad_prints_html", "contributions_html",
           "kill_switch_html"]


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """Round the comparison table for display (shared by the CLI and the HTML report)."""
    out = table.copy()
    if "trades" in out:
        out["trades"] = [f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}" for v in out["trades"]]
    for col, fmt in {"win_rate": "{:.1f}", "profit_factor": "{:.2f}", "return_pct": "{:+.2f}", "sharpe": "{:+.2f}",
                     "calmar": "{:+.2f}", "max_drawdown": "{:.2f}", "oos_auc": "{:.3f}",
                     "auc (used)": "{:.3f}", "auc (pooled only)": "{:.3f}"}.items():
        if col in out:
            out[col] = [v if isinstance(v, str) else ("" if pd.isna(v) else fmt.format(v)) for v in out[col]]
    return out


def _html_table(shown: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    rows = "\n".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>"
                     for r in shown.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{rows}\n</tbody></table>"


def verdict_html(verdict: pd.DataFrame, *, calibration: dict | None = None) -> str:
    """The report's verdict section: the primary test named and judged in words, the pooled table, the
    per-market rows (folded), and, when given, :func:`qml_plugin.ml.calibration.calibration_report`'s ECE."""
    from .job.verdict_text import ece_sentence, format_verdict, resolution_note, verdict_sentence  # job writes reports

    pooled = format_verdict(verdict, markets=False)
    per_market = format_verdict(verdict[verdict["market"] != "all"])
    parts = ["<h2>Verdict</h2>", f"<p><strong>{html.escape(verdict_sentence(verdict))}</strong></p>",
             "<p>The primary test is fixed before the run: the <code>pooled</code> scheme, the config's "
             "<code>ml.prediction_mode</code>, at the pattern level (marked *). Every other row is exploratory: "
             "<code>p_holm</code> is its <code>p_random</code> after Holm's correction (one family for the pooled "
             "rows, one per question for its per-market rows). The random filter keeps, in each market, as many of the "
             "mode's pool as the mode kept there; <code>mde</code> is the smallest difference in mean R a two-sided "
             "test at 5 % would detect with 80 % power at this sample size. At the trade level, total return, "
             "Sharpe and max drawdown score each dataset's daily mark-to-market equity (costs included) from the "
             "scheme's first model on; a market's curve is the equal-weight mean of its datasets', the pooled "
             "row's the equal-weight mean of the markets'.</p>",
             _html_table(pooled)]
    a = verdict.attrs
    if a.get("seeds"):
        parts.insert(3, f"<p>{a['seeds']:,} random filters per pattern-level row"
                     + (f", {a['trade_seeds']:,} per trade-level row (each a one-position replay)"
                        if a.get("trade_seeds") else "")
                     + f"; {a.get('n_boot', 0):,} bootstrap replicates of market-month blocks per CI. "
                     + f"{html.escape(resolution_note(verdict))}</p>")
    if len(per_market):
        parts.append(f"<details><summary>Per-market rows ({len(per_market)})</summary>{_html_table(per_market)}"
                     "</details>")
    if calibration:
        parts.append(f"<p>Calibration of <code>ml_confidence</code>: {html.escape(ece_sentence(calibration))}</p>")
    return "\n".join(parts)


def bad_prints_html(log: pd.DataFrame) -> str:
    """The report's bad-prints section: one table row per flagged bar (dataset, time, column and value, what was
    wrong, the action and what was done), from :func:`qml_plugin.badprints.bad_print_log`."""
    checked = list(log.attrs.get("checked", []))
    head = (f"<h2>Bad prints</h2><p>{len(log)} bad print(s) in {log['dataset'].nunique()} of the {len(checked)} "
            "datasets checked (<code>data.bad_prints</code>: <code>warn</code> keeps a bar as it is, "
            "<code>repair</code> clips a bad wick to the body or flattens an implausible bar, <code>fail</code> "
            "stops the run at the first).</p>")
    if log.empty:
        return head
    shown = pd.DataFrame({"dataset": log["dataset"], "time": log["time"].astype(str), "column": log["column"],
                          "value": [f"{v:.6g}" for v in log["value"]], "what was wrong": log["problem"],
                          "action": log["action"], "done": log["done"]})
    return head + _html_table(shown)


def kill_switch_html(kill_switch: dict) -> str:
    """The report's kill-switch section: for each backtest (a mode), the trip's bar, time, reason and action,
    or "never tripped" (``kill_switch`` maps a backtest's name to ``stats._strategy.ml_kill_switch``)."""
    rows = []
    for name, trip in kill_switch.items():
        if trip is None:
            rows.append((name, "never tripped", "", "", ""))
        else:
            rows.append((name, "tripped", f"{trip['bar']}", f"{trip['time']}", f"{trip['reason']}; action "
                         f"{trip['action']} ({'technical rule' if trip['action'] == 'baseline' else 'no new orders'}"
                         " from then on)"))
    shown = pd.DataFrame(rows, columns=["backtest", "kill switch", "bar", "time", "reason"])
    return ("<h2>Kill switch</h2><p><code>ml.kill_switch</code> watches each backtest's closed trades only "
            "(closed-trade equity: cash plus realized PnL, never open PnL). Once tripped, that backtest's ML "
            "filter is off.</p>"
            + _html_table(shown))


def _figure_png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _plots(equity: dict[str, pd.Series], calibration: list[dict] | None, importances: pd.Series | None) -> list[tuple]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out = []
    if any(len(c) for c in equity.values()):  # the universe run draws its curves with bokeh (charts=) instead
        fig, ax = plt.subplots(figsize=(10, 4.5))
        for name, curve in equity.items():
            if len(curve):
                ax.plot(curve.index, curve.to_numpy(), label=name, lw=1.6 if name != "baseline" else 2.2)
        ax.set_title("Equity (closed trades, 1.0 = start of the out-of-sample period)")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        out.append(("Equity curves", _figure_png(fig)))
    if calibration:
        cal = pd.DataFrame(calibration)
        fig, ax = plt.subplots(figsize=(4.8, 4.5))
        ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
        ax.plot(cal["mean_predicted"], cal["observed_rate"], marker="o")
        ax.set_xlabel("predicted ml_confidence")
        ax.set_ylabel("observed win rate")
        ax.set_title("Calibration (out-of-sample predictions)")
        ax.grid(alpha=0.3)
        out.append(("Calibration", _figure_png(fig)))
    if importances is not None and len(importances):
        top = importances.sort_values(ascending=True).tail(20)
        fig, ax = plt.subplots(figsize=(7, 5.5))
        ax.barh(top.index, top.to_numpy())
        ax.set_title("Top 20 feature importances (gain, last walk-forward model)")
        ax.tick_params(axis="y", labelsize=7)
        out.append(("Feature importances", _figure_png(fig)))
    return out


def contributions_html(contributions: pd.Series | None, importances: pd.Series | None = None, *,
                       of: str = "the scored patterns", top: int = 20) -> str:
    """Mean |contribution| per feature (TreeSHAP, log-odds of ``ml_confidence``, over the out-of-sample
    scored patterns) beside XGBoost's gain importance, as a table of the ``top`` features by contribution."""
    if contributions is None or not len(contributions):
        return ""
    c = contributions.sort_values(ascending=False, kind="stable").head(top)
    gain = importances.reindex(c.index) if importances is not None else pd.Series(float("nan"), index=c.index)
    share = gain / importances.sum() if importances is not None and importances.sum() > 0 else gain
    table = pd.DataFrame({"feature": c.index, "mean |contribution|": [f"{v:.4f}" for v in c.to_numpy()],
                          "gain": ["" if pd.isna(g) else f"{g:.2f}" for g in gain.to_numpy()],
                          "gain share": ["" if pd.isna(g) else f"{g:.1%}" for g in share.to_numpy()]})
    return (f"<h2>Feature contributions</h2><p>Mean |contribution| of each feature to the log-odds of "
            f"<code>ml_confidence</code> (XGBoost's TreeSHAP, <code>SignalQualityModel.explain</code>), over "
            f"{html.escape(of)}, each pattern explained by the model version that scored it; beside it the gain "
            f"importance of the last model. Top {len(c)} by contribution.</p>" + _html_table(table))


def _draw_charts(data: dict) -> dict:
    """``{section title: bokeh model}`` from :func:`qml_plugin.job.charts.chart_data`'s keys."""
    out = {}
    if "equity" in data:
        e = data["equity"]
        out["Cumulative R against the random filter"] = equity_with_band(e["curves"], e["band"], title=e["title"])
    if "r_by_mode" in data:
        out["R per trade by mode"] = r_distribution(data["r_by_mode"])
    if "calibration" in data:
        c = data["calibration"]
        out["Calibration"] = calibration_curve(c["table"], ece=c["ece"], ece_reference=c.get("ece_reference"))
    if "gallery" in data:
        g = data["gallery"]
        out["Best- and worst-scored out-of-sample patterns"] = gallery(g["patterns"], g["frames"])
    return out


def write_report(path: str | Path, *, title: str, table: pd.DataFrame, equity: dict[str, pd.Series],
                 calibration: list[dict] | None = None, importances: pd.Series | None = None,
                 notes: list[str] | None = None, verdict: pd.DataFrame | None = None,
                 verdict_calibration: dict | None = None, charts: dict | None = None,
                 bad_prints: pd.DataFrame | None = None,
                 contributions: pd.Series | None = None, contributions_of: str = "the scored patterns",
                 tables: list[tuple[str, str, pd.DataFrame]] | None = None, kill_switch: dict | None = None) -> Path:
    """Write the report to ``path`` (folders created) and return the path.

    ``verdict`` (:func:`qml_plugin.job.verdict.verdict_table`) adds the verdict section before the comparison,
    with ``verdict_calibration`` (:func:`qml_plugin.ml.calibration.calibration_report`) beside it.
    ``charts`` (:func:`qml_plugin.job.charts.chart_data`: the random band behind the cumulative R of each
    mode, R per trade by mode, the calibration curve with its ECE, the gallery of best- and worst-scored
    patterns) are drawn with bokeh after the tables, with its INLINE JavaScript (the page stays self-contained).
    ``bad_prints`` (:func:`qml_plugin.badprints.bad_print_log`) adds a table of the data's bad prints and what
    was done about each (:func:`bad_prints_html`); none when the data was not checked.
    ``contributions`` (mean |contribution| per feature, :mod:`qml_plugin.job.predlog`) are shown beside
    ``importances`` (gain) by :func:`contributions_html`; ``contributions_of`` says over which patterns.
    ``tables`` are further ``(title, text, table)`` sections after the comparison (e.g. regime models).
    ``kill_switch`` (``{backtest name: stats._strategy.ml_kill_switch}``, given when ``ml.kill_switch`` is set)
    adds :func:`kill_switch_html` after the comparison.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figures = _plots(equity, calibration, importances)
    shown = format_table(table)
    rows = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in shown.itertuples(index=False))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    imgs = "\n".join(f'<h2>{html.escape(t)}</h2><img alt="{html.escape(t)}" src="data:image/png;base64,{b64}">'
                     for t, b64 in figures)
    notes_html = "".join(f"<li>{html.escape(n)}</li>" for n in (notes or []))
    drawn = _draw_charts(charts or {})
    charts_head, charts_body = sections_html(drawn) if drawn else ("", "")
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
th {{ background: #f3f3f3; }} td:first-child {{ text-align: left; font-weight: 600; }}
img {{ max-width: 100%; }} li {{ margin: 0.2em 0; }}
</style>{charts_head}</head><body>
<h1>{html.escape(title)}</h1>
<ul>{notes_html}</ul>
{"" if verdict is None else verdict_html(verdict, calibration=verdict_calibration)}
{"" if bad_prints is None or not bad_prints.attrs.get("checked") else bad_prints_html(bad_prints)}
<h2>Comparison</h2>
<table><thead><tr>{head}</tr></thead><tbody>
{rows}
</tbody></table>{"" if kill_switch is None else chr(10) + kill_switch_html(kill_switch)}
{"".join(f"<h2>{html.escape(t)}</h2><p>{html.escape(x)}</p>" + _html_table(format_table(d))
         for t, x, d in (tables or []))}
{imgs}
{contributions_html(contributions, importances, of=contributions_of)}
{charts_body}
<p style="color:#777;font-size:small">Generated by qml-plugin. Figures embedded; no external resources.</p>
</body></html>"""
    path.write_text(doc, encoding="utf-8")
    return path

