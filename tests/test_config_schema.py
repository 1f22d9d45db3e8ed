"""`qml config schema` prints the JSON Schema of each config kind; every shipped config validates against it."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from qml_plugin.cli.main import main as qml
from qml_plugin.config import config_kind, config_schema, load_any_config

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


def _as_json(value):
    """What an editor sees in a YAML file: dates are text."""
    return json.loads(json.dumps(value, default=lambda v: v.isoformat() if isinstance(v, dt.date) else str(v)))


@pytest.fixture(scope="module")
def schemas():
    return {kind: config_schema(kind) for kind in ("run", "sweep", "optimize")}


def test_every_kind_prints_a_valid_json_schema(capsys, schemas):
    for kind, expected in schemas.items():
        assert qml(["config", "schema", kind]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed == expected
        jsonschema.Draft202012Validator.check_schema(printed)
        assert printed["additionalProperties"] is False        # extra="forbid" is in the schema as well
    assert set(schemas["run"]["properties"]) >= {"data", "strategy", "backtest", "ml", "walk_forward", "compute"}
    assert set(schemas["optimize"]["properties"]) >= {"data", "optimize", "ml", "compute"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_each_shipped_config_validates_against_the_schema_of_its_kind(path, schemas):
    raw = yaml.safe_load(path.read_text())
    kind = config_kind(raw)
    jsonschema.validate(_as_json(raw), schemas[kind])
    assert load_any_config(path)[0] == kind                      # and the loader agrees


def test_the_shipped_configs_cover_every_kind():
    kinds = {config_kind(yaml.safe_load(p.read_text())) for p in CONFIGS}
    assert kinds == {"run", "sweep", "optimize"}


def test_the_schema_rejects_what_the_loader_rejects(schemas):
    for raw, kind in [({"ml": {"ml_wieght": 0.3}}, "run"), ({"ml": {"prediction_mode": "filtr"}}, "run"),
                      ({"backtest": {"cash": 0}}, "run"), ({"sweep": {"metric": "alpha"}}, "sweep"),
                      ({"optimize": {"trials": 0}}, "optimize"), ({"compute": {"scheduler": "threads"}}, "sweep")]:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(raw, schemas[kind])


def test_config_check_names_the_kind_of_each_file(capsys):
    assert qml(["config", "check", *map(str, CONFIGS)]) == 0
    out = capsys.readouterr().out
    assert out.count("config\n") == len(CONFIGS) and "a valid sweep config" in out
