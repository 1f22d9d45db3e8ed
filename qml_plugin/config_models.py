"""The pydantic (v2) models of every run-config key (SPEC §7, §11, §12, §13) and of the sections the
sweep and optimize configs share with it (their own sections: :mod:`qml_plugin.config_search`).

Each section is a :class:`~qml_plugin._config_fields.Section` (``extra="forbid"``), each field a
checked type from :mod:`qml_plugin._config_fields`, so every bad key or value is a
:class:`~qml_plugin.errors.ConfigError` naming the key path, the value and what is allowed. The
loaders in :mod:`qml_plugin.config` turn a validated model into plain nested dicts
(``model_dump()``), which is what the rest of the package reads; ``qml config schema`` prints
``RunConfig.model_json_schema()`` and its siblings.

Order of fields matters: it is the order of "allowed keys" in messages and of the JSON Schema.
"""

import math
import warnings
from pathlib import Path
from typing import Annotated, Any, ClassVar

from backtesting import Strategy
from pydantic import BeforeValidator, ConfigDict, Field, model_validator

from ._config_fields import (
    Date,
    Section,
    TimeZone,
    bad,
    boolean,
    choice,
    duration,
    integer,
    message,
    number,
    show,
    string,
)
from .compute import SCHEDULERS
from .patterns.qml import QMLParams

PREDICTION_MODES = ("filter", "replace", "score_enhancement", "expected_value")
"""``ml.prediction_mode`` values (SPEC §7)."""
WALK_FORWARD_SCHEMES = ("pooled", "per_market", "leave_market_out")
"""``walk_forward.scheme`` values (SPEC §11)."""
DEFAULT_STRATEGY = "qml_plugin.strategies.QMLStrategy"
"""``strategy.class`` when a config does not name one."""
MIXIN_SETTINGS = {
    "registry_db": "ml_data_collection.db_path", "register_patterns": "ml_data_collection.enabled",
    "ml_config": "the ml: section", "symbol": "data.source", "timeframe": "data.source (or data.resample)",
    "run_id": "the run itself (qml run gives each run its own id)",
}
"""Strategy settings of the mixins that a config sets through its own sections, never ``strategy.params``."""


def _file(v: str) -> str | None:
    return "that path is an existing directory" if Path(v).is_dir() else None


def _folder(v: str) -> str | None:
    return "that path is an existing file" if Path(v).is_file() else None


def _db(v: str) -> str | None:
    return None if "://" in v else _file(v)


def file_path(default_example: str, doc: str, *, nullable: bool = False):
    return string(nullable=nullable, allowed=f"a file path such as {default_example}", extra_check=_file, doc=doc)


def folder_path(default_example: str, doc: str):
    return string(allowed=f"a folder path such as {default_example}", extra_check=_folder, doc=doc)


def qml_value(name: str, value: Any, path: str) -> Any:
    """``value`` checked as the ``QMLParams`` field ``name`` (raises the field error naming ``path``)."""
    try:
        QMLParams(**{name: value})
    except (ValueError, TypeError) as e:
        allowed = str(e).split("allowed:", 1)[-1].strip()
        raise message(f"{path} = {show(value)} is not allowed; allowed: {allowed}") from None
    return value


# ---------------------------------------------------------------------------------------------------
class DataSection(Section):
    source: Annotated[Any, BeforeValidator(lambda v: _source(v)), Field(
        json_schema_extra={"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        description="a dataset name (EURUSD_1h), a path, a glob, a list of them, or a shipped universe: "
                    "hourly, daily, all")] = "EURUSD_1h"
    tz: TimeZone = None
    bad_prints: choice("warn", "repair", "fail", doc="bad prints: name them, repair them, or refuse the data") = "warn"
    resample: string(nullable=True, allowed="a pandas frequency such as 4h or 1D",
                     extra_check=lambda v: _frequency(v), doc="aggregate bars to this rule; null = as stored") = "4h"
    start: Date = None
    end: Date = None

    @model_validator(mode="after")
    def _order(self):
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise message(f"{{p}}start = {self.start.date()} must be before {{p}}end = {self.end.date()}")
        return self


def _source(v: Any) -> Any:
    allowed = "a dataset name, a path, a glob, a non-empty list of them, or hourly, daily, all"
    if isinstance(v, str) and v.strip():
        return v
    if isinstance(v, list) and v and all(isinstance(s, str) and s.strip() for s in v):
        if len(set(v)) != len(v):
            raise bad(allowed + " (without repeats)")
        return list(v)
    raise bad(allowed)


def _frequency(v: str) -> str | None:
    import warnings as _w

    from pandas.tseries.frequencies import to_offset

    try:
        with _w.catch_warnings():
            _w.simplefilter("ignore")
            to_offset(v)
    except ValueError:
        return "pandas does not know this frequency"
    return None


class StrategySection(Section):
    model_config = ConfigDict(populate_by_name=True)

    class_: string(allowed="a class name such as qml_plugin.strategies.QMLStrategy",
                   doc="looked up in qml_plugin.strategies only (or --strategies-module)") = Field(
        DEFAULT_STRATEGY, alias="class")
    params: Annotated[dict, BeforeValidator(lambda v: _params(v)), Field(
        description="strategy class attributes (QMLParams fields, min_score, ...): scalars only")] = {}


def _params(v: Any) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise bad("a mapping of strategy parameters, e.g. {swing_n: 3, rr: 2.0}")
    strategy_attrs = {k for k in dir(Strategy) if not k.startswith("_")}
    for key, value in v.items():
        path = f"{{p}}{key}"
        if not isinstance(key, str) or not key.isidentifier() or key.startswith("_") or len(key) > 100:
            raise message(f"{{p}}{show(key)} is not allowed; allowed: a public attribute name of the strategy")
        if key in MIXIN_SETTINGS:
            raise message(f"{path} is a mixin setting, not a strategy parameter; set it with {MIXIN_SETTINGS[key]}")
        if key in strategy_attrs:
            raise message(f"{path} names backtesting.Strategy.{key}, a method or property, not a parameter")
        scalar = value is None or isinstance(value, (bool, int, str)) or (
            isinstance(value, float) and math.isfinite(value))
        if not scalar:
            raise message(f"{path} = {show(value)} is not allowed; allowed: one finite number, string, true/false")
        if key in QMLParams.fields():
            qml_value(key, value, path)
    return dict(v)


class CostSpec(Section):
    commission: number(lo=0, hi=0.1, nullable=True, doc="commission rate per trade side; null = inherit") = None
    spread: number(lo=0, hi=0.1, nullable=True, doc="bid-ask spread as a fraction of price "
                                                     "(backtesting.py's Backtest(spread=)); null = inherit") = None


def _costs(v: Any) -> Any:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise bad("a mapping {default: {commission, spread}, DATASET: {commission, spread}}")
    for key in v:
        if not isinstance(key, str) or not key.replace("_", "").replace("-", "").replace(".", "").isalnum():
            raise message(f"{{p}}{show(key)} is not allowed; allowed: default or a dataset name such as EURUSD_1h")
    return v


class BacktestSection(Section):
    cash: number(lo=0, lo_open=True, doc="starting cash of each backtest") = 100_000.0
    commission: number(lo=0, hi=0.1, doc="commission rate (backtesting.py's commission=)") = 0.0
    margin: number(lo=0, hi=1, lo_open=True, doc="margin requirement (1 = no leverage)") = 1.0
    exclusive_orders: boolean() = False
    costs: Annotated[dict[str, CostSpec], BeforeValidator(_costs), Field(
        description="per-dataset costs over backtest.commission: {default: {...}, EURUSD_1h: {spread: 0.00008}}")] = {}


class CollectionSection(Section):
    enabled: boolean("register every pattern with its features and outcome") = True
    db_path: string(allowed="a registry path or URL such as results/experiments.db", extra_check=_db,
                    doc="the registry: a SQLite path, sqlite:///path or postgresql://...") = "results/experiments.db"


class SizeBand(Section):
    config_prefix: ClassVar[str] = "ml.size_bands[]"
    min: number(lo=0, hi=1, doc="lowest ml_confidence of the band")
    size: number(lo=0, hi=1, lo_open=True, doc="fraction of the default order size")


class KillSwitch(Section):
    config_prefix: ClassVar[str] = "ml.kill_switch"
    consecutive_losses: integer(lo=1, nullable=True, doc="trip after this many losing trades in a row") = None
    max_drawdown_pct: number(lo=0, hi=100, lo_open=True, nullable=True,
                             doc="trip when equity falls this many percent from its peak") = None
    action: choice("baseline", "halt", doc="baseline: technical rule from then on; halt: no new orders") = "baseline"

    @model_validator(mode="after")
    def _armed(self):
        if self.consecutive_losses is None and self.max_drawdown_pct is None:
            raise message("{p}consecutive_losses and {p}max_drawdown_pct are both null, so the kill switch can "
                          "never trip; set one of them (or write kill_switch: null to turn it off)")
        return self


def _bands(v: Any) -> Any:
    if v is not None and (not isinstance(v, list) or not v):
        raise bad("a non-empty list of {min, size} bands, or null")
    return v


class MLConfig(Section):
    """The validated ``ml:`` block (SPEC §7, §13), immutable. Attribute access: ``ml.prediction_mode``.

    Embargo: ``embargo`` (a duration) wins; the deprecated ``embargo_bars`` (a DeprecationWarning
    when set) is used only when ``embargo`` is null, multiplied by the data's bar duration; see
    :func:`qml_plugin.config.embargo_timedelta`.
    """

    model_config = ConfigDict(frozen=True)
    config_prefix: ClassVar[str] = "ml"

    enabled: boolean("turn the ML filter on") = False
    model_path: string(nullable=True, doc="directory of model versions, or one model") = "models/signal_quality"
    prediction_mode: choice(*PREDICTION_MODES, doc="how the model changes the technical rule") = "score_enhancement"
    ml_weight: number(lo=0, hi=1, doc="score = (1 - w) * validity_score + w * ml_confidence") = 0.3
    confidence_threshold: number(lo=0, hi=1, doc="filter / replace: ml_confidence must reach this") = 0.5
    on_model_error: choice("fail", "baseline", doc="fail, or trade unfiltered and say so") = "fail"
    allow_in_sample: boolean("accept a model trained on the backtest's period (labelled IN-SAMPLE)") = False
    size_by_score: boolean("scale order size by the mode's score") = False
    min_expected_r: number(doc="expected_value: expected_r must exceed this (in R)") = 0.0
    embargo: duration("gap between a model's last training exit and a scored pattern, e.g. 1d") = None
    embargo_bars: integer(lo=0, nullable=True, doc="deprecated: the embargo in bars; use embargo") = None
    regime_models: boolean("one model per regime where it has min_regime_labels labels") = False
    min_regime_labels: integer(lo=1, doc="labels a regime needs for its own model") = 50
    size_bands: Annotated[list[SizeBand] | None, BeforeValidator(_bands), Field(
        description="[{min: 0.6, size: 1.0}, {min: 0.4, size: 0.5}]: size by ml_confidence; null = off")] = None
    kill_switch: KillSwitch | None = Field(None, description="null = off")
    model_name: string(doc="registry name of the model family") = "signal_quality"

    @model_validator(mode="after")
    def _consistent(self):
        if self.size_bands is not None:
            mins = [b.min for b in self.size_bands]
            if any(b >= a for a, b in zip(mins, mins[1:], strict=False)):
                raise message(f"{{p}}size_bands: min must strictly decrease from band to band; got mins "
                              f"{', '.join(f'{m:g}' for m in mins)}")
            if self.size_by_score:
                raise message("{p}size_bands and {p}size_by_score are both set; use one way of sizing orders")
        if self.embargo_bars is not None:
            why = " (ignored: ml.embargo is set and wins)" if self.embargo is not None else ""
            warnings.warn(f"ml.embargo_bars is deprecated; use ml.embargo, a duration such as 1d{why}",
                          DeprecationWarning, stacklevel=2)
        return self


class WalkForwardSection(Section):
    retrain_every_months: integer(lo=1, hi=120, doc="a new model every this many months") = 12
    min_train_labels: integer(lo=10, doc="labels a model needs before it is trained") = 100
    random_seeds: integer(lo=10, hi=10_000, doc="random filters drawn for the comparison") = 200
    scheme: Annotated[list[choice(*WALK_FORWARD_SCHEMES)], BeforeValidator(lambda v: _schemes(v)), Field(
        description="pooled, per_market, leave_market_out, or a list of them")] = ["pooled", "per_market"]
    embargo: duration("e.g. 1d; null = the longest bar duration of the universe") = None


def _schemes(v: Any) -> list:
    allowed = f"one of {', '.join(WALK_FORWARD_SCHEMES)}, or a non-empty list of them without repeats"
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not items or len(set(map(str, items))) != len(items) \
            or any(s not in WALK_FORWARD_SCHEMES for s in items):
        raise bad(allowed)
    return list(items)


class ReportSection(Section):
    output: file_path("results/report.html", "the latest HTML report (each run also writes one in its own "
                      "folder); null = only the run folder's", nullable=True) = "results/report.html"
    output_dir: folder_path("results/runs", "each run writes its models and outputs under OUTPUT_DIR/<run_id>/") \
        = "results/runs"


class LearnSection(Section):
    psi_threshold: number(lo=0, lo_open=True) = 0.1
    ks_alpha: number(lo=0, hi=1, lo_open=True) = 0.05
    min_drifting_features: integer(lo=1) = 3
    score_psi_threshold: number(lo=0, lo_open=True) = 0.2
    recent_patterns: integer(lo=10) = 300
    holdout_fraction: number(lo=0.05, hi=0.5) = 0.2
    min_samples: integer(lo=10) = 200
    min_auc_improvement: number(lo=-1, hi=1) = 0.0
    refit_after_promotion: boolean() = False
    psi_bins: integer(lo=2, hi=100) = 10
    min_holdout_samples: integer(lo=10) = 30
    models_dir: string() = "models/signal_quality"
    n_jobs: integer(lo=1, hi=256) = 1


class ComputeSection(Section):
    scheduler: choice(*SCHEDULERS, doc="where work units run (SPEC §12)") = "processes"
    workers: integer(lo=1, nullable=True, doc="processes / Dask workers; null = the machine's cores") = None
    address: string(nullable=True, allowed="a Dask scheduler address such as tcp://scheduler:8786",
                    doc="an existing Dask cluster; null = a LocalCluster") = None


class RunConfig(Section):
    """A run config (``qml run``, ``qml backtest``, ``qml train``, ``qml learn``)."""

    data: DataSection = Field(default_factory=DataSection)
    strategy: StrategySection = Field(default_factory=StrategySection)
    backtest: BacktestSection = Field(default_factory=BacktestSection)
    ml_data_collection: CollectionSection = Field(default_factory=CollectionSection)
    ml: MLConfig = Field(default_factory=MLConfig)
    walk_forward: WalkForwardSection = Field(default_factory=WalkForwardSection)
    report: ReportSection = Field(default_factory=ReportSection)
    learn: LearnSection = Field(default_factory=LearnSection)
    compute: ComputeSection = Field(default_factory=ComputeSection)
