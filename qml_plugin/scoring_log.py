"""The prediction log's rows: what each scoring event of a backtest writes to ``ml_predictions``.

:mod:`qml_plugin.scoring` decides *which* model scores *which* pattern (the out-of-sample guard);
this module turns those scorings into the rows ``PatternRegistry.log_predictions`` takes, one per
scoring event, with the columns :data:`PREDICTION_COLUMNS`. Three kinds of event (SPEC §5, §13):

* **acting** scorings of the batch: a pattern some model was allowed to score
  (:func:`acting_rows`);
* **run-time** scorings: a tag-row signal a strategy passed to ``buy()`` / ``sell()``, scored when
  it came (:func:`run_time_rows`; the latest event of a pattern wins);
* **quiet** scorings: a canary / shadow version scoring every pattern it may score, never acting;
  its row says what the mode *would* have done on its scores (:func:`quiet_rows`).

**Which version.** A row names its version by ``model_id`` (:func:`model_id_of`): the one the
registry recorded for its folder, else ``"sha256:"`` + 16 hex digits of the saved confidence head,
so the same version logged from two runs is one ``model_id``.

**Decisions.** The log speaks three words, ``take`` / ``reduce_size`` / ``skip``
(:func:`decision_labels`): the model's own word when the engine recorded one (sizing bands say
``reduce_size``), else the boolean ``take``.

**Contributions.** Each row keeps its top five feature contributions (TreeSHAP through
``SignalQualityModel.explain``), as JSON. Explaining is the costly part, so :func:`explain_rows` is
memoized by (version, values): the three mode backtests of one ``qml run`` and the report's mean
|contribution| explain the same versions on the same patterns, each pair once, in one batch per
model, never per bar.

Design choice: these helpers take plain arrays and frames, not a ``Scorer``, so the rules of the
log (its columns, its three words, its memo) live in one place that any engine can call, and
``scoring`` stays about scoring. Everything here is re-exported by :mod:`qml_plugin.scoring`.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import numpy as np
import pandas as pd

from .filter import decide

__all__ = ["PREDICTION_COLUMNS", "model_id_of", "decision_labels", "explain_rows", "top_json", "acting_rows",
           "run_time_rows", "quiet_rows", "log_frame"]

_DECISIONS = ("take", "skip", "reduce_size")
PREDICTION_COLUMNS = ("pattern_id", "model_id", "mode", "ml_confidence", "expected_r", "stop_risk", "decision",
                      "acting", "contributions")
"""The columns of :meth:`qml_plugin.scoring.Scorer.prediction_frame` (what ``PatternRegistry.log_predictions``
takes)."""


def model_id_of(model: Any, recorded: str | None = None) -> str:
    """The ``model_id`` a prediction of ``model`` is logged under: ``recorded`` (the registry's) when
    given, else ``"sha256:"`` + 16 hex digits of its saved confidence head (for a model never saved,
    of its booster's JSON)."""
    if recorded:
        return recorded
    sha = (getattr(model, "metadata_", None) or {}).get("model_sha256")
    if not sha:
        sha = hashlib.sha256(bytes(model.booster_.save_raw("json"))).hexdigest()
    return f"sha256:{sha[:16]}"


def decision_labels(frame: pd.DataFrame) -> np.ndarray:
    """``take`` / ``reduce_size`` / ``skip`` per row of a decisions frame (``pattern_decisions``, or the
    tag-row signals of a run).

    Row by row: ``ml_decision`` when it holds one of those words (sizing bands say ``reduce_size``
    there), else ``decision`` when it does, else the boolean ``take`` gives ``take`` / ``skip`` (a
    signal met after the kill switch tripped has no ``ml_decision``).

        >>> decision_labels(pd.DataFrame({"take": [True, True, False, True],
        ...                               "ml_decision": ["take", "reduce_size", "skip", None]})).tolist()
        ['take', 'reduce_size', 'skip', 'take']
    """
    out = np.where(frame["take"].to_numpy(dtype=bool), "take", "skip").astype(object)
    for col in ("decision", "ml_decision"):          # the later column wins where both hold a word
        if col in frame.columns:
            words = frame[col].to_numpy(dtype=object)
            ok = pd.Series(words).isin(_DECISIONS).to_numpy()
            out[ok] = words[ok]
    return out


_EXPLAIN_MEMO: OrderedDict[tuple, pd.DataFrame] = OrderedDict()
_EXPLAIN_MEMO_SIZE = 16


def explain_rows(model: Any, X: pd.DataFrame) -> pd.DataFrame:
    """``model.explain(X)`` memoized by (the model's ``model_id_of``, the values of ``X``): the mode
    backtests of one run, and the report's mean |contribution|, explain the same versions on the same
    patterns, so each pair is explained once. The result is indexed like ``X``."""
    values = np.ascontiguousarray(X.reindex(columns=model.feature_names).to_numpy(np.float64, na_value=np.nan))
    key = (model_id_of(model), values.shape, hashlib.sha256(values).hexdigest())
    if key in _EXPLAIN_MEMO:
        _EXPLAIN_MEMO.move_to_end(key)
        out = _EXPLAIN_MEMO[key]
    else:
        out = model.explain(values)
        _EXPLAIN_MEMO[key] = out
        while len(_EXPLAIN_MEMO) > _EXPLAIN_MEMO_SIZE:
            _EXPLAIN_MEMO.popitem(last=False)
    return out.set_axis(X.index, axis=0)


def top_json(model: Any, X: pd.DataFrame) -> list[str | None]:
    """The top five contributions of each row's ``ml_confidence`` (:func:`explain_rows`), as JSON."""
    from .registry.predictions import top_contributions

    return top_contributions(explain_rows(model, X))


def _values(series: pd.Series | None, rows: np.ndarray) -> np.ndarray:
    return np.full(len(rows), np.nan) if series is None else series.to_numpy(float)[rows]


def acting_rows(confidence: pd.Series, which: np.ndarray, model_ids: list[str], decisions: pd.Series, *,
                expected_r: pd.Series | None, stop_risk: pd.Series | None, contributions: np.ndarray,
                acting: pd.Series | None = None) -> pd.DataFrame:
    """Rows of the batch's acting scorings: each pattern (``confidence``'s index) whose ``which`` is a model.

    ``decisions`` and ``acting`` are by ``pattern_id`` (``acting`` default True: a scored pattern whose
    decision was not in force, e.g. after the kill switch tripped, is False); ``contributions`` holds
    one JSON per pattern of ``confidence``."""
    hit = np.flatnonzero(which >= 0)
    ids = confidence.index.to_numpy()[hit]
    return pd.DataFrame({
        "pattern_id": ids, "model_id": np.asarray(model_ids, dtype=object)[which[hit]],
        "ml_confidence": confidence.to_numpy()[hit],
        "expected_r": _values(expected_r, hit), "stop_risk": _values(stop_risk, hit),
        "decision": decisions.reindex(ids).to_numpy(dtype=object),
        "acting": True if acting is None else acting.reindex(ids).fillna(True).to_numpy(dtype=bool),
        "contributions": contributions[hit]})


def run_time_rows(events: list[dict], models: list, model_ids: list[str], decisions: pd.Series) -> pd.DataFrame:
    """Rows of the run-time scorings (``{"pattern_id", "k", "x", heads...}`` each, ``k`` the model's index,
    ``x`` its one-row feature frame); the latest event of a pattern wins."""
    ev = pd.DataFrame(events).drop_duplicates("pattern_id", keep="last")
    ev["model_id"] = [model_ids[k] for k in ev["k"]]
    ev["decision"] = decisions.reindex(ev["pattern_id"]).to_numpy(dtype=object)
    ev["acting"] = True
    ev["contributions"] = [top_json(models[k], x)[0] for k, x in zip(ev["k"], ev["x"], strict=True)]
    return ev.drop(columns=["k", "x"])


def quiet_rows(q: dict, pattern_ids: np.ndarray, features: pd.DataFrame, top: dict, *, mode: str,
               validity_score: pd.Series | None, rule: dict) -> pd.DataFrame:
    """Rows of one canary / shadow version ``q`` (its ``scored`` mask and heads over ``pattern_ids``),
    ``acting`` False, each with the decision ``mode`` would have taken on its scores
    (:func:`qml_plugin.filter.decide` with ``validity_score`` and ``rule``: ``min_score``,
    ``ml_weight``, ``confidence_threshold``, ``min_expected_r``). ``top`` caches the version's
    contributions across calls."""
    hit = np.flatnonzero(q["scored"])
    ids = pattern_ids[hit]
    conf, exp_r = q["confidence"][hit], q["expected_r"][hit]
    v = (validity_score.reindex(ids).to_numpy(float) if validity_score is not None
         else np.full(len(hit), np.nan))
    er = exp_r if mode == "expected_value" else None
    take = decide(v, conf, mode=mode, expected_r=er, **rule)[0] if len(hit) else np.zeros(0, bool)
    key = ("quiet", q["model_id"])
    if key not in top:
        top[key] = top_json(q["model"], features.iloc[hit]) if len(hit) else []
    return pd.DataFrame({"pattern_id": ids, "model_id": q["model_id"], "ml_confidence": conf,
                         "expected_r": exp_r, "stop_risk": q["stop_risk"][hit],
                         "decision": np.where(take, "take", "skip"), "acting": False,
                         "contributions": top[key]})


def log_frame(parts: list[pd.DataFrame], mode: str) -> pd.DataFrame:
    """The parts above as one frame with the columns :data:`PREDICTION_COLUMNS` (``mode`` on every row)."""
    if not parts:
        return pd.DataFrame(columns=list(PREDICTION_COLUMNS))
    out = pd.concat([p for p in parts if len(p)] or parts[:1], ignore_index=True)
    out["mode"] = mode
    out["decision"] = [d if isinstance(d, str) else None for d in out["decision"]]
    return out[list(PREDICTION_COLUMNS)]
