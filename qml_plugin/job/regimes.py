"""Regime models beside the pooled one (SPEC §13, ``ml.regime_models: true``): did they gain, out of sample?

The walk-forward trainer (:func:`qml_plugin.ml.walkforward.train_walk_forward`, ``regimes=``) trains,
at each step, the pooled model and one model per regime with at least ``ml.min_regime_labels``
labels; :func:`qml_plugin.ml.walkforward.route_models` sends a pattern of such a regime to its
regime's latest admissible model, every other pattern to the pooled one. The same routing with no
regimes gives the **pooled models alone** (same guard, same embargo), and this module compares the two:

* the table (:attr:`RegimeComparison.table`): per regime, whether it had its own model (in a universe
  scheme with several groups, e.g. ``per_market``: in how many of the groups that trained), how many
  versions, how many out-of-sample patterns with a known outcome, how many of them a regime model
  actually scored, and the AUC of the scores used beside the pooled-only AUC on the same patterns;
* the figure: AUC(used) - AUC(pooled only) over every scored pattern with a known outcome, with a
  95 % bootstrap CI over calendar-month blocks (patterns of one month are not independent). A CI
  that covers 0 reads "no gain beyond noise".

**One piece of code for both jobs.** :func:`compare_regime_scores` does the comparison from scores
alone; the single-market job calls it through :func:`compare_regime_models` (a walk-forward result,
months of the market's own clock), the universe through :func:`compare_scheme_regimes` (a scheme's
:class:`~.schemes.SchemeScores`, which keeps its pooled-only scores, months of the UTC instants
``known_at_utc``: one calendar across markets). Nothing is refitted here.

The bootstrap's AUCs are computed all at once: resampling month blocks with replacement is the same
as weighting each pattern by how often its month was drawn, and a weighted AUC is one sort and one
cumulative sum (:func:`weighted_auc`, equal to scikit-learn's ``roc_auc_score`` with unit weights,
ties counting one half), so 1,000 resamples cost one matrix pass instead of 2,000 calls.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..ml.walkforward import route_models, score_by_model

__all__ = ["RegimeComparison", "compare_regime_models", "compare_regime_scores", "compare_scheme_regimes",
           "scheme_regime_sections", "weighted_auc"]


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


def weighted_auc(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AUC of scores ``p`` for 0/1 labels ``y`` under each row of weights ``w`` (shape ``(B, n)`` or ``(n,)``).

    P(score of a positive > score of a negative), ties counting 1/2, each pair weighted by the product
    of its weights; NaN where a row of weights leaves one class empty.
    """
    w = np.atleast_2d(np.asarray(w, dtype=float))
    order = np.argsort(p, kind="stable")
    ps, ys, ws = p[order], y[order], w[:, order]
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]]) if len(ps) else np.array([], int)
    pos = np.add.reduceat(ws * (ys == 1), starts, axis=1) if len(ps) else np.zeros((len(w), 0))
    neg = np.add.reduceat(ws * (ys == 0), starts, axis=1) if len(ps) else np.zeros((len(w), 0))
    below = np.cumsum(neg, axis=1) - neg                   # negatives strictly below each distinct score
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    return float(weighted_auc(y, p, np.ones(len(y)))[0]) if len(y) else float("nan")


def _months(times) -> np.ndarray:
    """Calendar month of each time (tz-aware instants are taken in UTC)."""
    t = pd.DatetimeIndex(times)
    if t.tz is not None:
        t = t.tz_convert("UTC").tz_localize(None)
    return t.to_period("M").asi8


def compare_regime_scores(y, used, pooled_only, times, regimes, *, by_regime_model, own: dict[str, str],
                          versions: dict[str, int], n_versions: int, n_boot: int = 1000,
                          seed: int = 0) -> RegimeComparison:
    """The comparison from scores alone: what both jobs call (module docstring).

    Rows aligned: ``y`` (0/1, NaN = unknown), ``used`` (the scores the run used: regime models where
    they scored), ``pooled_only`` (the pooled models' scores of the same rows), ``times`` (month
    blocks of the bootstrap), ``regimes`` (``regime_at_detection``) and ``by_regime_model`` (True
    where a regime model scored the row). ``own`` says per regime whether it had its own model
    (``"yes"``, ``"no (pooled)"``, ``"in 2 of 3 groups"``); ``versions`` counts each regime's model
    versions and ``n_versions`` all of them.
    """
    y = np.asarray(y, dtype=float)
    used, pooled_only = np.asarray(used, dtype=float), np.asarray(pooled_only, dtype=float)
    regime = pd.Series(regimes).reset_index(drop=True).to_numpy(dtype=object)
    by_own = np.asarray(by_regime_model, dtype=bool)
    ok = ~np.isnan(used) & ~np.isnan(pooled_only) & ~np.isnan(y)
    rows = []
    for name in sorted({r for r in regime if r is not None and r == r}):
        m = ok & (regime == name)
        rows.append({"regime": name, "own model": own.get(name, "no (pooled)"), "versions": versions.get(name, 0),
                     "oos patterns": int(m.sum()), "by own model": int((m & by_own).sum()),
                     "auc (used)": _auc(y[m], used[m]), "auc (pooled only)": _auc(y[m], pooled_only[m])})
    with_own = sorted(k for k, v in versions.items() if v > 0)
    rows.append({"regime": "all", "own model": f"{len(with_own)} of {len(rows)}", "versions": n_versions,
                 "oos patterns": int(ok.sum()), "by own model": int((ok & by_own).sum()),
                 "auc (used)": _auc(y[ok], used[ok]), "auc (pooled only)": _auc(y[ok], pooled_only[ok])})
    idx = np.flatnonzero(ok)
    _, block = np.unique(_months(pd.DatetimeIndex(times)[idx]), return_inverse=True)
    n_blocks = int(block.max()) + 1 if len(block) else 0
    ci = (np.nan, np.nan)
    if n_blocks > 1 and n_boot > 0:
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, n_blocks, (n_boot, n_blocks))
        counts = np.zeros((n_boot, n_blocks))
        np.add.at(counts, (np.repeat(np.arange(n_boot), n_blocks), draws.ravel()), 1.0)
        w = counts[:, block]                               # each pattern weighted by how often its month was drawn
        yy = y[idx]
        d = weighted_auc(yy, used[idx], w) - weighted_auc(yy, pooled_only[idx], w)
        d = d[~np.isnan(d)]
        if len(d):
            ci = (float(np.quantile(d, 0.025)), float(np.quantile(d, 0.975)))
    a_used, a_pooled = rows[-1]["auc (used)"], rows[-1]["auc (pooled only)"]
    return RegimeComparison(pd.DataFrame(rows), a_used, a_pooled, a_used - a_pooled, ci, int(ok.sum()), with_own)


def compare_regime_models(wf, X: pd.DataFrame, y, detection_times, regimes, *, embargo=None,
                          n_boot: int = 1000, seed: int = 0) -> RegimeComparison:
    """Compare ``wf``'s scores (regime models where it had them) with its pooled models' alone.

    ``wf`` is a :class:`~qml_plugin.ml.walkforward.WalkForwardResult` trained with ``regimes=`` on
    ``X`` (rows aligned with ``y``, ``detection_times`` and ``regimes``) and ``embargo``.
    """
    family = list(wf.model_family or ["pooled"] * len(wf.models))
    which = route_models(detection_times, wf.models, family, regimes, embargo=embargo)
    pooled = route_models(detection_times, wf.models, family, None, embargo=embargo)
    p_pooled = score_by_model(X.reset_index(drop=True), pooled, wf.models)["confidence"]
    fam = np.asarray(family, dtype=object)
    by_own = (which >= 0) & (fam[np.maximum(which, 0)] != "pooled")
    own = {r: "yes" for r in wf.regime_models}
    versions = {r: int((fam == r).sum()) for r in set(fam.tolist()) - {"pooled"}}
    return compare_regime_scores(y, wf.oos_proba.to_numpy(float), p_pooled, detection_times, regimes,
                                 by_regime_model=by_own, own=own, versions=versions, n_versions=len(wf.models),
                                 n_boot=n_boot, seed=seed)


def compare_scheme_regimes(sc, pool: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> RegimeComparison:
    """One universe scheme's regime models against its pooled models alone, on the UTC clock.

    ``sc`` is a :class:`~.schemes.SchemeScores` from regime-aware groups (its ``pooled_proba`` set);
    ``pool`` the pool its rows align with (``label``, ``known_at_utc``, ``regime_at_detection``).
    A regime "has its own model" when it did in every group that trained, "in k of n groups" when
    only in some (``per_market``: one walk-forward family per market).
    """
    if sc.pooled_proba is None:
        raise ValueError(f"scheme {sc.scheme!r} was scored without regime models (no pooled-only scores)")
    n_groups = len(sc.markets_trained)
    own = {r: "yes" if len(g) == n_groups else f"in {len(g)} of {n_groups} groups"
           for r, g in sc.regime_groups.items() if g}
    return compare_regime_scores(pool["label"].to_numpy(float), sc.proba, sc.pooled_proba, pool["known_at_utc"],
                                 pool["regime_at_detection"], by_regime_model=sc.scored_by_regime, own=own,
                                 versions=sc.regime_versions, n_versions=sc.fits, n_boot=n_boot, seed=seed)


def scheme_regime_sections(scores: dict, pool: pd.DataFrame, *, n_boot: int = 1000,
                           seed: int = 0) -> tuple[dict[str, RegimeComparison], list[str], list[tuple]]:
    """The universe run's regime output: per scheme scored with regime models, its comparison
    (:func:`compare_scheme_regimes`), a note line (``"Scheme <name>: <sentence>"``) and a report section
    ``(title, sentence, table)`` for :func:`qml_plugin.report.write_report`'s ``tables``."""
    out, notes, tables = {}, [], []
    for name, sc in scores.items():
        if sc.pooled_proba is None:
            continue                       # no group of this scheme trained (every market trades its baseline)
        rc = compare_scheme_regimes(sc, pool, n_boot=n_boot, seed=seed)
        out[name] = rc
        notes.append(f"Scheme {name}: {rc.sentence()}")
        tables.append((f"Regime models beside the pooled model: {name} scheme", rc.sentence(), rc.table))
    return out, notes, tables
