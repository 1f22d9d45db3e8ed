"""Strict YAML configs: the run config (SPEC §7, §11-§13), the sweep and optimize configs (§9), the ``ml:`` block.

A config is data, never code. It is read with a bounded ``yaml.SafeLoader`` (a file over
:data:`MAX_CONFIG_BYTES`, or YAML whose aliases expand past :data:`MAX_CONFIG_NODES` values, is a
one-line error, not a ``MemoryError``) and validated by the pydantic v2 models of
:mod:`qml_plugin.config_models` and :mod:`qml_plugin.config_search` (``extra="forbid"``). A key
that is not in the schema (a typo), a value of the wrong type, a number out of range (NaN and inf
included) or a value outside its allowed set raises :class:`~qml_plugin.errors.ConfigError` naming
the key path, the bad value (cut to about 200 characters) and what is allowed:

    >>> load_config("ml: {prediction_mode: filtr}")
    Traceback (most recent call last):
    ...
    qml_plugin.errors.ConfigError: <yaml string>: ml.prediction_mode = 'filtr' is not allowed; allowed: filter, \
replace, score_enhancement, expected_value

Loaders return plain nested dicts with every default filled in, so downstream code never guesses:

    >>> cfg = load_config("ml: {enabled: true, prediction_mode: filter}")
    >>> cfg["ml"]["prediction_mode"], cfg["backtest"]["cash"], cfg["walk_forward"]["scheme"]
    ('filter', 100000.0, ['pooled', 'per_market'])

``strategy.class`` is only a *name*: :mod:`qml_plugin.cli.common` resolves it inside
``qml_plugin.strategies`` (or a module named on the command line); nothing in a config is imported
or executed here. Where a config file is looked up is :func:`resolve_config`, the one rule the CLI
and ``Backtest.run(ml_config=...)`` share. ``qml config schema run|sweep|optimize`` prints the JSON
Schema of each kind (:func:`config_schema`).

Choices where SPEC.md is silent:
- dates (``data.start``/``end``) accept YAML dates or ISO strings and come back as ``pd.Timestamp``;
  durations (``ml.embargo``, ``walk_forward.embargo``) stay strings such as ``"1d"`` in the dict
  (:func:`parse_duration` converts them); ``walk_forward.scheme`` always comes back as a list;
- ``ml.embargo`` wins over the deprecated ``ml.embargo_bars`` (:func:`embargo_timedelta`);
- ``backtest.costs`` entries inherit field by field: dataset, then ``default``, then
  ``backtest.commission`` with no spread (:func:`dataset_costs`); a spread is a fraction of price, as
  backtesting.py's ``Backtest(spread=)``;
- output paths that must be files (``report.output``, ``sweep.output``, a SQLite ``db_path``) may not
  be existing folders, and folders (``report.output_dir``, ``optimize.output_dir``) may not be existing
  files; this is checked when the config is loaded, before any work starts;
- ``walk_forward`` and ``report`` configure ``qml run``: each run writes under
  ``report.output_dir/<run_id>/`` and also its report to ``report.output`` (null = the run folder only);
  ``learn`` configures ``qml learn``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel, ValidationError

from ._config_fields import config_error, parse_duration, show
from .config_models import (
    DEFAULT_STRATEGY,
    MIXIN_SETTINGS,
    PREDICTION_MODES,
    WALK_FORWARD_SCHEMES,
    MLConfig,
    RunConfig,
)
from .config_search import OPTIMIZE_OBJECTIVES, SWEEP_METRICS, OptimizeConfig, SweepConfig, space_dimension
from .errors import ConfigError

__all__ = ["load_config", "load_sweep_config", "load_optimize_config", "load_any_config", "config_kind",
           "parse_ml_block", "MLConfig", "resolve_config", "shipped_configs", "config_schema", "parse_duration",
           "embargo_timedelta", "dataset_costs", "space_dimensions", "PREDICTION_MODES", "WALK_FORWARD_SCHEMES",
           "SWEEP_METRICS", "OPTIMIZE_OBJECTIVES", "DEFAULT_STRATEGY", "MIXIN_SETTINGS", "ML_SCHEMA",
           "MODELS", "MAX_CONFIG_BYTES",
           "MAX_CONFIG_NODES"]

ML_SCHEMA = MLConfig.model_fields
"""The ``ml:`` block's fields (name -> pydantic ``FieldInfo`` with ``.default``), in order."""

MODELS = {"run": RunConfig, "sweep": SweepConfig, "optimize": OptimizeConfig}
"""Config kinds and their pydantic models (``qml config schema KIND``)."""

MAX_CONFIG_BYTES = 1_000_000
"""Largest config file or YAML string accepted (a config is a few hundred bytes)."""
MAX_CONFIG_NODES = 100_000
"""Most values a config may expand to once YAML aliases are followed (an alias bomb is refused)."""


# --- where a config file is -------------------------------------------------------------------------
def _shipped_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent
    return [d for d in (here / "_configs", here.parent / "configs") if d.is_dir()]


def shipped_configs() -> list[str]:
    """Names of the configs shipped with the package, e.g. ``['qml_baseline.yaml', ...]``."""
    return sorted({p.name for d in _shipped_dirs() for p in d.glob("*.yaml")})


def resolve_config(config: str | Path | None, *, default: str | None = None) -> Path:
    """The config file meant by ``config`` (``--config``, ``Backtest.run(ml_config=...)``).

    - an existing file is used as it is (relative paths resolve against the working directory);
    - a bare name (``qml_with_ml.yaml``) or ``configs/NAME`` (the shipped file as it sits in the
      repository) that is not a file here is the shipped config of that name, from any folder;
    - any other path that does not exist (``missing_dir/qml_baseline.yaml``) is a :class:`ConfigError`:
      a path with a folder part is never silently replaced by a shipped file of the same name;
    - ``None`` means the shipped config ``default``.

        >>> resolve_config("qml_baseline.yaml").name
        'qml_baseline.yaml'
        >>> resolve_config("missing_dir/qml_baseline.yaml")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        qml_plugin.errors.ConfigError: config file not found: missing_dir/qml_baseline.yaml; give the path of \
an existing YAML file, or the bare name of a shipped config: ...qml_baseline.yaml, qml_with_ml.yaml, sweep.yaml...
    """
    if config is None:
        if default is None:
            raise ConfigError("no config given; give the path of a YAML file or the name of a shipped config: "
                              + ", ".join(shipped_configs()))
        config = default
    text = str(config)
    path = Path(text).expanduser()
    if path.is_dir():
        raise ConfigError(f"config path {show(text)} is a folder; give a YAML file")
    if path.is_file():
        return path
    if path.parent in (Path("."), Path("configs")):
        for d in _shipped_dirs():
            if (d / path.name).is_file():
                return d / path.name
    raise ConfigError(f"config file not found: {text[:200]}; give the path of an existing YAML file, or the bare "
                      f"name of a shipped config: {', '.join(shipped_configs())}")


# --- reading YAML, bounded --------------------------------------------------------------------------
class _TooBig(Exception):
    pass


def _expanded_size(root: yaml.Node) -> int:
    """Values the node graph expands to, aliases followed (linear in distinct nodes; cycles refused)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    active: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            active.discard(key)
            kids = _children(node)
            sizes[key] = 1 + sum(sizes[id(k)] for k in kids)
            if sizes[key] > MAX_CONFIG_NODES:
                raise _TooBig(f"expands to more than {MAX_CONFIG_NODES:,} values (YAML aliases?); a config is "
                              f"at most that big")
            continue
        if key in sizes:
            continue
        if key in active:
            raise _TooBig("a YAML alias refers to a value that contains it (a cycle)")
        active.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [x for pair in node.value for x in pair]
    return []


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses documents expanding past :data:`MAX_CONFIG_NODES` values."""

    def construct_document(self, node):
        _expanded_size(node)
        return super().construct_document(node)


def _parse_yaml(text: str, where: str) -> Any:
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where}: {len(text):,} characters; a config is at most {MAX_CONFIG_BYTES:,}")
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except _TooBig as e:
        raise ConfigError(f"{where}: {e}") from None
    except RecursionError:
        raise ConfigError(f"{where}: YAML nested too deeply") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {show(' '.join(str(e).split()))[1:-1]}") from None


def _is_path(text: str) -> bool:
    if "\n" in text or len(text) > 4096:
        return False
    try:
        return Path(text).suffix in (".yaml", ".yml") or Path(text).exists()
    except (OSError, ValueError):  # a name too long for the OS, or with a NUL byte: not a path
        return False


def _read(source: str | Path | dict | None) -> tuple[Any, str]:
    if source is None:
        return {}, "<defaults>"
    if isinstance(source, dict):
        return source, "<dict>"
    text = str(source)
    if isinstance(source, Path) or _is_path(text):
        path = resolve_config(text)
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_CONFIG_BYTES + 1)
            return _parse_yaml(data.decode("utf-8"), str(path)), str(path)
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a UTF-8 text file") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    raw = _parse_yaml(text, "<yaml string>")
    if isinstance(raw, str) and "\n" not in text.strip():  # one word, not a mapping: a file name that is not there
        resolve_config(text.strip())
    return raw, "<yaml string>"


def _validate(model: type[BaseModel], raw: Any, where: str, *, prefix: str = "") -> BaseModel:
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{where}: {config_error(e, prefix=prefix)}") from None


def _load(source, model: type[BaseModel]) -> dict:
    raw, where = _read(source)
    return _validate(model, raw, where).model_dump(by_alias=True)


# --- public loaders ---------------------------------------------------------------------------------
def load_config(source: str | Path | dict | None = None) -> dict:
    """A validated run config (a path or shipped name, a YAML string or a dict); defaults for what is absent."""
    return _load(source, RunConfig)


def load_sweep_config(source: str | Path | dict | None = None) -> dict:
    """A validated sweep config (SPEC §9): ``data``, ``sweep``, ``ml``, ``compute``."""
    return _load(source, SweepConfig)


def load_optimize_config(source: str | Path | dict | None = None) -> dict:
    """A validated optimize config (SPEC §9): ``data``, ``optimize``, ``ml``, ``ml_data_collection``, ``compute``.

        >>> cfg = load_optimize_config("optimize: {space: {swing_n: [2, 6], target: [swing, rr]}, trials: 20}")
        >>> space_dimensions(cfg["optimize"]["space"])["swing_n"]
        {'type': 'int', 'low': 2, 'high': 6, 'choices': None}
    """
    return _load(source, OptimizeConfig)


def config_kind(raw: dict) -> str:
    """``"sweep"``, ``"optimize"`` or ``"run"``: the kind of a parsed config, from its top-level keys."""
    if isinstance(raw, dict) and "sweep" in raw:
        return "sweep"
    if isinstance(raw, dict) and "optimize" in raw:
        return "optimize"
    return "run"


def load_any_config(source: str | Path | dict) -> tuple[str, dict]:
    """``(kind, config)`` for a config of any kind, the kind inferred by :func:`config_kind`."""
    raw, where = _read(source)
    kind = config_kind(raw)
    return kind, _validate(MODELS[kind], raw, where).model_dump(by_alias=True)


def config_schema(kind: str = "run") -> dict:
    """The JSON Schema of a config kind (``run``, ``sweep``, ``optimize``), for editors and ``jsonschema``."""
    if kind not in MODELS:
        raise ConfigError(f"config kind {show(kind)} is not allowed; allowed: {', '.join(MODELS)}")
    schema = MODELS[kind].model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def parse_ml_block(source: str | Path | dict | MLConfig | None) -> MLConfig:
    """An :class:`MLConfig` from a YAML path or shipped name, a YAML string or a dict.

    The source may hold the block itself or a whole config with a top-level ``ml:`` key. ``None``
    means ML off.

        >>> parse_ml_block("enabled: true\\nprediction_mode: expected_value\\nmin_expected_r: 0.1").min_expected_r
        0.1
    """
    if isinstance(source, MLConfig):
        return source
    raw, where = _read(source)
    if isinstance(raw, dict) and "ml" in raw and (raw["ml"] is None or isinstance(raw["ml"], dict)):
        raw = raw["ml"]
    return _validate(MLConfig, raw, where, prefix="ml")


# --- helpers that give one meaning to a key ---------------------------------------------------------
def embargo_timedelta(ml: MLConfig | dict, bar: pd.Timedelta | None = None) -> pd.Timedelta:
    """The ``ml:`` block's embargo as a ``Timedelta``: ``embargo`` if set, else ``embargo_bars * bar``, else 0.

        >>> embargo_timedelta({"embargo": "1d", "embargo_bars": None})
        Timedelta('1 days 00:00:00')
        >>> embargo_timedelta({"embargo": None, "embargo_bars": 3}, pd.Timedelta("4h"))
        Timedelta('0 days 12:00:00')
    """
    get = ml.get if isinstance(ml, dict) else (lambda k: getattr(ml, k))
    if get("embargo") is not None:
        return parse_duration(get("embargo"))
    bars = get("embargo_bars")
    if not bars:
        return pd.Timedelta(0)
    if bar is None:
        raise ConfigError(f"ml.embargo_bars = {bars} needs the data's bar duration; write ml.embargo as a "
                          f"duration such as 1d instead")
    return bars * pd.Timedelta(bar)


def dataset_costs(backtest: dict, dataset: str) -> dict:
    """``{"commission": c, "spread": s}`` for ``dataset`` from a validated ``backtest:`` section.

        >>> bt = load_config("backtest: {commission: 0.001, costs: {default: {spread: 0.0001}, "
        ...                  "EURUSD_1h: {spread: 0.00008}}}")["backtest"]
        >>> dataset_costs(bt, "EURUSD_1h"), dataset_costs(bt, "AAPL_1d")
        ({'commission': 0.001, 'spread': 8e-05}, {'commission': 0.001, 'spread': 0.0001})
    """
    out = {"commission": backtest["commission"], "spread": 0.0}
    for name in ("default", dataset):
        for key, value in (backtest.get("costs") or {}).get(name, {}).items():
            if value is not None:
                out[key] = value
    return out


def space_dimensions(space: dict) -> dict[str, dict]:
    """Each ``optimize.space`` entry as ``{"type": "int"|"float"|"categorical", "low", "high", "choices"}``.

    The one reading of the space: two numbers on a numeric ``QMLParams`` field are a range, any
    other list is a list of choices.
    """
    from pydantic_core import PydanticCustomError

    try:
        return {name: space_dimension(name, spec, "optimize.space.") for name, spec in space.items()}
    except PydanticCustomError as e:
        raise ConfigError(str(e)) from None
