"""The prediction log on the vectorbt side (SPEC §5 ``ml_predictions``, §9): what the model scored, written once.

:func:`~qml_plugin.vbt.backtest` (``registry_db=``), :func:`~qml_plugin.vbt.sweep` and ``qml optimize``
(``ml_data_collection: {enabled: true, db_path: ...}``) score patterns with the ``ml:`` block's model.
With a registry they write, after the run and in two transactions:

1. the **scored patterns** (``PatternRegistry.register_patterns``): ``detect_patterns``' columns, the
   acting ``ml_confidence`` and decision (``pass:<mode>`` / ``skip:<mode>``, the registry mixin's
   words), ``regime_at_detection``, their features (``feature_schema`` = the extractor's hash) and,
   where the triple barrier has resolved, the outcome columns of
   :func:`~qml_plugin.patterns.label_patterns` (``label``, ``pnl_pct``, ``r_multiple``,
   ``exit_time``), so the outcome joins the log as ``qml run``'s do;
2. one **prediction row per scored pattern, model version and mode**
   (``PatternRegistry.log_predictions``; columns :data:`qml_plugin.scoring.PREDICTION_COLUMNS`),
   built by :meth:`qml_plugin.scoring.Scorer.prediction_frame`, the helper the mixins use: the
   ``model_id`` naming the version (:func:`qml_plugin.scoring.model_id_of`: the registry's id for a
   recorded folder, else ``sha256:<16 hex>``), the three heads, ``acting`` and the top five
   contributions (TreeSHAP, one ``explain`` batch per model). ``decision`` is
   :func:`qml_plugin.filter.decide` of the mode on the row's own scores (``take`` / ``skip``; the
   vectorbt side refuses sizing bands, so never ``reduce_size``).

**Canary and shadow.** With a registry, the statuses in ``ml_model_versions`` apply as in the mixins
(:func:`qml_plugin.scoring.load_versions`): a ``production`` version alone acts; ``canary`` and
``shadow`` versions of the folder score the same patterns under the same guard and are logged with
``acting = false`` and the decision the mode *would* have taken. So ``registry_db`` / collection on
can change which version acts, exactly as ``registry_db`` does for ``QMLStrategy``.

**Which patterns, which decision (sweeps).** A ``pattern_id`` hashes every ``QMLParams`` field but
``min_score`` (:mod:`qml_plugin.patterns.qml`), so a grid's distinct patterns are those of its
distinct *identity keys* (the combination without ``min_score``). Combinations that differ only in
``min_score`` share their patterns: one scoring event each, keyed by ``(pattern_id, model_id,
run_id, mode)``. Their ``decision`` may differ with ``min_score``; the row keeps the decision of the
**first combination of the grid** holding the pattern (grid order, the first key varying slowest).
Scores are computed once per detection key (:class:`~qml_plugin.vbt.engine.PatternBook`); the ids of
another identity key are recomputed by :func:`~qml_plugin.patterns.detect_patterns` (same rows).
``qml optimize`` logs each distinct trial's patterns detected inside the longest period it was
evaluated on (train, validation or holdout: the bars its model pass saw).

**Run ids.** :func:`backtest_run_id` / :func:`grid_run_id`: ``vbt-`` / ``sweep-`` / ``optimize-`` and 16
hex digits of the data (symbol, timeframe, length, first and last time, a digest of the closes), the
parameters and the ``ml:`` block. The same run gives the same id, so running it again upserts the
same rows and writes nothing new; pass ``run_id=`` to name a run yourself. The id is returned by
these functions (and in ``sweep(...).attrs["predictions"]`` / ``OptimizeResult.predictions``), not
attached to the Portfolio, which stays vectorbt's own object.

**Cost.** Nothing is kept or written when no registry is given (``keep_events`` off, one branch);
with one, the extra work is the ``explain`` batches, the id recomputation per identity key and the
two writes.
"""
from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import MLConfig
from ..errors import ConfigError, RegistryError
from ..filter import decide
from ..patterns import QMLParams, detect_patterns
from ..scoring import PREDICTION_COLUMNS

__all__ = ["ScoringEvents", "scoring_events", "log_events", "backtest_run_id", "grid_run_id", "check_target",
           "identity_key"]

_OUTCOMES = ("label", "pnl_pct", "r_multiple", "exit_time")


@dataclass
class ScoringEvents:
    """What a vectorbt run writes: ``patterns`` / ``features`` (``register_patterns``), ``predictions``
    (``log_predictions``, :data:`~qml_plugin.scoring.PREDICTION_COLUMNS`)."""

    patterns: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["pattern_id"]))
    features: pd.DataFrame = field(default_factory=pd.DataFrame)
    feature_schema: str | None = None
    predictions: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(PREDICTION_COLUMNS)))
    seconds: float = 0.0


def identity_key(p: QMLParams) -> tuple:
    """What a ``pattern_id`` hashes of the parameters: every field but ``min_score``."""
    return tuple(sorted((k, v) for k, v in p.as_dict().items() if k != "min_score"))


def check_target(ohlcv: pd.DataFrame, registry_db, run_id, *, key: str = "registry_db") -> tuple[str, str | None]:
    """``(registry_db, run_id)`` checked: a :class:`ConfigError` naming the bad one (``key`` for the
    registry: ``registry_db``, or ``ml_data_collection.db_path`` for a config) and what is allowed."""
    from ..registry.connection import parse_db

    if isinstance(registry_db, os.PathLike):
        registry_db = os.fspath(registry_db)
    allowed = "allowed: a registry path or URL (results/experiments.db, sqlite:///path, postgresql://...) or None"
    if not isinstance(registry_db, str) or not registry_db.strip():
        raise ConfigError(f"{key} = {registry_db!r} is not allowed; {allowed}")
    try:
        parse_db(registry_db)
    except RegistryError as e:
        raise ConfigError(f"{key} = {registry_db!r} is not allowed ({e}); {allowed}") from None
    if Path(registry_db).is_dir():
        raise ConfigError(f"{key} = {registry_db!r} is a directory; {allowed}")
    if run_id is not None and (not isinstance(run_id, str) or not run_id.strip()):
        raise ConfigError(f"run_id = {run_id!r} is not allowed; allowed: a non-empty string, or None "
                          "(an id derived from the data, parameters and ml: block)")
    if not ohlcv.attrs.get("symbol"):
        raise ConfigError(f"ohlcv.attrs['symbol'] is missing, but {key} is set: the registry needs the "
                          "symbol of every pattern (and pattern_id hashes it); allowed: set "
                          f"ohlcv.attrs['symbol'] = 'EURUSD' (load_ohlcv does), or no {key}")
    return registry_db, run_id


def _digest(kind: str, ohlcv: pd.DataFrame, params: Sequence[QMLParams], ml: MLConfig) -> str:
    close = np.ascontiguousarray(ohlcv["Close"].to_numpy(np.float64))
    what = repr((ohlcv.attrs.get("symbol"), ohlcv.attrs.get("timeframe"), len(ohlcv), str(ohlcv.index[0]),
                 str(ohlcv.index[-1]), hashlib.blake2b(close.tobytes(), digest_size=8).hexdigest(),
                 [p.as_dict() for p in params], ml.model_dump()))
    return f"{kind}-{hashlib.blake2b(what.encode(), digest_size=8).hexdigest()}"


def backtest_run_id(ohlcv: pd.DataFrame, params: QMLParams, ml: MLConfig) -> str:
    """The run id :func:`~qml_plugin.vbt.backtest` logs under without ``run_id=``: ``vbt-<16 hex>``."""
    return _digest("vbt", ohlcv, [params], ml)


def grid_run_id(kind: str, ohlcv: pd.DataFrame, grid: Sequence[QMLParams], ml: MLConfig) -> str:
    """The run id of a sweep (``kind="sweep"``) or a search (``"optimize"``) without ``run_id=``."""
    return _digest(kind, ohlcv, grid, ml)


def scoring_events(book, grid: Sequence[QMLParams], *, upto: Sequence[int] | None = None) -> ScoringEvents:
    """The scoring events of ``grid`` on ``book`` (a :class:`~qml_plugin.vbt.engine.PatternBook` made with
    ``keep_events=True``): one prediction row per distinct pattern, model version and mode, and the
    scored patterns to register (see the module docstring). ``upto[j]``: only ``grid[j]``'s patterns
    detected before that bar (``qml optimize``'s periods)."""
    from ..features.cache import pattern_regimes

    t0 = time.perf_counter()
    book.score(grid)
    ml = book.ml
    first: dict[tuple, int] = {}
    for j, p in enumerate(grid):
        first.setdefault(identity_key(p), j)
    bases: dict[int, pd.DataFrame] = {}
    pats_out, feats_out, preds_out, schema = [], [], [], None
    for key, j in first.items():
        p = grid[j]
        where = book.pass_of.get(book.detection_key(p))
        if where is None:                     # ML off or the model unusable (baseline): nothing scored
            continue
        k, a, b = where
        run = book.passes[k]
        scorer, schema = run["scorer"], run["schema"]
        if k not in bases:                    # the scorer's rows (acting and quiet), one explain batch per model
            base = scorer.prediction_frame(pd.Series(dtype=object), mode=ml.prediction_mode)
            base["row"] = pd.Index(scorer.confidence.index).get_indexer(base["pattern_id"])
            bases[k] = base
        base = bases[k]
        ev = base[(base["row"] >= a) & (base["row"] < b)].copy()
        cached = book.patterns(p)
        local = ev["row"].to_numpy() - a
        if upto is not None:
            inside = cached["detection_bar"].to_numpy()[local] < upto[j]
            ev, local = ev[inside], local[inside]
        if not len(ev):
            continue
        same = identity_key(QMLParams(**cached.attrs["params"])) == key if "params" in cached.attrs else False
        ids = cached["pattern_id"] if same else detect_patterns(book.ohlcv, p)["pattern_id"]
        ids = ids.to_numpy(dtype=object)
        v = cached["validity_score"].to_numpy(float)[local]
        er = ev["expected_r"].to_numpy(float) if ml.prediction_mode == "expected_value" else None
        take, _ = decide(v, ev["ml_confidence"].to_numpy(float), mode=ml.prediction_mode, min_score=float(p.min_score),
                         ml_weight=ml.ml_weight, confidence_threshold=ml.confidence_threshold, expected_r=er,
                         min_expected_r=ml.min_expected_r)
        ev["pattern_id"] = ids[local]
        ev["decision"] = np.where(take, "take", "skip")
        preds_out.append(ev[list(PREDICTION_COLUMNS)])
        rows = np.unique(local)
        acting = ev[ev["acting"].to_numpy(dtype=bool)]
        pats = cached.iloc[rows].copy()
        pats["pattern_id"] = ids[rows]
        lab = book.labeled(p).iloc[rows]
        known = lab["label"].notna().to_numpy()
        for c in _OUTCOMES:
            pats[c] = lab[c].where(known).to_numpy()
        conf = pd.Series(acting["ml_confidence"].to_numpy(float), index=acting["pattern_id"].to_numpy())
        word = pd.Series(np.where(acting["decision"] == "take", "pass", "skip"), index=conf.index)
        pats["ml_confidence"] = conf.reindex(pats["pattern_id"]).to_numpy()
        word = (word.reindex(pats["pattern_id"]) + f":{ml.prediction_mode}").astype(object)   # NaN: not acting
        pats["ml_decision"] = word.where(word.notna(), None).to_numpy()
        pats["regime_at_detection"] = pattern_regimes(book.ohlcv, pats).to_numpy()
        pats_out.append(pats)
        feats = scorer.features.iloc[a + rows]
        feats_out.append(feats.set_axis(pd.Index(ids[rows], name="pattern_id"), axis=0))
    if not preds_out:
        return ScoringEvents(seconds=time.perf_counter() - t0)
    return ScoringEvents(pd.concat(pats_out, ignore_index=True), pd.concat(feats_out), schema,
                         pd.concat(preds_out, ignore_index=True), time.perf_counter() - t0)


def log_events(registry_db: str, events: ScoringEvents, run_id: str) -> dict:
    """Register ``events.patterns`` and log ``events.predictions`` under ``run_id``: ``{"run_id", "db",
    "patterns", "rows", "seconds"}`` (``seconds`` also counts building the events)."""
    from ..registry import PatternRegistry

    t0 = time.perf_counter()
    n_pats = n_rows = 0
    if len(events.predictions):
        with PatternRegistry(registry_db) as reg:
            n_pats = len(reg.register_patterns(events.patterns, events.features, run_id=run_id,
                                               feature_schema=events.feature_schema))
            n_rows = reg.log_predictions(events.predictions, run_id=run_id)
    return {"run_id": run_id, "db": str(registry_db), "patterns": n_pats, "rows": n_rows,
            "seconds": events.seconds + time.perf_counter() - t0}
