"""Regime models beside the pooled one (SPEC §13, ``ml.regime_models: true``): did they gain, out of sample?

The walk-forward trainer (:func:`qml_plugin.ml.walkforward.train_walk_forward`, ``regimes=``) trains,
at each step, the pooled model and one model per regime with at least ``ml.min_regime_labels``
labels; a pattern of such a regime is scored by its regime's latest admissible model. This module
scores the same patterns with the **pooled models alone** (same guard, same embargo) and compares:

* the table (:attr:`RegimeComparison.table`): per regime, whether it had its own model, how many
  versions, how many out-of-sample patterns with a known outcome, and the AUC of the scores used
  (regime models where they exist) beside the pooled-only AUC on the same patterns;
* the figure: AUC(used) - AUC(pooled only) over every scored pattern with a known outcome, with a
  95 % bootstrap CI over calendar-month blocks (patterns of one month are not independent). A CI
  that covers 0 reads "no gain beyond noise".

AUCs are scikit-learn's ``roc_auc_score``; the scores are the models' own, nothing is refitted here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from ..ml.guard import admissible_model
from ..ml.walkforward import score_by_model

__all__ = ["RegimeComparison", "compare_regime_models"]


@dataclass
class RegimeComparison:
    """Regime models against the pooled models on the same out-of-sample patterns (module docstring)."""

    table: pd.DataFrame
    auc_regime: float
    auc_pooled: float
    diff: float
    ci: tuple[float, float]
    n: int
    regimes: list[str]

    @property
    def gained(self) -> bool:
        """True when the whole 95 % CI of the AUC difference is above 0."""
        return bool(self.ci[0] > 0)

    def sentence(self) -> str:
        """The report's line: the figure, its CI, and what it means."""
        if not self.regimes:
            return ("Regime models: no regime reached ml.min_regime_labels labels at any step, so every pattern "
                    "was scored by the pooled model.")
        verdict = ("regime models gained over the pooled model" if self.gained else
                   "regime models did worse than the pooled model" if self.ci[1] < 0 else "no gain beyond noise")
        return (f"Regime models ({', '.join(self.regimes)}) against the pooled model alone, out of sample: AUC "
                f"{self.auc_regime:.3f} vs {self.auc_pooled:.3f} over {self.n:,} patterns with a known outcome, "
                f"difference {self.diff:+.3f} (95 % bootstrap CI over months {self.ci[0]:+.3f} to {self.ci[1]:+.3f}):"
                f" {verdict}.")


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def compare_regime_models(wf, X: pd.DataFrame, y, detection_times, regimes, *, embargo=None,
                          n_boot: int = 1000, seed: int = 0) -> RegimeComparison:
    """Compare ``wf``'s scores (regime models where it had them) with its pooled models' alone.

    ``wf`` is a :class:`~qml_plugin.ml.walkforward.WalkForwardResult` trained with ``regimes=`` on
    ``X`` (rows aligned with ``y``, ``detection_times`` and ``regimes``) and ``embargo``.
    """
    y = np.asarray(y, dtype=float)
    det = pd.DatetimeIndex(detection_times)
    regime = pd.Series(regimes).reset_index(drop=True).to_numpy(dtype=object)
    family = np.asarray(wf.model_family or ["pooled"] * len(wf.models), dtype=object)
    pooled = [m for m, f in zip(wf.models, family, strict=True) if f == "pooled"]
    which = admissible_model(det, [m.trained_on_end_ for m in pooled], embargo=embargo)
    p_pooled = score_by_model(X.reset_index(drop=True), which, pooled)["confidence"]
    p_used = wf.oos_proba.to_numpy(float)
    ok = ~np.isnan(p_used) & ~np.isnan(p_pooled) & ~np.isnan(y)
    own = set(wf.regime_models)
    rows = []
    for name in sorted({r for r in regime if r is not None and r == r}):
        m = ok & (regime == name)
        rows.append({"regime": name, "own model": "yes" if name in own else "no (pooled)",
                     "versions": int((family == name).sum()), "oos patterns": int(m.sum()),
                     "auc (used)": _auc(y[m], p_used[m]), "auc (pooled only)": _auc(y[m], p_pooled[m])})
    rows.append({"regime": "all", "own model": f"{len(own)} of {len(rows)}", "versions": len(wf.models),
                 "oos patterns": int(ok.sum()), "auc (used)": _auc(y[ok], p_used[ok]),
                 "auc (pooled only)": _auc(y[ok], p_pooled[ok])})
    idx = np.flatnonzero(ok)
    months = det[idx].to_period("M").asi8
    blocks = [idx[months == mth] for mth in np.unique(months)]
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot if len(blocks) > 1 else 0):
        pick = np.concatenate([blocks[k] for k in rng.integers(0, len(blocks), len(blocks))])
        d = _auc(y[pick], p_used[pick]) - _auc(y[pick], p_pooled[pick])
        if d == d:
            diffs.append(d)
    a_used, a_pooled = rows[-1]["auc (used)"], rows[-1]["auc (pooled only)"]
    ci = (float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))) if diffs else (np.nan, np.nan)
    return RegimeComparison(pd.DataFrame(rows), a_used, a_pooled, a_used - a_pooled, ci, int(ok.sum()),
                            sorted(own))
