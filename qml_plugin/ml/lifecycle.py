"""The model lifecycle (SPEC §8): drift check, retrain on a purged holdout, promotion gates, rollback.

One *cycle* (:func:`run_cycle`) answers "should the model that trades now be replaced?", on the record:

1. **Drift** (:func:`check_drift`, statistics in :mod:`.drift`): the production model's training
   window against the newest ``recent_patterns`` patterns detected after it.
2. **Retrain** (:func:`retrain`) when drift is flagged, when there is no production model yet, or
   when forced. The newest ``holdout_fraction`` of labeled patterns (by detection time) is held out;
   the candidate trains only on rows whose label was known (exit time) before the holdout starts
   (**purged**); it is saved (XGBoost JSON, sha256) and registered as ``staging``.
3. **Gate** (:func:`gate`): candidate and production are scored on the holdout rows detected after
   *both* models' training data ended, ``max(trained_on_end)`` (production may have been trained
   past the holdout start, e.g. after ``refit_after_promotion``; rows it saw are left out, and with
   fewer than ``min_holdout_samples`` left the candidate is rejected: they cannot be compared).
   Promote when ``training_samples >= min_samples``, candidate AUC >= production AUC +
   ``min_auc_improvement`` and candidate Brier <= production Brier. With no production model yet:
   ``min_samples`` and a holdout AUC above 0.5 (better than chance).
4. **Record**: ``promote`` / ``reject`` goes to ``ml_eval_history`` (metrics, drift, reasons in
   ``notes``). A promotion archives the old production version and sets the new one in **one**
   ``BEGIN IMMEDIATE`` transaction that first checks that production is still the version the gate
   compared against: two racing cycles leave exactly one ``production``, the slower one is rejected
   ("production changed during evaluation"). Rejected candidates become ``failed`` (kept for the
   audit trail). With ``refit_after_promotion`` a refit on all labeled data becomes production.

:func:`rollback` restores the version that was production before the current one (replaying the
``promote`` / ``rollback`` history, so two rollbacks walk back two steps). ``shadow`` / ``canary``
candidates never act; :func:`shadow_scores` shows what they would have said. ``qml learn --cycle``
runs one cycle: ``run_cycle(registry, LearnSettings.from_config(config))`` returns the decision
(``promote`` / ``reject``) with its reasons.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import RegistryError
from ..registry import ANY_PRODUCTION, PatternRegistry
from .drift import DriftReport, DriftThresholds, check_model_drift, drift_state_file, score_reference
from .drift import load_registered as _load
from .drift import to_timestamp as _ts
from .guard import admissible_model
from .metrics import evaluate, json_safe
from .model import SignalQualityModel
from .versions import record_version

__all__ = ["LearnSettings", "Decision", "CycleResult", "check_drift", "retrain", "gate", "run_cycle", "rollback",
           "previous_production", "shadow_scores", "labeled_since"]


@dataclass(frozen=True)
class LearnSettings:
    """The ``learn:`` section plus the model's name and folder: ``LearnSettings.from_config(cfg)``."""

    model_name: str = "signal_quality"
    models_dir: str = "models/signal_quality"
    recent_patterns: int = 300
    holdout_fraction: float = 0.2
    min_samples: int = 200
    min_holdout_samples: int = 30
    min_auc_improvement: float = 0.0
    refit_after_promotion: bool = False
    n_jobs: int = 1
    drift: DriftThresholds = field(default_factory=DriftThresholds)

    @classmethod
    def from_config(cls, cfg: dict[str, Any], *, model_name: str | None = None,
                    models_dir: str | None = None) -> LearnSettings:
        """From a validated run config (``load_config``); the keywords override it."""
        learn = cfg["learn"]
        keys = ("recent_patterns", "holdout_fraction", "min_samples", "min_holdout_samples", "min_auc_improvement",
                "refit_after_promotion", "n_jobs")
        return cls(model_name=model_name or cfg["ml"]["model_name"], models_dir=models_dir or learn["models_dir"],
                   drift=DriftThresholds.from_config(learn), **{k: learn[k] for k in keys})


@dataclass
class Decision:
    """What a retrain or rollback decided: ``promote`` / ``reject`` / ``rollback``, or ``registered``
    (a shadow / canary candidate, which is scored and logged but never promoted by a cycle)."""

    decision: str
    reasons: list[str]
    candidate_version: int | None = None
    baseline_version: int | None = None
    production_version: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    eval_id: int | None = None

    def summary(self) -> str:
        cand, was, now = (f"v{v}" if v is not None else "none" for v in (
            self.candidate_version, self.baseline_version, self.production_version))
        return "\n".join([f"{self.decision}: candidate {cand} (production was {was})",
                          *(f"  {r}" for r in self.reasons), f"  production is now {now}"])


@dataclass
class CycleResult:
    """One cycle: the drift report (None without a production model), and the decision if it retrained."""

    drift: DriftReport | None
    decision: Decision | None
    why: str


# -- registry access (public PatternRegistry methods only) ------------------------------------------
def labeled_since(reg: PatternRegistry, when: Any) -> int:
    """How many labeled patterns were detected after ``when`` (ISO text or timestamp)."""
    return 0 if when is None else reg.count_labeled(detected_after=_ts(when))


def _transition(reg: PatternRegistry, name: str, *, expect: Any = ANY_PRODUCTION, production: str | None = None,
                statuses: dict[str, str] | None = None, eval_row: dict[str, Any]) -> int | None:
    """:meth:`PatternRegistry.transition_models` with the metrics made JSON-safe: if production is
    still ``expect``, promote ``production``, set ``statuses`` and log ``eval_row`` in one
    transaction; return its eval_id, or None when production changed meanwhile."""
    e = {k: json_safe(v) if k in ("metrics", "drift") else v for k, v in eval_row.items()}
    return reg.transition_models(name, e.pop("decision"), expect_production=expect, production=production,
                                 statuses=statuses, **e)


def check_drift(reg: PatternRegistry, settings: LearnSettings) -> DriftReport | None:
    """:func:`.drift.check_model_drift` with the settings' thresholds; the result is kept in
    ``<models_dir>/last_drift_<model_name>.json`` for ``qml learn --status``."""
    return check_model_drift(reg, settings.model_name, thresholds=settings.drift,
                             recent_patterns=settings.recent_patterns,
                             save_to=drift_state_file(settings.models_dir, settings.model_name))


# -- retrain and gate -------------------------------------------------------------------------------
def gate(candidate: dict[str, Any], production: dict[str, Any] | None, *, training_samples: int,
         settings: LearnSettings) -> tuple[bool, list[str]]:
    """Promotion gates on the comparable holdout; returns (passed, one line per gate)."""
    lines, ok = [], True

    def check(passed: bool, text: str) -> None:
        nonlocal ok
        ok &= bool(passed)
        lines.append(("pass: " if passed else "FAIL: ") + text)

    check(training_samples >= settings.min_samples,
          f"training samples {training_samples} >= min_samples {settings.min_samples}")
    n, auc_c = int(candidate.get("n", 0)), float(candidate.get("auc", math.nan))
    check(n >= settings.min_holdout_samples and math.isfinite(auc_c),
          f"comparable holdout patterns {n} >= min_holdout_samples {settings.min_holdout_samples}, both classes")
    if production is None:
        check(auc_c > 0.5, f"no production model: candidate holdout AUC {auc_c:.4f} > 0.5")
    else:
        auc_p, imp = float(production.get("auc", math.nan)), settings.min_auc_improvement
        check(auc_c >= auc_p + imp, f"candidate AUC {auc_c:.4f} >= production AUC {auc_p:.4f} + {imp:g}")
        b_c, b_p = float(candidate.get("brier", math.nan)), float(production.get("brier", math.nan))
        check(b_c <= b_p, f"candidate Brier {b_c:.4f} <= production Brier {b_p:.4f}")
    return ok, lines


def _holdout(det: pd.DatetimeIndex, ex: pd.DatetimeIndex, fraction: float) -> tuple[np.ndarray, np.ndarray, Any]:
    """(train mask, holdout mask, holdout start): holdout = newest ``fraction`` by detection time;
    training rows' labels were known (exit) before the holdout starts."""
    n = len(det)
    if n == 0:
        return np.zeros(0, bool), np.zeros(0, bool), None
    start = np.sort(det.as_unit("ns").to_numpy())[n - max(1, math.ceil(fraction * n))]
    hold = (det >= start)
    train = ~ex.isna() & (ex < start)
    return np.asarray(train), np.asarray(hold), pd.Timestamp(start)


def _fit_and_register(reg: PatternRegistry, settings: LearnSettings, factory: Callable[[], SignalQualityModel],
                      X: pd.DataFrame, y: np.ndarray, rows: np.ndarray, status: str, metrics_of: Callable,
                      n_valid: int, notes: str) -> tuple[dict, str, int]:
    """Fit on ``rows``, save the next version folder, register it; return (metrics, model_id, version)."""
    Xr, schema = X[rows], reg.training_feature_schema()
    model = factory().fit(Xr.reset_index(drop=True), y[rows],
                          detection_times=Xr.index.get_level_values("detection_time"),
                          exit_times=Xr.index.get_level_values("exit_time"), feature_schema=schema)
    metrics = metrics_of(model)
    path = model.save_version(settings.models_dir, metrics=metrics)
    mid = record_version(reg, model, path, model_name=settings.model_name, status=status, metrics=metrics,
                         feature_schema=schema, validation_samples=int(n_valid), notes=notes)
    return metrics, mid, reg.get_model_version(mid)["version"]


def retrain(reg: PatternRegistry, settings: LearnSettings, *, status: str = "staging", drift: DriftReport | None = None,
            model_factory: Callable[[], SignalQualityModel] | None = None) -> Decision:
    """Train a candidate on data before the holdout, score it and production on the holdout, gate, record.

    ``status="shadow"`` / ``"canary"`` registers the candidate with that status and its holdout
    metrics, without a gate decision (it never acts). ``model_factory`` builds the untrained model
    (default ``SignalQualityModel(model_name=...)``).
    """
    if status not in ("staging", "shadow", "canary"):
        raise RegistryError(f"a new candidate enters as 'staging', 'shadow' or 'canary', not {status!r}")
    name = settings.model_name
    factory = model_factory or (lambda: SignalQualityModel(model_name=name, n_jobs=settings.n_jobs))
    prod = reg.production_model(name)
    prod_model = _load(prod) if prod else None
    base_v = prod["version"] if prod else None
    X, y = reg.get_training_data(min_labels=1)        # an empty registry: InsufficientDataError
    det, ex = (pd.DatetimeIndex(X.index.get_level_values(k)) for k in ("detection_time", "exit_time"))
    train, hold, h_start = _holdout(det, ex, settings.holdout_fraction)
    n_train = int(train.sum())
    row = {"baseline_version": base_v, "drift": drift.to_dict() if drift is not None else None}

    def reject(lines: list[str], metrics: dict, cand: tuple[str, int] | None, now_v: Any = base_v,
               failed: tuple[str, ...] = ()) -> Decision:
        eid = None if status != "staging" else _transition(
            reg, name, statuses=dict.fromkeys(failed, "failed"), eval_row={
                **row, "decision": "reject", "candidate_version": cand and cand[1], "metrics": metrics,
                "notes": "; ".join(lines)})
        return Decision("reject", lines, cand and cand[1], base_v, now_v, metrics, eid)

    if n_train < settings.min_samples or len(np.unique(y[train])) < 2:
        why = (f"training samples {n_train} (labels known before the holdout starting {h_start}) < min_samples "
               f"{settings.min_samples}" if n_train < settings.min_samples else f"the {n_train} labels are one class")
        return reject([f"FAIL: no candidate trained: {why}"],
                      {"training_samples": n_train, "n_labeled": len(y), "holdout_start": h_start}, None)

    prod_end = (_ts(prod["trained_on_end"]) or _ts(prod_model.trained_on_end_)) if prod_model is not None else None
    Xh, yh, det_h = X[hold], y[hold], det[hold]

    def metrics_of(model: SignalQualityModel) -> dict[str, Any]:
        p = model.predict_proba(Xh)[:, 1]
        cutoff = max(t for t in (_ts(model.trained_on_end_), prod_end, pd.Timestamp.min) if t is not None)
        comp = np.asarray(det_h > cutoff)
        m: dict[str, Any] = {"holdout_start": h_start, "n_holdout": len(yh), "compared_from": cutoff,
                             "holdout": evaluate(yh, p), "compared": evaluate(yh[comp], p[comp]),
                             "score_reference": score_reference(p, bins=settings.drift.bins),
                             "training_samples": n_train}
        if prod_model is not None:
            m["production"] = evaluate(yh[comp], prod_model.predict_proba(
                Xh[comp].reindex(columns=prod_model.feature_names))[:, 1]) | {"version": base_v}
        return m

    metrics, cand_id, cand_v = _fit_and_register(reg, settings, factory, X, y, train, status, metrics_of, len(yh),
                                                 f"trained on labels known before the holdout start {h_start}")
    passed, lines = gate(metrics["compared"], metrics.get("production"), training_samples=n_train, settings=settings)
    ev = {"candidate": metrics["compared"], **{k: v for k, v in metrics.items() if k not in ("score_reference",
                                                                                            "compared")}}
    if status != "staging":
        verdict = "would pass" if passed else "would fail"
        return Decision("registered", [f"registered as {status} (never acts); the promotion gate {verdict}:", *lines],
                        cand_v, base_v, base_v, ev)
    if not passed:
        return reject(lines, ev, (cand_id, cand_v), failed=(cand_id,))
    new_id, new_v, statuses = cand_id, cand_v, {}
    if settings.refit_after_promotion:
        everything = np.asarray(~ex.isna())
        _, new_id, new_v = _fit_and_register(
            reg, settings, factory, X, y, everything,
            "staging", lambda m: {**metrics, "refit_of": cand_v}, 0,
            f"refit of v{cand_v} on all {int(everything.sum())} labeled patterns")
        statuses = {cand_id: "archived"}
        lines.append(f"refit on all {int(everything.sum())} labeled patterns as v{new_v}, which becomes production")
    eid = _transition(reg, name, expect=prod["model_id"] if prod else None, production=new_id, statuses=statuses,
                      eval_row={**row, "decision": "promote", "candidate_version": cand_v,
                                "metrics": {**ev, "production_version": new_v}, "notes": "; ".join(lines)})
    if eid is None:           # another cycle promoted first: our gate compared against a stale production
        now_v = (reg.production_model(name) or {}).get("version")
        lines.append(f"FAIL: production version changed during evaluation ({base_v} -> {now_v}); re-run the cycle")
        return reject(lines, ev, (cand_id, cand_v), now_v, failed=tuple({cand_id, new_id}))
    return Decision("promote", lines, cand_v, base_v, new_v, ev, eid)


def run_cycle(reg: PatternRegistry, settings: LearnSettings, *, force: bool = False, status: str = "staging",
              model_factory: Callable[[], SignalQualityModel] | None = None) -> CycleResult:
    """Drift check, then retrain + gate when drift is flagged, there is no production model, or ``force``."""
    drift = check_drift(reg, settings)
    if drift is None:
        why = "no production model yet: training the first candidate"
    elif force:
        why = "retraining because of --force" + (" (drift is flagged too)" if drift.flagged else "")
    elif drift.flagged:
        why = "drift is flagged: retraining"
    else:
        return CycleResult(drift, None, "no drift flagged: the production model is kept (use --force to retrain)")
    return CycleResult(drift, retrain(reg, settings, status=status, drift=drift, model_factory=model_factory), why)


# -- rollback, shadow -------------------------------------------------------------------------------
def previous_production(reg: PatternRegistry, model_name: str) -> dict[str, Any] | None:
    """The version that was production before the current one, or None.

    Replays ``ml_eval_history`` (a promote pushes the new production version, a rollback pops back
    to the version it restored); falls back to the archived version with the highest version number
    below the current one when the history does not cover the current production.
    """
    current = reg.production_model(model_name)
    if current is None:
        return None
    stack: list[int] = []
    for e in reg.eval_history(model_name):
        if e["decision"] == "promote":
            stack.append((e["metrics"] or {}).get("production_version") or e["candidate_version"])
        elif e["decision"] == "rollback":
            while stack and stack[-1] != e["candidate_version"]:
                stack.pop()
            if not stack:
                stack.append(e["candidate_version"])
    versions = {v["version"]: v for v in reg.list_model_versions(model_name)}
    if stack and stack[-1] == current["version"]:
        for v in reversed(stack[:-1]):
            if v in versions and versions[v]["status"] == "archived":
                return versions[v]
        return None
    older = [v for k, v in versions.items() if v["status"] == "archived" and k < current["version"]]
    return max(older, key=lambda v: v["version"]) if older else None


def rollback(reg: PatternRegistry, settings: LearnSettings) -> Decision:
    """Make the previous production version production again (its files are checked first); log ``rollback``."""
    name = settings.model_name
    current = reg.production_model(name)
    if current is None:
        raise RegistryError(f"no production version of {name!r} in {reg.path}: nothing to roll back")
    target = previous_production(reg, name)
    if target is None:
        raise RegistryError(f"{name!r} v{current['version']} is production and no earlier production version is "
                            "archived: nothing to roll back to")
    _load(target)
    lines = [f"restored v{target['version']} (trained up to {target['trained_on_end']}); "
             f"v{current['version']} archived"]
    eid = _transition(reg, name, expect=current["model_id"], production=target["model_id"], eval_row={
        "decision": "rollback", "candidate_version": target["version"], "baseline_version": current["version"],
        "metrics": {"restored": target.get("metrics"), "replaced": current.get("metrics")}, "notes": lines[0]})
    if eid is None:
        raise RegistryError("production changed while rolling back (another process promoted); run --rollback again")
    return Decision("rollback", lines, target["version"], current["version"], target["version"], {}, eid)


def _versions(db: str | PatternRegistry, model_name: str) -> list[dict[str, Any]]:
    if isinstance(db, PatternRegistry):
        return db.list_model_versions(model_name)
    with PatternRegistry(db) as reg:
        return reg.list_model_versions(model_name)


def shadow_scores(db: str | PatternRegistry, model_name: str, features: pd.DataFrame, *, detection_times: Any = None,
                  statuses: tuple[str, ...] = ("production", "canary", "shadow")) -> pd.DataFrame:
    """``ml_confidence`` of each ``production`` / ``canary`` / ``shadow`` version for the given patterns.

    One column per version, named ``"<status>_v<version>"``, aligned with ``features``' rows. With
    detection times (``detection_times=`` or an index level ``detection_time``), a pattern the
    version may not score (detected at or before its ``trained_on_end``) gets NaN: the same
    out-of-sample rule as the filter. Compare a canary's column with production's to see what the
    canary would have done, e.g. ``(scores["canary_v4"] >= 0.5) != (scores["production_v3"] >= 0.5)``.
    """
    rows = [v for v in _versions(db, model_name) if v["status"] in statuses]
    if detection_times is None and "detection_time" in (features.index.names or []):
        detection_times = features.index.get_level_values("detection_time")
    det = None if detection_times is None else pd.DatetimeIndex(detection_times)
    out = pd.DataFrame(index=features.index)
    for row in sorted(rows, key=lambda r: (statuses.index(r["status"]), r["version"])):
        model = _load(row)
        p = model.predict_proba(features.reindex(columns=model.feature_names))[:, 1]
        end = _ts(row["trained_on_end"]) or _ts(model.trained_on_end_)
        if det is not None and end is not None:
            p = np.where(admissible_model(det, [end]) == 0, p, np.nan)
        out[f"{row['status']}_v{row['version']}"] = p
    return out
