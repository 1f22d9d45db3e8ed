"""``qml sweep``: a QMLParams grid scored from events, checked against vectorbt, ranked, with its PBO and DSR.

    $ qml sweep --config configs/sweep.yaml --top 10 [--scheduler serial|processes|dask] [--workers N]

The work is :func:`qml_plugin.vbt.sweep`; this module parses arguments and prints the best rows,
the overfitting statistics (PBO of the grid, DSR of the best row), the paths written and, with
``ml_data_collection.enabled`` and the ML filter on, what went to the prediction log.
"""
from __future__ import annotations

import argparse

import pandas as pd

from ..compute import SCHEDULERS
from .common import add_no_progress, config_path, int_in, silence_progress


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="run a QMLParams grid through vectorbt and rank the combinations",
                       description="Sweep a QMLParams grid (sweep.grid) through vectorbt's Portfolio, optionally "
                                   "with the ML filter; print the best rows, write a CSV and a heatmap PNG.")
    p.add_argument("--config", default=None,
                   help="sweep config YAML (default: the shipped configs/sweep.yaml)")
    p.add_argument("--top", type=int_in(1, 1_000_000), default=10, help="rows to print (default: 10)")
    add_no_progress(p)
    p.add_argument("--scheduler", choices=SCHEDULERS, default=None,
                   help="where the blocks of combinations run (default: the config's compute.scheduler)")
    p.add_argument("--workers", type=int, default=None, help="processes or Dask workers (default: the config's)")
    p.add_argument("--address", default=None, help="an existing Dask scheduler, tcp://host:8786")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.no_progress:
        silence_progress()
    from ..config import load_sweep_config
    from ..vbt import sweep
    from ..vbt.grid import overfit_note

    cfg = load_sweep_config(config_path(args.config, "sweep.yaml"))
    compute = dict(cfg.get("compute") or {})
    for key in ("scheduler", "workers", "address"):
        if getattr(args, key) is not None:
            compute[key] = getattr(args, key)
    if args.scheduler is not None and args.scheduler != "dask":
        compute["address"] = args.address
    table = sweep(cfg, progress=not args.no_progress, compute=compute)
    metric = cfg["sweep"]["metric"]
    print(f"{len(table)} combinations, ranked by {metric}"
          + (f"; ML filter: {table.attrs['ml_status']}" if cfg["ml"]["enabled"] else ""))
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.head(max(args.top, 0)).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"\noverfitting: {overfit_note(table)}")
    print("  PBO = share of the 12,870 in-sample/out-of-sample splits where the in-sample best lands in the "
          "bottom half out of sample; DSR = probability the row's true Sharpe is > 0 after this many trials.")
    print(f"verified through vectorbt's Portfolio: the top {table.attrs['verified']} rows (trades and metrics)")
    print(f"\ntable: {table.attrs['csv']}")
    if table.attrs.get("heatmap"):
        print(f"heatmap: {table.attrs['heatmap']}")
    log = table.attrs.get("predictions")
    if log:
        print(f"prediction log: {log['rows']} scoring events of {log['patterns']} patterns, run {log['run_id']}, "
              f"in {log['db']} ({log['seconds']:.2f} s)")
    return 0
