"""Score patterns with saved models, out of sample only: the step between model and filter.

``model_path`` in the ``ml:`` block is either **one model** (a version folder or its
``model.json``) or a **folder of versions** (``v0001/``, ``v0002/`` ... as written by walk-forward
training). Scores for all patterns of a series are computed here in one batch per model; nothing is
called per bar.

Each scoring gives the three heads (SPEC §7): ``ml_confidence``, and where the model has them
``expected_r`` and ``stop_risk`` (NaN otherwise).

The out-of-sample guard (SPEC §7), per pattern: a model may score a pattern only when its training
data all exited before the pattern's detection time minus the embargo
(``trained_on_end < detection_time - embargo``, :func:`qml_plugin.config.embargo_timedelta`).
Patterns carrying ``known_at_utc`` are compared by that UTC instant (a universe's one clock),
else by ``detection_time``.

* folder of versions: each pattern is scored by the latest admissible version; a pattern with none
  gets NaN (the filter then falls back to the technical rule) -> status ``out-of-sample``. A folder
  whose versions are **all** inadmissible for **every** pattern (all trained over the backtest
  period) would score nothing and trade like the baseline while calling itself out of sample: it
  is refused with a :class:`ModelError`, or with ``allow_in_sample: true`` the latest version
  scores every pattern and the status is ``IN-SAMPLE``;
* regime models (``regime_<name>/`` beside the pooled versions, SPEC §13): see ``REGIME_PREFIX``;
* one model: if any pattern is inadmissible the backtest is refused with a :class:`ModelError`,
  unless ``allow_in_sample: true``, which scores everything and sets status ``IN-SAMPLE``.

With a registry (the strategy's ``registry_db``), the statuses in ``ml_model_versions`` decide
which versions of a folder may act: the ``production`` one alone if there is one; never a
``failed``, ``canary`` or ``shadow`` one. ``canary`` and ``shadow`` versions of the folder still
**score** every pattern they may score under the same guard (one batch each): their scores never
reach a decision, but they go into the prediction log with ``acting = false`` and the decision the
mode *would* have taken with them (SPEC §5, §13). ``failed`` versions are neither scored nor logged.

**Which version scored what** (for the prediction log, ``ml_predictions``): each model version has
a ``model_id``: the one ``ml_model_versions`` records for its folder (``record_version`` matches it by
``model_path``) when a registry is given, else the stable ``"sha256:<first 16 hex digits>"`` of its
saved confidence head (``metadata.json``'s ``model_sha256``; for a model never saved, of its booster's
JSON), so the same version logged from two runs is one ``model_id``. :meth:`Scorer.prediction_frame`
gives one row per scoring event, ready for ``PatternRegistry.log_predictions``, with each prediction's
top five feature contributions (``SignalQualityModel.explain``, computed on first use in one batch per
model over the rows it scored, never per bar). The rows themselves are built by
:mod:`qml_plugin.scoring_log` (its names, ``model_id_of``, ``explain_rows``, ``top_json``,
``decision_labels``, ``PREDICTION_COLUMNS``, stay importable from here).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import MLConfig, embargo_timedelta
from .data import bar_duration
from .errors import ModelError
from .filter import admissible_model
from .scoring_log import (
    PREDICTION_COLUMNS,
    acting_rows,
    decision_labels,
    explain_rows,
    log_frame,
    model_id_of,
    quiet_rows,
    run_time_rows,
    top_json,
)

__all__ = ["score_patterns", "score_or_baseline", "Scorer", "load_models", "load_versions", "model_id_of",
           "decision_labels", "explain_rows", "top_json", "PREDICTION_COLUMNS"]

REGIME_PREFIX = "regime_"
"""A folder of versions may hold ``regime_<name>/v0001 ...``: the regime models of
:func:`qml_plugin.ml.walkforward.train_walk_forward` (``regimes=``). A pattern whose
``regime_at_detection`` is ``<name>`` is scored by the latest admissible model of its regime, any
other by the folder's own (pooled) versions: the walk-forward trainer's rule."""


@dataclass
class Versions:
    """What a ``model_path`` holds: the models that may act (with their ``model_id``) and the
    canary / shadow versions that score without acting (``(model, model_id, status)``)."""

    models: list
    model_ids: list[str]
    is_folder: bool
    quiet: list[tuple[Any, str, str]] = field(default_factory=list)
    regimes: dict[str, tuple[list, list[str]]] = field(default_factory=dict)   # regime -> (models, model_ids)


def load_versions(model_path: str | Path, registry_db: str | None = None) -> Versions:
    """The :class:`Versions` of a version folder, a model.json, or a folder of versions.

    With a registry, a folder's versions are filtered by their recorded status: if one of them is
    ``production``, it alone acts (a fixed model); otherwise ``failed``, ``canary`` and ``shadow``
    versions are left out (they never act) and the rest form a walk-forward set. ``canary`` and
    ``shadow`` ones are returned in ``quiet``.
    """
    from .ml.model import SignalQualityModel

    path = Path(model_path)
    if not path.exists():
        raise ModelError(f"ml.model_path = {str(path)!r} does not exist; train one first with `qml train` "
                         "(or `qml learn --retrain --force`)")
    if path.is_file() or (path / "metadata.json").is_file():
        folder = path if path.is_dir() else path.parent
        rec = _recorded_status([folder], registry_db).get(folder, {})
        model = SignalQualityModel.load(folder)
        return Versions([model], [model_id_of(model, rec.get("model_id"))], False)
    versions = sorted(p for p in path.iterdir() if p.is_dir() and (p / "metadata.json").is_file())
    rec = _recorded_status(versions, registry_db)

    def loaded(folders: list[Path]) -> tuple[list, list[str]]:
        models = [SignalQualityModel.load(v) for v in folders]
        return models, [model_id_of(m, rec.get(v, {}).get("model_id")) for m, v in zip(models, folders, strict=True)]

    quiet_dirs = [v for v in versions if rec.get(v, {}).get("status") in ("canary", "shadow")]
    qm, qid = loaded(quiet_dirs)
    quiet = [(m, i, rec[v]["status"]) for m, i, v in zip(qm, qid, quiet_dirs, strict=True)]
    production = [v for v in versions if rec.get(v, {}).get("status") == "production"]
    if production:
        return Versions(*loaded(production[-1:]), False, quiet)
    versions = [v for v in versions if rec.get(v, {}).get("status") not in ("failed", "canary", "shadow")]
    if not versions:
        raise ModelError(f"ml.model_path = {str(path)!r} holds no model version that may act "
                         "(none at all, or only failed / canary / shadow ones)")
    regimes = {}
    for sub in sorted(p for p in path.iterdir() if p.is_dir() and p.name.startswith(REGIME_PREFIX)):
        folders = sorted(v for v in sub.iterdir() if v.is_dir() and (v / "metadata.json").is_file())
        rec.update(_recorded_status(folders, registry_db))
        folders = [v for v in folders if rec.get(v, {}).get("status") not in ("failed", "canary", "shadow")]
        if folders:
            regimes[sub.name[len(REGIME_PREFIX):]] = loaded(folders)
    return Versions(*loaded(versions), True, quiet, regimes)


def load_models(model_path: str | Path, registry_db: str | None = None) -> tuple[list, bool]:
    """``(models, is_versions_folder)``: the acting models of :func:`load_versions`."""
    v = load_versions(model_path, registry_db)
    return v.models, v.is_folder


def _recorded_status(versions: list[Path], registry_db: str | None) -> dict[Path, dict]:
    """``{folder: {"status", "model_id"}}`` as ``ml_model_versions`` records them (an existing registry only)."""
    from .registry import PatternRegistry, registry_exists

    if not versions or registry_db is None or not registry_exists(registry_db):
        return {}

    wanted = {v.resolve(): v for v in versions}
    with PatternRegistry(registry_db) as reg:
        rows = reg.list_model_versions()
    out = {}
    for row in rows:
        if row.get("model_path"):
            hit = wanted.get(Path(row["model_path"]).resolve())
            if hit is not None:
                out[hit] = {"status": row["status"], "model_id": row["model_id"]}
    return out


@dataclass
class Scorer:
    """Per-pattern scores (NaN where no model may score) and how they were obtained.

    ``confidence`` is ``ml_confidence``; ``expected_r`` and ``stop_risk`` the other two heads (all
    NaN where the models lack the head); all three indexed by ``pattern_id``. ``scored_share`` is
    the share of patterns some model was allowed to score. ``model_ids`` names each model of
    ``models`` as the prediction log does; ``which`` gives, per pattern, the index of the model that
    scored it (-1: none); ``quiet`` holds the canary / shadow versions' own scores (never acting).
    """

    confidence: pd.Series
    status: str
    models: list = field(default_factory=list)
    embargo: pd.Timedelta | None = None
    expected_r: pd.Series | None = None
    stop_risk: pd.Series | None = None
    scored_share: float = 0.0
    model_ids: list[str] = field(default_factory=list)
    which: np.ndarray | None = None
    features: pd.DataFrame | None = None          # the scored rows, in the order of ``confidence``
    quiet: list[dict] = field(default_factory=list)
    _row_events: list[dict] = field(default_factory=list, repr=False)
    _top: dict = field(default_factory=dict, repr=False)

    def score_row(self, row: dict) -> float:
        """``ml_confidence`` of one signal row given at run time (generic strategies): see :meth:`score_row_heads`."""
        return self.score_row_heads(row)["ml_confidence"]

    def score_row_heads(self, row: dict) -> dict[str, float]:
        """The three heads for one signal row given at run time: the latest admissible model, under
        the same guard and embargo as the batch in :func:`score_patterns`. The event is remembered
        for :meth:`prediction_frame`."""
        t = pd.Timestamp(row.get("known_at_utc", row["detection_time"]))
        k = admissible_model([t], [m.trained_on_end_ for m in self.models], embargo=self.embargo)[0]
        nan = float("nan")
        if k < 0:
            if self.status != "IN-SAMPLE":
                return {"ml_confidence": nan, "expected_r": nan, "stop_risk": nan}
            k = len(self.models) - 1
        m = self.models[k]
        x = pd.DataFrame([{f: row.get(f, np.nan) for f in m.feature_names}])
        heads = {"ml_confidence": float(m.predict_proba(x)[0, 1]),
                 "expected_r": float(m.predict_expected_r(x)[0]) if m.has_head("expected_r") else nan,
                 "stop_risk": float(m.predict_stop_risk(x)[0]) if m.has_head("stop_risk") else nan}
        if row.get("pattern_id") is not None:
            self._row_events.append({"pattern_id": str(row["pattern_id"]), "k": int(k), "x": x, **heads})
        return heads

    def prediction_frame(self, decisions: pd.Series, *, mode: str, validity_score: pd.Series | None = None,
                         rule: dict | None = None, acting: pd.Series | None = None) -> pd.DataFrame:
        """One row per scoring event, ready for ``PatternRegistry.log_predictions(frame, run_id=...)``.

        ``decisions`` maps ``pattern_id`` to what ``mode`` did (``take`` / ``reduce_size`` /
        ``skip``). The acting rows are the patterns a model scored (and run-time signals scored
        by :meth:`score_row_heads`); each canary / shadow version adds a row per pattern it may
        score, ``acting`` False, with the decision ``mode`` would have taken on its scores
        (:func:`qml_plugin.filter.decide` with ``validity_score`` and ``rule``: ``min_score``,
        ``ml_weight``, ``confidence_threshold``, ``min_expected_r``). Columns: ``PREDICTION_COLUMNS``.
        ``acting`` (by ``pattern_id``, default True) marks scored patterns whose decision was not in
        force (e.g. after the kill switch tripped) as not acting.
        """
        parts = []
        if self.which is not None and len(self.confidence):
            parts.append(acting_rows(self.confidence, self.which, self.model_ids, decisions, expected_r=self.expected_r,
                                     stop_risk=self.stop_risk, contributions=self._acting_contributions(),
                                     acting=acting))
        if self._row_events:
            parts.append(run_time_rows(self._row_events, self.models, self.model_ids, decisions))
        ids = self.confidence.index.to_numpy()
        for q in self.quiet:
            parts.append(quiet_rows(q, ids, self.features, self._top, mode=mode, validity_score=validity_score,
                                    rule=rule or {}))
        return log_frame(parts, mode)

    def _acting_contributions(self) -> np.ndarray:
        if "acting" not in self._top:
            out = np.full(len(self.confidence), None, dtype=object)
            for k, model in enumerate(self.models):
                rows = np.flatnonzero(self.which == k)
                if len(rows):
                    out[rows] = top_json(model, self.features.iloc[rows])
            self._top["acting"] = out
        return self._top["acting"]


def score_patterns(ml: MLConfig, ohlcv: pd.DataFrame, patterns: pd.DataFrame | None,
                   features: pd.DataFrame | None, models: list | None = None,
                   registry_db: str | None = None, regimes: pd.Series | None = None) -> Scorer:
    """Batch-score ``patterns`` (their ``features`` indexed by pattern_id) under the guard above.

    Canary / shadow versions of a folder (with a registry) score too, never acting (``Scorer.quiet``).
    ``regimes`` (each pattern's ``regime_at_detection``, aligned with ``patterns``; default its column
    of that name) routes a pattern to its regime's models when the folder has them.
    """
    if models is None:
        loaded = load_versions(ml.model_path, registry_db)
    else:
        loaded = Versions(list(models), [model_id_of(m) for m in models], len(models) > 1)
    models, versions = loaded.models, loaded.is_folder
    embargo = embargo_timedelta(ml, bar_duration(ohlcv) if len(ohlcv) > 1 else None)
    if patterns is None or len(patterns) == 0:
        return Scorer(pd.Series(dtype=float), "out-of-sample", models, embargo, model_ids=loaded.model_ids)
    clock = "known_at_utc" if "known_at_utc" in patterns.columns else "detection_time"
    det = pd.DatetimeIndex(patterns[clock])
    ends = [m.trained_on_end_ for m in models]
    which = admissible_model(det, ends, embargo=embargo)
    status = "out-of-sample"
    if (which < 0).any() and (not versions or (which < 0).all()):
        first = det[int(np.argmax(which < 0))]
        if not ml.allow_in_sample:
            if versions:
                known = [e for e in ends if e is not None]
                what = (f"none of the {len(models)} model versions in {str(ml.model_path)!r} (the earliest trained "
                        f"on data up to {min(known) if known else 'an unknown time'}) may score any pattern of "
                        f"this backtest (the first detected at {first}, by {clock}): the backtest overlaps the "
                        "models' training period, so nothing would be scored out of sample")
            else:
                what = (f"model trained on data up to {ends[0]} cannot score the pattern detected at {first} (by "
                        f"{clock}): the backtest overlaps the model's training period")
            raise ModelError(f"{what}; use a later period, a walk-forward folder of versions trained before it, "
                             "or ml.allow_in_sample: true (results are then labelled IN-SAMPLE)")
        which = np.full(len(det), int(np.argmax([pd.Timestamp(e).value if e is not None else -1 for e in ends])))
        status = "IN-SAMPLE"
    if features is None:
        raise ModelError("the ML filter needs pattern features, but the strategy computed none")
    from .ml.walkforward import score_by_model

    X = features.reindex(patterns["pattern_id"].to_numpy())
    if regimes is None and "regime_at_detection" in patterns.columns:
        regimes = patterns["regime_at_detection"]
    if loaded.regimes and regimes is not None and status != "IN-SAMPLE":
        models, ids = list(models), list(loaded.model_ids)
        label = np.asarray(pd.Series(regimes).to_numpy(dtype=object))
        for name, (own, own_ids) in loaded.regimes.items():
            rows = np.flatnonzero(label == name)
            hit = admissible_model(det[rows], [m.trained_on_end_ for m in own], embargo=embargo)
            which[rows[hit >= 0]] = len(models) + hit[hit >= 0]
            models += own
            ids += own_ids
        loaded = Versions(models, ids, versions, loaded.quiet)
    heads = score_by_model(X, which, models)
    index = patterns["pattern_id"].to_numpy()
    quiet = []
    for model, mid, qstatus in loaded.quiet:
        ok = admissible_model(det, [model.trained_on_end_], embargo=embargo) == 0
        h = score_by_model(X, np.where(ok, 0, -1), [model])
        quiet.append({"model": model, "model_id": mid, "status": qstatus, "scored": ok, "confidence": h["confidence"],
                      "expected_r": h["expected_r"], "stop_risk": h["stop_risk"]})
    return Scorer(pd.Series(heads["confidence"], index=index), status, models, embargo,
                  expected_r=pd.Series(heads["expected_r"], index=index),
                  stop_risk=pd.Series(heads["stop_risk"], index=index), scored_share=float((which >= 0).mean()),
                  model_ids=loaded.model_ids, which=which, features=X, quiet=quiet)


def score_or_baseline(ml: MLConfig, ohlcv: pd.DataFrame, patterns: pd.DataFrame | None,
                      features: pd.DataFrame | None, registry_db: str | None = None,
                      regimes: pd.Series | None = None) -> tuple[Scorer | None, str]:
    """:func:`score_patterns` under ``ml.on_model_error``: ``(scorer, its status)``, or with
    ``baseline`` a warning and ``(None, "baseline: <why>")`` so the engine trades unfiltered.
    Every engine (backtesting.py mixin, vectorbt) goes through here."""
    try:
        scorer = score_patterns(ml, ohlcv, patterns, features, registry_db=registry_db, regimes=regimes)
    except ModelError as e:
        if ml.on_model_error == "fail":
            raise
        warnings.warn(f"ML filter off, trading unfiltered (on_model_error: baseline): {e}", stacklevel=3)
        return None, f"baseline: {e}"
    return scorer, scorer.status
