"""``qml learn``: the model lifecycle from the command line (SPEC §8; logic in :mod:`qml_plugin.ml.lifecycle`).

    $ qml learn --status                  # production model: age, training range, metrics, last drift
    $ qml learn --check-drift             # recent patterns vs the production model's training window
    $ qml learn --cycle [--force]         # drift -> retrain if flagged (or forced) -> gate -> promote / reject
    $ qml learn --retrain [--force] [--as shadow]   # the same, terse; --as shadow|canary never acts
    $ qml learn --history                 # every promote / reject / rollback, oldest first
    $ qml learn --rollback                # the previous production version back in production

``--retrain`` and ``--cycle`` retrain only when drift is flagged or no production model exists yet;
``--force`` retrains regardless. A ``reject`` is a normal outcome (exit 0); errors exit 2.
Thresholds and gates come from the config's ``learn:`` section.
"""
from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from ..config import load_config
from ..ml.drift import drift_state_file, last_drift
from ..ml.lifecycle import CycleResult, LearnSettings, check_drift, labeled_since, rollback, run_cycle
from ..registry import PatternRegistry, registry_exists
from .common import config_path, int_in

_ACTIONS = ("status", "check_drift", "retrain", "cycle", "history", "rollback")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("learn", help="model lifecycle: drift, retrain, promotion gates, history, rollback",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    act = p.add_mutually_exclusive_group(required=True)
    act.add_argument("--status", action="store_true", help="the production model, its metrics and the last drift")
    act.add_argument("--check-drift", action="store_true", help="feature and score drift vs the training window")
    act.add_argument("--retrain", action="store_true", help="train a candidate and run the promotion gate")
    act.add_argument("--cycle", action="store_true", help="drift check, then retrain + gate if drift is flagged")
    act.add_argument("--history", action="store_true", help="every lifecycle decision, oldest first")
    act.add_argument("--rollback", action="store_true", help="restore the previous production version")
    p.add_argument("--force", action="store_true", help="retrain even when no drift is flagged")
    p.add_argument("--as", dest="as_status", choices=("staging", "shadow", "canary"), default="staging",
                   help="status of the new candidate (shadow / canary: scored and logged, never acting)")
    p.add_argument("--config", default=None, help="run config (default: the shipped qml_with_ml.yaml)")
    p.add_argument("--db", default=None, help="registry path (default: ml_data_collection.db_path)")
    p.add_argument("--models-dir", default=None, help="folder of model versions (default: learn.models_dir, "
                                                      "models/signal_quality)")
    p.add_argument("--model-name", default=None, help="model name in the registry (default: ml.model_name, "
                                                      "signal_quality)")
    p.add_argument("--top", type=int_in(1, 10_000), default=10, help="drifting features to list (default 10)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(config_path(args.config, "qml_with_ml.yaml"))
    settings = LearnSettings.from_config(cfg, model_name=args.model_name, models_dir=args.models_dir)
    db = args.db or cfg["ml_data_collection"]["db_path"]
    action = next(a for a in _ACTIONS if getattr(args, a))
    if action in ("status", "history") and not registry_exists(db):
        print(f"no production model yet: no registry at {db} (nothing created); run `qml run` to fill it with "
              f"labeled patterns, then `qml learn --retrain --force`")
        return 0
    with PatternRegistry(db) as reg:
        if action == "status":
            print(status_text(reg, settings))
        elif action == "history":
            print(history_text(reg, settings.model_name))
        elif action == "rollback":
            print(rollback(reg, settings).summary())
        elif action == "check_drift":
            print(drift_text(reg, settings, top=args.top))
        else:
            result = run_cycle(reg, settings, force=args.force, status=args.as_status)
            print(cycle_text(result, top=args.top if action == "cycle" else 0))
    return 0


def drift_text(reg: PatternRegistry, settings: LearnSettings, *, top: int = 10) -> str:
    """``--check-drift``: the drift report as text (or why there is none)."""
    report = check_drift(reg, settings)
    if report is None:
        return _no_production(reg, settings)
    return report.summary(top)


def _no_production(reg: PatternRegistry, settings: LearnSettings) -> str:
    return (f"no production model yet for {settings.model_name!r} in {reg.path}: run `qml run` to fill the registry "
            f"with labeled patterns, then `qml learn --retrain --force` (or `qml learn --cycle`)")


def _age(trained_time: str | None) -> str:
    if not trained_time:
        return "unknown age"
    delta = datetime.now(UTC) - pd.Timestamp(trained_time).tz_convert("UTC").to_pydatetime()
    days = delta.total_seconds() / 86400
    return f"{days:.1f} days old" if days >= 1 else f"{delta.total_seconds() / 3600:.1f} hours old"


def _metric_line(metrics: dict[str, Any] | None) -> str:
    m = metrics or {}
    m = m.get("holdout") or m          # lifecycle versions keep holdout metrics; `qml train` a flat dict
    parts = [f"{k} {m[k]:.4f}" for k in ("auc", "brier", "log_loss", "precision", "base_rate")
             if isinstance(m.get(k), int | float)]
    return ", ".join(parts) + (f" on {m['n']} holdout patterns" if isinstance(m.get("n"), int) else "") or "none"


def status_text(reg: PatternRegistry, settings: LearnSettings) -> str:
    """``--status``: production model, age, training range, metrics, labels since, last drift, versions."""
    name = settings.model_name
    prod = reg.production_model(name)
    versions = reg.list_model_versions(name)
    counts = pd.Series([v["status"] for v in versions], dtype=object).value_counts().to_dict()
    lines = []
    if prod is None:
        lines.append(_no_production(reg, settings))
    else:
        lines += [f"{name}: production v{prod['version']} ({prod['model_id']}), trained {prod['trained_time']} "
                  f"({_age(prod['trained_time'])})",
                  f"  training data: detected from {prod['trained_on_start']}, last exit {prod['trained_on_end']}; "
                  f"{prod['training_samples']} samples, {len(prod['features_used'] or [])} features",
                  f"  holdout metrics: {_metric_line(prod['metrics'])}",
                  f"  labeled patterns detected since training: {labeled_since(reg, prod['trained_on_end'])}",
                  f"  model files: {prod['model_path']}"]
    drift = last_drift(drift_state_file(settings.models_dir, name))
    if drift is not None:
        top = ", ".join(f"{t['feature']} (PSI {t['psi']:.2f})" for t in drift["top_features"][:3]
                        if t["psi"] is not None)
        lines.append(f"  last drift check {drift['checked_at']}: {'FLAGGED' if drift['flagged'] else 'not flagged'}, "
                     f"{drift['n_drifting']} of {drift['n_features']} features drifting, score PSI "
                     f"{'n/a' if drift['score_psi'] is None else format(drift['score_psi'], '.3f')}; top: {top or '-'}")
    elif prod is not None:
        lines.append("  last drift check: none yet (`qml learn --check-drift`)")
    if versions:
        lines.append("  versions: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    history = reg.eval_history(name)
    if history:
        e = history[-1]
        lines.append(f"  last decision: {e['decision']} at {e['evaluated_at']} (candidate v{e['candidate_version']})")
    performance = reg.prediction_performance()
    lines += performance_lines(performance[performance["model_name"] == name] if len(performance) else performance)
    others = performance[performance["model_name"] != name] if len(performance) else performance
    if len(others):                        # most predictions first (a universe run's pooled versions)
        others = others.sort_values("predictions", ascending=False, kind="stable")
        lines += performance_lines(others, title="other models' prediction log (e.g. the walk-forward versions of "
                                                 "`qml run`)", limit=_OTHERS_SHOWN)
    return "\n".join(lines)


def _f(value: Any, spec: str = ".3f") -> str:
    return "n/a" if value is None or (isinstance(value, float) and value != value) else format(value, spec)


_OTHERS_SHOWN = 12
"""How many versions of other model names ``--status`` lists (the rest are counted)."""


def performance_lines(table: pd.DataFrame, *, title: str = "prediction log", limit: int | None = None) -> list[str]:
    """The prediction log per model version (``PatternRegistry.prediction_performance``) as text;
    ``limit`` rows at most (the rest counted, with their predictions)."""
    if not len(table):
        return [f"  {title}: no predictions logged yet"]
    out = [f"  {title} (per version; win rate and mean R over resolved events, taken vs skipped):"]
    shown = table if limit is None else table.head(limit)
    for r in shown.itertuples(index=False):
        out.append(f"    {r.model_id} ({r.status or 'unrecorded'}): {r.predictions} predictions of {r.patterns} "
                   f"patterns, {r.resolved} resolved; AUC {_f(r.auc)}, Brier {_f(r.brier)}; taken {r.taken}: win "
                   f"rate {_f(r.win_rate_taken, '.1%')}, mean R {_f(r.mean_r_taken, '+.3f')}; skipped {r.skipped}: "
                   f"win rate {_f(r.win_rate_skipped, '.1%')}, mean R {_f(r.mean_r_skipped, '+.3f')}")
    if len(table) > len(shown):
        rest = table.iloc[len(shown):]
        out.append(f"    ... and {len(rest)} more versions ({int(rest['predictions'].sum())} predictions of "
                   f"{rest['model_name'].nunique()} model names)")
    return out


def history_text(reg: PatternRegistry, model_name: str) -> str:
    """``--history``: one block per decision, oldest first."""
    rows = reg.eval_history(model_name)
    if not rows:
        return f"no lifecycle decisions recorded for {model_name!r} in {reg.path} yet"
    out = []
    for e in rows:
        m = e["metrics"] or {}
        cand, prod = m.get("candidate") or {}, m.get("production") or {}
        scores = "".join(f"  {label} {cand[k]:.4f}" + (f" vs {prod[k]:.4f}" if isinstance(prod.get(k), float) else "")
                         for k, label in (("auc", "AUC"), ("brier", "Brier")) if isinstance(cand.get(k), float))
        scores += f"  on {cand['n']} holdout patterns" if scores else ""
        flag = (e["drift"] or {}).get("flagged")
        cand, base = (f"v{v}" if v is not None else "none" for v in (e["candidate_version"], e["baseline_version"]))
        out.append(f"{e['evaluated_at']}  {e['decision']:<8}  candidate {cand}  production {base}{scores}"
                   + ("" if flag is None else f"  drift {'flagged' if flag else 'not flagged'}"))
        if e["notes"]:
            out.append(f"    {e['notes']}")
    return "\n".join(out)


def cycle_text(result: CycleResult, *, top: int = 10) -> str:
    """``--cycle`` / ``--retrain``: the drift verdict, why it (did not) retrain, and the decision."""
    lines = []
    if result.drift is not None:
        lines.append(result.drift.summary(top) if top else result.drift.summary(0).splitlines()[0])
    lines.append(result.why)
    if result.decision is not None:
        lines.append(result.decision.summary())
    return "\n".join(lines)
