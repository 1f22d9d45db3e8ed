"""The prediction log of ``qml run`` (SPEC §5, §13): every out-of-sample score, written once by the driver.

A run scores patterns in two places, and both land in ``ml_predictions`` under the run's ``run_id``:

* **backtests** (the single-market job's mode backtests): the ML mixin leaves its scoring events on
  the strategy (``stats._strategy.predictions``, :meth:`qml_plugin.scoring.Scorer.prediction_frame`);
  the registry mixin writes them with its registrations, or, when the run registers nothing,
  :func:`log_backtest_predictions` writes them in one batch;
* **walk-forward schemes** (the universe job): :func:`scheme_predictions` turns each scheme's
  out-of-sample scores into one row per scored pattern and mode, with the model version that scored
  it (each version recorded in ``ml_model_versions`` as ``archived``, named
  ``universe_<scheme>_<group>``, or ``universe_<scheme>_<group>_regime_<name>`` for a regime model,
  SPEC §13: the version that actually scored the pattern), its three heads (``ml_confidence``,
  ``expected_r``, ``stop_risk``), the decision the mode took (``take`` / ``skip``; a pattern whose
  levels cannot be placed is ``skip``) and its top five contributions. :func:`log_predictions` writes
  every scheme's rows in one transaction. Workers never write: they return models and scores, and
  the contributions are computed here, one ``explain`` batch per model over the rows it scored.

The same batches give the report its **mean |contribution|** per feature (:func:`mean_abs_contribution`),
shown beside XGBoost's gain importance. Outcomes are not copied: they join from
``ml_pattern_registry`` when a pattern resolves (``PatternRegistry.prediction_performance``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..filter import decide
from ..ml.drift import load_registered, to_timestamp
from ..ml.guard import admissible_model
from ..ml.versions import record_version
from ..ml.walkforward import route_models
from ..registry import PatternRegistry
from ..registry.predictions import top_contributions
from ..scoring import PREDICTION_COLUMNS, explain_rows
from ..tradesim import levels_placeable

__all__ = ["PredictionBatch", "scheme_predictions", "log_predictions", "log_backtest_predictions",
           "log_shadow_predictions", "mean_abs_contribution"]


@dataclass
class PredictionBatch:
    """Rows for ``log_predictions`` and what they cost: ``frame`` (``PREDICTION_COLUMNS``),
    ``abs_sum`` / ``n`` (sum of |contribution| per feature over the scored patterns, and how many)."""

    frame: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(PREDICTION_COLUMNS)))
    abs_sum: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))
    n: int = 0
    seconds: float = 0.0
    results: list = field(default_factory=list, repr=False)   # the scheme's fit_group results (models)

    @property
    def mean_abs(self) -> pd.Series:
        """Mean |contribution| per feature (log-odds of ``ml_confidence``), largest first."""
        if not self.n:
            return pd.Series(dtype=float, name="mean_abs_contribution")
        return (self.abs_sum / self.n).sort_values(ascending=False, kind="stable").rename("mean_abs_contribution")


def _explain(model, X) -> tuple[list[str | None], pd.Series]:
    """Top-5 JSON per row and the sum of |contribution| per feature: one ``explain`` batch. ``X`` is a
    frame, or an array already in the model's feature order (one conversion per group, not per model)."""
    contrib = model.explain(X) if isinstance(X, np.ndarray) else explain_rows(model, X)
    return top_contributions(contrib), pd.Series(np.abs(contrib.to_numpy()[:, :-1]).sum(axis=0),
                                                 index=contrib.columns[:-1])


def _as_array(X: pd.DataFrame, models: list) -> tuple[list[str] | None, np.ndarray | None]:
    names = models[0].feature_names if models else None
    if names is None or any(m.feature_names != names for m in models) or not set(names) <= set(X.columns):
        return None, None
    return names, X[names].to_numpy(dtype=np.float64, na_value=np.nan)


def mean_abs_contribution(models: list, X: pd.DataFrame, which: np.ndarray) -> pd.Series:
    """Mean |contribution| per feature over the rows of ``X`` each scored by ``models[which[i]]``
    (-1: unscored, left out), one ``explain`` batch per model; largest first."""
    batch = PredictionBatch()
    for k, model in enumerate(models):
        rows = np.flatnonzero(np.asarray(which) == k)
        if len(rows):
            _, s = _explain(model, X.iloc[rows])
            batch.abs_sum = batch.abs_sum.add(s, fill_value=0.0)
            batch.n += len(rows)
    return batch.mean_abs


def scheme_predictions(scheme: str, pool: pd.DataFrame, groups: list, results: list, *, proba: np.ndarray,
                       expected_r: np.ndarray | None, rule: dict, modes, reg: PatternRegistry,
                       run_id: str, stop_risk: np.ndarray | None = None) -> PredictionBatch:
    """One scheme's scoring events (see the module docstring) for :func:`log_predictions`.

    ``groups`` / ``results`` are the scheme's :func:`.schemes.group_tasks` and :func:`.schemes.fit_group`
    outputs (their models saved by :func:`.schemes.collect_scheme`, whose paths are recorded here as
    versions; each result's ``which`` names the model that scored each row, a regime model's where
    one did); ``proba`` / ``expected_r`` / ``stop_risk`` the scheme's scores over the pool; ``rule``
    the decision rule (``min_score``, ``ml_weight``, ``confidence_threshold``, ``min_expected_r``).
    """
    t0 = time.perf_counter()
    n = len(pool)
    model_of = np.full(n, None, dtype=object)
    top = np.full(n, None, dtype=object)
    batch = PredictionBatch(results=list(results))
    for (group, rows, task), res in zip(groups, results, strict=True):
        if res is None:
            continue
        family = res.get("family") or ["pooled"] * len(res["models"])
        which = res.get("which")
        if which is None:                  # the routing fit_group used (regime models where they scored)
            which = route_models(task["known_score"], res["models"], family, task.get("regimes_score"),
                                 embargo=task["embargo"])
        paths = res.get("paths") or [None] * len(res["models"])
        _, arr = _as_array(task["X_score"], res["models"])
        for k, (model, path, fam) in enumerate(zip(res["models"], paths, family, strict=True)):
            hit = np.flatnonzero(which == k)
            if not len(hit):
                continue
            name = f"universe_{scheme}_{group}" + ("" if fam == "pooled" else f"_regime_{fam}")
            what = "walk-forward model" if fam == "pooled" else f"walk-forward model of regime {fam}"
            mid = (record_version(reg, model, path, model_name=name, status="archived",
                                  notes=f"qml run {run_id}: {scheme} {what} of {group}")
                   if path is not None else None)
            if mid is None:
                from ..scoring import model_id_of

                mid = model_id_of(model)
            js, s = _explain(model, arr[hit] if arr is not None else task["X_score"].iloc[hit])
            model_of[rows[hit]] = mid
            top[rows[hit]] = js
            batch.abs_sum = batch.abs_sum.add(s, fill_value=0.0)
            batch.n += len(hit)
    scored = np.flatnonzero(model_of != None)  # noqa: E711 - an object array: elementwise
    if not len(scored):
        batch.seconds = time.perf_counter() - t0
        return batch
    v = pool["validity_score"].to_numpy(float)
    placeable = levels_placeable(*(pool[k].to_numpy() for k in ("direction", "entry", "stop", "target")))
    er = expected_r if expected_r is not None else np.full(n, np.nan)
    sr = stop_risk if stop_risk is not None else np.full(n, np.nan)
    ids = pool["pattern_id"].astype(str).to_numpy()
    parts = []
    for mode in modes:
        take, _ = decide(v, proba, mode=mode, min_score=rule["min_score"], ml_weight=rule["ml_weight"],
                         confidence_threshold=rule["confidence_threshold"], expected_r=er,
                         min_expected_r=rule.get("min_expected_r", 0.0))
        take = take & placeable
        parts.append(pd.DataFrame({"pattern_id": ids[scored], "model_id": model_of[scored], "mode": mode,
                                   "ml_confidence": proba[scored], "expected_r": er[scored], "stop_risk": sr[scored],
                                   "decision": np.where(take[scored], "take", "skip"), "acting": True,
                                   "contributions": top[scored]}))
    batch.frame = pd.concat(parts, ignore_index=True)[list(PREDICTION_COLUMNS)]
    batch.seconds = time.perf_counter() - t0
    return batch


def log_predictions(db: str, batches: list[PredictionBatch], *, run_id: str) -> int:
    """Write every batch's rows in one transaction under ``run_id``; return the rows written."""
    frames = [b.frame for b in batches if len(b.frame)]
    if not frames:
        return 0
    with PatternRegistry(db) as reg:
        return reg.log_predictions(pd.concat(frames, ignore_index=True), run_id=run_id)


def log_backtest_predictions(db: str | Path, stats: list[pd.Series], *, run_id: str) -> int:
    """Write the scoring events of backtests that wrote nothing themselves (``register_patterns`` off)
    in one batch under ``run_id``: each ``stats._strategy.predictions``."""
    frames = [f for s in stats if (f := getattr(s._strategy, "predictions", None)) is not None and len(f)]
    if not frames:
        return 0
    with PatternRegistry(str(db)) as reg:
        return reg.log_predictions(pd.concat(frames, ignore_index=True), run_id=run_id)


def log_shadow_predictions(db: str, model_name: str, X: pd.DataFrame, patterns: pd.DataFrame, *, mode: str,
                           rule: dict, run_id: str, statuses: tuple[str, ...] = ("canary", "shadow")) -> int:
    """What each canary / shadow version of ``model_name`` predicted for ``patterns`` (rows of ``X``),
    logged with ``acting`` False and the decision ``mode`` would have taken on its scores; only the
    patterns detected after its training data's last exit (the out-of-sample guard). One batch."""
    with PatternRegistry(db) as reg:
        rows = [v for v in reg.list_model_versions(model_name) if v["status"] in statuses]
        if not rows:
            return 0
        det = pd.DatetimeIndex(patterns["detection_time"])
        v = patterns["validity_score"].to_numpy(float)
        ids = patterns["pattern_id"].astype(str).to_numpy()
        parts = []
        for row in rows:
            model = load_registered(row)
            end = to_timestamp(row["trained_on_end"]) or model.trained_on_end_
            hit = np.flatnonzero(admissible_model(det, [end]) == 0)
            if not len(hit):
                continue
            Xh = X.iloc[hit]
            heads = model.predict_heads(Xh)
            er = heads.get("expected_r", np.full(len(hit), np.nan))
            take, _ = decide(v[hit], heads["confidence"], mode=mode, expected_r=er, **rule)
            parts.append(pd.DataFrame({"pattern_id": ids[hit], "model_id": row["model_id"], "mode": mode,
                                       "ml_confidence": heads["confidence"], "expected_r": er,
                                       "stop_risk": heads.get("stop_risk", np.full(len(hit), np.nan)),
                                       "decision": np.where(take, "take", "skip"), "acting": False,
                                       "contributions": top_contributions(model.explain(Xh))}))
        if not parts:
            return 0
        return reg.log_predictions(pd.concat(parts, ignore_index=True), run_id=run_id)
