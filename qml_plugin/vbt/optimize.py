"""``qml optimize``: a seeded Bayesian search over ``QMLParams``, judged walk-forward by time.

    res = optimize("configs/optimize.yaml", trials=50, seed=7)
    res.top                 # the 10 best by train score, with their validation and holdout scores
    res.chosen, res.dsr, res.importance, res.paths

How a search goes (SPEC §9):

1. the data is cut by time into train / validation / holdout (``optimize.split``, default
   ``[0.6, 0.2, 0.2]`` of the bars). A later period is scored on the data up to its end, trading
   only the patterns detected inside it (the earlier bars are the detector's warm-up: causal);
2. Optuna's TPE sampler (seeded: a serial run is reproducible) proposes parameters from
   ``optimize.space``; each trial is scored on the **train** period with the sweep's fast path
   (:mod:`qml_plugin.vbt.fast`), and TPE is told only that train score;
3. the ``optimize.top_k`` (10) best trials by train score are scored on the **validation** period and
   the best of them there is chosen;
4. only then are the ten scored on the **holdout** period, once: the chosen one's holdout score is
   the honest number, shown beside the other nine's; the chosen trial's deflated Sharpe ratio
   (:func:`~qml_plugin.vbt.overfit.deflated_sharpe`) says how much of its train Sharpe the number of
   trials explains;
5. parameter importance is Optuna's own evaluator (fANOVA, seeded).

Trials run on the §12 scheduler: the driver holds the study (``ask`` / ``tell``, a journal file next
to the outputs) and workers only evaluate parameter sets; no shared file system is needed. When the
config's registry (``ml_data_collection.db_path``) is PostgreSQL, the study is kept on that server instead
(Optuna's ``RDBStorage`` through SQLAlchemy and psycopg 3, study ``qml_optimize_<stamp>``), so a team
sees every study beside its patterns and several drivers can share one. With
``processes`` or ``dask`` the driver asks for one batch of trials per worker round, so a parallel
run is reproducible for a given number of workers, a serial run for a given seed.

**Prediction log.** With the ML filter on and ``ml_data_collection: {enabled: true, db_path: ...}``
(enabled is the optimize config's default), a search that writes (``write=True``) logs its scoring
events under one run id (``run_id=``, default :func:`~qml_plugin.vbt.predlog.grid_run_id`): one row
per distinct trial pattern, model version and mode, each trial's patterns detected inside the longest
period it was scored on (train for most, holdout for the ``top_k``), see :mod:`qml_plugin.vbt.predlog`.
The trials score in the workers and return metrics only; the driver scores the trials' patterns once
more, in one batch, to log them (the features are causal and the guard per pattern, so a pattern's
score does not depend on the period it was scored in). ``OptimizeResult.predictions`` says what was
written; the trials use the registry's version statuses then, as the log does.

``optimize.space`` maps ``QMLParams`` fields to ``[low, high]`` (integers for integer fields: an
integer range; numbers for float fields: a float range) or a list of choices (any other list, e.g.
``target: [swing, rr]``); ``optimize.fixed`` holds fields at one value. Every bound and choice is
checked against ``QMLParams`` when the config is loaded (:func:`qml_plugin.config.space_dimensions`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from tqdm.auto import tqdm

from ..compute import Scheduler
from ..config import OPTIMIZE_OBJECTIVES, load_config, load_optimize_config, parse_ml_block, space_dimensions
from ..data import load_data
from ..errors import ConfigError, InsufficientDataError
from ..filter import refuse_unsupported
from ..patterns import QMLParams
from ..registry import sqlalchemy_url
from ..registry.connection import display_url
from .fast import FAST_METRICS, NOT_HONOURED, EventBook
from .overfit import deflated_sharpe

__all__ = ["optimize", "parse_space", "OptimizeResult"]


def parse_space(space: dict) -> dict[str, Any]:
    """``optimize.space`` as Optuna distributions, read by the config's one reading of a space.

    :func:`qml_plugin.config.space_dimensions` checks every bound and choice against ``QMLParams``
    and decides range or choices; this only turns each dimension into Optuna's distribution.

        >>> parse_space({"swing_n": [2, 6], "target": ["swing", "rr"]})["swing_n"]
        IntDistribution(high=6, log=False, low=2, step=1)
    """
    out: dict[str, Any] = {}
    for name, dim in space_dimensions(space).items():
        if dim["type"] == "int":
            out[name] = IntDistribution(int(dim["low"]), int(dim["high"]))
        elif dim["type"] == "float":
            out[name] = FloatDistribution(float(dim["low"]), float(dim["high"]))
        else:
            out[name] = CategoricalDistribution(dim["choices"])
    return out


def _evaluate(shared: tuple, trial: tuple) -> np.ndarray:
    """Work unit: one parameter set on one period -> the fast path's metric vector.

    ``shared`` = ``(ohlcv, ml, commission, cash, registry_db)`` reaches each worker once per search; ``trial``
    = ``(n_bars, start, params)``: the period is the first ``n_bars`` bars, traded from ``start``.
    """
    ohlcv, ml, commission, cash, db = shared
    n_bars, start, params = trial
    return EventBook(ohlcv.iloc[:n_bars], ml, start=start, registry_db=db).simulate(
        params, commission=commission, cash=cash)[0]


@dataclass
class OptimizeResult:
    """What :func:`optimize` found: every trial, the top trials on three periods, the choice, its DSR."""

    trials: pd.DataFrame
    top: pd.DataFrame
    chosen: dict
    dsr: float
    importance: dict
    periods: dict
    objective: str
    paths: dict = field(default_factory=dict)
    predictions: dict = field(default_factory=dict)   # the prediction log written: run_id, db, patterns, rows


def _periods(df: pd.DataFrame, split: list[float]) -> dict:
    n = len(df)
    a, b = int(round(n * split[0])), int(round(n * (split[0] + split[1])))
    if min(a, b - a, n - b) < 500:
        raise InsufficientDataError(f"optimize.split = {split} leaves a period under 500 bars on {n:,} bars; "
                                    "give more data or a more even split")
    idx = df.index
    return {"train": (a, None), "validation": (b, idx[a]), "holdout": (n, idx[b]),
            "bounds": {"train": [str(idx[0]), str(idx[a - 1])], "validation": [str(idx[a]), str(idx[b - 1])],
                       "holdout": [str(idx[b]), str(idx[-1])]}}


def optimize(config: dict | str | Path, *, trials: int | None = None, objective: str | None = None,
             seed: int | None = None, compute: dict | None = None, ohlcv: pd.DataFrame | None = None,
             progress: bool = True, write: bool = True, stamp: str | None = None,
             run_id: str | None = None) -> OptimizeResult:
    """Run ``qml optimize`` on a config (see the module docstring); ``trials`` / ``objective`` / ``seed`` /
    ``compute`` override the config, ``ohlcv`` its ``data:``; ``write=False`` writes nothing (in-memory study,
    no prediction log); ``run_id`` names the prediction log's run."""
    cfg = load_optimize_config(config)
    opt = cfg["optimize"]
    n_trials = int(trials if trials is not None else opt["trials"])
    objective = objective or opt["objective"]
    if objective not in OPTIMIZE_OBJECTIVES:
        raise ConfigError(f"optimize.objective = {objective!r} is not allowed; allowed: "
                          f"{', '.join(OPTIMIZE_OBJECTIVES)}")
    if n_trials < 1:
        raise ConfigError(f"--trials {n_trials} is not allowed; allowed: an integer >= 1")
    seed = int(seed if seed is not None else opt["seed"])
    dists = parse_space(opt["space"])
    fixed = dict(opt.get("fixed") or {})
    ml = parse_ml_block(cfg["ml"])
    refuse_unsupported(ml, **NOT_HONOURED)          # before any data is loaded
    df = load_data(cfg["data"]) if ohlcv is None else ohlcv
    periods = _periods(df, opt["split"])
    col = cfg.get("ml_data_collection") or {}
    log_db = col.get("db_path") if write and col.get("enabled") and ml.enabled else None
    if log_db is not None:
        from .predlog import check_target

        log_db, run_id = check_target(df, log_db, run_id, key="ml_data_collection.db_path")
    stamp = stamp or pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%SZ")
    out_dir = Path(opt["output_dir"])
    paths: dict[str, str] = {}
    storage: Any = None
    if write:
        out_dir.mkdir(parents=True, exist_ok=True)
        db = str((cfg.get("ml_data_collection") or {}).get("db_path") or "")
        if db.startswith(("postgresql://", "postgres://")):
            storage = optuna.storages.RDBStorage(sqlalchemy_url(db))
            paths["study"] = f"{display_url(db)} (Optuna study qml_optimize_{stamp})"
        else:
            paths["journal"] = str(out_dir / f"optimize_{stamp}.journal")
            storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(paths["journal"]))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
                                storage=storage, study_name=f"qml_optimize_{stamp}")
    compute = {"scheduler": "serial", **(cfg.get("compute") or {}), **(compute or {})}
    sch = Scheduler(compute["scheduler"], workers=compute.get("workers"), address=compute.get("address"),
                    progress=False, inherit=True)             # trials run numba and numpy, never XGBoost
    batch = 1 if sch.scheduler == "serial" else (sch.workers or 2)
    col = FAST_METRICS.index(objective)
    comm, cash = float(opt["commission"]), float(opt["cash"])
    shared = (df, ml, comm, cash, log_db)                        # the bars go to each worker once

    def scored(period: str, params: list[QMLParams]) -> np.ndarray:
        n_bars, start = periods[period]
        return np.array(sch.map(_evaluate, [(n_bars, start, p) for p in params], shared=shared,
                                label=lambda u: f"{period} trial {u[2]}"))

    rows = []
    with sch, tqdm(total=n_trials, desc="qml optimize", unit="trial", disable=not progress) as bar:
        while len(rows) < n_trials:
            asked = [study.ask(dists) for _ in range(min(batch, n_trials - len(rows)))]
            params = [QMLParams(**fixed, **t.params) for t in asked]
            for t, m in zip(asked, scored("train", params), strict=True):
                value = float(m[col])
                if math.isnan(value):
                    study.tell(t, state=optuna.trial.TrialState.FAIL)
                else:
                    study.tell(t, value)
                rows.append({"trial": t.number, **fixed, **t.params, "value": value,
                             **{f"train_{k}": float(v) for k, v in zip(FAST_METRICS, m, strict=True)}})
                bar.update(1)
        table = pd.DataFrame(rows)
        ranked = table.sort_values(["value", "trial"], ascending=[False, True], na_position="last")
        top = ranked.head(int(opt["top_k"])).reset_index(drop=True)
        top_params = [QMLParams(**{k: _plain(r[k]) for k in (*fixed, *dists)}) for r in top.to_dict("records")]
        val = scored("validation", top_params)
        top["validation"] = val[:, col]
        best = int(np.nanargmax(np.where(np.isnan(top["validation"]), -np.inf, top["validation"])))
        hold = scored("holdout", top_params)                       # after the choice, once
    top["holdout"] = hold[:, col]
    top["chosen"] = np.arange(len(top)) == best
    for k, name in ((7, "sr"), (10, "n_days")):
        top[f"holdout_{name}"] = hold[:, k]
    chosen = {k: _plain(top.loc[best, k]) for k in (*fixed, *dists)}
    dsr = _chosen_dsr(table, int(top.loc[best, "trial"]))
    importance = _importance(study, seed)
    result = OptimizeResult(trials=table, top=top, chosen=chosen, dsr=dsr, importance=importance,
                            periods=periods["bounds"], objective=objective, paths=paths)
    if log_db is not None:
        result.predictions = _log(df, ml, table, top_params, (*fixed, *dists), periods, log_db, run_id)
    if write:
        _write(result, cfg, out_dir, stamp, n_trials, seed)
    return result


def _log(df: pd.DataFrame, ml, table: pd.DataFrame, top_params: list[QMLParams], keys: tuple, periods: dict,
         db: str, run_id: str | None) -> dict:
    """The search's scoring events, scored once more on the driver (see the module docstring)."""
    from .engine import PatternBook
    from .predlog import grid_run_id, log_events, scoring_events

    trials = [QMLParams(**{k: _plain(r[k]) for k in keys}) for r in table.to_dict("records")]
    grid = top_params + trials                       # the top trials first: their longest period is the holdout
    upto = [periods["holdout"][0]] * len(top_params) + [periods["train"][0]] * len(trials)
    book = PatternBook(df, ml, registry_db=db, keep_events=True)
    return log_events(db, scoring_events(book, grid, upto=upto), run_id or grid_run_id("optimize", df, trials, ml))


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _chosen_dsr(table: pd.DataFrame, trial: int) -> float:
    """DSR of the chosen trial's train Sharpe given every trial tried and the variance of their Sharpes."""
    sr = table["train_sr"].to_numpy(float)
    ok = np.isfinite(sr)
    row = table.set_index("trial").loc[trial]
    return float(deflated_sharpe(row["train_sr"], n_obs=row["train_n_days"], skew=row["train_skew"],
                                 kurtosis=row["train_kurtosis"], n_trials=len(table),
                                 sr_variance=float(np.var(sr[ok], ddof=1)) if ok.sum() > 1 else 0.0))


def _importance(study: optuna.Study, seed: int) -> dict:
    """Optuna's fANOVA importance (seeded); empty when too few trials completed or nothing varied."""
    try:
        imp = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed))
    except (ValueError, RuntimeError):
        return {}
    return {k: float(v) for k, v in imp.items()}


def _write(res: OptimizeResult, cfg: dict, out_dir: Path, stamp: str, n_trials: int, seed: int) -> None:
    run = load_config(None)
    data = {k: (str(v.date()) if isinstance(v, pd.Timestamp) else v) for k, v in cfg["data"].items()}
    run_cfg = {"data": data,
               "strategy": {"class": run["strategy"]["class"], "params": res.chosen},
               "backtest": {"commission": cfg["optimize"]["commission"], "cash": cfg["optimize"]["cash"]},
               "ml": cfg["ml"]}
    cfg_path = out_dir / f"optimize_{stamp}_config.yaml"
    cfg_path.write_text(f"# qml optimize {stamp}: the chosen parameters (holdout {res.objective} "
                        f"{res.top.loc[res.top['chosen'], 'holdout'].iloc[0]:.4g}, DSR {res.dsr:.3f}); "
                        "run with: qml run --config " + cfg_path.name + "\n" + yaml.safe_dump(run_cfg, sort_keys=False))
    load_config(cfg_path)                                   # what qml run will read: fail here, not there
    doc = {"stamp": stamp, "objective": res.objective, "seed": seed, "n_trials": n_trials, "periods": res.periods,
           "chosen": res.chosen, "dsr": res.dsr, "importance": res.importance,
           "top": json.loads(res.top.to_json(orient="records")),
           "trials": json.loads(res.trials.to_json(orient="records"))}
    json_path = out_dir / f"optimize_{stamp}.json"
    json_path.write_text(json.dumps(doc, indent=1))
    res.paths.update(json=str(json_path), config=str(cfg_path))
