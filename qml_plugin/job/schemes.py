"""Walk-forward schemes of a universe run on one UTC clock (SPEC §11): who trains on whom.

Input: the pool of every dataset's patterns (one row each, with ``market`` = symbol, ``known_at_utc``
and ``exit_known_at_utc`` from :mod:`.clock`, and the effective label) and their features. Output, per
scheme, the out-of-sample ``ml_confidence`` of every pattern (NaN where no model may score it):

* ``pooled``: at each retrain date one model learns from the labels of **all** markets that were known
  (``exit_known_at_utc``) before that date minus the embargo; each pattern is scored by the latest
  pooled model whose training labels were all known before ``known_at_utc - embargo``;
* ``per_market``: one walk-forward family per market (AAPL_1h and AAPL_1d together); a market that never
  reaches ``min_train`` labels gets no score (it trades its baseline);
* ``leave_market_out``: a market's patterns are scored only by models trained on the other markets.

Training, saving versions and the out-of-sample guard are :func:`qml_plugin.ml.walkforward.train_walk_forward`
and :func:`qml_plugin.ml.guard.admissible_model`, given the UTC instants; nothing here compares naive
stamps. Models are saved under the run's own folder (``root``), never elsewhere.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError, InsufficientDataError
from ..ml.guard import admissible_model
from ..ml.metrics import calibration_table, evaluate
from ..ml.model import SignalQualityModel
from ..ml.walkforward import train_walk_forward

__all__ = ["SCHEMES", "SchemeScores", "score_scheme", "parse_schemes"]

SCHEMES = ("pooled", "per_market", "leave_market_out")
"""Names accepted by ``walk_forward.scheme`` and ``qml run --scheme``."""


def parse_schemes(value) -> list[str]:
    """``"pooled,per_market"`` or a list -> a checked list of scheme names."""
    names = [s.strip() for s in value.split(",")] if isinstance(value, str) else list(value)
    bad = [s for s in names if s not in SCHEMES]
    if bad or not names:
        raise ConfigError(f"walk_forward.scheme = {value!r} is not allowed; allowed: one or more of "
                          f"{', '.join(SCHEMES)}")
    return list(dict.fromkeys(names))


@dataclass
class SchemeScores:
    """One scheme's out-of-sample scores, aligned with the pool's rows, and what it took to get them."""

    scheme: str
    proba: np.ndarray
    expected_r: np.ndarray | None = None   # the expected-R head where the models have one (else None)
    fits: int = 0                       # models trained
    fit_seconds: float = 0.0            # wall time of training (and saving) them
    first_model_utc: pd.Timestamp | None = None
    markets_trained: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    calibration: list = field(default_factory=list)
    share_scored: float = 0.0


def _wf(X, y, known, exits, root, opts):
    t0 = time.perf_counter()
    wf = train_walk_forward(X, y, known, exits, root=root, every_months=opts["every_months"],
                            min_train=opts["min_train"], embargo=opts["embargo"],
                            model_factory=opts["model_factory"], feature_schema=opts.get("feature_schema"))
    return wf, time.perf_counter() - t0


def score_scheme(scheme: str, pool: pd.DataFrame, X: pd.DataFrame, y, *, root: str | Path, every_months: int = 12,
                 min_train: int = 100, embargo: pd.Timedelta | None = None,
                 model_factory: Callable[[], SignalQualityModel] | None = None,
                 feature_schema: str | None = None) -> SchemeScores:
    """Out-of-sample scores of every row of ``pool`` under ``scheme`` (see the module docstring).

    ``pool`` needs ``market``, ``known_at_utc`` and ``exit_known_at_utc`` (naive UTC); ``X`` its
    features (same row order), ``y`` its labels (NaN = no known outcome: scored, never trained on).
    """
    opts = dict(every_months=every_months, min_train=min_train, embargo=embargo,
                model_factory=model_factory, feature_schema=feature_schema)
    root = Path(root)
    y = np.asarray(y, dtype=float)
    known = pd.DatetimeIndex(pool["known_at_utc"])
    exits = pd.DatetimeIndex(pool["exit_known_at_utc"])
    market = pool["market"].to_numpy()
    proba = np.full(len(pool), np.nan)
    out = SchemeScores(scheme, proba)
    expected = np.full(len(pool), np.nan)
    X = X.reset_index(drop=True)
    if scheme not in SCHEMES:
        raise ConfigError(f"walk_forward.scheme = {scheme!r} is not allowed; allowed: {', '.join(SCHEMES)}")
    groups = [(None, np.arange(len(pool)))] if scheme == "pooled" else \
        [(m, np.flatnonzero(market == m)) for m in sorted(set(market))]
    for m, rows in groups:
        train = rows if scheme != "leave_market_out" else np.flatnonzero(market != m)
        where = root / scheme / (str(m) if m is not None else "")
        try:
            wf, sec = _wf(X.iloc[train], y[train], known[train], exits[train], where, opts)
        except InsufficientDataError:
            continue                       # this market trades its baseline under this scheme
        out.fits += len(wf.models)
        out.fit_seconds += sec
        out.markets_trained.append("all" if m is None else m)
        which = admissible_model(known[rows], [mdl.trained_on_end_ for mdl in wf.models], embargo)
        for k, mdl in enumerate(wf.models):
            hit = rows[which == k]
            if len(hit):
                proba[hit] = mdl.predict_proba(X.iloc[hit])[:, 1]
                if hasattr(mdl, "predict_expected_r") and "expected_r" in getattr(mdl, "heads_", ()):
                    expected[hit] = mdl.predict_expected_r(X.iloc[hit])
    if not np.isnan(expected).all():
        out.expected_r = expected
    scored = ~np.isnan(proba)
    out.share_scored = float(scored.mean()) if len(proba) else 0.0
    judged = scored & ~np.isnan(y)
    if judged.sum() >= 2 and len(np.unique(y[judged])) == 2:
        out.metrics = evaluate(y[judged].astype(int), proba[judged])
        out.calibration = calibration_table(y[judged].astype(int), proba[judged], n_bins=10)
    if scored.any():
        out.first_model_utc = pd.Timestamp(known[scored].min())
    return out
