"""A missing extra names the install that works: the package is installed from its source folder
(it is not on PyPI), so the hint is ``pip install ".[extra]"`` as in the README, never
``pip install "qml-plugin[extra]"``. The extra is made missing by blocking its import
(``sys.modules[name] = None`` makes ``import name`` raise ImportError), nothing else is replaced."""
from __future__ import annotations

import sys

import pytest

from qml_plugin.compute import Scheduler
from qml_plugin.errors import QMLError
from qml_plugin.registry.connection import connect
from qml_plugin.web import LabelServer


@pytest.mark.parametrize("extra, blocked, start", [
    ("dask", "dask.distributed", lambda tmp: Scheduler("dask").__enter__()),
    ("postgres", "psycopg", lambda tmp: connect("postgresql://nobody@127.0.0.1:1/none")),
    ("web", "uvicorn", lambda tmp: LabelServer(str(tmp / "r.db"))),
])
def test_a_missing_extra_says_how_to_install_it_from_the_source_folder(extra, blocked, start, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, blocked, None)
    with pytest.raises(QMLError) as err:
        start(tmp_path)
    text = str(err.value)
    assert f'pip install ".[{extra}]" from the qml-plugin source folder' in text, text
    assert "qml-plugin[" not in text, text
