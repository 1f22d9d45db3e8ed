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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError, InsufficientDataError
from ..ml.guard import admissible_model
from ..ml.metrics import calibration_table, evaluate
from ..ml.model import SignalQualityModel
from ..ml.walkforward import train_walk_forward

__all__ = ["SCHEMES", "SchemeScores", "score_scheme", "parse_schemes", "group_tasks", "fit_group", "collect_scheme"]

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

    def out_of_sample(self, known_at_utc) -> np.ndarray:
        """Rows known (``known_at_utc``, naive UTC) from this scheme's first admissible model on; before it
        every mode equals the baseline and nothing is counted."""
        known = pd.DatetimeIndex(known_at_utc)
        if self.first_model_utc is None:
            return np.zeros(len(known), bool)
        return np.asarray(known >= self.first_model_utc)


def fit_group(task: dict) -> dict | None:
    """A work unit: one walk-forward family (one scheme's group of markets) trained and applied.

    ``task`` holds the training rows (``X``, ``y``, ``known``, ``exits``), the rows to score
    (``X_score``, ``known_score``) and the options; models are trained in a scratch folder (so a
    worker writes nothing that outlives it) and returned, with the out-of-sample scores of the rows
    to score under the guard. None when the group never reaches ``min_train`` labels.
    """
    import tempfile

    t0 = time.perf_counter()
    params = dict(task["model_params"] or {})
    params.setdefault("n_jobs", 1)
    with tempfile.TemporaryDirectory(prefix="qml-wf-") as scratch:
        try:
            wf = train_walk_forward(task["X"], task["y"], task["known"], task["exits"], root=Path(scratch) / "wf",
                                    every_months=task["every_months"], min_labels=task["min_train"],
                                    embargo=task["embargo"], model_factory=lambda: SignalQualityModel(**params),
                                    feature_schema=task.get("feature_schema"))
        except InsufficientDataError:
            return None
    which = admissible_model(task["known_score"], [m.trained_on_end_ for m in wf.models], embargo=task["embargo"])
    proba = np.full(len(which), np.nan)
    expected = np.full(len(which), np.nan)
    Xs = task["X_score"]
    for k, mdl in enumerate(wf.models):
        hit = np.flatnonzero(which == k)
        if len(hit):
            proba[hit] = mdl.predict_proba(Xs.iloc[hit])[:, 1]
            if hasattr(mdl, "predict_expected_r") and "expected_r" in getattr(mdl, "heads_", ()):
                expected[hit] = mdl.predict_expected_r(Xs.iloc[hit])
    return {"models": wf.models, "proba": proba, "expected_r": expected, "seconds": time.perf_counter() - t0,
            "which": which}


def group_tasks(scheme: str, pool: pd.DataFrame, X: pd.DataFrame, y, *, every_months: int = 12,
                min_train: int = 100, embargo: pd.Timedelta | None = None, model_params: dict | None = None,
                feature_schema: str | None = None) -> list[tuple[str, np.ndarray, dict]]:
    """``(group name, rows scored, task)`` for each walk-forward family of ``scheme`` (see :func:`fit_group`).

    ``pool`` needs ``market``, ``known_at_utc`` and ``exit_known_at_utc`` (naive UTC); ``X`` its
    features (same row order), ``y`` its labels (NaN = no known outcome: scored, never trained on).
    """
    if scheme not in SCHEMES:
        raise ConfigError(f"walk_forward.scheme = {scheme!r} is not allowed; allowed: {', '.join(SCHEMES)}")
    y = np.asarray(y, dtype=float)
    known = pd.DatetimeIndex(pool["known_at_utc"])
    exits = pd.DatetimeIndex(pool["exit_known_at_utc"])
    market = pool["market"].to_numpy()
    X = X.reset_index(drop=True)
    groups = [("all", np.arange(len(pool)))] if scheme == "pooled" else \
        [(str(m), np.flatnonzero(market == m)) for m in sorted(set(market))]
    out = []
    for name, rows in groups:
        train = rows if scheme != "leave_market_out" else np.flatnonzero(market != name)
        out.append((name, rows, {"X": X.iloc[train], "y": y[train], "known": known[train], "exits": exits[train],
                                 "X_score": X.iloc[rows], "known_score": known[rows], "every_months": every_months,
                                 "min_train": min_train, "embargo": embargo, "model_params": model_params,
                                 "feature_schema": feature_schema}))
    return out


def collect_scheme(scheme: str, pool: pd.DataFrame, y, groups: list, results: list, *,
                   root: str | Path | None = None) -> SchemeScores:
    """Put the groups' :func:`fit_group` results together; save their models under ``root/scheme/group``."""
    y = np.asarray(y, dtype=float)
    known = pd.DatetimeIndex(pool["known_at_utc"])
    proba = np.full(len(pool), np.nan)
    expected = np.full(len(pool), np.nan)
    out = SchemeScores(scheme, proba)
    for (name, rows, _), res in zip(groups, results):
        if res is None:
            continue                       # this group trades its baseline under this scheme
        out.fits += len(res["models"])
        out.fit_seconds += res["seconds"]
        out.markets_trained.append(name)
        proba[rows] = res["proba"]
        expected[rows] = res["expected_r"]
        if root is not None:               # the paths let the driver record the versions it logs predictions of
            res["paths"] = [mdl.save_version(Path(root) / scheme / name, metrics={"scheme": scheme, "group": name})
                            for mdl in res["models"]]
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


def score_scheme(scheme: str, pool: pd.DataFrame, X: pd.DataFrame, y, *, root: str | Path | None = None,
                 every_months: int = 12, min_train: int = 100, embargo: pd.Timedelta | None = None,
                 model_params: dict | None = None, feature_schema: str | None = None) -> SchemeScores:
    """Out-of-sample scores of every row of ``pool`` under ``scheme``, in this process (see the module
    docstring; :func:`group_tasks` + :func:`fit_group` + :func:`collect_scheme` run it on a scheduler)."""
    groups = group_tasks(scheme, pool, X, y, every_months=every_months, min_train=min_train, embargo=embargo,
                         model_params=model_params, feature_schema=feature_schema)
    return collect_scheme(scheme, pool, y, groups, [fit_group(task) for _, _, task in groups], root=root)
