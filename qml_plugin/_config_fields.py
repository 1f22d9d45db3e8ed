"""Field types of the config models and the one translation of a pydantic error into a ConfigError.

Each builder (:func:`number`, :func:`integer`, :func:`choice`, ...) returns an ``Annotated`` type whose
*before* validator does the whole check and raises a ``PydanticCustomError`` that carries the
human description of what is allowed. Pydantic keeps the key path (``loc``) and the bad input, and
:func:`config_error` joins the three into the message shape every config error has:

    ml.prediction_mode = 'filtr' is not allowed; allowed: filter, replace, score_enhancement

The inner types (``float`` with ``ge``/``le``, ``Literal[...]``) are there for the JSON Schema that
``qml config schema`` prints; the values that reach them were already checked here. NaN and inf
fail every number check (a number field is a finite number). A shown value is cut to
:data:`MAX_SHOWN` characters.
"""
from __future__ import annotations

import datetime as _dt
import math
import re
import zoneinfo
from typing import Annotated, Any, ClassVar, Literal

import pandas as pd
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, ValidationError, WithJsonSchema
from pydantic import model_validator as _model_validator
from pydantic_core import PydanticCustomError

from .errors import ConfigError

MAX_SHOWN = 200
"""A bad value longer than this (as ``repr``) is cut in messages, so one message stays one short line."""

DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|min|h|d|w)\s*$", re.IGNORECASE)
_DURATION_UNITS = {"s": "s", "sec": "s", "min": "min", "h": "h", "d": "D", "w": "W"}
DURATION_ALLOWED = "a duration such as 1d, 4h, 30min or 1w (units s, min, h, d, w)"


def show(value: Any) -> str:
    """``repr(value)``, cut to :data:`MAX_SHOWN` characters."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else f"{text[:MAX_SHOWN]}... ({len(text):,} characters)"


def bad(allowed: str) -> PydanticCustomError:
    """The error a field check raises: the caller's key path and value are added by :func:`config_error`."""
    return PydanticCustomError("qml_value", "is not allowed; allowed: {allowed}", {"allowed": allowed})


def message(text: str) -> PydanticCustomError:
    """A whole-section error; ``{p}`` in ``text`` becomes the section's key path prefix (``ml.``)."""
    return PydanticCustomError("qml_message", "{text}", {"text": text})


def _path(loc: tuple, prefix: str) -> str:
    out = prefix
    for part in loc:
        out = f"{out}[{part}]" if isinstance(part, int) else (f"{out}.{part}" if out else str(part))
    return out


def config_error(err: ValidationError, *, prefix: str = "") -> ConfigError:
    """The first error of ``err`` as one :class:`ConfigError` line: key path, bad value, what is allowed."""
    e = err.errors(include_url=False)[0]
    path = _path(tuple(e["loc"]), prefix)
    ctx = e.get("ctx") or {}
    kind = e["type"]
    if kind == "qml_value":
        return ConfigError(f"{path} = {show(e['input'])} is not allowed; allowed: {ctx['allowed']}")
    if kind == "qml_unknown":
        key = f"{path}.{ctx['key']}" if path else ctx["key"]
        return ConfigError(f"unknown key {show(key)}; allowed keys{' in ' + path if path else ''}: {ctx['allowed']}")
    if kind == "qml_mapping":
        return ConfigError(f"{path or 'config'} must be a mapping of keys, got {ctx['got']}: {show(e['input'])}")
    if kind == "missing":
        return ConfigError(f"{path} is required; it is missing")
    if kind == "qml_message":
        return ConfigError(ctx["text"].replace("{p}", f"{path}." if path else ""))
    return ConfigError(f"{path or 'config'} = {show(e['input'])} is not allowed; allowed: {e['msg']}")


class Section(BaseModel):
    """A config section: unknown keys are refused (``extra="forbid"``) with the list of allowed keys.

    Constructing a section directly (``MLConfig(ml_weight=2)``) raises :class:`ConfigError` too.
    """

    model_config = ConfigDict(extra="forbid", validate_default=True)
    config_prefix: ClassVar[str] = ""
    """Key path of the section in a config file, used in messages when the section is built directly."""

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise config_error(e, prefix=type(self).config_prefix) from None

    # pydantic calls a custom __init__ for nested sections too; this one only translates errors of a
    # direct call, so mark it as the base init (nested validation stays inside one ValidationError)
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def keys(cls) -> list[str]:
        """The section's keys as written in a config file, in order."""
        return [f.alias or name for name, f in cls.model_fields.items()]

    @_model_validator(mode="before")
    @classmethod
    def _known_keys(cls, raw: Any) -> Any:
        if raw is None:
            return {}
        if isinstance(raw, BaseModel):
            return raw
        if not isinstance(raw, dict):
            raise PydanticCustomError("qml_mapping", "must be a mapping", {"got": type(raw).__name__})
        keys = cls.keys()
        unknown = sorted(str(k) for k in raw if k not in keys)
        if unknown:
            raise PydanticCustomError("qml_unknown", "unknown key", {"key": unknown[0], "allowed": ", ".join(keys)})
        return raw


def _num(x) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _describe(kind: str, lo, hi, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"{kind} in {'(' if lo_open else '['}{_num(lo)}, {_num(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{kind} {'>' if lo_open else '>='} {_num(lo)}"
    if hi is not None:
        return f"{kind} {'<' if hi_open else '<='} {_num(hi)}"
    return kind


def _range_ok(v, lo, hi, lo_open: bool, hi_open: bool) -> bool:
    return not ((lo is not None and (v < lo or (lo_open and v == lo)))
                or (hi is not None and (v > hi or (hi_open and v == hi))))


def _constraints(lo, hi, lo_open: bool, hi_open: bool) -> dict:
    out = {}
    if lo is not None:
        out["gt" if lo_open else "ge"] = lo
    if hi is not None:
        out["lt" if hi_open else "le"] = hi
    return out


def check_number(v: Any, *, lo=None, hi=None, lo_open=False, hi_open=False, nullable=False) -> float | None:
    """A finite number in the range, as ``float``; raises the field error otherwise."""
    allowed = _describe("a number", lo, hi, lo_open, hi_open) + (" or null" if nullable else "")
    if v is None and nullable:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise bad(allowed)
    try:
        v = float(v)
    except OverflowError:
        raise bad(allowed) from None
    if not math.isfinite(v):
        raise bad(f"a finite {allowed.removeprefix('a ')} (NaN and inf are refused)")
    if not _range_ok(v, lo, hi, lo_open, hi_open):
        raise bad(allowed)
    return v


def check_integer(v: Any, *, lo=None, hi=None, nullable=False) -> int | None:
    """An integer (not a bool, not 3.0) in ``[lo, hi]``; raises the field error otherwise."""
    allowed = _describe("an integer", lo, hi, False, False) + (" or null" if nullable else "")
    if v is None and nullable:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not _range_ok(v, lo, hi, False, False):
        raise bad(allowed)
    return v


def number(*, lo=None, hi=None, lo_open=False, hi_open=False, nullable=False, doc: str | None = None):
    """A finite float field, e.g. ``ml_weight: number(lo=0, hi=1) = 0.3``."""
    def check(v):
        return check_number(v, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, nullable=nullable)

    inner = Annotated[float, Field(**_constraints(lo, hi, lo_open, hi_open))]
    return Annotated[inner | None if nullable else inner, BeforeValidator(check), Field(description=doc)]


def integer(*, lo=None, hi=None, nullable=False, doc: str | None = None):
    """An int field (bools and floats refused)."""
    def check(v):
        return check_integer(v, lo=lo, hi=hi, nullable=nullable)

    inner = Annotated[int, Field(**_constraints(lo, hi, False, False))]
    return Annotated[inner | None if nullable else inner, BeforeValidator(check), Field(description=doc)]


def boolean(doc: str | None = None):
    def check(v):
        if not isinstance(v, bool):
            raise bad("true or false")
        return v

    return Annotated[bool, BeforeValidator(check), Field(description=doc)]


def choice(*values: str, nullable=False, doc: str | None = None):
    """One of ``values`` (shown in this order in messages)."""
    allowed = ", ".join(values) + (" or null" if nullable else "")

    def check(v):
        if v is None and nullable:
            return None
        if not isinstance(v, str) or v not in values:
            raise bad(allowed)
        return v

    inner = Literal[values]
    return Annotated[inner | None if nullable else inner, BeforeValidator(check), Field(description=doc)]


def string(*, nullable=False, allowed: str = "a string", doc: str | None = None, extra_check=None):
    """A non-empty string; ``extra_check(v)`` may return an error text (or None when fine)."""
    allowed = allowed + (" or null" if nullable else "")

    def check(v):
        if v is None and nullable:
            return None
        if not isinstance(v, str) or not v.strip():
            raise bad(allowed)
        if extra_check is not None and (why := extra_check(v)):
            raise bad(f"{allowed} ({why})")
        return v

    return Annotated[str | None if nullable else str, BeforeValidator(check), Field(description=doc)]


def _date(v):
    if v is None:
        return None
    if isinstance(v, (_dt.date, str)) and not isinstance(v, bool):
        try:
            ts = pd.Timestamp(v)
        except (ValueError, TypeError, OverflowError):
            ts = None
        if ts is not None and ts is not pd.NaT:
            return ts
    raise bad("a date such as 2018-12-31, or null")


Date = Annotated[_dt.datetime | None, PlainValidator(_date),
                 WithJsonSchema({"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}],
                                 "description": "a date such as 2018-12-31 (inclusive), or null"})]
"""A date field: YAML dates and ISO strings come back as ``pd.Timestamp``."""


def parse_duration(text: str) -> pd.Timedelta:
    """A duration string (``"1d"``, ``"4h"``, ``"30min"``, ``"1w"``) as a ``pd.Timedelta``.

        >>> parse_duration("4h"), parse_duration("1d")
        (Timedelta('0 days 04:00:00'), Timedelta('1 days 00:00:00'))

    Months and years are not durations (their length varies): a :class:`ConfigError`.
    """
    m = DURATION_RE.match(text) if isinstance(text, str) else None
    if m is None:
        raise ConfigError(f"duration = {show(text)} is not allowed; allowed: {DURATION_ALLOWED}")
    value, unit = float(m.group(1)), _DURATION_UNITS[m.group(2).lower()]
    return pd.Timedelta(value * pd.Timedelta(1, unit=unit))


def duration(doc: str | None = None):
    """A nullable duration string, kept as written (convert with :func:`parse_duration`)."""
    def check(v):
        if v is None:
            return None
        if not isinstance(v, str) or DURATION_RE.match(v) is None:
            raise bad(DURATION_ALLOWED + ", or null")
        return v.strip()

    return Annotated[str | None, BeforeValidator(check),
                     Field(description=doc, json_schema_extra={"pattern": DURATION_RE.pattern})]


def _tz_problem(v: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(v)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return "unknown time zone"
    return None


TimeZone = string(nullable=True, allowed="an IANA time zone name such as UTC or America/New_York",
                  extra_check=_tz_problem,
                  doc="time zone of a user file's naive timestamps; null = the shipped manifest's, else UTC")
