"""The prediction log (``ml_predictions``, SPEC §5 and §13): every scoring event, and how it turned out.

Each time a model version scores a pattern (in a backtest, a walk-forward run, a canary or a
shadow), one row records what it said: ``ml_confidence`` (P(win)), ``expected_r``, ``stop_risk``,
the ``decision`` the mode took (``take`` / ``reduce_size`` / ``skip``), whether the model was
``acting`` (canary and shadow versions never are), and the top five feature contributions of
that prediction (``SignalQualityModel.explain``). The row is keyed by ``(pattern_id, model_id,
run_id, mode)``: the same event logged twice is one row (the newest values win).

Outcomes are not copied in: they join from ``ml_pattern_registry`` when the pattern resolves, so
:meth:`PredictionLog.prediction_performance` always sees the latest (and highest-ranked) label.
The metrics come from scikit-learn (``roc_auc_score``, ``brier_score_loss``)::

    reg.log_predictions(scored, run_id="wf-3", mode="filter", contributions=model.explain(X))
    reg.prediction_performance("signal_quality")          # one row per model version
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from itertools import repeat
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import brier_score_loss, roc_auc_score

from ..errors import RegistryError
from . import _frames as fr
from .connection import utc_now, write_transaction

__all__ = ["PredictionLog", "DECISIONS", "TOP_CONTRIBUTIONS", "PERFORMANCE_COLUMNS", "top_contributions"]

DECISIONS = ("take", "skip", "reduce_size")
"""What a mode did with a scored pattern (``reduce_size``: taken at a smaller size, SPEC §13)."""

TOP_CONTRIBUTIONS = 5
"""How many feature contributions each logged prediction keeps (largest ``|contribution|`` first)."""

PERFORMANCE_COLUMNS = ("model_id", "model_name", "version", "status", "predictions", "patterns", "resolved",
                       "auc", "brier", "taken", "skipped", "win_rate_taken", "win_rate_skipped",
                       "mean_r_taken", "mean_r_skipped")
"""The columns of :meth:`PredictionLog.prediction_performance`."""

_COLUMNS = ("pattern_id", "model_id", "run_id", "mode", "predicted_at", "ml_confidence", "expected_r", "stop_risk",
            "decision", "acting", "contributions")
_KEY = ("pattern_id", "model_id", "run_id", "mode")
_UPSERT = (f"INSERT INTO ml_predictions ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
           f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET "
           + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c not in _KEY))
_NEVER_ACTING = ("canary", "shadow")


def _top_json(values: np.ndarray, names: list[str]) -> list[str | None]:
    """Per row, the ``TOP_CONTRIBUTIONS`` largest |values| as a JSON object, largest first."""
    if values.size == 0:
        return [None] * len(values)
    k = min(TOP_CONTRIBUTIONS, values.shape[1])
    mag = np.where(np.isnan(values), -1.0, np.abs(values))
    top = np.argsort(-mag, axis=1, kind="stable")[:, :k]
    out = []
    for row, cols in zip(values, top, strict=True):
        pairs = {names[j]: float(row[j]) for j in cols.tolist() if not np.isnan(row[j])}
        out.append(json.dumps(pairs) if pairs else None)
    return out


def top_contributions(contributions: pd.DataFrame) -> list[str | None]:
    """Each row of :meth:`SignalQualityModel.explain` as the JSON the log keeps: its
    ``TOP_CONTRIBUTIONS`` largest |contributions| (``bias`` left out), largest first.

    >>> top_contributions(pd.DataFrame({"a": [0.1, -2.0], "b": [-0.3, 0.5], "bias": [9.0, 9.0]}))
    ['{"b": -0.3, "a": 0.1}', '{"a": -2.0, "b": 0.5}']
    """
    block = contributions.drop(columns="pattern_id") if "pattern_id" in contributions.columns else contributions
    names = [str(c) for c in block.columns]
    keep = [j for j, c in enumerate(names) if c != "bias"]
    values = block.to_numpy(dtype=np.float64, na_value=np.nan)[:, keep]   # one copy, no per-column frame work
    return _top_json(values, [names[j] for j in keep])


def _contribution_column(frame: pd.DataFrame, contributions: pd.DataFrame | None,
                         ids: list[str]) -> list[str | None]:
    if contributions is not None:
        if not isinstance(contributions, pd.DataFrame):
            raise RegistryError("contributions must be a DataFrame (SignalQualityModel.explain), "
                                f"got {type(contributions).__name__}")
        block = contributions.drop(columns=["bias", "pattern_id"], errors="ignore")
        if len(block) != len(frame):
            raise RegistryError(f"contributions have {len(block)} rows for {len(frame)} predictions")
        if "pattern_id" in contributions.columns:
            if contributions["pattern_id"].astype(str).tolist() != ids:
                raise RegistryError("contributions rows are not in the order of the predictions' pattern_id")
        elif not contributions.index.equals(frame.index) and contributions.index.astype(str).tolist() != ids:
            raise RegistryError("contributions must share the predictions' index (or carry their pattern_id)")
        try:
            values = block.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise RegistryError(f"contributions must be numeric: {exc}") from exc
        return _top_json(values, list(map(str, block.columns)))
    if "contributions" not in frame.columns:
        return [None] * len(frame)
    out: list[str | None] = []
    seen: dict[str, str | None] = {}           # a run logs each pattern's JSON once per mode: parse it once
    for v in frame["contributions"].tolist():
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out.append(None)
        elif isinstance(v, str):
            if v not in seen:
                seen[v] = _json_contributions(v)
            out.append(seen[v])
        elif isinstance(v, Mapping):
            out.append(_top_json(np.array([list(v.values())], float), list(map(str, v)))[0] if v else None)
        else:
            raise RegistryError(f"a contributions value must be a dict of feature -> contribution, got "
                                f"{type(v).__name__}")
    return out


def _json_contributions(v: str) -> str | None:
    """A JSON object of contributions, kept as given when it already is a top-``TOP_CONTRIBUTIONS``
    object of numbers (what :func:`top_contributions` writes), else cut down to one."""
    try:
        parsed = json.loads(v)
    except ValueError as exc:
        raise RegistryError(f"contributions {v[:200]!r} is not JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        return json.dumps(parsed)
    values = list(parsed.values())
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in values):
        raise RegistryError(f"contributions {v[:200]!r} must map feature names to numbers")
    mags = [abs(x) for x in values]
    if 0 < len(values) <= TOP_CONTRIBUTIONS and mags == sorted(mags, reverse=True) and all(x == x for x in values):
        return v
    return _top_json(np.array([values], float), list(parsed))[0]


class PredictionLog:
    """Methods on ``ml_predictions``, mixed into ``PatternRegistry``."""

    path: str

    def _db(self) -> Any:                     # provided by PatternRegistry
        raise NotImplementedError

    def log_predictions(self, predictions: pd.DataFrame, *, run_id: str | None = None, mode: str | None = None,
                        model_id: str | None = None, acting: bool | None = None,
                        contributions: pd.DataFrame | None = None) -> int:
        """Log scoring events in one transaction (an upsert on the key); return how many rows.

        ``predictions`` has one row per scored pattern: ``pattern_id``, ``model_id``, ``mode``
        (the ``prediction_mode``, or a keyword for all rows), and any of ``run_id`` (default ``''``),
        ``predicted_at`` (default now, UTC), ``ml_confidence``, ``expected_r``, ``stop_risk``,
        ``decision`` (``take`` / ``skip`` / ``reduce_size``), ``acting`` and ``contributions``
        (dict feature -> contribution, or JSON). ``contributions=`` takes the DataFrame of
        ``SignalQualityModel.explain`` instead, row for row. Only the five largest |contributions|
        are kept. ``acting`` defaults to False for a version the registry records as ``canary`` or
        ``shadow`` and True otherwise; ``acting=True`` for such a version is refused.
        """
        frame = fr.as_frame(predictions, "predictions")
        if len(frame) == 0:
            return 0
        ids = fr.pattern_ids(frame)
        cols: dict[str, Any] = {"pattern_id": ids}
        for key, given in (("model_id", model_id), ("mode", mode)):
            vals = fr.text_values(frame, key, given)
            blank = [i for i, v in zip(ids, vals, strict=True) if v is None or not v.strip()]
            if blank:
                raise RegistryError(f"{key} is required: predictions for patterns {blank[:5]} have none; add a "
                                    f"{key!r} column or pass log_predictions(..., {key}=...)")
            cols[key] = vals
        cols["run_id"] = [v or "" for v in fr.text_values(frame, "run_id", run_id)]
        cols["predicted_at"] = (fr.iso_times(frame["predicted_at"], "predicted_at")
                                if "predicted_at" in frame.columns else repeat(utc_now()))
        for c in ("ml_confidence", "expected_r", "stop_risk"):
            cols[c] = fr.real_values(frame, c)
        cols["decision"] = fr.text_values(frame, "decision")
        bad = sorted({d for d in cols["decision"] if d is not None and d not in DECISIONS})
        if bad:
            raise RegistryError(f"decision {bad[0]!r} is not one of {', '.join(map(repr, DECISIONS))}")
        cols["contributions"] = _contribution_column(frame, contributions, ids)
        with write_transaction(self._db(), self.path) as conn:
            cols["acting"] = self._acting(conn, frame, cols["model_id"], acting)
            conn.executemany(_UPSERT, zip(*(cols[c] for c in _COLUMNS)))
        return len(ids)

    def _acting(self, conn: Any, frame: pd.DataFrame, model_ids: list[str], acting: bool | None) -> list[int]:
        wanted = sorted(set(model_ids))
        quiet = {m for m in wanted if (row := conn.execute(
            "SELECT status FROM ml_model_versions WHERE model_id = ?", (m,)).fetchone()) and row[0] in _NEVER_ACTING}
        if "acting" in frame.columns:
            given = [bool(v) for v in frame["acting"].fillna(False).astype(bool).tolist()]
        elif acting is not None:
            given = [bool(acting)] * len(model_ids)
        else:
            given = [m not in quiet for m in model_ids]
        loud = sorted({m for m, a in zip(model_ids, given, strict=True) if a and m in quiet})
        if loud:
            raise RegistryError(f"model version {loud[0]!r} is canary or shadow: its predictions never act "
                                "(log them with acting=False)")
        return [int(a) for a in given]

    def get_predictions(self, *, pattern_id: str | None = None, model_id: str | None = None,
                        run_id: str | None = None) -> pd.DataFrame:
        """Logged predictions (optionally of one pattern / model version / run), oldest first;
        ``contributions`` decoded to dicts, ``acting`` as bool."""
        rows = self._db().execute(
            f"SELECT {', '.join(_COLUMNS)} FROM ml_predictions WHERE (CAST(?1 AS TEXT) IS NULL OR pattern_id = ?1) "
            "AND (CAST(?2 AS TEXT) IS NULL OR model_id = ?2) AND (CAST(?3 AS TEXT) IS NULL OR run_id = ?3) "
            "ORDER BY predicted_at, pattern_id, model_id, run_id, mode", (pattern_id, model_id, run_id)).fetchall()
        out = pd.DataFrame([tuple(r) for r in rows], columns=list(_COLUMNS))
        out["acting"] = out["acting"].astype(bool)
        out["contributions"] = pd.Series([None if r[-1] is None else json.loads(r[-1]) for r in rows],
                                         index=out.index, dtype=object)
        return out

    def latest_prediction(self, pattern_id: str) -> dict[str, Any] | None:
        """The newest logged prediction of one pattern, or None: ``model_id``, ``run_id``, ``mode``,
        ``ml_confidence``, ``expected_r``, ``stop_risk``, ``decision`` and ``contributions`` as a list
        of ``(feature, contribution)`` pairs, largest |contribution| first (what ``qml label``, in the
        terminal and on the web page, shows beside a pattern)."""
        log = self.get_predictions(pattern_id=pattern_id)
        if len(log) == 0:
            return None
        last = log.iloc[-1]
        out = {k: (None if pd.isna(last[k]) else last[k]) for k in
               ("model_id", "run_id", "mode", "ml_confidence", "expected_r", "stop_risk", "decision")}
        for k in ("ml_confidence", "expected_r", "stop_risk"):
            out[k] = None if out[k] is None else float(out[k])
        contrib = last["contributions"] if isinstance(last["contributions"], Mapping) else {}
        out["contributions"] = sorted(((str(k), float(v)) for k, v in contrib.items()), key=lambda kv: -abs(kv[1]))
        return out

    def prediction_performance(self, model_name: str | None = None, since: Any = None) -> pd.DataFrame:
        """How each model version's logged predictions turned out (the seeds' performance tracking).

        One row per ``model_id`` (of ``model_name``, or all; predictions made at or after ``since``):
        ``predictions`` (scoring events), ``patterns`` (distinct patterns scored), ``resolved``
        (events whose pattern now has a win/loss label), ``auc`` and ``brier`` of ``ml_confidence``
        against the label over the distinct resolved patterns (the newest event's confidence per
        pattern; NaN with fewer than two classes), ``taken`` / ``skipped`` (events whose decision
        was ``take`` or ``reduce_size`` / ``skip``), and over their resolved events
        ``win_rate_taken`` / ``win_rate_skipped`` (mean label) and ``mean_r_taken`` /
        ``mean_r_skipped`` (mean ``r_multiple`` where known). Labels follow the registry's ranking,
        so a user's relabel changes these figures.
        """
        lo = fr.iso_times([since], "since")[0] if since is not None else None
        rows = self._db().execute(
            "SELECT p.model_id, v.model_name, v.version, v.status, p.pattern_id, p.predicted_at, p.ml_confidence, "
            "p.decision, r.label, r.r_multiple FROM ml_predictions p "
            "LEFT JOIN ml_model_versions v ON v.model_id = p.model_id "
            "LEFT JOIN ml_pattern_registry r ON r.pattern_id = p.pattern_id "
            "WHERE (CAST(?1 AS TEXT) IS NULL OR v.model_name = ?1) "
            "AND (CAST(?2 AS TEXT) IS NULL OR p.predicted_at >= ?2) "
            "ORDER BY p.model_id, p.predicted_at", (model_name, lo)).fetchall()
        log = pd.DataFrame([tuple(r) for r in rows], columns=["model_id", "model_name", "version", "status",
                                                               "pattern_id", "predicted_at", "ml_confidence",
                                                               "decision", "label", "r_multiple"])
        out = [_performance(mid, g) for mid, g in log.groupby("model_id", sort=False)]
        table = pd.DataFrame(out, columns=list(PERFORMANCE_COLUMNS))
        return table.sort_values(["model_name", "version", "model_id"], na_position="last",
                                 ignore_index=True) if len(table) else table


def _performance(model_id: str, g: pd.DataFrame) -> dict[str, Any]:
    label = pd.to_numeric(g["label"], errors="coerce")
    r_mult = pd.to_numeric(g["r_multiple"], errors="coerce")
    resolved = label.notna()
    per_pattern = g[resolved].assign(label=label[resolved]).drop_duplicates("pattern_id", keep="last")
    scored = per_pattern[pd.to_numeric(per_pattern["ml_confidence"], errors="coerce").notna()]
    y, p = scored["label"].to_numpy(int), scored["ml_confidence"].to_numpy(float)
    taken = g["decision"].isin(["take", "reduce_size"]).to_numpy()
    skipped = (g["decision"] == "skip").to_numpy()

    def mean(s: pd.Series, mask: np.ndarray) -> float:
        v = s[mask & resolved.to_numpy()].dropna()
        return float(v.mean()) if len(v) else float("nan")

    first = g.iloc[0]
    return {
        "model_id": model_id, "model_name": first["model_name"],
        "version": None if pd.isna(first["version"]) else int(first["version"]), "status": first["status"],
        "predictions": len(g), "patterns": int(g["pattern_id"].nunique()), "resolved": int(resolved.sum()),
        "auc": float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan"),
        "brier": float(brier_score_loss(y, p)) if len(y) else float("nan"),
        "taken": int(taken.sum()), "skipped": int(skipped.sum()),
        "win_rate_taken": mean(label, taken), "win_rate_skipped": mean(label, skipped),
        "mean_r_taken": mean(r_mult, taken), "mean_r_skipped": mean(r_mult, skipped),
    }
