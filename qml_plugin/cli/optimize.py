"""``qml optimize``: Optuna TPE over QMLParams, walk-forward by time, with the holdout and the DSR said.

    $ qml optimize --config configs/optimize.yaml [--trials N] [--objective METRIC] [--seed S]
                   [--scheduler serial|processes|dask] [--workers N] [--address tcp://host:8786]

The work is :func:`qml_plugin.vbt.optimize.optimize`; this module parses arguments and prints the
top trials on train / validation / holdout, the chosen parameters, their DSR, parameter importance,
the paths written and, with the ML filter on and ``ml_data_collection.enabled``, what went to the
prediction log.
"""
from __future__ import annotations

import argparse

import pandas as pd

from ..compute import SCHEDULERS
from ..config import OPTIMIZE_OBJECTIVES as OBJECTIVES
from .common import add_no_progress, config_path, silence_progress


def add_parser(sub) -> None:
    p = sub.add_parser("optimize", help="Bayesian search (Optuna TPE) over QMLParams, judged walk-forward",
                       description="Search optimize.space with Optuna's TPE (seeded) on the train period, choose "
                                   "among the top trials on the validation period, score them once on the holdout; "
                                   "print the DSR and parameter importance; write the trials JSON and a run config.")
    p.add_argument("--config", default=None, help="optimize config YAML (default: the shipped configs/optimize.yaml)")
    p.add_argument("--trials", type=int, default=None, help="number of trials (default: optimize.trials)")
    p.add_argument("--objective", choices=OBJECTIVES, default=None, help="metric to maximize (default: the config's)")
    p.add_argument("--seed", type=int, default=None, help="TPE seed (default: optimize.seed)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default=None, help="where trials run (default: compute:)")
    p.add_argument("--workers", type=int, default=None, help="processes or Dask workers")
    p.add_argument("--address", default=None, help="an existing Dask scheduler, tcp://host:8786")
    add_no_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.no_progress:
        silence_progress()
    from ..vbt.optimize import optimize

    compute = {k: getattr(args, k) for k in ("scheduler", "workers", "address") if getattr(args, k) is not None}
    if "scheduler" in compute and compute["scheduler"] != "dask":
        compute.setdefault("address", None)
    res = optimize(config_path(args.config, "optimize.yaml"), trials=args.trials, objective=args.objective,
                   seed=args.seed, compute=compute, progress=not args.no_progress)
    b = res.periods
    print(f"{len(res.trials)} trials, objective {res.objective}; train {b['train'][0]} .. {b['train'][1]}, "
          f"validation {b['validation'][0]} .. {b['validation'][1]}, holdout {b['holdout'][0]} .. {b['holdout'][1]}")
    keys = list(res.chosen)
    show = res.top[["trial", *keys, "value", "validation", "holdout", "chosen"]].rename(
        columns={"value": f"train_{res.objective}", "validation": f"validation_{res.objective}",
                 "holdout": f"holdout_{res.objective}"})
    with pd.option_context("display.width", 220, "display.max_columns", 40):
        print(show.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    chosen = res.top[res.top["chosen"]].iloc[0]
    print(f"\nchosen (best on validation): trial {int(chosen['trial'])} {res.chosen}")
    print(f"holdout {res.objective} {chosen['holdout']:.4g} (scored once, after the choice); the other nine: "
          + ", ".join(f"{v:.3g}" for v in res.top.loc[~res.top["chosen"], "holdout"]))
    print(f"DSR of the chosen trial's train Sharpe given {len(res.trials)} trials: {res.dsr:.3f}")
    print("parameter importance (Optuna fANOVA): "
          + (", ".join(f"{k} {v:.2f}" for k, v in res.importance.items()) or "n/a (too few trials)"))
    for name in ("json", "config", "journal", "study"):
        if name in res.paths:
            print(f"{name}: {res.paths[name]}")
    log = res.predictions
    if log:
        print(f"prediction log: {log['rows']} scoring events of {log['patterns']} patterns, run {log['run_id']}, "
              f"in {log['db']} ({log['seconds']:.2f} s)")
    return 0
