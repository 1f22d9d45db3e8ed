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
* one model: if any pattern is inadmissible the backtest is refused with a :class:`ModelError`,
  unless ``allow_in_sample: true``, which scores everything and sets status ``IN-SAMPLE``.

With a registry (the strategy's ``registry_db``), the statuses in ``ml_model_versions`` decide
which versions of a folder may act: the ``production`` one alone if there is one; never a
``failed``, ``canary`` or ``shadow`` one (those are scored and logged by ``qml learn`` / the report,
never acting).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .config import MLConfig, embargo_timedelta
from .data import bar_duration
from .errors import ModelError
from .filter import admissible_model

__all__ = ["score_patterns", "score_or_baseline", "Scorer", "load_models"]


def load_models(model_path: str | Path, registry_db: str | None = None) -> tuple[list, bool]:
    """``(models, is_versions_folder)`` for a version folder, a model.json, or a folder of versions.

    With a registry, a folder's versions are filtered by their recorded status: if one of them is
    ``production``, it alone acts (a fixed model); otherwise ``failed``, ``canary`` and ``shadow``
    versions are left out (they never act) and the rest form a walk-forward set.
    """
    from .ml.model import SignalQualityModel

    path = Path(model_path)
    if not path.exists():
        raise ModelError(f"ml.model_path = {str(path)!r} does not exist; train one first with `qml train` "
                         "(or `qml learn --retrain --force`)")
    if path.is_file() or (path / "metadata.json").is_file():
        return [SignalQualityModel.load(path if path.is_dir() else path.parent)], False
    versions = sorted(p for p in path.iterdir() if p.is_dir() and (p / "metadata.json").is_file())
    status = _recorded_status(versions, registry_db)
    production = [v for v in versions if status.get(v) == "production"]
    if production:
        return [SignalQualityModel.load(production[-1])], False
    versions = [v for v in versions if status.get(v) not in ("failed", "canary", "shadow")]
    if not versions:
        raise ModelError(f"ml.model_path = {str(path)!r} holds no model version that may act "
                         "(none at all, or only failed / canary / shadow ones)")
    return [SignalQualityModel.load(v) for v in versions], True


def _recorded_status(versions: list[Path], registry_db: str | None) -> dict[Path, str]:
    """Status of each version folder as ``ml_model_versions`` records it (an existing registry only)."""
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
                out[hit] = row["status"]
    return out


@dataclass
class Scorer:
    """Per-pattern scores (NaN where no model may score) and how they were obtained.

    ``confidence`` is ``ml_confidence``; ``expected_r`` and ``stop_risk`` the other two heads (all
    NaN where the models lack the head); all three indexed by ``pattern_id``. ``scored_share`` is
    the share of patterns some model was allowed to score.
    """

    confidence: pd.Series
    status: str
    models: list = field(default_factory=list)
    embargo: pd.Timedelta | None = None
    expected_r: pd.Series | None = None
    stop_risk: pd.Series | None = None
    scored_share: float = 0.0

    def score_row(self, row: dict) -> float:
        """``ml_confidence`` of one signal row given at run time (generic strategies): see :meth:`score_row_heads`."""
        return self.score_row_heads(row)["ml_confidence"]

    def score_row_heads(self, row: dict) -> dict[str, float]:
        """The three heads for one signal row given at run time: the latest admissible model, under
        the same guard and embargo as the batch in :func:`score_patterns`."""
        t = pd.Timestamp(row.get("known_at_utc", row["detection_time"]))
        k = admissible_model([t], [m.trained_on_end_ for m in self.models], embargo=self.embargo)[0]
        nan = float("nan")
        if k < 0:
            if self.status != "IN-SAMPLE":
                return {"ml_confidence": nan, "expected_r": nan, "stop_risk": nan}
            k = len(self.models) - 1
        m = self.models[k]
        x = pd.DataFrame([{f: row.get(f, np.nan) for f in m.feature_names}])
        return {"ml_confidence": float(m.predict_proba(x)[0, 1]),
                "expected_r": float(m.predict_expected_r(x)[0]) if m.has_head("expected_r") else nan,
                "stop_risk": float(m.predict_stop_risk(x)[0]) if m.has_head("stop_risk") else nan}


def score_patterns(ml: MLConfig, ohlcv: pd.DataFrame, patterns: pd.DataFrame | None,
                   features: pd.DataFrame | None, models: list | None = None,
                   registry_db: str | None = None) -> Scorer:
    """Batch-score ``patterns`` (their ``features`` indexed by pattern_id) under the guard above."""
    if models is None:
        models, versions = load_models(ml.model_path, registry_db)
    else:
        versions = len(models) > 1
    embargo = embargo_timedelta(ml, bar_duration(ohlcv) if len(ohlcv) > 1 else None)
    if patterns is None or len(patterns) == 0:
        return Scorer(pd.Series(dtype=float), "out-of-sample", models, embargo)
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

    heads = score_by_model(features.reindex(patterns["pattern_id"].to_numpy()), which, models)
    index = patterns["pattern_id"].to_numpy()
    return Scorer(pd.Series(heads["confidence"], index=index), status, models, embargo,
                  expected_r=pd.Series(heads["expected_r"], index=index),
                  stop_risk=pd.Series(heads["stop_risk"], index=index), scored_share=float((which >= 0).mean()))



def score_or_baseline(ml: MLConfig, ohlcv: pd.DataFrame, patterns: pd.DataFrame | None,
                      features: pd.DataFrame | None, registry_db: str | None = None) -> tuple[Scorer | None, str]:
    """:func:`score_patterns` under ``ml.on_model_error``: ``(scorer, its status)``, or with
    ``baseline`` a warning and ``(None, "baseline: <why>")`` so the engine trades unfiltered.
    Every engine (backtesting.py mixin, vectorbt) goes through here."""
    try:
        scorer = score_patterns(ml, ohlcv, patterns, features, registry_db=registry_db)
    except ModelError as e:
        if ml.on_model_error == "fail":
            raise
        warnings.warn(f"ML filter off, trading unfiltered (on_model_error: baseline): {e}", stacklevel=3)
        return None, f"baseline: {e}"
    return scorer, scorer.status
