"""``qml optimize``: seeded TPE, walk-forward by time, space checked against QMLParams, outputs qml run accepts."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from qml_plugin import ConfigError, load_ohlcv
from qml_plugin.cli.main import main
from qml_plugin.config import load_config
from qml_plugin.vbt.optimize import optimize, parse_space

SPACE = {"swing_n": [2, 4], "head_min_atr": [0.3, 0.8], "target": ["swing", "rr"], "rr": [1.2, 2.5],
         "max_wait": [5, 30]}


def cfg(tmp_path, **opt) -> dict:
    return {"data": {"source": "EURUSD_1h", "resample": None, "start": "2010-01-01", "end": "2012-12-31"},
            "optimize": {"space": SPACE, "trials": 8, "seed": 3, "top_k": 4, "output_dir": str(tmp_path / "res"),
                         **opt},
            "compute": {"scheduler": "serial"}}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    full = load_ohlcv("EURUSD_1h")
    df = full.loc["2010-01-01":"2012-12-31"]
    df.attrs.update(full.attrs)
    return df


def test_serial_runs_with_the_same_seed_are_identical_and_another_seed_differs(tmp_path, frame):
    a = optimize(cfg(tmp_path), ohlcv=frame, progress=False, write=False)
    b = optimize(cfg(tmp_path), ohlcv=frame, progress=False, write=False)
    pd.testing.assert_frame_equal(a.trials, b.trials, check_exact=True)
    assert a.chosen == b.chosen and a.dsr == b.dsr
    c = optimize(cfg(tmp_path, seed=4), ohlcv=frame, progress=False, write=False)
    assert not c.trials[list(SPACE)].equals(a.trials[list(SPACE)])


def test_trials_run_on_two_worker_processes_reproducibly_and_score_as_the_driver_would(tmp_path, frame):
    from qml_plugin.patterns import QMLParams
    from qml_plugin.vbt.fast import FAST_METRICS, EventBook

    two = {"scheduler": "processes", "workers": 2}
    a = optimize(cfg(tmp_path), ohlcv=frame, progress=False, write=False, compute=two)
    b = optimize(cfg(tmp_path), ohlcv=frame, progress=False, write=False, compute=two)
    pd.testing.assert_frame_equal(a.trials, b.trials, check_exact=True)   # one batch per worker round, seeded
    assert len(a.trials) == 8 and a.chosen == b.chosen
    train = frame.iloc[:int(round(len(frame) * 0.6))]
    for _, row in a.trials.head(2).iterrows():                            # a worker's score is the driver's
        p = QMLParams(**{k: row[k].item() if hasattr(row[k], "item") else row[k] for k in SPACE})
        own = EventBook(train).simulate(p)[0]
        assert [row[f"train_{k}"] for k in FAST_METRICS] == pytest.approx(list(own), nan_ok=True, rel=0, abs=0)


def test_the_choice_is_made_on_validation_and_the_holdout_scored_after_for_the_top_trials(tmp_path, frame):
    res = optimize(cfg(tmp_path), ohlcv=frame, progress=False, write=False)
    top = res.top
    assert len(top) == 4 and top["chosen"].sum() == 1
    assert list(top["value"]) == sorted(top["value"], reverse=True)           # top by train score
    assert top.loc[top["chosen"], "validation"].iloc[0] == top["validation"].max()
    assert top["holdout"].notna().all() and 0 <= res.dsr <= 1
    b = res.periods                                                            # three periods, in time order
    assert b["train"][1] < b["validation"][0] <= b["validation"][1] < b["holdout"][0]


def test_outputs_are_the_trials_json_and_a_config_that_qml_run_accepts_and_the_command_prints_it_all(tmp_path,
                                                                                                     capsys):
    path = tmp_path / "optimize.yaml"
    path.write_text(yaml.safe_dump(cfg(tmp_path, trials=6)))
    assert main(["optimize", "--config", str(path), "--no-progress", "--objective", "calmar", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert "6 trials, objective calmar" in out and "holdout calmar" in out and "DSR of the chosen" in out
    assert "parameter importance (Optuna fANOVA)" in out
    doc = json.loads(next((tmp_path / "res").glob("optimize_*.json")).read_text())
    assert len(doc["trials"]) == 6 and doc["objective"] == "calmar" and doc["seed"] == 5
    assert set(doc["importance"]) <= set(SPACE) and len(doc["top"]) == 4
    run_cfg = load_config(next((tmp_path / "res").glob("optimize_*_config.yaml")))
    assert run_cfg["strategy"]["params"] == doc["chosen"] and run_cfg["data"]["resample"] is None
    assert list((tmp_path / "res").glob("optimize_*.journal"))                # the study, on the driver


@pytest.mark.parametrize("space, message", [
    ({"swing": [2, 3]}, "optimize.space.swing is not a QMLParams field; allowed: swing_n, head_min_atr"),
    ({"swing_n": [0, 6]}, "optimize.space.swing_n = 0 is not allowed; allowed: an integer >= 1"),
    ({"swing_n": [2.5, 6]}, "optimize.space.swing_n = 2.5 is not allowed; allowed: an integer >= 1"),
    ({"head_min_atr": [0.8, 0.2]}, "optimize.space.head_min_atr = [0.8, 0.2] is not allowed; allowed: [low, high] "
                                   "with low < high"),
    ({"target": ["swing", "fib"]}, "optimize.space.target = 'fib' is not allowed; allowed: 'swing' or 'rr'"),
    ({"rr": []}, "optimize.space.rr = [] is not allowed; allowed: [low, high] for a number field or a list"),
])
def test_a_bad_space_is_a_config_error_naming_the_key_the_value_and_what_is_allowed(space, message):
    with pytest.raises(ConfigError) as e:
        parse_space(space)
    assert message in str(e.value)


def test_bad_split_objective_and_cli_input_exit_2_in_one_line(tmp_path, capsys):
    path = tmp_path / "o.yaml"
    path.write_text(yaml.safe_dump(cfg(tmp_path, split=[0.5, 0.5, 0.5])))
    assert main(["optimize", "--config", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "optimize.split = [0.5, 0.5, 0.5] is not allowed" in err
    path.write_text(yaml.safe_dump(cfg(tmp_path, space={"swing_n": [2, 0.5]})))
    assert main(["optimize", "--config", str(path), "--no-progress"]) == 2
    assert "optimize.space.swing_n" in capsys.readouterr().err


def test_the_study_lives_on_the_registrys_postgresql_server(tmp_path, frame):
    """SPEC §9 / issue 15: with a PostgreSQL registry, Optuna's study is stored on that server (a real one)."""
    from conftest import postgres_url_or_skip
    from registry_backends import fresh_postgres_db

    from qml_plugin.registry import sqlalchemy_url

    with fresh_postgres_db(postgres_url_or_skip()) as url:
        res = optimize({**cfg(tmp_path, trials=4, top_k=2), "ml_data_collection": {"db_path": url}}, ohlcv=frame,
                       progress=False, stamp="pgtest")
        assert "journal" not in res.paths and "qml_optimize_pgtest" in res.paths["study"]
        import optuna

        stored = optuna.load_study(study_name="qml_optimize_pgtest", storage=sqlalchemy_url(url))
        assert len(stored.trials) == 4
        assert [t.value for t in stored.trials] == [float(v) for v in res.trials["value"]]
