"""``qml run``: the main job, honest from end to end.

1. **Baseline** backtest of the strategy (technical rule only). Every detected pattern is registered
   with its features and its triple-barrier outcome; traded ones also get the trade's outcome.
2. **Walk-forward training** (anchored, retrain every ``walk_forward.retrain_every_months``): each
   model learns only from labels known before its period (purged, embargoed); every pattern is
   scored by the latest model that passes the out-of-sample guard.
3. **Backtests in each mode** (``filter``, ``score_enhancement``, ``replace``) with those scores.
4. **Random filter**: ``walk_forward.random_seeds`` random subsets of the technical candidates with
   the same pass rate as ``filter``, traded by the same one-position rule; median and 5-95 % band.
5. **Canary / shadow** versions of ``ml.model_name`` in the registry (``qml learn --retrain --as
   canary``) get a row each: what they would have done, simulated, never acting.

The comparison covers only the period after the first model exists (before it every mode equals
the baseline). One table is printed and ``report.output`` (self-contained HTML) is written.
"""
from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import yaml
from tqdm.auto import tqdm

from ..comparison import mode_trades, random_filter_band
from ..config import embargo_timedelta, load_config
from ..data import bar_duration
from ..errors import InsufficientDataError
from ..mixins import record_run
from ..ml.lifecycle import shadow_scores
from ..ml.versions import record_version
from ..ml.walkforward import train_walk_forward
from ..patterns import label_patterns
from ..registry import PatternRegistry
from ..report import format_table, write_report
from ..tradesim import TABLE_COLUMNS, daily_equity, trade_metrics
from .common import config_path, data_name, load_data, make_backtest, resolve_strategy, strategy_params

MODES = ("filter", "score_enhancement", "replace")


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="the main job: baseline -> registry -> walk-forward ML -> modes vs random",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="run config (default: the shipped configs/qml_with_ml.yaml)")
    p.add_argument("--strategies-module", default=None, help="module holding strategy.class (default: strategies)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


@dataclass
class JobResult:
    """What the main job produced: the table, per-mode trades, the walk-forward result, the report path."""

    table: pd.DataFrame
    trades: dict = field(default_factory=dict)
    walk_forward: object = None
    report: object = None
    period_start: pd.Timestamp | None = None


def _training_labels(db: str, labeled: pd.DataFrame) -> np.ndarray:
    """The registry's effective labels (user > trade > triple barrier; 'ignore' = NaN) of these patterns."""
    with PatternRegistry(db) as reg:
        X, y = reg.get_training_data(min_labels=0)
    known = pd.Series(y.astype(float), index=X.index.get_level_values("pattern_id"))
    known = known[~known.index.duplicated()]
    return known.reindex(labeled["pattern_id"]).to_numpy(float)


def main_job(cfg: dict, *, strategies_module: str | None = None, progress: bool = True) -> JobResult:
    """Run the whole job for a validated config (see :func:`qml_plugin.config.load_config`)."""
    steps = tqdm(total=7, desc="qml run", disable=not progress, unit="step")

    def step(msg):
        steps.set_postfix_str(msg)
        steps.update(1)

    df = load_data(cfg["data"])
    cls = resolve_strategy(cfg["strategy"]["class"], strategies_module)
    params = strategy_params(cls, cfg["strategy"]["params"])
    db = cfg["ml_data_collection"]["db_path"]
    collect = cfg["ml_data_collection"]["enabled"]
    bt = make_backtest(df, cls, cfg["backtest"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = bt.run(**params, registry_db=db, register_patterns=True, ml_config=None)
    record_run(base, db)
    step("baseline done")

    strat = base._strategy
    pats, feats = strat.patterns, strat.pattern_features
    if feats is None or len(pats) == 0:
        raise InsufficientDataError(f"no patterns detected in {data_name(df)}: nothing to learn from")
    labeled = label_patterns(df, pats, strat.max_wait, strat.max_hold)
    y = _training_labels(db, labeled)
    X = feats.drop(columns=["regime_at_detection", "pattern_id"], errors="ignore").reset_index(drop=True)
    root = f"results/walk_forward/{df.attrs.get('symbol')}_{df.attrs.get('timeframe')}"
    ml = cfg["ml"]
    bar = bar_duration(df)
    wf = train_walk_forward(X, y, labeled["detection_time"], labeled["exit_time"], root=root,
                            every_months=cfg["walk_forward"]["retrain_every_months"],
                            min_train=cfg["walk_forward"]["min_train_labels"], embargo=embargo_timedelta(ml, bar),
                            feature_schema=getattr(strat, "feature_schema", None))
    period = wf.first_model_time
    _record_versions(db, wf, f"walk_forward_{df.attrs.get('symbol')}_{df.attrs.get('timeframe')}")
    step(f"{len(wf.models)} walk-forward models")

    trades = {"baseline": base._trades}
    for mode in MODES:
        block = {**ml, "enabled": True, "model_path": str(root), "prediction_mode": mode}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stats = bt.run(**params, registry_db=db, register_patterns=collect, ml_config=yaml.safe_dump(block))
        record_run(stats, db)
        trades[mode] = stats._trades
        step(f"{mode} done")

    table, rand = _comparison(df, labeled, wf.oos_proba.to_numpy(), trades, period, strat, ml,
                              cfg["walk_forward"]["random_seeds"])
    table["oos_auc"] = np.where(table["mode"].isin(MODES), wf.metrics.get("auc", np.nan), np.nan)
    table = pd.concat([table, _shadow_rows(db, ml, X, df, labeled, strat, period, df.index[-1])], ignore_index=True)
    step("random filter done")
    start = pd.Series([1.0], index=[period]) if period is not None else pd.Series(dtype=float)
    equity = {name: pd.concat([start, daily_equity(t, df, start=period)])
              for name, t in ((n, _in_period(t, period)) for n, t in trades.items())}
    equity["random (median seed)"] = pd.concat([start, rand])
    notes = [f"Data: {data_name(df)}, {df.index[0]} .. {df.index[-1]} ({len(df):,} bars), {len(pats):,} patterns, "
             f"{int(np.isfinite(y).sum()):,} with a known outcome.",
             f"Out-of-sample period: from {period} (first walk-forward model); {len(wf.models)} models, retrained "
             f"every {cfg['walk_forward']['retrain_every_months']} months. Each pattern was scored only by a model "
             f"whose training labels all exited before the pattern was detected.",
             f"Random filter: {cfg['walk_forward']['random_seeds']} seeds keeping the same share of technical "
             f"candidates as 'filter'; the table shows the median and the 5-95 % band.",
             "Commission: {:.4%} per side.".format(cfg["backtest"]["commission"])]
    # report.output null = inside the run folder (the job package, s3-job, owns that folder)
    report = write_report(cfg["report"]["output"] or "results/report.html", title=f"qml run: {data_name(df)}",
                          table=table, equity=equity,
                          calibration=wf.calibration, importances=wf.models[-1].feature_importances(), notes=notes)
    step("report written")
    steps.close()
    return JobResult(table, trades, wf, report, period)


def _record_versions(db: str, wf, model_name: str) -> None:
    """Write each walk-forward model to ``ml_model_versions`` (archived: evaluation models, never production)."""
    with PatternRegistry(db) as reg:
        for model, path in zip(wf.models, wf.paths):
            record_version(reg, model, path, model_name=model_name, status="archived",
                           notes="qml run walk-forward model")


def _shadow_rows(db, ml, X, df, labeled, strat, start, end) -> pd.DataFrame:
    """What each canary / shadow version of ``ml.model_name`` would have done (never acting; simulated)."""
    with PatternRegistry(db) as reg:
        waiting = [v for v in reg.list_model_versions(ml["model_name"]) if v["status"] in ("canary", "shadow")]
    if not waiting:
        return pd.DataFrame(columns=["mode", *TABLE_COLUMNS, "oos_auc"])
    scores = shadow_scores(db, ml["model_name"], X, detection_times=labeled["detection_time"],
                           statuses=("canary", "shadow"))
    rows = []
    for col in scores:
        t = mode_trades(labeled, scores[col].to_numpy(), mode=ml["prediction_mode"], min_score=strat.min_score,
                        ml_weight=ml["ml_weight"], confidence_threshold=ml["confidence_threshold"],
                        max_wait=strat.max_wait, start=start)
        rows.append({"mode": f"{col} ({ml['prediction_mode']}, not acting)",
                     **trade_metrics(t, df, start=start, end=end), "oos_auc": np.nan})
    return pd.DataFrame(rows)


def _in_period(trades: pd.DataFrame, start) -> pd.DataFrame:
    return trades if start is None else trades[trades["EntryTime"] >= start]


def _comparison(df, labeled, proba, trades, period, strat, ml, seeds):
    rows = []
    for name, t in trades.items():
        t = _in_period(t, period)
        rows.append({"mode": name, **trade_metrics(t, df, start=period, end=df.index[-1])})
    res, rate, curve = random_filter_band(labeled, proba, ohlcv=df, min_score=strat.min_score,
                                          confidence_threshold=ml["confidence_threshold"], max_wait=strat.max_wait,
                                          start=period, end=df.index[-1], seeds=seeds)
    rows.append({"mode": f"random filter (pass rate {rate:.0%}) median", **res.median().to_dict()})
    for q, label in ((0.05, "5%"), (0.95, "95%")):
        rows.append({"mode": f"random filter {label}", **res.quantile(q).to_dict()})
    return pd.DataFrame(rows)[["mode", *TABLE_COLUMNS]], curve


def run(args: argparse.Namespace) -> int:
    cfg = load_config(config_path(args.config, "qml_with_ml.yaml"))
    result = main_job(cfg, strategies_module=args.strategies_module, progress=not args.no_progress)
    shown = format_table(result.table)
    print()
    print(shown.to_string(index=False))
    print(f"\nout-of-sample period from {result.period_start}; report: {result.report}")
    return 0
