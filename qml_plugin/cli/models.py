"""``qml train``, ``qml evaluate`` and ``qml backtest``: models and single backtests from the command line.

* ``qml train`` fits a :class:`~qml_plugin.ml.model.SignalQualityModel` on the registry's labeled
  patterns, reports purged walk-forward (out-of-sample) metrics first, saves a new version
  (XGBoost JSON + metadata with sha256) and records it as ``staging`` in ``ml_model_versions``.
* ``qml evaluate`` scores a saved model on the registry's patterns of a period; rows the model may
  not score (detected before its ``trained_on_end``) are left out, and the count says so.
* ``qml backtest --config`` runs the configured strategy once, with the ``ml:`` block applied, and
  prints backtesting.py's stats plus the ML status (``off``, ``out-of-sample``, ``IN-SAMPLE`` or
  ``baseline: <why>``).
"""
from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd
import yaml

from ..config import load_config
from ..errors import InsufficientDataError
from ..mixins import record_run
from ..ml.guard import admissible_model
from ..ml.metrics import cross_validate_walk_forward, evaluate
from ..ml.model import SignalQualityModel
from ..ml.validation import PurgedWalkForward
from ..ml.versions import record_version
from ..registry import PatternRegistry
from .common import (
    add_no_progress,
    config_path,
    int_in,
    load_data,
    make_backtest,
    resolve_strategy,
    silence_progress,
    strategy_params,
)


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a signal-quality model from the registry (walk-forward metrics)")
    p.add_argument("--config", default=None, help="run config (db path; default: shipped qml_with_ml.yaml)")
    p.add_argument("--db", default=None, help="registry path (default: ml_data_collection.db_path)")
    p.add_argument("--out", default=None, help="model folder of versions (default: ml.model_path)")
    p.add_argument("--start", default=None, help="first detection time to train on")
    p.add_argument("--end", default=None, help="train on patterns detected before this time")
    p.add_argument("--min-labels", type=int_in(10), default=100, help="labeled patterns needed (default 100)")
    p.add_argument("--folds", type=int_in(2, 50), default=5, help="purged walk-forward folds for the reported metrics")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="holdout metrics of a saved model on a period (out of sample only)")
    p.add_argument("--model", required=True, help="model version folder, its model.json, or a folder of versions")
    p.add_argument("--db", default="results/experiments.db")
    p.add_argument("--start", default=None)
    p.add_argument("--end", default=None)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("backtest", help="one backtest of the configured strategy, ML block applied")
    p.add_argument("--config", required=True, help="run config (YAML)")
    p.add_argument("--strategies-module", default=None)
    add_no_progress(p)
    p.set_defaults(func=_backtest)


def _train(args: argparse.Namespace) -> int:
    cfg = load_config(config_path(args.config, "qml_with_ml.yaml"))
    db = args.db or cfg["ml_data_collection"]["db_path"]
    out = args.out or cfg["ml"]["model_path"] or "models/signal_quality"
    with PatternRegistry(db) as reg:
        X, y = reg.get_training_data(min_labels=args.min_labels, start=args.start, end=args.end)
        det = X.index.get_level_values("detection_time")
        ex = X.index.get_level_values("exit_time")
        cv = cross_validate_walk_forward(lambda: SignalQualityModel(), X.reset_index(drop=True), y, detection_times=det,
                                         exit_times=ex, splitter=PurgedWalkForward(args.folds))
        model = SignalQualityModel(model_name=cfg["ml"]["model_name"]).fit(
            X.reset_index(drop=True), y, detection_times=det, exit_times=ex)
        path = model.save_version(out, metrics=cv["metrics"])
        record_version(reg, model, path, model_name=cfg["ml"]["model_name"], status="staging", metrics=cv["metrics"])
    m = cv["metrics"]
    print(f"trained on {len(y):,} labeled patterns ({det.min()} .. {ex.max()}), base rate {y.mean():.1%}")
    print(f"purged walk-forward ({args.folds} folds, out of sample): AUC {m['auc']:.3f}  Brier {m['brier']:.4f}  "
          f"log loss {m['log_loss']:.4f}  precision {m['precision']:.3f}  recall {m['recall']:.3f}")
    print(f"saved {path} (staging)")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    model = SignalQualityModel.load(args.model)
    with PatternRegistry(args.db) as reg:
        X, y = reg.get_training_data(min_labels=1, start=args.start, end=args.end)
    det = X.index.get_level_values("detection_time")
    ok = admissible_model(det, [model.trained_on_end_]) == 0
    if ok.sum() < 10:
        raise InsufficientDataError(
            f"only {int(ok.sum())} labeled patterns in the period were detected after the model's training data "
            f"ended ({model.trained_on_end_}); need at least 10 to evaluate out of sample")
    proba = model.predict_proba(X.reset_index(drop=True)[ok])[:, 1]
    m = evaluate(y[ok], proba)
    print(f"model {args.model}: trained up to {model.trained_on_end_}; evaluated on {int(ok.sum()):,} patterns "
          f"detected after it ({int((~ok).sum()):,} earlier ones left out)")
    for k in ("auc", "brier", "log_loss", "precision", "recall", "f1", "base_rate"):
        print(f"  {k:<10} {m[k]:.4f}")
    return 0


def _backtest(args: argparse.Namespace) -> int:
    if args.no_progress:
        silence_progress()
    cfg = load_config(config_path(args.config, "qml_with_ml.yaml"))
    df = load_data(cfg["data"])
    cls = resolve_strategy(cfg["strategy"]["class"], args.strategies_module)
    params = strategy_params(cls, cfg["strategy"]["params"])
    db = cfg["ml_data_collection"]["db_path"]
    ml = yaml.safe_dump(cfg["ml"]) if cfg["ml"]["enabled"] else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*contingent SL/TP.*")
        warnings.filterwarnings("ignore", message=".*trades remain open.*")
        stats = make_backtest(df, cls, cfg["backtest"]).run(
            **params, registry_db=db, register_patterns=cfg["ml_data_collection"]["enabled"], ml_config=ml)
    if cfg["ml_data_collection"]["enabled"]:
        record_run(stats, db)
    status = getattr(stats._strategy, "ml_status", "off")
    shown = stats[[k for k in stats.index if not k.startswith("_")]]
    print(pd.Series(shown).to_string())
    print(f"ML filter: {status}" + ("  <- IN-SAMPLE: the model saw this period" if status == "IN-SAMPLE" else ""))
    return 0 if not np.isnan(stats["Equity Final [$]"]) else 1
