"""The single-market job (``qml run --config configs/qml_with_ml.yaml``), honest from end to end.

1. **Baseline** backtest of the strategy (technical rule only). Every detected pattern is registered
   with its features and its triple-barrier outcome; traded ones also get the trade's outcome.
2. **Walk-forward training** (anchored, retrain every ``walk_forward.retrain_every_months``): each
   model learns only from labels known before its period (purged, embargoed); every pattern is
   scored by the latest model that passes the out-of-sample guard. The versions are saved under
   this run's own folder, ``<results>/runs/<run_id>/models/``.
3. **Backtests in each mode** (``filter``, ``score_enhancement``, ``replace``) with those scores.
4. **Random filter**: ``walk_forward.random_seeds`` random subsets of the technical candidates with
   the same pass rate as ``filter``, traded by the same one-position rule; median and 5-95 % band.
5. **Canary / shadow** versions of ``ml.model_name`` in the registry (``qml learn --retrain --as
   canary``) get a row each: what they would have done, simulated, never acting.

**Sizing bands, like for like.** With ``ml.size_bands`` the ML modes' trades are scored at their
band's share of equity (``sizes[mode]``). The random filter must not be scored at full size beside
them, or the table compares a half-invested ML with a fully invested chance. Choice: each seed keeps
exactly as many candidates as ``filter`` kept (its pass rate, bands' skips included) and hands them
**the filter's own band sizes in random order** (:func:`qml_plugin.comparison.random_filter_band`,
``size_bands=``): the same multiset of sizes, so the same total exposure over the kept candidates,
and only *which* pattern gets the large size is chance. (Drawing sizes from the filter's size
distribution would add noise in the total exposure for nothing.) The canary / shadow rows apply the
bands to **their own** scores (skip below the lowest band, size by band), as the mixin would have.
Without ``size_bands`` nothing changes: same draws, full size, the same numbers bit for bit.

**Trade counts are integers, in every row.** The random filter's median and 5 % / 95 % rows take
their ``trades`` as an order statistic (``interpolation="nearest"``: the count of an actual seed),
not the linear interpolation between two seeds the other metrics use, so a count never reads
``1.9`` or ``8.05``; the ``trades`` column of the table (and of ``table.csv``) is then cast to int.

The comparison covers only the period after the first model exists (before it every mode equals
the baseline). The table is returned (the CLI prints it) and written as ``table.csv`` in the run
folder; the report's content (notes include every warning of the backtests) is returned for the
report writer. The registry is opened first: a damaged one fails the job before any folder is written.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from backtesting import Strategy
from tqdm.auto import tqdm

from ..badprints import bad_print_log
from ..comparison import mode_trades, random_filter_band
from ..config import embargo_timedelta
from ..data import bar_duration, load_data
from ..errors import InsufficientDataError
from ..filter import size_band
from ..mixins import record_run
from ..ml.guard import admissible_model
from ..ml.lifecycle import shadow_scores
from ..ml.versions import record_version
from ..ml.walkforward import train_walk_forward
from ..patterns import label_patterns
from ..registry import PatternRegistry
from ..tradesim import FULL_SIZE, TABLE_COLUMNS, daily_equity, trade_metrics
from .predlog import log_backtest_predictions, log_shadow_predictions, mean_abs_contribution
from .regimes import compare_regime_models
from .runs import (
    RunDir,
    WarningLog,
    data_name,
    default_strategy,
    make_backtest,
    open_registry,
    run_backtest,
    run_folder,
    strategy_params,
)

__all__ = ["JobResult", "run_market_job", "MODES"]

MODES = ("filter", "score_enhancement", "replace")


@dataclass
class JobResult:
    """What a job produced: the table, per-mode trades, the walk-forward result, where the report
    goes, the run folder, every distinct warning its backtests raised, and the report's content.

    The job sits below the report on the import ladder, so it hands the report's content to its
    caller: ``qml run`` writes it with :func:`qml_plugin.report.write_report` to ``report`` and to
    the run folder.
    """

    table: pd.DataFrame
    trades: dict = field(default_factory=dict)
    walk_forward: object = None
    report: Path | None = None
    period_start: pd.Timestamp | None = None
    run: RunDir | None = None
    warnings: list[str] = field(default_factory=list)
    report_content: dict = field(default_factory=dict)  # keyword arguments of qml_plugin.report.write_report
    regimes: object = None  # a .regimes.RegimeComparison when ml.regime_models is on (regime vs pooled models)


def run_market_job(cfg: dict, *, strategy: type[Strategy] | None = None, progress: bool = True,
                   run_id: str | None = None) -> JobResult:
    """Run the single-market job for a validated config (see :func:`qml_plugin.config.load_config`).

    ``strategy`` is the Strategy class to trade (the CLI resolves ``strategy.class``); None = the
    shipped ``QMLStrategy``. Models and outputs go to ``<report.output_dir>/<run_id>/`` (default ``results/runs/``).
    """
    cls = strategy or default_strategy()
    params = strategy_params(cls, cfg["strategy"]["params"])
    db = cfg["ml_data_collection"]["db_path"]
    collect = cfg["ml_data_collection"]["enabled"]
    log = WarningLog()
    open_registry(db).close()            # damaged / unwritable registry: fail before any output exists
    with log.collect("data"):              # bad prints flagged or repaired reach the report's notes
        df = load_data(cfg["data"])
    run, report_path = run_folder(cfg, run_id)
    steps = tqdm(total=6, desc="qml run", disable=not progress, unit="step")

    def step(msg):
        steps.set_postfix_str(msg)
        steps.update(1)

    with log.collect("baseline"):
        bt = make_backtest(df, cls, cfg["backtest"])
    base = run_backtest(bt, log=log, where="baseline", **params, registry_db=db, register_patterns=True,
                        ml_config=None)
    record_run(base, db)
    step("baseline done")

    strat = base._strategy
    pats, feats = strat.patterns, strat.pattern_features
    if feats is None or len(pats) == 0:
        raise InsufficientDataError(f"no patterns detected in {data_name(df)}: nothing to learn from")
    labeled = label_patterns(df, pats, max_wait=strat.max_wait, max_hold=strat.max_hold)
    y = _training_labels(db, labeled)
    X = feats.reset_index(drop=True)
    name = f"{df.attrs.get('symbol')}_{df.attrs.get('timeframe')}"
    root = run.models(name)
    ml = cfg["ml"]
    with log.collect("walk-forward"):
        wf = train_walk_forward(X, y, labeled["detection_time"], labeled["exit_time"], root=root,
                                every_months=cfg["walk_forward"]["retrain_every_months"],
                                min_labels=cfg["walk_forward"]["min_train_labels"],
                                embargo=embargo_timedelta(ml, bar_duration(df)),
                                feature_schema=getattr(strat, "feature_schema", None),
                                regimes=strat.pattern_regimes if ml.get("regime_models") else None,
                                min_regime_labels=ml.get("min_regime_labels", 50))
    period = wf.first_model_time
    _record_versions(db, wf, f"walk_forward_{name}", run.run_id)
    step(f"{len(wf.models)} walk-forward models")

    trades, runs = {"baseline": base._trades}, []
    sizes, kill = {}, {}                  # sizing bands' equity share per trade; each mode's kill switch
    for mode in MODES:
        block = {**ml, "enabled": True, "model_path": str(root), "prediction_mode": mode}
        stats = run_backtest(bt, log=log, where=mode, **params, registry_db=db, register_patterns=collect,
                             ml_config=yaml.safe_dump(block), run_id=run.run_id)
        record_run(stats, db)             # registrations and their prediction log, under this run's id
        trades[mode] = stats._trades
        runs.append(stats)
        if ml.get("size_bands") is not None:
            sizes[mode] = FULL_SIZE * stats._strategy.trade_band_sizes()
        if ml.get("kill_switch") is not None:
            kill[mode] = stats._strategy.ml_kill_switch
        step(f"{mode} done")
    if not collect:                       # nothing registered: the driver logs the predictions in one batch
        log_backtest_predictions(db, runs, run_id=run.run_id)

    table, rand = _comparison(df, labeled, wf.oos_proba.to_numpy(), trades, period, strat, ml,
                              cfg["walk_forward"]["random_seeds"], sizes)
    table["oos_auc"] = np.where(table["mode"].isin(MODES), wf.metrics.get("auc", np.nan), np.nan)
    table = pd.concat([table, _shadow_rows(db, ml, X, df, labeled, strat, period, df.index[-1])], ignore_index=True)
    if (table["trades"] % 1 == 0).all():     # counts (module docstring); a fraction would be a bug: left visible
        table["trades"] = table["trades"].astype(int)
    log_shadow_predictions(db, ml["model_name"], X, labeled, mode=ml["prediction_mode"], run_id=run.run_id,
                           rule=dict(min_score=strat.min_score, ml_weight=ml["ml_weight"],
                                     confidence_threshold=ml["confidence_threshold"],
                                     min_expected_r=float(ml.get("min_expected_r", 0.0))))
    table.to_csv(run.path / "table.csv", index=False)
    step("random filter done")
    start = pd.Series([1.0], index=[period]) if period is not None else pd.Series(dtype=float)
    equity = {name: pd.concat([start, daily_equity(t, df, start=period, size=_sizes(sizes, name, t))])
              for name, t in ((n, _in_period(t, period)) for n, t in trades.items())}
    equity["random (median seed)"] = pd.concat([start, rand])
    notes = [f"Data: {data_name(df)}, {df.index[0]} .. {df.index[-1]} ({len(df):,} bars), {len(pats):,} patterns, "
             f"{int(np.isfinite(y).sum()):,} with a known outcome.",
             f"Out-of-sample period: from {period} (first walk-forward model); {len(wf.models)} models, retrained "
             f"every {cfg['walk_forward']['retrain_every_months']} months. Each pattern was scored only by a model "
             f"whose training labels all exited before the pattern was detected.",
             f"Random filter: {cfg['walk_forward']['random_seeds']} seeds keeping the same share of technical "
             f"candidates as 'filter'; the table shows the median and the 5-95 % band."
             + (" With ml.size_bands each seed gives its kept candidates the filter's band sizes in random order "
                "(same total exposure), and canary / shadow rows are sized by band on their own scores."
                if ml.get("size_bands") is not None else ""),
             "Commission: {:.4%} per side.".format(cfg["backtest"]["commission"]),
             f"Run {run.run_id}: models and table.csv in {run.path}."]
    regimes = None
    if ml.get("regime_models"):
        regimes = compare_regime_models(wf, X, y, labeled["detection_time"], strat.pattern_regimes,
                                        embargo=embargo_timedelta(ml, bar_duration(df)))
        notes.append(regimes.sentence())
    notes += [f"Warning: {w}" for w in log.seen]
    steps.close()
    pooled = [m for m, f in zip(wf.models, wf.model_family or ["pooled"] * len(wf.models)) if f == "pooled"]
    which = admissible_model(labeled["detection_time"], [m.trained_on_end_ for m in pooled],
                             embargo=embargo_timedelta(ml, bar_duration(df)))
    report = dict(title=f"qml run: {data_name(df)}", table=table, equity=equity, calibration=wf.calibration,
                  importances=pooled[-1].feature_importances(), notes=notes, bad_prints=bad_print_log({name: df}),
                  contributions=mean_abs_contribution(pooled, X, which),
                  contributions_of="every out-of-sample pattern the pooled walk-forward models scored")
    if regimes is not None:
        report["tables"] = [("Regime models beside the pooled model", regimes.sentence(), regimes.table)]
    if kill:
        report["kill_switch"] = kill          # ml.kill_switch set: the report says, per mode, whether it tripped
    return JobResult(table, trades, wf, report_path, period, run, list(log.seen), report, regimes)


def _training_labels(db: str, labeled: pd.DataFrame) -> np.ndarray:
    """The registry's effective labels (user > trade > triple barrier; 'ignore' = NaN) of these patterns."""
    with PatternRegistry(db) as reg:
        X, y = reg.get_training_data(min_labels=0)
    known = pd.Series(y.astype(float), index=X.index.get_level_values("pattern_id"))
    known = known[~known.index.duplicated()]
    return known.reindex(labeled["pattern_id"]).to_numpy(float)


def _record_versions(db: str, wf, model_name: str, run_id: str) -> None:
    """Write each walk-forward model to ``ml_model_versions`` (archived: evaluation models, never production)."""
    with PatternRegistry(db) as reg:
        for model, path in zip(wf.models, wf.paths):
            record_version(reg, model, path, model_name=model_name, status="archived",
                           notes=f"qml run {run_id} walk-forward model")


def _shadow_rows(db, ml, X, df, labeled, strat, start, end) -> pd.DataFrame:
    """What each canary / shadow version of ``ml.model_name`` would have done (never acting; simulated)."""
    with PatternRegistry(db) as reg:
        waiting = [v for v in reg.list_model_versions(ml["model_name"]) if v["status"] in ("canary", "shadow")]
    if not waiting:
        return pd.DataFrame(columns=["mode", *TABLE_COLUMNS, "oos_auc"])
    scores = shadow_scores(db, ml["model_name"], X, detection_times=labeled["detection_time"],
                           statuses=("canary", "shadow"))
    rows, bands = [], ml.get("size_bands")
    for col in scores:
        s = scores[col].to_numpy()
        t = mode_trades(labeled, s, mode=ml["prediction_mode"], min_score=strat.min_score,
                        ml_weight=ml["ml_weight"], confidence_threshold=ml["confidence_threshold"],
                        max_wait=strat.max_wait, start=start, size_bands=bands)
        size = FULL_SIZE if bands is None else FULL_SIZE * size_band(s, bands)[labeled.index.get_indexer(t.index)]
        rows.append({"mode": f"{col} ({ml['prediction_mode']}, not acting{', sized by band' if bands else ''})",
                     **trade_metrics(t, df, start=start, end=end, size=size), "oos_auc": np.nan})
    return pd.DataFrame(rows)


def _in_period(trades: pd.DataFrame, start) -> pd.DataFrame:
    return trades if start is None else trades[trades["EntryTime"] >= start]


def _sizes(sizes: dict, name: str, in_period: pd.DataFrame):
    """Each in-period trade's equity share: the sizing bands' (``sizes[name]``, one per trade), else full size."""
    if name not in sizes:
        return FULL_SIZE
    return sizes[name][in_period.index.to_numpy()]      # stats._trades has a RangeIndex: row k is trade k


def _comparison(df, labeled, proba, trades, period, strat, ml, seeds, sizes=None):
    rows = []
    for name, t in trades.items():
        t = _in_period(t, period)
        rows.append({"mode": name, **trade_metrics(t, df, start=period, end=df.index[-1],
                                                    size=_sizes(sizes or {}, name, t))})
    res, rate, curve = random_filter_band(labeled, proba, ohlcv=df, min_score=strat.min_score,
                                          confidence_threshold=ml["confidence_threshold"], max_wait=strat.max_wait,
                                          start=period, end=df.index[-1], seeds=seeds, size_bands=ml.get("size_bands"))
    for q, label in ((0.5, f"(pass rate {rate:.0%}) median"), (0.05, "5%"), (0.95, "95%")):
        row = res.quantile(q).to_dict()                         # the median of 2k seeds: the mean of the middle two
        row["trades"] = int(res["trades"].quantile(q, interpolation="nearest"))   # a count: one seed's (docstring)
        rows.append({"mode": f"random filter {label}", **row})
    return pd.DataFrame(rows)[["mode", *TABLE_COLUMNS]], curve
