"""Many markets at once: a *universe* of OHLCV datasets, keyed ``SYMBOL_TIMEFRAME``.

A dataset is a (symbol, timeframe); a market is a symbol (``AAPL_1h`` and ``AAPL_1d`` are one
market). This module only expands a universe spec into datasets and loads each with
:func:`qml_plugin.data.load_ohlcv`; every frame keeps that function's ``attrs`` (``symbol``,
``timeframe``, ``tz``, ...). Scheduling work over the markets is left to :mod:`qml_plugin.compute`.

    >>> u = load_universe(["EURUSD_1h", "SPY_1d"], resample="4h")
    >>> sorted(u), u["EURUSD_4h"].attrs["timeframe"], u["SPY_1d"].attrs["tz"]
    (['EURUSD_4h', 'SPY_1d'], '4h', 'America/New_York')
"""
from __future__ import annotations

import fnmatch
import glob as _glob
from pathlib import Path

import pandas as pd

from .data import cut_value, dataset_info, list_datasets, load_ohlcv, resample_ohlcv, timeframe_duration
from .errors import ConfigError, DataError

__all__ = ["load_universe", "universe_sources", "UNIVERSES"]

UNIVERSES = {"hourly": "1h", "daily": "1d", "all": None}
"""Names of the shipped universes and the timeframe each selects (``all``: every shipped dataset).

    >>> len(universe_sources("hourly")), universe_sources("daily")[:2]
    (6, ['AAPL_1d', 'BAC_1d'])
"""

_GLOB_CHARS = set("*?[")


def universe_sources(sources: str | Path | list | tuple) -> list[str]:
    """The dataset names and file paths a universe spec stands for, in order, without repeats.

    ``sources`` is one name or path, a list of them, a glob (``"data/*_1h.csv.gz"`` over files;
    ``"AAPL_*"``, with no ``/`` and no ``.``, over the shipped dataset names), or a shipped universe
    name from :data:`UNIVERSES`. Each list item may itself be any of these forms.
    """
    items = [sources] if isinstance(sources, (str, Path)) else list(sources)
    if not items:
        raise ConfigError("data.source: an empty list of datasets; give names, paths, a glob, or one of "
                          f"{', '.join(UNIVERSES)}")
    out: list[str] = []
    for item in items:
        s = str(item)
        if s in UNIVERSES:
            tf = UNIVERSES[s]
            found = [n for n in list_datasets() if tf is None or dataset_info(n)["timeframe"] == tf]
        elif _GLOB_CHARS & set(s):
            if "/" in s or "." in s:
                found = sorted(_glob.glob(s))
            else:
                found = [n for n in list_datasets() if fnmatch.fnmatchcase(n, s)]
            if not found:
                raise DataError(f"data.source: no dataset matches the glob {cut_value(s)!r}")
        else:
            found = [s]
        out.extend(f for f in found if f not in out)
    return out


def load_universe(sources: str | Path | list | tuple, *, resample: str | None = None,
                  tz: str | None = None, bad_prints: str | None = None) -> dict[str, pd.DataFrame]:
    """Load every dataset of a universe into ``{"SYMBOL_TIMEFRAME": frame}``, in the order given.

    ``sources`` takes every form :func:`universe_sources` knows. ``resample`` aggregates each
    dataset whose bars are finer than the rule and leaves the others as they are (daily data stays
    daily under ``resample="4h"``), so the key's timeframe is the resample rule or the dataset's
    own. Two datasets that end up as the same (symbol, timeframe) (``AAPL_1h`` resampled to ``1d``
    beside ``AAPL_1d``) are a :class:`~qml_plugin.errors.ConfigError` naming both. ``tz`` applies to
    user files only (shipped datasets carry their own clock); ``bad_prints`` is passed to
    :func:`~qml_plugin.data.load_ohlcv` for every dataset.
    """
    step = timeframe_duration(resample) if resample else None
    if resample and step is None:
        raise ConfigError(f"data.resample: {cut_value(resample)!r} is not a fixed bar length such as '4h' or '1d'")
    frames: dict[str, pd.DataFrame] = {}
    origin: dict[tuple, tuple[str, str]] = {}
    for src in universe_sources(sources):
        shipped = src in list_datasets()
        own = load_ohlcv(src, tz=None if shipped else tz, bad_prints=bad_prints)
        bar = timeframe_duration(own.attrs.get("timeframe"))
        if resample and (bar is None or bar < step):
            own = resample_ohlcv(own, resample)
        symbol, timeframe = own.attrs["symbol"], own.attrs["timeframe"]
        if timeframe is None:
            raise DataError(f"{cut_value(src)!r}: the file name does not say its timeframe (e.g. ACME_1h.csv); "
                            "rename it or give data.resample")
        key = f"{symbol}_{timeframe}"
        ident = (symbol, timeframe_duration(timeframe) or timeframe)
        if ident in origin:
            first, first_key = origin[ident]
            how = f" with data.resample={resample!r}" if resample else ""
            raise ConfigError(f"data.source: {first} and {cut_value(src)!r} are both {symbol} at {timeframe}{how} "
                              f"({first_key} and {key}); keep one of them")
        origin[ident] = (src, key)
        frames[key] = own
    return frames
