"""Has the market moved away from what the model learned? Feature and score drift, with an honest flag.

A model is trained on one window of patterns (the *reference*). When the patterns it now scores (the
*recent* window) come from a different distribution, its ``ml_confidence`` may no longer mean what
it meant. This module measures that, per feature and for the model's score, and turns 170+ noisy
per-feature tests into one flag that rarely fires by chance:

- **PSI** (population stability index), per feature: the reference's quantiles cut ``bins`` bins
  (about equally full in the reference), plus one bin for NaN; ``PSI = sum (r - e) * ln(r / e)``
  over the bins, with ``e`` / ``r`` the reference / recent shares (an empty bin counts as ``eps``).
  Rule of thumb: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 large shift. A mean shift of ``d``
  standard deviations of a normal feature gives PSI ~ ``d**2`` (0.5 sd -> ~0.22 with 10 bins). A
  constant feature has one occupied bin: PSI 0 unless the recent values leave it.
- **KS** (two-sample Kolmogorov-Smirnov) per feature, NaN left out: ``scipy.stats.ks_2samp``'s
  statistic with Smirnov's limiting p-value (a little conservative), for all columns at once (one
  sort of the pooled matrix) instead of 170 calls.
- **Multiple testing**: with 170 features, ~8 KS p-values fall below 0.05 by chance alone. The
  p-values are adjusted with Benjamini-Hochberg (``scipy.stats.false_discovery_control``); a
  feature *drifts* only when its BH-adjusted p-value is <= ``ks_alpha`` **and** its PSI is above
  ``psi_threshold`` (statistically real and large enough to matter: with thousands of patterns KS
  finds shifts too small to care about, with a few dozen PSI is noisy).
- **Score drift**: the PSI of the model's ``ml_confidence`` on the recent patterns against a stored
  reference histogram (:func:`score_reference`, built from the model's out-of-sample holdout
  scores: in-sample scores of a boosted model are more extreme and would look like drift).

The model is **flagged** when at least ``min_drifting_features`` features drift, or the score PSI
exceeds ``score_psi_threshold``. The report lists features drifting first, then by PSI (largest
shift first): PSI is the effect size, the BH test only decides whether it counts.

Defaults (:class:`DriftThresholds`, also the ``learn:`` config defaults): ``psi_threshold=0.1``,
``ks_alpha=0.05``, ``min_drifting_features=3``, ``score_psi_threshold=0.2``, 10 bins. Measured on
170 standard-normal features, 2000 reference vs 1000 recent rows, 100 seeds each
(``tests/test_drift.py`` asserts the first and last): a shift in 3 features of 0.5 sd is flagged in
100 of 100 seeds, of 0.4 sd in 99, of 0.3 sd in 12 (its PSI, ~0.09, is under the threshold), the
3 shifted features on top every time; with no shift the flag fired in 0 of 100 (no feature drifted
in any seed; per-feature PSI under no shift is ~0.015 on average). One check takes ~70 ms.

The statistics above take plain frames. :func:`check_model_drift` applies them to a registered
model: its training window against the newest patterns detected after it, read from the registry.
Acting on the flag (retrain, gate, promote) is :mod:`.lifecycle`'s job.

    >>> rng = np.random.default_rng(0)
    >>> X_train = pd.DataFrame(rng.normal(size=(2000, 20)), columns=[f"ctx_{i}" for i in range(20)])
    >>> X_recent = pd.DataFrame(rng.normal(size=(1000, 20)), columns=X_train.columns)
    >>> X_recent[["ctx_0", "ctx_1", "ctx_2"]] += 0.6                 # three features moved by 0.6 sd
    >>> report = detect_drift(X_train, X_recent, thresholds=DriftThresholds(psi_threshold=0.1))
    >>> report.flagged, sorted(report.top(3).index)
    (True, ['ctx_0', 'ctx_1', 'ctx_2'])
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import ModelError
from ..registry import PatternRegistry
from ..registry.connection import utc_now
from .metrics import json_safe
from .model import SignalQualityModel

__all__ = ["DriftThresholds", "DriftReport", "detect_drift", "population_stability_index", "bin_edges",
           "bin_shares", "ks_two_sample", "score_reference", "score_psi", "PSI_EPS", "check_model_drift",
           "load_registered", "to_timestamp", "drift_state_file", "last_drift", "MIN_DRIFT_ROWS"]

PSI_EPS = 1e-4
"""Share given to an empty bin so ``ln(r / e)`` stays finite: ``np.maximum(shares, PSI_EPS)``."""


@dataclass(frozen=True)
class DriftThresholds:
    """When a feature drifts and when the model is flagged (the ``learn:`` config section).

    ``DriftThresholds.from_config(load_config(path)["learn"])`` reads them from a run config.
    """

    psi_threshold: float = 0.1
    ks_alpha: float = 0.05
    min_drifting_features: int = 3
    score_psi_threshold: float = 0.2
    bins: int = 10

    @classmethod
    def from_config(cls, learn: dict[str, Any]) -> DriftThresholds:
        """The thresholds of a validated ``learn:`` block (keys it lacks keep their defaults)."""
        keys = {"psi_threshold", "ks_alpha", "min_drifting_features", "score_psi_threshold"}
        kw = {k: learn[k] for k in keys if k in learn}
        if "psi_bins" in learn:
            kw["bins"] = learn["psi_bins"]
        return cls(**kw)


@dataclass
class DriftReport:
    """Per-feature drift (``features``), score drift and the model-level flag with its reasons.

    ``features`` has one row per feature: ``psi``, ``ks_stat``, ``ks_pvalue``, ``ks_qvalue``
    (Benjamini-Hochberg adjusted), ``drifting``; sorted drifting first, then by ``psi`` descending.
    """

    features: pd.DataFrame
    flagged: bool
    reasons: list[str]
    n_reference: int
    n_recent: int
    thresholds: DriftThresholds
    score_psi: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def drifting(self) -> list[str]:
        """Names of the features that count as drifting."""
        return self.features.index[self.features["drifting"].to_numpy(bool)].tolist()

    def top(self, n: int = 10) -> pd.DataFrame:
        """The ``n`` most drifting features (drifting first, then largest PSI)."""
        return self.features.head(n)

    def to_dict(self, top: int = 10) -> dict[str, Any]:
        """A JSON-friendly summary (what ``ml_eval_history.drift`` stores)."""
        rows = self.top(top)
        return {"flagged": bool(self.flagged), "reasons": list(self.reasons),
                "n_features": int(len(self.features)), "n_drifting": int(self.features["drifting"].sum()),
                "n_reference": int(self.n_reference), "n_recent": int(self.n_recent),
                "score_psi": None if self.score_psi is None else float(self.score_psi),
                "thresholds": asdict(self.thresholds), **self.extra,
                "top_features": [{"feature": str(k), "psi": _num(r.psi), "ks_stat": _num(r.ks_stat),
                                  "ks_qvalue": _num(r.ks_qvalue), "drifting": bool(r.drifting)}
                                 for k, r in rows.iterrows()]}

    def summary(self, top: int = 10) -> str:
        """A few lines for the terminal."""
        head = (f"drift: {'FLAGGED' if self.flagged else 'not flagged'} - {len(self.drifting)} of "
                f"{len(self.features)} features drifting (BH q <= {self.thresholds.ks_alpha:g} and PSI > "
                f"{self.thresholds.psi_threshold:g}); score PSI "
                f"{'n/a' if self.score_psi is None else f'{self.score_psi:.3f}'}; "
                f"{self.n_reference} reference vs {self.n_recent} recent patterns")
        lines = [head] + [f"  {r}" for r in self.reasons]
        if len(self.features):
            lines.append(f"  top {min(top, len(self.features))} features (drifting first, then by PSI):")
            for name, r in self.top(top).iterrows():
                lines.append(f"    {'*' if r.drifting else ' '} {name:<32} PSI {r.psi:7.3f}  KS {r.ks_stat:.3f}"
                             f"  q {r.ks_qvalue:.2g}")
        return "\n".join(lines)


def _num(v: Any) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


def _matrix(x: Any) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    return arr[:, None] if arr.ndim == 1 else arr


def bin_edges(reference: Any, *, bins: int = 10) -> np.ndarray:
    """Inner quantile edges of each column of ``reference``: shape ``(bins - 1, n_features)``.

    numpy's default (linear) quantiles of the non-NaN values, computed for all columns from one
    sort; an all-NaN column gets NaN edges (its values all land in the first bin).
    """
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    ref = _matrix(reference).T                          # one row per feature: rows sort fast
    ordered = np.sort(ref, axis=1)                      # NaN last
    n = (~np.isnan(ref)).sum(axis=1)
    pos = np.linspace(0.0, 1.0, bins + 1)[None, 1:-1] * np.maximum(n - 1, 0)[:, None]
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0)[:, None])
    if ordered.shape[1] == 0:
        return np.full((bins - 1, ref.shape[0]), np.nan)
    v_lo, v_hi = np.take_along_axis(ordered, lo, axis=1), np.take_along_axis(ordered, hi, axis=1)
    edges = np.where(v_lo == v_hi, v_lo, v_lo + (pos - lo) * (v_hi - v_lo))
    edges[n == 0] = np.nan
    return edges.T


def bin_shares(x: Any, edges: np.ndarray, *, eps: float = PSI_EPS) -> np.ndarray:
    """Share of the rows of ``x`` in each bin, per column: shape ``(n_features, bins + 1)``.

    Bin ``k`` holds values with exactly ``k`` edges strictly below them (a value on an edge goes to
    the lower bin, so repeated edges of a discrete feature leave empty bins on both sides); the last
    bin holds NaN. Shares below ``eps`` are raised to ``eps``.
    """
    arr = _matrix(x)
    edges = np.asarray(edges, dtype=np.float64).reshape(-1, arr.shape[1])
    n_bins = edges.shape[0] + 1
    which = np.zeros(arr.shape, dtype=np.int64)
    for edge in edges:                                   # a loop over bins, never over features
        which += arr > edge
    which[np.isnan(arr)] = n_bins
    offsets = np.arange(arr.shape[1]) * (n_bins + 1)
    counts = np.bincount((which + offsets).ravel(), minlength=arr.shape[1] * (n_bins + 1))
    shares = counts.reshape(arr.shape[1], n_bins + 1) / max(len(arr), 1)
    return np.maximum(shares, eps)


def _psi(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    return ((actual - expected) * np.log(actual / expected)).sum(axis=-1)


def population_stability_index(reference: Any, recent: Any, *, bins: int = 10, eps: float = PSI_EPS) -> np.ndarray:
    """PSI of every column of ``recent`` against ``reference`` (quantile bins of the reference + NaN bin).

        >>> rng = np.random.default_rng(0)
        >>> psi = population_stability_index(rng.normal(size=(2000, 2)), rng.normal([0, 0.5], 1, (1000, 2)))
        >>> bool(psi[0] < 0.05), bool(psi[1] > 0.1)         # unchanged, shifted by 0.5 sd
        (True, True)
    """
    edges = bin_edges(reference, bins=bins)
    return _psi(bin_shares(reference, edges, eps=eps), bin_shares(recent, edges, eps=eps))


def ks_two_sample(reference: Any, recent: Any) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided two-sample KS statistic and asymptotic p-value of every column (NaN left out).

    The statistic equals ``scipy.stats.ks_2samp``'s. The p-value is Smirnov's limiting
    distribution ``kstwobign.sf(D * sqrt(n1 n2 / (n1 + n2)))``, vectorized; it is slightly larger
    (more conservative) than ``ks_2samp(method="asymp")``, which evaluates a finite-n distribution
    one column at a time. A column with no values on one side gets statistic 0 and p-value 1.
    """
    a, b = _matrix(reference).T, _matrix(recent).T     # one row per feature: rows sort fast
    na, nb = (~np.isnan(a)).sum(axis=1, keepdims=True), (~np.isnan(b)).sum(axis=1, keepdims=True)
    pooled = np.concatenate([a, b], axis=1)
    order = np.argsort(pooled, axis=1)                   # NaN sorts last; ties need no stable order
    values = np.take_along_axis(pooled, order, axis=1)
    from_a = order < a.shape[1]
    seen_a, seen_b = np.cumsum(from_a, axis=1), np.cumsum(~from_a, axis=1)   # integer counts: exact ECDFs
    last_of_tie = np.ones(values.shape, dtype=bool)      # compare the ECDFs after each distinct value
    last_of_tie[:, :-1] = values[:, 1:] != values[:, :-1]
    valid = last_of_tie & ~np.isnan(values)
    ok = ((na > 0) & (nb > 0))[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.abs(seen_a / na - seen_b / nb)
    d = np.where(valid & ok[:, None], gap, 0.0).max(axis=1, initial=0.0).clip(0.0, 1.0)
    n1, n2 = na[:, 0].astype(np.float64), nb[:, 0].astype(np.float64)
    en = np.where(ok, n1 * n2 / np.maximum(n1 + n2, 1.0), 1.0)
    p = np.where(ok, stats.kstwobign.sf(d * np.sqrt(en)), 1.0).clip(0.0, 1.0)
    return d, p


def score_reference(scores: Any, *, bins: int = 10) -> dict[str, list[float]]:
    """The histogram of reference scores that :func:`score_psi` compares with (JSON-friendly).

    Store it with the model (e.g. built from its holdout ``ml_confidence``): ``{"edges", "shares"}``.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    edges = bin_edges(s, bins=bins)
    return {"edges": edges[:, 0].tolist(), "shares": bin_shares(s, edges)[0].tolist(), "n": int(len(s))}


def score_psi(reference: dict[str, Any], recent_scores: Any) -> float:
    """PSI of ``recent_scores`` against a :func:`score_reference` histogram."""
    edges = np.asarray(reference["edges"], dtype=np.float64).reshape(-1, 1)
    shares = np.maximum(np.asarray(reference["shares"], dtype=np.float64), PSI_EPS)
    recent = bin_shares(np.asarray(recent_scores, dtype=np.float64).reshape(-1, 1), edges)[0]
    return float(_psi(shares, recent))


def detect_drift(reference: pd.DataFrame, recent: pd.DataFrame, *, thresholds: DriftThresholds | None = None,
                 score_ref: dict[str, Any] | None = None, recent_scores: Any = None) -> DriftReport:
    """Compare the ``recent`` patterns' features (and scores) with the ``reference`` window.

    Features are ``reference``'s columns; one that ``recent`` lacks is all NaN there (so a
    feature that disappeared shows as drift). ``score_ref`` (from :func:`score_reference`) and
    ``recent_scores`` (the model's ``ml_confidence`` on ``recent``) add score drift.
    """
    th = thresholds or DriftThresholds()
    columns = pd.Index(reference.columns)
    ref = reference.to_numpy(dtype=np.float64, na_value=np.nan)
    rec = recent.reindex(columns=columns).to_numpy(dtype=np.float64, na_value=np.nan)
    psi = population_stability_index(ref, rec, bins=th.bins)
    ks_stat, ks_p = ks_two_sample(ref, rec)
    q = stats.false_discovery_control(ks_p, method="bh") if len(ks_p) else ks_p
    drifting = (q <= th.ks_alpha) & (psi > th.psi_threshold)
    table = pd.DataFrame({"psi": psi, "ks_stat": ks_stat, "ks_pvalue": ks_p, "ks_qvalue": q, "drifting": drifting},
                         index=columns.astype(str))
    table.index.name = "feature"
    table = table.sort_values(["drifting", "psi"], ascending=[False, False], kind="stable")
    s_psi = None
    if score_ref is not None and recent_scores is not None and len(np.asarray(recent_scores)):
        s_psi = score_psi(score_ref, recent_scores)
    reasons = []
    n_drift = int(drifting.sum())
    if n_drift >= th.min_drifting_features:
        reasons.append(f"{n_drift} features drift (>= min_drifting_features {th.min_drifting_features}): "
                       + ", ".join(table.index[:min(n_drift, 5)]) + (" ..." if n_drift > 5 else ""))
    if s_psi is not None and s_psi > th.score_psi_threshold:
        reasons.append(f"score PSI {s_psi:.3f} > score_psi_threshold {th.score_psi_threshold:g}")
    return DriftReport(table, bool(reasons), reasons, len(ref), len(rec), th, s_psi)


# -- drift of a registered model (reads the registry) ------------------------------------------------
MIN_DRIFT_ROWS = 10
"""Fewer reference or recent patterns than this: no drift verdict (too little to compare)."""


def to_timestamp(value: Any) -> pd.Timestamp | None:
    """A registry time (ISO text, maybe with ``Z``) as a naive-UTC timestamp; None stays None."""
    if value is None or value is pd.NaT:
        return None
    t = pd.Timestamp(value)
    return t.tz_convert("UTC").tz_localize(None) if t.tzinfo is not None else t


def load_registered(row: dict[str, Any]) -> SignalQualityModel:
    """Load a registered version's model (``model_path``); its sha256 must match the registry's record."""
    if not row.get("model_path"):
        raise ModelError(f"model version {row['model_id']!r} has no model_path: it cannot be loaded")
    model = SignalQualityModel.load(row["model_path"])
    if row.get("model_sha256") and model.metadata_["model_sha256"] != row["model_sha256"]:
        raise ModelError(f"{row['model_path']}: model sha256 {model.metadata_['model_sha256']} differs from the "
                         f"registry's {row['model_sha256']} for {row['model_id']!r}; the folder was replaced")
    return model


def drift_state_file(models_dir: str | os.PathLike[str], model_name: str) -> Path:
    """Where the last drift check of ``model_name`` is kept: ``<models_dir>/last_drift_<name>.json``."""
    return Path(models_dir) / f"last_drift_{model_name}.json"


def check_model_drift(reg: PatternRegistry, model_name: str, *, thresholds: DriftThresholds | None = None,
                      recent_patterns: int = 300, save_to: str | os.PathLike[str] | None = None) -> DriftReport | None:
    """Drift of the recent patterns against the production model's training window (None: no production).

    Reference = labeled patterns detected in ``[trained_on_start, trained_on_end)`` whose label was
    known by ``trained_on_end`` (the model's training rows); recent = the newest ``recent_patterns``
    patterns detected after ``trained_on_end``. Score drift uses the ``score_reference`` stored in
    the version's metrics (its out-of-sample holdout scores); without one, feature drift only.
    ``save_to``: a JSON file that keeps this result (see :func:`drift_state_file`).
    """
    th = thresholds or DriftThresholds()
    prod = reg.production_model(model_name)
    if prod is None:
        return None
    model = load_registered(prod)
    start, end = to_timestamp(prod["trained_on_start"]), to_timestamp(prod["trained_on_end"] or model.trained_on_end_)
    ref, _ = reg.get_training_data(min_labels=0, start=start, end=end)
    if end is not None:
        ref = ref[ref.index.get_level_values("exit_time") <= end]
    recent = reg.get_recent_features(end, recent_patterns)
    if min(len(ref), len(recent)) < MIN_DRIFT_ROWS:
        empty = pd.DataFrame({"psi": [], "ks_stat": [], "ks_pvalue": [], "ks_qvalue": [], "drifting": []})
        report = DriftReport(empty.astype({"drifting": bool}), False,
                             [f"not enough patterns to compare: {len(ref)} in the training window, {len(recent)} "
                              f"detected after {end} (need {MIN_DRIFT_ROWS} each)"], len(ref), len(recent), th)
    else:
        scores = model.predict_proba(recent.reindex(columns=model.feature_names))[:, 1]
        report = detect_drift(ref[[c for c in model.feature_names if c in ref.columns]], recent, thresholds=th,
                              score_ref=(prod.get("metrics") or {}).get("score_reference"), recent_scores=scores)
    times = recent.index.get_level_values("detection_time")
    report.extra = {"production_version": prod["version"], "recent_from": times.min() if len(times) else None,
                    "recent_to": times.max() if len(times) else None}
    if save_to is not None:
        path = Path(save_to)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(json_safe({"checked_at": utc_now(), "db": reg.path, **report.to_dict()}), indent=1))
        os.replace(tmp, path)
    return report


def last_drift(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The drift check saved by :func:`check_model_drift` at ``path``, or None."""
    p = Path(path)
    return json.loads(p.read_text()) if p.is_file() else None
