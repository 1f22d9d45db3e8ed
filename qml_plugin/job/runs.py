"""What every job shares: its own run folder, its warnings, the registry opened first, the Backtest setup.

* :func:`new_run_dir` creates ``<report.output_dir>/<run_id>/`` (default ``results/runs/<run_id>/``,
  relative paths resolved against the working directory). The folder is created with
  ``exist_ok=False``, so a run owns it alone; nothing outside it is ever deleted.
* :class:`WarningLog` collects the warnings of the backtests (``warnings.catch_warnings(record=True)``),
  re-emits each distinct one **once** and keeps them as notes for the report: "ML filter off, trading
  unfiltered", "IN-SAMPLE" and the like reach the user instead of being silenced. The re-emission is for
  users of the Python API (``pytest.warns``, ``warnings.catch_warnings``); it points at the line that
  first raised the warning and is tagged with the pseudo-module :data:`ECHO_MODULE`, so ``qml`` (which
  prints the job's warnings as ``warning: ...`` lines) ignores it with one filter instead of showing each
  warning twice. A work unit's log does not re-emit (``echo=False``): its entries are merged into the
  driver's log, which does, so a warning from a worker process is shown once too.
* :func:`open_registry` opens (and migrates) the registry before anything is written, so a damaged or
  unwritable registry fails the job before a model folder exists.
"""
from __future__ import annotations

import inspect
import os
import re
import secrets
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from backtesting import Backtest, Strategy

from ..config import MIXIN_SETTINGS
from ..errors import ConfigError
from ..registry import PatternRegistry

__all__ = ["RunDir", "new_run_dir", "WarningLog", "ECHO_MODULE", "open_registry", "make_backtest", "strategy_params",
           "data_name", "default_strategy", "run_backtest", "run_folder"]


@dataclass(frozen=True)
class RunDir:
    """One run's own folder: ``path`` (absolute) and its ``run_id`` (UTC time + random suffix)."""

    run_id: str
    path: Path

    def models(self, name: str) -> Path:
        """Where the walk-forward versions of ``name`` go (the folder is not created here)."""
        return self.path / "models" / name


def new_run_dir(output_dir: str | os.PathLike = "results/runs", *, run_id: str | None = None) -> RunDir:
    """Create ``output_dir/<run_id>/`` and return it; :class:`ConfigError` if it already exists.

    ``run_id`` defaults to ``YYYYmmddTHHMMSSZ-<6 hex>``: sortable, and unique even for two runs
    started in the same second.

        >>> import tempfile
        >>> d = new_run_dir(tempfile.mkdtemp(), run_id="demo")
        >>> d.run_id, d.path.name, d.path.is_dir()
        ('demo', 'demo', True)
    """
    run_id = run_id or f"{pd.Timestamp.now(tz='UTC'):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    path = Path(output_dir).resolve() / run_id
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(exist_ok=False)
    except FileExistsError:
        raise ConfigError(f"run folder {str(path)!r} already exists; a run never reuses another run's folder "
                          "(give another run_id)") from None
    return RunDir(run_id, path)


_BAR_STAMP = re.compile(r"\(\d{4}-\d\d-\d\d[^)]*\)\s*")
_DEVELOPER_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
ECHO_MODULE = "qml_plugin.job.warning_log"
"""The module name :class:`WarningLog` gives its re-emitted warnings: ``warnings.filterwarnings("ignore",
module=re.escape(ECHO_MODULE))`` hides the echoes of a log whose :attr:`WarningLog.seen` is printed anyway."""


@dataclass
class WarningLog:
    """Warnings seen during a job, each shown once, in the order first seen.

    Repeats count as one when they differ only in where they arose (``baseline``, ``filter`` ...) or
    by a leading bar time (backtesting.py's ``(2017-04-23 20:00:00) A contingent SL/TP order ...``).
    Deprecation warnings are left to Python's own filters: they speak to developers, not users.
    :attr:`seen` lists each as ``"message [baseline, filter; 12 times]"`` for the report's notes.
    """

    echo: bool = True                            # re-emit each new warning (False: a work unit's log)
    _where: dict = field(default_factory=dict)   # message -> [places in order], one entry per occurrence

    @contextmanager
    def collect(self, where: str = ""):
        """Record the warnings raised inside the block; show each new one once (``UserWarning``)."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        for w in caught:
            if issubclass(w.category, _DEVELOPER_WARNINGS):
                continue
            self.add(str(w.message), where=where, category=w.category, origin=(w.filename, w.lineno))

    def add(self, message: str, *, where: str = "", category=UserWarning,
            origin: tuple[str, int] | None = None) -> None:
        """Keep ``message`` and show it the first time it is seen (as raised at ``origin``, a
        ``(filename, lineno)``; default: the first caller outside this module)."""
        key = _BAR_STAMP.sub("", " ".join(str(message).split()))
        first = key not in self._where
        self._where.setdefault(key, []).append(where)
        if first and self.echo:
            if not isinstance(category, type) or not issubclass(category, Warning):
                category = UserWarning
            if origin is None:
                frame = sys._getframe(1)
                while frame.f_back is not None and frame.f_code.co_filename == __file__:
                    frame = frame.f_back
                origin = (frame.f_code.co_filename, frame.f_lineno)
            warnings.warn_explicit(f"{where}: {key}" if where else key, category, origin[0], origin[1],
                                   module=ECHO_MODULE)

    @property
    def entries(self) -> list[tuple[str, str]]:
        """``(message, where)`` of every occurrence, for :meth:`merge` into another log (a work unit's
        warnings reach the driver this way)."""
        return [(key, where) for key, places in self._where.items() for where in places]

    def merge(self, entries) -> None:
        """Add another log's :attr:`entries` (each new message is shown once)."""
        for message, where in entries:
            self.add(message, where=where)

    @property
    def seen(self) -> list[str]:
        """Each distinct warning with where it arose and how often."""
        out = []
        for key, places in self._where.items():
            named = ", ".join(dict.fromkeys(p for p in places if p))
            times = f"; {len(places)} times" if len(places) > 1 else ""
            out.append(f"{key} [{named}{times}]" if named or times else key)
        return out


def run_backtest(bt: Backtest, *, log: WarningLog, where: str, **run_kw) -> pd.Series:
    """``bt.run(**run_kw)`` with its warnings kept in ``log``; an IN-SAMPLE ML status becomes a
    warning too (an ML filter that fell back to the baseline warns by itself: "ML filter off")."""
    with log.collect(where):
        stats = bt.run(**run_kw)
        if str(getattr(stats._strategy, "ml_status", "off")).startswith("IN-SAMPLE"):
            warnings.warn("ML scores are IN-SAMPLE: the model was trained on the backtest's own period, so "
                          "these results say nothing about new data", UserWarning, stacklevel=2)
    return stats


def run_folder(cfg: dict, run_id: str | None = None) -> tuple[RunDir, Path]:
    """This run's folder (``report.output_dir``) and its report path (``report.output``, null = inside it)."""
    rep = cfg.get("report") or {}
    run = new_run_dir(rep.get("output_dir") or "results/runs", run_id=run_id)
    return run, Path(rep["output"]) if rep.get("output") else run.path / "report.html"


def open_registry(db: str) -> PatternRegistry:
    """Open the registry at ``db`` now (migrations run): a damaged file fails here, before any output."""
    reg = PatternRegistry(db)
    reg.get_statistics()  # reads every table once: a file damaged past its header fails here too
    return reg


def default_strategy() -> type[Strategy]:
    """The shipped ``QMLStrategy`` (for library calls that name no strategy class)."""
    import importlib

    for name in ("qml_plugin.strategies", "strategies.qml_strategy"):
        try:
            return importlib.import_module(name).QMLStrategy
        except (ImportError, AttributeError):
            continue
    raise ConfigError("the shipped QMLStrategy cannot be imported; pass strategy= explicitly")


def _parameters(cls: type[Strategy]) -> list[str]:
    """Public class attributes of ``cls`` that are plain values: the parameters ``Backtest.run(**kw)`` may set."""
    out = []
    for k in dir(cls):
        if k.startswith("_") or k in MIXIN_SETTINGS:
            continue
        raw = inspect.getattr_static(cls, k)
        if not (callable(raw) or isinstance(raw, (property, classmethod, staticmethod))):
            out.append(k)
    return sorted(out)


def strategy_params(cls: type[Strategy], params: dict) -> dict:
    """Check that every ``strategy.params`` key is a parameter of the strategy: a plain class attribute,
    not a method or property, and not a mixin setting (``registry_db``, ``ml_config``, ...), which the
    job sets from the config's own sections."""
    allowed = _parameters(cls)
    for key in params:
        if key in MIXIN_SETTINGS:
            raise ConfigError(f"strategy.params.{key} is a mixin setting, not a strategy parameter; "
                              f"set it with {MIXIN_SETTINGS[key]}")
        if key not in allowed:
            what = "a method or property" if hasattr(cls, key) else "not an attribute"
            raise ConfigError(f"strategy.params.{key} is not a parameter of {cls.__name__} ({what}); "
                              f"allowed: {', '.join(allowed)}")
    return dict(params)


def make_backtest(df: pd.DataFrame, cls: type[Strategy], bt_cfg: dict, *, cash: float | None = None,
                  commission: float | None = None, spread: float = 0.0) -> Backtest:
    """A backtesting.py ``Backtest`` with the ``backtest:`` section's cash, commission and margin.

    ``cash`` / ``commission`` / ``spread`` override the section (the universe job sizes cash per
    market and takes costs per dataset). ``finalize_trades`` stays at backtesting.py's default
    (False): a trade still open at the end has no outcome yet, exactly like an open triple-barrier
    label, so every row of a comparison counts the same trades. Its warnings (e.g. "prices larger
    than initial cash") are left to the caller's :class:`WarningLog`.
    """
    return Backtest(df, cls, cash=bt_cfg["cash"] if cash is None else cash,
                    commission=bt_cfg["commission"] if commission is None else commission,
                    spread=spread, margin=bt_cfg["margin"], exclusive_orders=bt_cfg["exclusive_orders"])


def data_name(df: pd.DataFrame) -> str:
    """``"EURUSD 1h"``: how a frame is named in messages and reports."""
    return f"{df.attrs.get('symbol')} {df.attrs.get('timeframe') or ''}".strip()
