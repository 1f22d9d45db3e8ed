"""The sweep and optimize configs (SPEC §9): a ``QMLParams`` grid, and an Optuna search space.

The sections they share with the run config (``data``, ``ml``, ``compute``, ...) are the models of
:mod:`qml_plugin.config_models`; every ``QMLParams`` value given here (a grid value, a range end, a
choice, a fixed value) is checked against ``QMLParams`` itself, so the message is the dataclass's own.
"""
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from ._config_fields import Section, bad, boolean, check_integer, check_number, choice, integer, message, number, show
from .config_models import (
    CollectionSection,
    ComputeSection,
    DataSection,
    MLConfig,
    file_path,
    folder_path,
    qml_value,
)
from .patterns.qml import QMLParams

SWEEP_METRICS = ("n_trades", "win_rate", "profit_factor", "total_return", "sharpe", "calmar", "max_drawdown", "dsr")
"""``sweep.metric`` values: the sweep table's metric columns (SPEC §9)."""
OPTIMIZE_OBJECTIVES = ("sharpe", "calmar", "profit_factor", "total_return")
"""``optimize.objective`` values (SPEC §9)."""

def _grid(v: Any) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise bad("a mapping of QMLParams fields to lists of values, e.g. {swing_n: [2, 3, 5]}")
    fields = QMLParams.fields()
    for key, vals in v.items():
        if key not in fields:
            raise message(f"{{p}}{key} is not a QMLParams field; allowed: {', '.join(fields)}")
        vals = vals if isinstance(vals, list) else [vals]
        if not vals:
            raise message(f"{{p}}{key} = [] is empty; give a list of at least one value")
        for x in vals:
            qml_value(key, x, f"{{p}}{key}")
    return v


def _heatmap(v: Any) -> Any:
    fields = QMLParams.fields()
    if v is not None and (not isinstance(v, list) or len(v) != 2 or len(set(map(str, v))) != 2
                          or any(h not in fields for h in v)):
        raise bad("two different QMLParams fields of the grid, e.g. [swing_n, head_min_atr], or null")
    return v


class SweepSection(Section):
    grid: Annotated[dict, BeforeValidator(_grid), Field(
        description="QMLParams field -> list of values; the grid is their product")] = {"swing_n": [2, 3, 5]}
    commission: number(lo=0, hi=0.1) = 0.0
    metric: choice(*SWEEP_METRICS, doc="ranking column, also the heatmap's colour") = "sharpe"
    heatmap: Annotated[list[str] | None, BeforeValidator(_heatmap)] = None
    output: file_path("results/sweep.csv", "the sweep table (CSV); the heatmap is written beside it") \
        = "results/sweep.csv"
    cash: number(lo=0, lo_open=True) = 100_000.0
    verify_top: integer(lo=0, doc="top rows re-simulated through vectorbt's Portfolio and compared") = 10

    @model_validator(mode="after")
    def _nonempty(self):
        if not self.grid:
            raise message("{p}grid is empty; give at least one QMLParams field with a list of values")
        return self


class SweepCollectionSection(CollectionSection):
    enabled: boolean("log the ML filter's scoring events of the grid to db_path (ml_predictions); "
                     "off by default in a sweep") = False


class SweepConfig(Section):
    """A sweep config (``qml sweep``, SPEC §9)."""

    data: DataSection = Field(default_factory=DataSection)
    sweep: SweepSection = Field(default_factory=SweepSection)
    ml: MLConfig = Field(default_factory=MLConfig)
    ml_data_collection: SweepCollectionSection = Field(default_factory=SweepCollectionSection)
    compute: ComputeSection = Field(default_factory=ComputeSection)


# ---------------------------------------------------------------------------------------------------
def space_dimension(name: str, spec: Any, path: str = "{p}") -> dict:
    """One ``optimize.space`` entry as ``{"type": "int"|"float"|"categorical", "low", "high", "choices"}``.

    A numeric ``QMLParams`` field given exactly two numbers ``[lo, hi]`` is a range (``int`` for an
    integer field); any other list is a list of choices; each value is checked against ``QMLParams``.
    """
    fields = QMLParams.fields()
    if name not in fields:
        raise message(f"{path}{name} is not a QMLParams field; allowed: {', '.join(fields)}")
    kind = type(getattr(QMLParams(), name))
    where = f"{path}{name}"
    if not isinstance(spec, list) or not spec:
        raise message(f"{where} = {show(spec)} is not allowed; allowed: [low, high] for a number field or a "
                      f"list of choices")
    for x in spec:
        qml_value(name, x, where)
    numeric = kind in (int, float)
    if numeric and len(spec) == 2 and not any(isinstance(x, (bool, str)) for x in spec):
        lo, hi = spec
        if kind is int:
            lo, hi = (check_integer(x) if isinstance(x, int) else None for x in spec)
            if lo is None or hi is None:
                raise message(f"{where} = {show(spec)} is not allowed; allowed: [low, high] with integers")
        if not lo < hi:
            raise message(f"{where} = {show(spec)} is not allowed; allowed: [low, high] with low < high")
        return {"type": kind.__name__, "low": lo, "high": hi, "choices": None}
    if len(set(map(repr, spec))) != len(spec):
        raise message(f"{where} = {show(spec)} is not allowed; allowed: choices without repeats")
    return {"type": "categorical", "low": None, "high": None, "choices": list(spec)}


def _space(v: Any) -> dict:
    if not isinstance(v, dict) or not v:
        raise bad("a non-empty mapping of QMLParams fields to [low, high] or a list of choices")
    for name, spec in v.items():
        space_dimension(name, spec)
    return v


def _split(v: Any) -> list:
    allowed = "three positive fractions (train, validation, holdout) summing to 1, e.g. [0.6, 0.2, 0.2]"
    if not isinstance(v, list) or len(v) != 3:
        raise bad(allowed)
    try:
        parts = [check_number(x, lo=0, hi=1, lo_open=True, hi_open=True) for x in v]
    except PydanticCustomError:
        raise bad(allowed) from None
    if abs(sum(parts) - 1) > 1e-9:
        raise bad(allowed)
    return parts


def _fixed(v: Any) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise bad("a mapping of QMLParams fields to one value each")
    fields = QMLParams.fields()
    for key, x in v.items():
        if key not in fields:
            raise message(f"{{p}}{key} is not a QMLParams field; allowed: {', '.join(fields)}")
        qml_value(key, x, f"{{p}}{key}")
    return v


class OptimizeSection(Section):
    space: Annotated[dict, BeforeValidator(_space), Field(
        description="QMLParams field -> [low, high] (int / float range) or a list of choices")] = {
        "swing_n": [2, 6], "head_min_atr": [0.2, 1.0], "target": ["swing", "rr"]}
    fixed: Annotated[dict, BeforeValidator(_fixed), Field(
        description="QMLParams fields held at one value in every trial")] = {}
    split: Annotated[list[float], BeforeValidator(_split), Field(
        description="train, validation, holdout fractions by time")] = [0.6, 0.2, 0.2]
    trials: integer(lo=1, doc="Optuna trials (TPE)") = 100
    objective: choice(*OPTIMIZE_OBJECTIVES, doc="what TPE maximizes on the train period") = "sharpe"
    seed: integer(lo=0, hi=2**32 - 1, doc="TPE sampler seed") = 0
    top_k: integer(lo=1, doc="best train trials scored on the validation period") = 10
    output_dir: folder_path("results", "where optimize_<stamp>.json and its run config are written") = "results"
    commission: number(lo=0, hi=0.1) = 0.0
    cash: number(lo=0, lo_open=True) = 100_000.0

    @model_validator(mode="after")
    def _disjoint(self):
        both = sorted(set(self.space) & set(self.fixed))
        if both:
            raise message(f"{{p}}space.{both[0]} and {{p}}fixed.{both[0]} are both set; a field is either "
                          f"searched or fixed")
        return self


class OptimizeConfig(Section):
    """An optimize config (``qml optimize``, SPEC §9)."""

    data: DataSection = Field(default_factory=DataSection)
    optimize: OptimizeSection = Field(default_factory=OptimizeSection)
    ml: MLConfig = Field(default_factory=MLConfig)
    ml_data_collection: CollectionSection = Field(default_factory=CollectionSection)
    compute: ComputeSection = Field(default_factory=ComputeSection)


