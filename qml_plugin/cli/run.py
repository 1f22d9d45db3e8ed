"""``qml run``: the main job. This module parses arguments and prints; :mod:`qml_plugin.job` does the work.

Without ``--config`` the shipped universe runs (``configs/universe.yaml``: every shipped hourly and
daily market, :func:`qml_plugin.job.run_universe_job`); a config whose ``data.source`` names one
dataset runs the single-market job (:func:`qml_plugin.job.run_market_job`, e.g.
``--config qml_with_ml.yaml``). Every run writes its models, tables and report under its own folder
``<report.output_dir>/<run_id>/`` (default ``results/runs/``); the report goes to ``report.output``
(null = inside that folder).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..config import load_config
from ..job import run_market_job, run_universe_job
from ..job.schemes import parse_schemes
from ..job.universe import is_universe_source
from ..job.verdict_text import ece_sentence, format_verdict, resolution_note
from ..report import format_table, write_report
from .common import add_no_progress, config_path, int_in, resolve_strategy, silence_progress


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="the main job: baseline -> registry -> walk-forward ML -> modes vs random",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="run config (default: the shipped configs/universe.yaml)")
    p.add_argument("--scheme", default=None, help="walk-forward schemes, comma-separated: pooled, per_market, "
                                                  "leave_market_out (default: the config's, else pooled,per_market)")
    p.add_argument("--scheduler", default=None, choices=("serial", "processes", "dask"),
                   help="where per-market work runs (default: the config's compute.scheduler, else processes)")
    p.add_argument("--workers", type=int_in(1, 1024), default=None,
                   help="processes or Dask workers (default: the cores)")
    p.add_argument("--address", default=None, help="an existing Dask scheduler, e.g. tcp://host:8786")
    p.add_argument("--strategies-module", default=None, help="module holding strategy.class (default: strategies)")
    add_no_progress(p)
    p.set_defaults(func=run)


def _write_reports(res):
    """The report at ``report.output`` and, when that is elsewhere, a copy in the run's own folder."""
    own = res.run.path / "report.html"
    if Path(res.report).resolve() != own:
        write_report(own, **res.report_content)
    return write_report(res.report, **res.report_content)


def run(args: argparse.Namespace) -> int:
    if args.no_progress:  # backtesting.py's own bars too, in this process and in every worker it starts
        silence_progress()
    cfg = load_config(config_path(args.config, "universe.yaml"))
    cls = resolve_strategy(cfg["strategy"]["class"], args.strategies_module)
    schemes = parse_schemes(args.scheme) if args.scheme else None
    if is_universe_source(cfg["data"]["source"]):
        res = run_universe_job(cfg, strategy=cls, schemes=schemes, scheduler=args.scheduler, workers=args.workers,
                               address=args.address, progress=not args.no_progress)
        report = _write_reports(res)
        print()
        print(format_verdict(res.table, markets=False).to_string(index=False))
        print(f"\n{res.sentence}")
        print(resolution_note(res.table))
        print(ece_sentence(res.report_content.get("verdict_calibration")))
        for name, rc in res.regimes.items():   # ml.regime_models: per scheme, which regimes had their own model
            print(f"\nregime models beside the pooled model, {name} scheme (out of sample):")
            print(format_table(rc.table).to_string(index=False))
            print(rc.sentence())
        print(f"\n{len(res.markets)} datasets; {res.fits} model fits in {res.timings['models_s']:.1f} s of "
              f"{res.timings['total_s']:.1f} s; run folder: {res.run.path} (verdict.csv, markets.csv)")
        print(f"report: {report}")
    else:
        if schemes is not None:
            print("note: --scheme applies to universe runs; this config names one dataset")
        res = run_market_job(cfg, strategy=cls, progress=not args.no_progress)
        _write_reports(res)
        print()
        print(format_table(res.table).to_string(index=False))
        if res.regimes is not None:       # ml.regime_models: which regimes had their own model, and what it gained
            print("\nregime models beside the pooled model (out of sample):")
            print(format_table(res.regimes.table).to_string(index=False))
            print(res.regimes.sentence())
        print(f"\nout-of-sample period from {res.period_start}; run folder: {res.run.path}; report: {res.report}")
    for w in res.warnings:
        print(f"warning: {w}")
    return 0
