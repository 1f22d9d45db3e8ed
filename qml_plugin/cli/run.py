"""``qml run``: the main job. This module parses arguments and prints; :mod:`qml_plugin.job` does the work.

Without ``--config`` the shipped single-market config runs (``configs/qml_with_ml.yaml``); see
:func:`qml_plugin.job.run_market_job` for the steps. Every run writes its models, ``table.csv`` and
report under its own folder ``results/runs/<run_id>/`` (next to ``report.output``).
"""
from __future__ import annotations

import argparse

from ..config import load_config
from ..job import run_market_job
from ..report import format_table, write_report
from .common import config_path, resolve_strategy


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="the main job: baseline -> registry -> walk-forward ML -> modes vs random",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="run config (default: the shipped configs/qml_with_ml.yaml)")
    p.add_argument("--strategies-module", default=None, help="module holding strategy.class (default: strategies)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(config_path(args.config, "qml_with_ml.yaml"))
    cls = resolve_strategy(cfg["strategy"]["class"], args.strategies_module)
    result = run_market_job(cfg, strategy=cls, progress=not args.no_progress)
    write_report(result.run.path / "report.html", **result.report_content)
    write_report(result.report, **result.report_content)
    print()
    print(format_table(result.table).to_string(index=False))
    print(f"\nout-of-sample period from {result.period_start}; run folder: {result.run.path}; "
          f"report: {result.report}")
    for w in result.warnings:
        print(f"warning: {w}")
    return 0
