"""The verdict table as words and files: what ``qml run`` prints, writes to CSV and says in one sentence.

:func:`qml_plugin.job.verdict.verdict_table` computes the numbers; this module only presents them, so the
statistics and their presentation change for different reasons in different places.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .verdict import VERDICT_COLUMNS

__all__ = ["format_verdict", "write_verdict_csv", "verdict_sentence", "resolution_note", "holm_families",
           "ece_sentence"]


_FORMATS = {"win_rate": "{:.1f}", "profit_factor": "{:.2f}", "mean_r": "{:+.3f}", "mean_r_lo": "{:+.3f}",
            "mean_r_hi": "{:+.3f}", "total_return": "{:+.2f}", "sharpe": "{:+.2f}", "max_drawdown": "{:.2f}",
            "random_median": "{:+.3f}", "random_p05": "{:+.3f}", "random_p95": "{:+.3f}", "p_random": "{:.3f}",
            "p_holm": "{:.3f}", "mde": "{:.3f}"}


def _p(v: float) -> str:
    """A p-value for print: 3 decimals, or two significant digits below 0.001 (a Monte-Carlo p is never 0)."""
    return "" if pd.isna(v) else f"{v:.3f}" if v >= 0.001 else f"{v:.1e}"


def format_verdict(table: pd.DataFrame, *, markets: bool = True) -> pd.DataFrame:
    """The verdict table as text for print and the report: R to 3 decimals, percentages to 1-2, blanks for NaN.

    ``mean_r`` and its CI become one ``mean_r [95% CI]`` column, the random band one ``random [5-95%]``
    column, and the primary row is marked ``*`` in a leading column. ``markets=False`` keeps only the
    pooled rows (``market == "all"``).
    """
    t = table if markets else table[table["market"] == "all"]
    def f(col):
        if col in ("p_random", "p_holm"):
            return [_p(v) for v in t[col]]
        return [("" if pd.isna(v) else _FORMATS[col].format(v)) for v in t[col]]
    out = pd.DataFrame({"": np.where(t["primary"], "*", ""), "level": t["level"], "scheme": t["scheme"],
                        "mode": t["mode"], "market": t["market"], "n": t["n"].astype(str),
                        "win_rate": f("win_rate"), "pf": f("profit_factor")})
    out["mean_r [95% CI]"] = [m if not m else f"{m} [{lo}, {hi}]"
                              for m, lo, hi in zip(f("mean_r"), f("mean_r_lo"), f("mean_r_hi"))]
    for col in ("total_return", "sharpe", "max_drawdown"):
        out[col] = f(col)
    out["random [5-95%]"] = [m if not m else f"{m} [{lo}, {hi}]"
                             for m, lo, hi in zip(f("random_median"), f("random_p05"), f("random_p95"))]
    for col in ("p_random", "p_holm", "mde"):
        out[col] = f(col)
    return out.reset_index(drop=True)


def write_verdict_csv(table: pd.DataFrame, path: str | Path) -> Path:
    """Write the verdict table (raw numbers, 6 significant digits, empty cells for NaN) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.reindex(columns=VERDICT_COLUMNS).to_csv(path, index=False, float_format="%.6g")
    return path


def verdict_sentence(table: pd.DataFrame, *, alpha: float = 0.05) -> str:
    """The primary test in one or two sentences: "edge" or "no edge this data can detect", with its figures.

    The verdict is "edge" when the primary row's ``p_random < alpha``: the mode chose better patterns
    than chance would have within the same markets and pools. Whether those patterns also pay after
    costs is said separately (the CI of mean R against 0).
    """
    prim = table[table["primary"]]
    if prim.empty:
        return ("No primary test: it is the pooled scheme's pattern-level row of ml.prediction_mode, and the "
                "pooled scheme was not run; every row of this table is exploratory.")
    r = prim.iloc[0]
    if not r["n"]:
        return (f"Primary test (pooled scheme, {r['mode']} mode, pattern level): the mode kept no out-of-sample "
                "pattern with a known outcome, so there is nothing to judge. Verdict: no edge this data can detect.")
    head = (f"Primary test (pooled scheme, {r['mode']} mode, pattern level): mean R {r['mean_r']:+.3f} "
            f"(95 % CI {r['mean_r_lo']:+.3f} to {r['mean_r_hi']:+.3f}) over {int(r['n'])} patterns, against "
            f"{r['random_median']:+.3f} (5-95 %: {r['random_p05']:+.3f} to {r['random_p95']:+.3f}) for random "
            f"filters of the same size per market; p_random = {_p(r['p_random'])}; the smallest edge this data "
            f"can detect is {r['mde']:.3f} R.")
    if r["p_random"] < alpha:
        pays = ("and its patterns pay after costs (CI above 0)" if r["mean_r_lo"] > 0 else
                "though its patterns' mean R is not shown to be above 0 after costs")
        return f"{head} Verdict: edge: the model chooses better than chance, {pays}."
    return f"{head} Verdict: no edge this data can detect."


def holm_families(table: pd.DataFrame) -> dict[str, int]:
    """Sizes of the table's Holm families (rows with a ``p_random``): ``pooled``, the pooled exploratory rows of
    both levels (the primary row excluded), and ``per_market``, the largest one question's per-market rows."""
    has_p = table["p_random"].notna()
    pooled = (table["market"] == "all") & ~table["primary"].astype(bool)
    sizes = table[has_p & (table["market"] != "all")].groupby(["level", "scheme", "mode"]).size()
    return {"pooled": int((has_p & pooled).sum()), "per_market": int(sizes.max()) if len(sizes) else 0}


def resolution_note(table: pd.DataFrame) -> str:
    """What the Monte-Carlo p-values can resolve, in words: ``p_random >= 1 / (seeds + 1)``, and the ``p_random``
    the best row of each Holm family needs (``alpha / m``), so a reader sees whether a row *could* pass at all.

    The settings come from ``table.attrs`` (:func:`qml_plugin.job.verdict.verdict_table` records them).
    """
    a = table.attrs
    alpha = float(a.get("alpha", 0.05))
    seeds = {"pattern": int(a.get("seeds") or 0), "trade": int(a.get("trade_seeds") or 0)}
    shown = {lv: s for lv, s in seeds.items() if s and (table["level"] == lv).any()}
    if not shown:
        return ""
    text = "Resolution: p_random is at least 1/(seeds+1): " + "; ".join(
        f"{1 / (s + 1):.2g} at the {lv} level ({s:,} random filters per row)" for lv, s in shown.items()) + "."
    fewest = min(shown.values())
    for name, m in holm_families(table).items():
        if m < 2:
            continue
        need = alpha / m
        what = "the pooled exploratory rows" if name == "pooled" else "the largest per-market breakdown"
        text += (f" Holm over {what} ({m} rows) passes its best row at {alpha:g} only when its p_random <= "
                 f"{need:.2g}")
        if m / (fewest + 1) > alpha:
            text += (f", which {fewest:,} random filters cannot show (no row of it can pass, whatever the model "
                     f"does; it needs at least {int(np.ceil(m / alpha - 1e-9)) - 1:,})")
        else:
            most = int(need * (fewest + 1) + 1e-9) - 1
            text += f" (at most {most:,} of {fewest:,} random filters reaching its mean R)"
        text += "."
    return text


def ece_sentence(cal: dict | None) -> str:
    """The pooled scheme's calibration in one sentence, next to the noise a perfect model would show.

    ``cal`` is :func:`qml_plugin.ml.calibration.calibration_report` of the out-of-sample ``ml_confidence``
    (``n``, ``ece``, ``ece_sd``, ``ece_calibrated_p95``), optionally with ``ece_uncalibrated`` (the same
    model's ECE before calibration).

    >>> print(ece_sentence({"n": 2243, "ece": 0.041, "ece_sd": 0.006, "ece_calibrated_p95": 0.035}))
    ... # doctest: +NORMALIZE_WHITESPACE
    ECE 0.041 (a perfectly calibrated model shows <= 0.035 in 95 % of draws) over 2,243 out-of-sample
    predictions (10 equal-count bins; bootstrap SD 0.006): beyond that noise.
    """
    if not cal or not cal.get("n"):
        return ""
    text = (f"ECE {cal['ece']:.3f} (a perfectly calibrated model shows <= {cal['ece_calibrated_p95']:.3f} in 95 % "
            f"of draws) over {int(cal['n']):,} out-of-sample predictions (10 equal-count bins; bootstrap SD "
            f"{cal['ece_sd']:.3f})")
    raw = cal.get("ece_uncalibrated")
    if raw is not None and np.isfinite(raw):
        text += f"; before calibration {raw:.3f}"
    return text + (": within that noise." if cal["ece"] <= cal["ece_calibrated_p95"] else ": beyond that noise.")
