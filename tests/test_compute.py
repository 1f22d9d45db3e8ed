"""The scheduler returns the same results, in input order, on serial, processes and a real Dask LocalCluster."""
from __future__ import annotations

import pytest

from qml_plugin.compute import Scheduler, WorkUnitError
from qml_plugin.errors import ConfigError, DataError


def _square(x):
    return x * x


def _fails_on_two(x):
    if x == 2:
        raise ZeroDivisionError("boom")
    return x


def _data_error(x):
    raise DataError(f"bad market {x}")


_UNPICKLED = []          # in a worker: one entry per copy of a Bars object that reached it


class Bars:
    """A stand-in for a market's bars that counts the copies unpickled in each process."""

    def __init__(self, values):
        self.values = list(values)

    def __setstate__(self, state):
        self.__dict__.update(state)
        _UNPICKLED.append(1)


def _pick(bars, i):
    import os

    return bars.values[i], os.getpid(), len(_UNPICKLED)


@pytest.mark.parametrize("name", ["serial", "processes", "dask"])
def test_every_scheduler_returns_results_in_input_order(name):
    with Scheduler(name, workers=2, progress=False) as sch:
        assert sch.map(_square, [3, 1, 2]) == [9, 1, 4]


@pytest.mark.parametrize("name, inherit", [("serial", False), ("processes", False), ("processes", True),
                                           ("dask", False)])
def test_shared_reaches_each_worker_once_not_once_per_unit(name, inherit):
    bars = Bars(range(100, 112))
    with Scheduler(name, workers=2, progress=False, inherit=inherit) as sch:
        out = sch.map(_pick, range(12), shared=bars)
        again = sch.map(_pick, [0, 1], shared=bars)           # the same object: the workers keep their copy
    assert [v for v, _, _ in out] == list(range(100, 112)) and [v for v, _, _ in again] == [100, 101]
    once = 0 if name == "serial" or inherit else 1             # forked workers inherit it: nothing unpickled
    first = {pid: n for _, pid, n in out}                      # per worker: copies unpickled there so far
    assert max(first.values()) <= once, first
    both = {pid: n for _, pid, n in out + again}
    assert max(both.values()) <= once, both


@pytest.mark.parametrize("name", ["serial", "processes"])
def test_a_failed_unit_names_itself(name):
    with Scheduler(name, workers=2, progress=False) as sch, pytest.raises(WorkUnitError, match="market-2"):
        sch.map(_fails_on_two, [1, 2, 3], label=lambda x: f"market-{x}")


def test_a_unit_bad_input_error_stays_a_qml_error():
    with Scheduler("serial", progress=False) as sch, pytest.raises(DataError, match="bad market 7"):
        sch.map(_data_error, [7])


@pytest.mark.parametrize("kw, msg", [({"scheduler": "threads"}, "compute.scheduler = 'threads'"),
                                     ({"workers": 0}, "compute.workers = 0"),
                                     ({"address": "tcp://x:1"}, "compute.address")])
def test_bad_settings_are_config_errors(kw, msg):
    with pytest.raises(ConfigError, match=msg.replace(".", r"\.").replace("(", r"\(")):
        Scheduler(**kw)


_FITS = '''
import numpy as np, pandas as pd
from qml_plugin.ml.model import SignalQualityModel
rng = np.random.default_rng(0)
X = pd.DataFrame(rng.normal(size=(300, 8)), columns=[f"f{i}" for i in range(8)])
y = rng.integers(0, 2, 300)
def fit(_):
    return float(SignalQualityModel(n_estimators=10).fit(X, y).predict_proba(X)[0, 1])
'''
_DRIVER = '''
from units import fit
from qml_plugin.compute import Scheduler
if __name__ == "__main__":
    first = fit(0)                       # the parent trains first: it now holds an OpenMP thread pool
    with Scheduler("processes", workers=2, progress=False) as sch:
        assert sch.map(fit, [1, 2]) == [first, first]
    print("ok")
'''


def test_processes_work_after_the_parent_trained_a_model(tmp_path):
    """A worker forked from a process that already ran XGBoost hangs in its own first fit; workers come from a
    fresh fork server instead, so a notebook that fits and then runs a universe on processes finishes."""
    import os
    import subprocess
    import sys

    (tmp_path / "units.py").write_text(_FITS)
    (tmp_path / "driver.py").write_text(_DRIVER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    env.pop("OMP_NUM_THREADS", None)             # the hang needs OpenMP's own default thread pool
    done = subprocess.run([sys.executable, str(tmp_path / "driver.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
