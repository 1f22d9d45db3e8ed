"""The data of the universe report's charts (SPEC §14): what the verdict's numbers look like, out of sample.

Built from the verdict's own inputs, so a chart never shows other patterns than the table counts. The job
layer only picks the data (plain frames and numbers); :func:`qml_plugin.report.write_report` draws it
(:mod:`qml_plugin.figures`), so the job never imports the report layer:

- **Cumulative R by mode** (pattern level, the primary scheme): each mode's taken out-of-sample patterns
  in the order they became known (``known_at_utc``), in front of the 5-95 % band of random filters that
  keep, in each market, as many of the mode's candidates as the mode kept there (the primary mode's
  random filter, :func:`qml_plugin.comparison.random_keep`). R is summed, not compounded: one R per pattern.
- **R per trade by mode** (trade level, the primary scheme).
- **Calibration** of the primary scheme's ``ml_confidence`` with its ECE and a perfectly calibrated
  model's 95th percentile for as many predictions (:func:`qml_plugin.ml.calibration.calibration_report`).
- **Gallery**: the six highest- and six lowest-scored out-of-sample patterns with a known outcome.

"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..comparison import random_keep
from ..ml.calibration import calibration_report
from ..ml.metrics import calibration_table

__all__ = ["chart_data"]

_POOL = {"filter": "technical", "expected_value": "technical", "replace": "placeable",
         "score_enhancement": "placeable"}


def _cumulative(times: pd.DatetimeIndex, r: np.ndarray, grid: pd.DatetimeIndex) -> np.ndarray:
    """Cumulative R at each instant of ``grid`` (patterns known by then)."""
    if len(times) == 0:          # a mode that took nothing stays at 0
        return np.zeros(len(grid))
    order = np.argsort(times.asi8, kind="stable")
    cum = np.cumsum(r[order])
    pos = np.searchsorted(times.asi8[order], grid.asi8, side="right")
    return np.where(pos > 0, cum[np.maximum(pos - 1, 0)], 0.0)


def _equity(vp: pd.DataFrame, modes: list[str], primary: str, seeds: int, seed: int):
    rows = vp[np.isfinite(vp["r_net"].to_numpy(float))]
    if len(rows) == 0:
        return None
    t = pd.DatetimeIndex(rows["known_at_utc"]).tz_convert("UTC").tz_localize(None)
    r = rows["r_net"].to_numpy(float)
    grid = pd.DatetimeIndex(np.unique(t.asi8))
    curves = {}
    for mode in modes:
        take = rows[f"taken_{mode}"].to_numpy(bool)
        name = f"{mode} (n={int(take.sum())})" + (" <- the band's size" if mode == primary else "")
        curves[name] = pd.Series(_cumulative(t[take], r[take], grid), grid)
    pool = rows[_POOL.get(primary, "placeable")].to_numpy(bool)
    codes, _ = pd.factorize(rows["market"])
    keep = np.bincount(codes[rows[f"taken_{primary}"].to_numpy(bool)], minlength=codes.max() + 1)
    masks = random_keep(pool, codes, keep, seeds=seeds, rng=np.random.default_rng(seed))
    ordered = np.argsort(t.asi8, kind="stable")
    pos = np.searchsorted(t.asi8[ordered], grid.asi8, side="right") - 1
    cum = np.cumsum(np.where(masks[:, ordered], r[ordered], 0.0), axis=1)[:, pos]
    band = pd.DataFrame({"p05": np.quantile(cum, 0.05, axis=0), "p95": np.quantile(cum, 0.95, axis=0)}, grid)
    return {"curves": curves, "band": band, "title": f"Cumulative R of the out-of-sample patterns each mode takes "
                                                     f"(pattern level), with the {primary} mode's random filter 5-95 %"}


def chart_data(vp: pd.DataFrame, vt: pd.DataFrame, pool: pd.DataFrame, frames: Mapping[str, pd.DataFrame],
               scores: Mapping, *, primary: str, modes: list[str], seeds: int = 200, seed: int = 0,
               calibration: dict | None = None) -> dict:
    """What :func:`qml_plugin.report.write_report` draws (its ``charts=``): keys ``equity`` (``curves``,
    ``band``, ``title``), ``r_by_mode``, ``calibration`` (``table``, ``ece``, ``ece_reference``) and
    ``gallery`` (``patterns``, ``frames``); a key without data is left out. ``calibration`` is the
    scheme's :func:`~qml_plugin.ml.calibration.calibration_report` when the caller has it (the chart's
    ECE is then the very figure the verdict section states); else it is computed here."""
    scheme = "pooled" if "pooled" in scores else next(iter(scores), None)
    if scheme is None:
        return {}
    out = {}
    eq = _equity(vp[vp["scheme"] == scheme], modes, primary, seeds, seed)
    if eq is not None:
        out["equity"] = eq
    tr = vt[vt["scheme"] == scheme]
    if len(tr):
        order = ["baseline", *modes]
        out["r_by_mode"] = {m: tr.loc[tr["mode"] == m, "r_net"].to_numpy(float) for m in order
                            if (tr["mode"] == m).any()}
    sc = scores[scheme]
    oos = sc.out_of_sample(pool["known_at_utc"])
    y, p = pool["label"].to_numpy(float), np.asarray(sc.proba, float)
    ok = oos & np.isfinite(y) & np.isfinite(p)
    if ok.sum() >= 20:
        cal = calibration if calibration and calibration.get("n") == int(ok.sum()) else calibration_report(y[ok], p[ok])
        out["calibration"] = {"table": calibration_table(y[ok], p[ok]), "ece": cal["ece"],
                              "ece_reference": cal["ece_calibrated_p95"]}
        out["gallery"] = {"patterns": pool[ok].assign(ml_confidence=p[ok]), "frames": dict(frames)}
    return out
