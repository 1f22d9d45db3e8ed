"""Quasimodo (QML) reversal patterns, detected without look-ahead.

A **bullish QML** is three consecutive swings: a low ``P1`` (left shoulder; its price is the *QML
level*), a high ``P2`` and a lower low ``P3`` (the *head*), with ``P2 > P1 > P3`` and a head at
least ``head_min_atr`` ATRs below the shoulder. The *break of structure* is the first Close above
``P2`` after the head. The pattern is **detected** at ``t = max(P3.confirmed_bar, break_bar)`` if the
head was not exceeded in between and ``t - P1.bar <= max_span``. The trade idea: buy the retest of
the QML level with a limit order, stop beyond the head, target the high made since the head.
A **bearish QML** mirrors all of it.

    >>> from qml_plugin.data import load_ohlcv
    >>> pats = detect_patterns(load_ohlcv("EURUSD_1h", resample="4h"))
    >>> row = pats.iloc[0]
    >>> row.pattern_type in ("bullish_qml", "bearish_qml"), bool(0 <= row.validity_score <= 1)
    (True, True)

Every level is known at ``t`` (ATR = Wilder ATR14 at ``t``):

- ``entry``  = QML level moved toward the market by ``entry_offset_atr * ATR``;
- ``stop``   = head moved away by ``stop_buffer_atr * ATR``;
- ``target`` = highest High (bullish) / lowest Low (bearish) over ``P3.bar .. t`` with
  ``target="swing"``, or ``entry +/- rr * |entry - stop|`` with ``target="rr"``;
- ``rr``     = ``|target - entry| / |entry - stop|`` (planned reward:risk).

``validity_score`` (0..1) is the rule-based *technical score*, a weighted mean of four parts, each
clipped to [0, 1] and computed from the pattern alone (never from statistics of the whole frame):

============================  ======  =======================================================
part                          weight  meaning
============================  ======  =======================================================
``validity_depth``             0.30   head depth beyond the shoulder: (depth/ATR - 0.5) / 2.5
``validity_symmetry``          0.20   time symmetry of the legs: min(P1->P2, P2->P3) / max(...)
``validity_break``             0.20   break strength: (Close[break] - P2) beyond P2, in ATR (1 ATR = 1)
``validity_rr``                0.30   planned reward:risk: (rr - 0.5) / 2.5
============================  ======  =======================================================

The scales were set once so that about half of the patterns in the shipped datasets score
``>= 0.5`` (the default ``min_score``); they are constants, not fitted per frame.

``pattern_id`` is a deterministic 64-bit hash (16 hex digits) of symbol, timeframe, pattern type,
the P1..P3 timestamps and every ``QMLParams`` field except ``min_score`` (and of the data's
``attrs["repairs"]`` when bad prints were repaired, see :mod:`qml_plugin.badprints`).
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..data import validate_ohlcv
from ..errors import ConfigError
from . import _kernels
from ._checks import positive_int
from .swings import wilder_atr

__all__ = ["QMLParams", "detect_patterns", "detect_arrays", "detect_structure", "pattern_levels", "PATTERN_COLUMNS",
           "VALIDITY_WEIGHTS", "leg_symmetry", "params_of"]

PATTERN_COLUMNS = [
    "pattern_id", "symbol", "timeframe", "pattern_type", "direction", "detection_bar", "detection_time",
    "p1_bar", "p1_price", "p2_bar", "p2_price", "p3_bar", "p3_price", "break_bar", "atr",
    "entry", "stop", "target", "rr", "validity_score",
    "validity_depth", "validity_symmetry", "validity_break", "validity_rr",
]
"""Columns of :func:`detect_patterns`, in order."""

VALIDITY_WEIGHTS = {"validity_depth": 0.30, "validity_symmetry": 0.20, "validity_break": 0.20, "validity_rr": 0.30}
"""Weights of the four parts of ``validity_score`` (they sum to 1)."""


@dataclass(frozen=True)
class QMLParams:
    """Parameters of QML detection, levels and trade management (SPEC §2 defaults).

    ``max_wait`` (bars a limit entry stays live), ``max_hold`` (bars a trade may stay open) and
    ``min_score`` (technical threshold used by strategies) do not change which patterns are found;
    ``max_wait`` and ``max_hold`` still change a pattern's outcome, so they are part of its id.
    """

    swing_n: int = 3
    head_min_atr: float = 0.5
    max_span: int = 100
    entry_offset_atr: float = 0.0
    stop_buffer_atr: float = 0.25
    target: str = "swing"
    rr: float = 2.0
    max_wait: int = 20
    max_hold: int = 100
    min_score: float = 0.5

    def __post_init__(self):
        def bad(name, allowed):
            return ConfigError(f"QMLParams.{name}={getattr(self, name)!r} is not valid; allowed: {allowed}")

        for name in ("swing_n", "max_span", "max_wait", "max_hold"):
            positive_int(f"QMLParams.{name}", getattr(self, name))
        for name in ("head_min_atr", "entry_offset_atr", "stop_buffer_atr"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not np.isfinite(v) or v < 0:
                raise bad(name, "a finite number >= 0")
        if self.target not in ("swing", "rr"):
            raise bad("target", "'swing' or 'rr'")
        if isinstance(self.rr, bool) or not isinstance(self.rr, (int, float, np.number)) or not np.isfinite(self.rr) \
                or not self.rr > 0:
            raise bad("rr", "a finite number > 0")
        if isinstance(self.min_score, bool) or not isinstance(self.min_score, (int, float, np.number)) \
                or not 0 <= self.min_score <= 1:
            raise bad("min_score", "a number in [0, 1]")

    @classmethod
    def fields(cls) -> list[str]:
        """Names of every parameter, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    def replace(self, **changes) -> QMLParams:
        """A copy with some fields changed, e.g. ``QMLParams().replace(swing_n=5)``."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        """The fields as plain Python values (JSON-ready), e.g. for ``patterns.attrs["params"]``.

        >>> QMLParams(max_wait=5).as_dict()["max_wait"]
        5
        """
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in dataclasses.asdict(self).items()}


def params_of(patterns: pd.DataFrame) -> QMLParams | None:
    """The :class:`QMLParams` ``patterns`` were detected with (``patterns.attrs["params"]``), or None.

    :func:`detect_patterns` records them; pandas keeps ``attrs`` through copies, row selections and
    ``assign``, so labels and features can default to the detection's own horizons.

    >>> params_of(pd.DataFrame()) is None
    True
    """
    raw = getattr(patterns, "attrs", {}).get("params")
    if raw is None or isinstance(raw, QMLParams):
        return raw
    if not isinstance(raw, dict):
        raise ConfigError(f"patterns.attrs['params'] must be QMLParams fields (a dict), got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(QMLParams.fields()))
    if unknown:
        raise ConfigError(f"patterns.attrs['params'] has unknown fields {unknown}; allowed: {QMLParams.fields()}")
    return QMLParams(**raw)


def detect_arrays(high: np.ndarray, low: np.ndarray, close: np.ndarray, params: QMLParams) -> dict:
    """Patterns as plain numpy arrays (the engine-neutral core shared with the vectorbt indicator)."""
    return pattern_levels(detect_structure(high, low, close, params), params)


def detect_structure(high: np.ndarray, low: np.ndarray, close: np.ndarray, params: QMLParams) -> dict:
    """The swings, heads and breaks of every pattern: everything but the levels (numpy arrays).

    It depends on ``swing_n``, ``head_min_atr`` and ``max_span`` only, so a sweep over levels
    (``entry_offset_atr``, ``stop_buffer_atr``, ``target``, ``rr``) finds its patterns once and
    prices them with :func:`pattern_levels` per combination. ``detect_arrays`` is the two in a row.
    """
    atr = wilder_atr(high, low, close)
    sb, _sk, sp, _sc, _sr, pat = _kernels.scan(
        high, low, close, atr, params.swing_n, True, float(params.head_min_atr), params.max_span)
    i1, i2, i3, brk, t, d = (pat[:, j] for j in range(6))
    # Stable, causal order: by detection bar, then by the head's bar.
    order = np.lexsort((sb[i3], t))
    i1, i2, i3, brk, t, d = i1[order], i2[order], i3[order], brk[order], t[order], d[order]
    a = atr[t]
    p1, p2, p3 = sp[i1], sp[i2], sp[i3]
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.clip((d * (p1 - p3) / a - 0.5) / 2.5, 0.0, 1.0)
        symmetry = np.clip(leg_symmetry(sb[i2] - sb[i1], sb[i3] - sb[i2]), 0.0, 1.0)
        strength = np.clip(d * (close[brk] - p2) / a / 1.0, 0.0, 1.0)
    return dict(direction=d, detection_bar=t, p1_bar=sb[i1], p1_price=p1, p2_bar=sb[i2], p2_price=p2,
                p3_bar=sb[i3], p3_price=p3, break_bar=brk, atr=a, validity_depth=depth, validity_symmetry=symmetry,
                validity_break=strength, swing_target=_kernels.range_extreme(high, low, sb[i3], t, d))


def pattern_levels(structure: dict, params: QMLParams) -> dict:
    """Entry, stop, target, ``rr`` and ``validity_score`` of :func:`detect_structure`'s patterns under ``params``."""
    d, a, p1, p3 = (structure[k] for k in ("direction", "atr", "p1_price", "p3_price"))
    entry = p1 + d * params.entry_offset_atr * a
    stop = p3 - d * params.stop_buffer_atr * a
    if params.target == "swing":
        target = structure["swing_target"]
    else:
        target = entry + d * params.rr * np.abs(entry - stop)
    risk = np.abs(entry - stop)
    with np.errstate(divide="ignore", invalid="ignore"):
        rr = np.where(risk > 0, np.abs(target - entry) / risk, np.nan)
        vrr = np.clip((np.nan_to_num(rr) - 0.5) / 2.5, 0.0, 1.0)
    parts = {k: structure[k] for k in ("validity_depth", "validity_symmetry", "validity_break")}
    parts["validity_rr"] = vrr
    score = sum(VALIDITY_WEIGHTS[k] * v for k, v in parts.items())
    base = {k: v for k, v in structure.items() if k not in parts and k != "swing_target"}
    return dict(**base, entry=entry, stop=stop, target=target, rr=rr, validity_score=score, **parts)


def leg_symmetry(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Symmetry of two legs (bars or price distances): ``min(a, b) / max(a, b)`` in [0, 1], 1 for
    equal legs, 0 when both are 0 or either is NaN. Shared by ``validity_symmetry`` and the ``geo_`` features.

    >>> leg_symmetry(np.array([4, 3, 0]), np.array([8, 3, 0])).tolist()
    [0.5, 1.0, 0.0]
    """
    lo, hi = np.minimum(a, b).astype(float), np.maximum(a, b).astype(float)
    ok = hi > 0
    return np.where(ok, lo / np.where(ok, hi, 1.0), 0.0)


def _id_prefix(symbol: str | None, timeframe: str | None, params: QMLParams, repairs=None) -> np.uint64:
    # plain Python values, so np.int64(3) (as Backtest.optimize passes it) and 3 give the same id
    fields = {k: v for k, v in params.as_dict().items() if k != "min_score"}
    key = repr((symbol, timeframe, sorted(fields.items())))
    if repairs:  # a repaired dataset has its own identity (SPEC §1); without repairs, today's ids
        key += repr([(r["time"], r["column"], r["old"], r["new"]) for r in repairs])
    return np.uint64(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little"))


def detect_patterns(
    ohlcv: pd.DataFrame,
    params: QMLParams | None = None,
    *,
    symbol: str | None = None,
    timeframe: str | None = None,
) -> pd.DataFrame:
    """All QML patterns of ``ohlcv``, one row per pattern, in order of ``detection_bar``.

    Deterministic and causal: for every cut ``c``, the patterns with ``detection_bar <= c`` found
    on ``ohlcv[:c+1]`` are exactly those found on the whole frame. Runs in linear time (one pass
    of a cached numba kernel). ``symbol`` / ``timeframe`` default to ``ohlcv.attrs``. The params
    travel with the result (``attrs["params"]``, see :func:`params_of`), so :func:`label_patterns`
    uses the same ``max_wait`` / ``max_hold`` as the ``pattern_id`` hashes.

    >>> from qml_plugin.data import load_ohlcv
    >>> pats = detect_patterns(load_ohlcv("EURUSD_1h").iloc[:3000], QMLParams(max_wait=5))
    >>> list(pats.columns[:4]), params_of(pats).max_wait
    (['pattern_id', 'symbol', 'timeframe', 'pattern_type'], 5)
    """
    params = QMLParams() if params is None else params
    if not isinstance(params, QMLParams):
        raise ConfigError(f"params must be a QMLParams, got {type(params).__name__}")
    validate_ohlcv(ohlcv)
    symbol = symbol if symbol is not None else ohlcv.attrs.get("symbol")
    timeframe = timeframe if timeframe is not None else ohlcv.attrs.get("timeframe")
    h, l, c = (ohlcv[k].to_numpy(np.float64) for k in ("High", "Low", "Close"))
    arr = detect_arrays(h, l, c, params)
    d = arr["direction"]
    ptype = np.where(d == 1, "bullish_qml", "bearish_qml")
    idx = ohlcv.index.as_unit("ns").asi8  # ids must not depend on the index resolution
    ids = _kernels.mix64(_id_prefix(symbol, timeframe, params, ohlcv.attrs.get("repairs")), d, idx[arr["p1_bar"]],
                         idx[arr["p2_bar"]], idx[arr["p3_bar"]])
    m = len(d)
    out = pd.DataFrame({
        "pattern_id": pd.Series([f"{x:016x}" for x in ids.tolist()], dtype="str"),
        "symbol": pd.Series(np.full(m, symbol, dtype=object), dtype=object),
        "timeframe": pd.Series(np.full(m, timeframe, dtype=object), dtype=object),
        "pattern_type": pd.Series(ptype, dtype="str"),
        "detection_time": ohlcv.index[arr["detection_bar"]],
        **arr,
    })
    out = out[PATTERN_COLUMNS]
    out.attrs["params"] = params.as_dict()
    return out
