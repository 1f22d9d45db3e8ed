"""The main job as library functions (SPEC §11, §15): the CLI parses arguments and prints, nothing more.

* :func:`run_market_job`: one market (``configs/qml_with_ml.yaml``): baseline backtest -> registry ->
  walk-forward models -> a backtest per ML mode -> comparison with a random filter.
* :func:`run_universe_job`: many markets at once (``configs/universe.yaml``, the default of ``qml run``):
  per-market work units on :class:`qml_plugin.compute.Scheduler`, pooled / per-market /
  leave-market-out walk-forward on one UTC clock, and the verdict table.

Every run writes under its own folder ``<results>/runs/<run_id>/`` (:func:`new_run_dir`), so two runs
in one folder never share or overwrite each other's models, and a run never deletes a folder it did
not create.
"""
from __future__ import annotations

from .market import JobResult, run_market_job
from .runs import RunDir, new_run_dir
from .universe import UniverseResult, run_universe_job

__all__ = ["run_market_job", "JobResult", "run_universe_job", "UniverseResult", "new_run_dir", "RunDir"]
