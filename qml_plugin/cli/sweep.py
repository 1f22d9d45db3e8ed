"""``qml sweep``: a QMLParams grid through vectorbt, ranked, saved as CSV plus a heatmap.

    $ qml sweep --config configs/sweep.yaml --top 10

The work is :func:`qml_plugin.vbt.sweep`; this module parses arguments and prints the best rows
and the paths written.
"""
from __future__ import annotations

import argparse

import pandas as pd

from .common import config_path


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="run a QMLParams grid through vectorbt and rank the combinations",
                       description="Sweep a QMLParams grid (sweep.grid) through vectorbt's Portfolio, optionally "
                                   "with the ML filter; print the best rows, write a CSV and a heatmap PNG.")
    p.add_argument("--config", default=None,
                   help="sweep config YAML (default: the shipped configs/sweep.yaml)")
    p.add_argument("--top", type=int, default=10, help="rows to print (default: 10)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import load_sweep_config
    from ..vbt import sweep

    cfg = load_sweep_config(config_path(args.config, "sweep.yaml"))
    table = sweep(cfg, progress=not args.no_progress)
    metric = cfg["sweep"]["metric"]
    print(f"{len(table)} combinations, ranked by {metric}"
          + (f"; ML filter: {table.attrs['ml_status']}" if cfg["ml"]["enabled"] else ""))
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.head(max(args.top, 0)).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"\ntable: {table.attrs['csv']}")
    if table.attrs.get("heatmap"):
        print(f"heatmap: {table.attrs['heatmap']}")
    return 0
