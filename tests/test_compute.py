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


@pytest.mark.parametrize("name", ["serial", "processes", "dask"])
def test_every_scheduler_returns_results_in_input_order(name):
    with Scheduler(name, workers=2, progress=False) as sch:
        assert sch.map(_square, [3, 1, 2]) == [9, 1, 4]


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
