"""How a feature is declared: one line that gives its name, its meaning and how to compute it.

A *family* is a function ``family(src, add)`` that calls ``add(name, doc, fn)`` once per feature,
where ``fn()`` returns the feature's values (one per bar for market families, one per pattern for
pattern families). The same declaration serves three purposes, so names, documentation and code
cannot drift apart:

- **listing**: a :class:`Collector` without a destination only records ``(name, family, doc)``;
  ``fn`` is never called (this is how ``feature_names``, ``schema_hash`` and ``docs/FEATURES.md``
  are produced, in microseconds);
- **computing**: a :class:`Collector` with a destination array calls ``fn`` right away and writes
  the result into the next column (``inf`` becomes NaN, a safety net; the families avoid it);
- **row lookup**: with ``rows`` given, only those bars are kept (``extract`` at detection bars).

Because ``add`` evaluates ``fn`` immediately, a ``lambda`` in a loop sees the current loop value;
the families still bind loop variables as defaults (``lambda w=w: ...``) for linters' sake.
"""
from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

__all__ = ["FAMILIES", "FeatureInfo", "Family", "Collector", "Add"]

FAMILIES = ("ctx", "geo", "temp", "vol", "mom", "volu", "regime")
"""The seven feature families; each feature name starts with ``<family>_``."""

Add = Callable[[str, str, Callable[[], Any]], None]
"""``add(name, doc, fn)``: declare a feature (see the module docstring)."""


class FeatureInfo(NamedTuple):
    """One feature: ``name`` (``ctx_rsi_14``), ``family`` (``ctx``) and a one-line ``doc``."""

    name: str
    family: str
    doc: str


@dataclass(frozen=True)
class Family:
    """A family function bound to its prefix; ``per="bar"`` (market) or ``"pattern"`` (geometry)."""

    prefix: str
    declare: Callable[[Any, Add], None]
    per: str = "bar"


class Collector:
    """The ``add`` callable handed to family functions (listing mode when ``out`` is None)."""

    def __init__(self, prefix: str, keep: Collection[str] | None = None,
                 out: np.ndarray | None = None, rows: np.ndarray | None = None, start: int = 0):
        self.prefix = prefix
        self.keep = keep
        self.out = out
        self.rows = rows
        self.column = start
        self.infos: list[FeatureInfo] = []

    def __call__(self, name: str, doc: str, fn: Callable[[], Any]) -> None:
        if not name.startswith(self.prefix + "_"):
            raise ValueError(f"feature {name!r} is declared in family {self.prefix!r}; "
                             f"its name must start with {self.prefix + '_'!r}")
        if self.keep is not None and name not in self.keep:
            return
        self.infos.append(FeatureInfo(name, self.prefix, doc))
        if self.out is None:
            return
        values = np.asarray(fn(), dtype=np.float64)
        if self.rows is not None:
            values = values[self.rows]
        column = self.out[:, self.column]
        column[:] = values
        column[np.isinf(column)] = np.nan
        self.column += 1
