"""Walk-forward schemes of a universe run on one UTC clock (SPEC §11): who trains on whom.

Input: the pool of every dataset's patterns (one row each, with ``market`` = symbol, ``known_at_utc``
and ``exit_known_at_utc`` from :mod:`.clock`, the effective label, ``r_net`` and ``stop_first``) and
their features. The models learn the three targets of :func:`scheme_targets` (win, R net of costs,
stop first), so every scheme carries the out-of-sample ``ml_confidence``, ``expected_r`` and
``stop_risk`` of every pattern (NaN where no model may score it), and the ECE of its
``ml_confidence`` beside the noise a perfectly calibrated model would show (``ece_report``):

* ``pooled``: at each retrain date one model learns from the labels of **all** markets that were known
  (``exit_known_at_utc``) before that date minus the embargo; each pattern is scored by the latest
  pooled model whose training labels were all known before ``known_at_utc - embargo``;
* ``per_market``: one walk-forward family per market (AAPL_1h and AAPL_1d together); a market that never
  reaches ``min_train_labels`` labels gets no score (it trades its baseline);
* ``leave_market_out``: a market's patterns are scored only by models trained on the other markets.

**Regime models** (SPEC §13, ``ml.regime_models: true``: ``regimes=True`` here): every walk-forward
family of every scheme also trains, at each step, one model per regime (the pool's
``regime_at_detection``) with at least ``min_regime_labels`` of the family's training labels; each
pattern is scored by its family's latest admissible model of its regime where one exists, else by the
family's pooled model (:func:`qml_plugin.ml.walkforward.route_models`, the one routing rule). The
same models routed without regimes give each pattern's **pooled-only** score too
(``SchemeScores.pooled_proba``), so :func:`.regimes.compare_scheme_regimes` compares the two without
refitting. Regime versions are saved beside the pooled ones, under ``<group>/regime_<name>/``.

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
from ..ml.calibration import calibration_report, ece_bootstrap, expected_calibration_error
from ..ml.metrics import calibration_table, evaluate
from ..ml.model import SignalQualityModel
from ..ml.walkforward import route_models, score_by_model, train_walk_forward

__all__ = ["SCHEMES", "SchemeScores", "score_scheme", "parse_schemes", "group_tasks", "fit_group", "collect_scheme",
           "scheme_targets", "SCORE_KEYS"]

SCORE_KEYS = ("proba", "raw_proba", "expected_r", "stop_risk")
"""What a scheme scores per pattern: calibrated P(win), P(win) before calibration, expected R, P(stop first)."""

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


def scheme_targets(pool: pd.DataFrame) -> pd.DataFrame:
    """The three heads' targets of each pool row: ``label`` (win), ``r_multiple`` = the pool's ``r_net``
    (the R-multiple net of the dataset's costs: what the verdict judges, so what ``expected_r`` must
    predict) and ``stop_first``; NaN where the outcome is not known."""
    missing = [c for c in ("label", "r_net", "stop_first") if c not in pool.columns]
    if missing:
        raise ValueError(f"the pool lacks {missing}: market_unit's patterns carry label, r_net and stop_first")
    label = pool["label"].to_numpy(float)
    known = ~np.isnan(label)
    r = np.where(known, pool["r_net"].to_numpy(float), np.nan)
    stop = np.where(known, pool["stop_first"].to_numpy(float), np.nan)
    return pd.DataFrame({"label": label, "r_multiple": np.where(np.isfinite(r), r, np.nan), "stop_first": stop})


@dataclass
class SchemeScores:
    """One scheme's out-of-sample scores, aligned with the pool's rows, and what it took to get them.

    ``proba`` is ``ml_confidence`` (calibrated P(win)), ``raw_proba`` the same models' P(win) before
    calibration, ``expected_r`` / ``stop_risk`` the other heads (None when no model had the head).
    ``ece_report`` is :func:`qml_plugin.ml.calibration.calibration_report` of the scored labeled rows
    (``ece``, its bootstrap ``ece_sd`` / ``ece_p05`` / ``ece_p95``, ``ece_calibrated_p95`` = the 95th
    percentile of a perfectly calibrated model's ECE with these predictions, ``within_noise``) plus
    ``ece_uncalibrated`` / ``ece_uncalibrated_sd`` (the same for ``raw_proba``).

    With regime models (module docstring): ``pooled_proba`` is each row's ``ml_confidence`` from its
    family's pooled models alone (None without regime models), ``scored_by_regime`` is True where a
    regime model scored the row, ``regime_groups`` lists per regime the groups where it had its own
    model and ``regime_versions`` counts its versions over all groups.
    """

    scheme: str
    proba: np.ndarray
    expected_r: np.ndarray | None = None
    fits: int = 0                       # models trained
    fit_seconds: float = 0.0            # wall time of training (and saving) them
    first_model_utc: pd.Timestamp | None = None
    markets_trained: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    calibration: list = field(default_factory=list)
    share_scored: float = 0.0
    stop_risk: np.ndarray | None = None
    raw_proba: np.ndarray | None = None
    ece_report: dict = field(default_factory=dict)
    pooled_proba: np.ndarray | None = None
    scored_by_regime: np.ndarray | None = None
    regime_groups: dict = field(default_factory=dict)
    regime_versions: dict = field(default_factory=dict)

    def out_of_sample(self, known_at_utc) -> np.ndarray:
        """Rows known (``known_at_utc``, naive UTC) from this scheme's first admissible model on; before it
        every mode equals the baseline and nothing is counted."""
        known = pd.DatetimeIndex(known_at_utc)
        if self.first_model_utc is None:
            return np.zeros(len(known), bool)
        return np.asarray(known >= self.first_model_utc)


def fit_group(task: dict) -> dict | None:
    """A work unit: one walk-forward family (one scheme's group of markets) trained and applied.

    ``task`` holds the training rows (``X``, ``y``: labels or a targets frame, ``known``, ``exits``),
    the rows to score (``X_score``, ``known_score``) and the options; models are trained in a scratch
    folder (so a worker writes nothing that outlives it) and returned, with every head's out-of-sample
    score (:data:`SCORE_KEYS`) of the rows to score under the guard, ``which`` (the model that scored
    each row, :func:`qml_plugin.ml.walkforward.route_models`) and ``family`` (each model's: ``"pooled"``
    or its regime). With regime models (``task["regimes"]`` set: the training rows' regimes, and
    ``regimes_score`` the scored rows'), ``pooled_proba`` is every scored row's pooled-only
    ``ml_confidence``. None when the group never reaches ``min_train_labels`` labels.
    """
    import tempfile

    t0 = time.perf_counter()
    params = dict(task["model_params"] or {})
    params.setdefault("n_jobs", 1)
    with tempfile.TemporaryDirectory(prefix="qml-wf-") as scratch:
        try:
            wf = train_walk_forward(task["X"], task["y"], task["known"], task["exits"], root=Path(scratch) / "wf",
                                    every_months=task["every_months"], min_labels=task["min_train_labels"],
                                    embargo=task["embargo"], model_factory=lambda: SignalQualityModel(**params),
                                    feature_schema=task.get("feature_schema"), regimes=task.get("regimes"),
                                    min_regime_labels=task.get("min_regime_labels", 50))
        except InsufficientDataError:
            return None
    family = list(wf.model_family)
    regime_score = task.get("regimes_score") if task.get("regimes") is not None else None
    which = route_models(task["known_score"], wf.models, family, regime_score, embargo=task["embargo"])
    heads = score_by_model(task["X_score"], which, wf.models)
    scores = dict(zip(SCORE_KEYS, (heads["confidence"], heads["raw_confidence"], heads["expected_r"],
                                   heads["stop_risk"])))
    out = {"models": wf.models, **scores, "which": which, "family": family}
    if regime_score is not None:         # the same models without regimes: what the regime models are judged against
        pooled = route_models(task["known_score"], wf.models, family, None, embargo=task["embargo"])
        same = pooled == which           # rows the pooled model scored already: no second prediction
        p = heads["confidence"].copy()
        redo = np.flatnonzero(~same)
        if len(redo):
            p[redo] = score_by_model(task["X_score"].iloc[redo], pooled[redo], wf.models)["confidence"]
        out["pooled_proba"] = np.where(pooled >= 0, p, np.nan)
    return out | {"seconds": time.perf_counter() - t0}


def group_tasks(scheme: str, pool: pd.DataFrame, X: pd.DataFrame, y, *, every_months: int = 12,
                min_train_labels: int = 100, embargo: pd.Timedelta | None = None, model_params: dict | None = None,
                feature_schema: str | None = None, regimes: bool = False,
                min_regime_labels: int = 50) -> list[tuple[str, np.ndarray, dict]]:
    """``(group name, rows scored, task)`` for each walk-forward family of ``scheme`` (see :func:`fit_group`).

    ``pool`` needs ``market``, ``known_at_utc`` and ``exit_known_at_utc`` (naive UTC), and
    ``regime_at_detection`` when ``regimes`` (``ml.regime_models``: regime models with at least
    ``min_regime_labels`` labels, module docstring); ``X`` its features (same row order), ``y`` its
    targets: :func:`scheme_targets` (three heads) or 0/1 labels (the confidence head only); NaN = no
    known outcome: scored, never trained on.
    """
    if scheme not in SCHEMES:
        raise ConfigError(f"walk_forward.scheme = {scheme!r} is not allowed; allowed: {', '.join(SCHEMES)}")
    regime = None
    if regimes:
        if "regime_at_detection" not in pool.columns:
            raise ConfigError("ml.regime_models = true needs each pattern's regime_at_detection, and these patterns "
                              "have none (the strategy computes no pattern_regimes); allowed: a strategy with "
                              "features on, or ml.regime_models = false")
        if isinstance(min_regime_labels, bool) or not isinstance(min_regime_labels, (int, np.integer)) \
                or min_regime_labels < 1:
            raise ConfigError(f"ml.min_regime_labels = {min_regime_labels!r} is not allowed; allowed: an integer >= 1")
        regime = pool["regime_at_detection"].to_numpy(dtype=object)
    y = y.reset_index(drop=True) if isinstance(y, pd.DataFrame) else np.asarray(y, dtype=float)
    known = pd.DatetimeIndex(pool["known_at_utc"])
    exits = pd.DatetimeIndex(pool["exit_known_at_utc"])
    market = pool["market"].to_numpy()
    X = X.reset_index(drop=True)
    groups = [("all", np.arange(len(pool)))] if scheme == "pooled" else \
        [(str(m), np.flatnonzero(market == m)) for m in sorted(set(market))]
    out = []
    for name, rows in groups:
        train = rows if scheme != "leave_market_out" else np.flatnonzero(market != name)
        y_train = y.iloc[train] if isinstance(y, pd.DataFrame) else y[train]
        out.append((name, rows, {"X": X.iloc[train], "y": y_train, "known": known[train], "exits": exits[train],
                                 "X_score": X.iloc[rows], "known_score": known[rows], "every_months": every_months,
                                 "min_train_labels": min_train_labels, "embargo": embargo,
                                 "model_params": model_params, "feature_schema": feature_schema,
                                 "regimes": None if regime is None else regime[train],
                                 "regimes_score": None if regime is None else regime[rows],
                                 "min_regime_labels": min_regime_labels}))
    return out


def collect_scheme(scheme: str, pool: pd.DataFrame, y, groups: list, results: list, *,
                   root: str | Path | None = None) -> SchemeScores:
    """Put the groups' :func:`fit_group` results together; save their models under ``root/scheme/group``
    (a regime model under ``root/scheme/group/regime_<name>``)."""
    label = (y["label"] if isinstance(y, pd.DataFrame) else pd.Series(np.asarray(y, float))).to_numpy(float)
    known = pd.DatetimeIndex(pool["known_at_utc"])
    scores = {k: np.full(len(pool), np.nan) for k in SCORE_KEYS}
    out = SchemeScores(scheme, scores["proba"])
    with_regimes = any(r is not None and "pooled_proba" in r for r in results)
    if with_regimes:
        out.pooled_proba = np.full(len(pool), np.nan)
        out.scored_by_regime = np.zeros(len(pool), bool)
    for (name, rows, _), res in zip(groups, results, strict=True):
        if res is None:
            continue                       # this group trades its baseline under this scheme
        out.fits += len(res["models"])
        out.fit_seconds += res["seconds"]
        out.markets_trained.append(name)
        for k in SCORE_KEYS:
            scores[k][rows] = res[k]
        family = np.asarray(res.get("family") or ["pooled"] * len(res["models"]), dtype=object)
        if with_regimes:
            out.pooled_proba[rows] = res["pooled_proba"]
            which = res["which"]
            out.scored_by_regime[rows] = (which >= 0) & (family[np.maximum(which, 0)] != "pooled")
            for r in sorted(set(family.tolist()) - {"pooled"}):
                out.regime_groups.setdefault(r, []).append(name)
                out.regime_versions[r] = out.regime_versions.get(r, 0) + int((family == r).sum())
        if root is not None:               # the paths let the driver record the versions it logs predictions of
            base = Path(root) / scheme / name
            res["paths"] = [mdl.save_version(base if f == "pooled" else base / f"regime_{f}",
                                             metrics={"scheme": scheme, "group": name, "family": f})
                            for mdl, f in zip(res["models"], family, strict=True)]
    for k in ("raw_proba", "expected_r", "stop_risk"):
        if not np.isnan(scores[k]).all():
            setattr(out, k, scores[k])
    proba = scores["proba"]
    scored = ~np.isnan(proba)
    out.share_scored = float(scored.mean()) if len(proba) else 0.0
    judged = scored & ~np.isnan(label)
    if judged.sum() >= 2 and len(np.unique(label[judged])) == 2:
        yy = label[judged].astype(int)
        out.metrics = evaluate(yy, proba[judged])
        out.calibration = calibration_table(yy, proba[judged], n_bins=10)
        out.ece_report = _ece_report(yy, proba[judged], scores["raw_proba"][judged])
    if scored.any():
        out.first_model_utc = pd.Timestamp(known[scored].min())
    return out


def _ece_report(y: np.ndarray, p: np.ndarray, raw: np.ndarray) -> dict:
    """ECE of ``ml_confidence`` with its noise, beside the ECE of the same models before calibration."""
    rep = calibration_report(y, p)
    if np.isnan(raw).any():
        return rep | {"ece_uncalibrated": float("nan"), "ece_uncalibrated_sd": float("nan")}
    return rep | {"ece_uncalibrated": expected_calibration_error(y, raw),
                  "ece_uncalibrated_sd": float(ece_bootstrap(y, raw).std(ddof=1))}


def score_scheme(scheme: str, pool: pd.DataFrame, X: pd.DataFrame, y, *, root: str | Path | None = None,
                 every_months: int = 12, min_train_labels: int = 100, embargo: pd.Timedelta | None = None,
                 model_params: dict | None = None, feature_schema: str | None = None, regimes: bool = False,
                 min_regime_labels: int = 50) -> SchemeScores:
    """Out-of-sample scores of every row of ``pool`` under ``scheme``, in this process (see the module
    docstring; :func:`group_tasks` + :func:`fit_group` + :func:`collect_scheme` run it on a scheduler)."""
    groups = group_tasks(scheme, pool, X, y, every_months=every_months, min_train_labels=min_train_labels,
                         embargo=embargo, model_params=model_params, feature_schema=feature_schema,
                         regimes=regimes, min_regime_labels=min_regime_labels)
    return collect_scheme(scheme, pool, y, groups, [fit_group(task) for _, _, task in groups], root=root)
