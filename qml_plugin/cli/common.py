"""What several ``qml`` commands share: config lookup, data slicing, strategy lookup, Backtest setup.

``strategy.class`` from a config is resolved **only** inside ``qml_plugin.strategies`` (or inside
a module the user names on the command line with ``--strategies-module``); it must name a
``backtesting.Strategy`` subclass. Nothing else in a config is imported or executed.

``--no-progress`` (:func:`silence_progress`) must silence backtesting.py's own ``Backtest.run`` bars
too (SPEC §10). Setting ``TQDM_DISABLE=1`` alone does not: tqdm reads its ``TQDM_*`` variables once,
when ``tqdm`` is imported, and backtesting.py (imported with this package) already has. So the
helper also swaps backtesting.py's ``_tqdm`` for one with ``disable=True``; forked workers inherit
the swap, and spawned workers and Dask processes started later import tqdm afresh and read the variable.
"""
from __future__ import annotations

import argparse
import importlib
import math
import os
import warnings
from functools import partial
from pathlib import Path

from backtesting import Strategy

from ..config import resolve_config
from ..data import load_data
from ..errors import ConfigError
from ..job.runs import data_name, make_backtest, strategy_params  # re-exported for the other commands

__all__ = ["default_config", "config_path", "load_data", "resolve_strategy", "make_backtest", "strategy_params",
           "int_in", "finite_float", "data_name", "add_no_progress", "silence_progress"]


def int_in(lo: int, hi: int | None = None):
    """An argparse ``type=``: an integer in ``[lo, hi]``; anything else is argparse's one-line error (exit 2).

        >>> int_in(1, 10_000)("20")
        20
        >>> int_in(1, 10_000)("0")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: must be an integer in [1, 10000], got '0'
    """
    allowed = f"an integer in [{lo}, {hi}]" if hi is not None else f"an integer >= {lo}"

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is None or v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text[:200]!r}")
        return v

    parse.__name__ = allowed  # argparse names the type in some messages
    return parse


def finite_float(lo: float | None = None):
    """An argparse ``type=``: a finite number (NaN and inf refused), at least ``lo`` when given."""
    allowed = "a finite number" + (f" >= {lo:g}" if lo is not None else "")

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            v = math.nan
        if not math.isfinite(v) or (lo is not None and v < lo):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text[:200]!r}")
        return v

    parse.__name__ = allowed
    return parse


def add_no_progress(p: argparse.ArgumentParser) -> None:
    """Declare ``--no-progress`` on a long-running command (its ``run`` calls :func:`silence_progress`)."""
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars at all (qml's own and backtesting.py's Backtest.run bars)")


def silence_progress() -> None:
    """Silence every tqdm bar from here on: qml's, and backtesting.py's own (module docstring)."""
    import backtesting._util as bt_util
    import backtesting.backtesting as bt
    import backtesting.lib as bt_lib
    from tqdm.auto import tqdm

    os.environ["TQDM_DISABLE"] = "1"                 # processes that import tqdm later (spawned, Dask)
    quiet = partial(tqdm, leave=False, disable=True)  # backtesting.py's _tqdm, disabled (this process, forks)
    for mod in (bt_util, bt, bt_lib):
        if hasattr(mod, "_tqdm"):
            mod._tqdm = quiet


def default_config(name: str) -> Path:
    """Path of a shipped config by name (see :func:`qml_plugin.config.resolve_config`)."""
    return resolve_config(name)


def config_path(arg: str | None, default: str) -> Path:
    """``--config``: :func:`qml_plugin.config.resolve_config` (an existing file, else a shipped config of
    that bare name, else a :class:`ConfigError` listing the shipped names); ``None`` = ``default``."""
    return resolve_config(arg, default=default)


_PACKAGE = "qml_plugin.strategies"
_OLD_PACKAGE = "strategies."  # the spelling before the strategies moved inside the package (SPEC §0)


def resolve_strategy(name: str, module: str | None = None) -> type[Strategy]:
    """The ``backtesting.Strategy`` subclass that a config's ``strategy.class`` names.

    ``name`` is looked up in :mod:`qml_plugin.strategies` only: ``qml_plugin.strategies.QMLStrategy``
    (or ``qml_plugin.strategies.qml_strategy.QMLStrategy``). The old spelling
    ``strategies.qml_strategy.QMLStrategy`` resolves to the same class with a ``DeprecationWarning``;
    it never imports a top-level ``strategies`` module, so a user's own folder of that name is left alone.
    With ``module`` (``--strategies-module``, named on the command line, never in a config) the
    class of that name is taken from that module instead. Anything else is a :class:`ConfigError`.

    >>> resolve_strategy("qml_plugin.strategies.QMLStrategy").__name__
    'QMLStrategy'
    """
    if module is not None:
        mod_name, cls_name = module, name.rsplit(".", 1)[-1]
    else:
        if name.startswith(_OLD_PACKAGE) and name.count(".") >= 2:
            new = _PACKAGE + name[len("strategies"):]
            warnings.warn(f"strategy.class = {name!r} is deprecated; write {new!r} (the strategies now live "
                          "inside the package: qml_plugin.strategies)", DeprecationWarning, stacklevel=2)
            name = new
        if not name.startswith(_PACKAGE + ".") or name.count(".") < 2:
            raise ConfigError(f"strategy.class = {name!r} is not allowed; allowed: a class in the "
                              f"{_PACKAGE} package, e.g. {_PACKAGE}.QMLStrategy (or pass --strategies-module)")
        mod_name, cls_name = name.rsplit(".", 1)
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(f"strategy.class = {name!r}: cannot import {mod_name!r} ({e})") from None
    cls = getattr(mod, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise ConfigError(f"strategy.class = {name!r}: {mod_name} has no backtesting.Strategy named {cls_name!r}")
    return cls
