"""The wheel: what it installs, and that it lives beside a user's own ``strategies/`` package (SPEC §0)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile

import pytest
from conftest import REPO

USER_CODE = textwrap.dedent("""
    import warnings
    from pathlib import Path

    import strategies                                   # the user's own package, found in the working folder
    assert strategies.MINE == "the user's strategies", strategies.__file__

    import qml_plugin
    from qml_plugin.strategies import QMLStrategy
    assert Path(qml_plugin.__file__).resolve().is_relative_to(Path(VENV).resolve()), qml_plugin.__file__

    from qml_plugin.cli.common import default_config, resolve_strategy
    assert resolve_strategy("qml_plugin.strategies.QMLStrategy") is QMLStrategy
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = resolve_strategy("strategies.qml_strategy.QMLStrategy")
    assert old is QMLStrategy and [w.category for w in caught] == [DeprecationWarning], caught
    assert strategies.MINE == "the user's strategies"   # the old spelling never imported the user's module

    assert default_config("qml_with_ml.yaml").parent.name == "_configs"   # shipped inside the package
    from backtesting import Backtest
    df = qml_plugin.load_ohlcv("EURUSD_1h").iloc[:1500]
    stats = Backtest(df, QMLStrategy, cash=1_000_000).run(register_patterns=False)
    assert stats["# Trades"] > 0
    print("both imports ok")
""")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built from a copy of the working tree (the tree itself is left without build/ litter)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("qml_plugin", "data", "configs"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"), str(src)],
                   check=True, capture_output=True)
    (whl,) = (root / "dist").glob("qml_plugin-*.whl")
    return whl


def test_the_wheel_installs_only_the_qml_plugin_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"qml_plugin", f"{wheel.name.split('-py3')[0]}.dist-info"}
    assert {"qml_plugin/strategies/__init__.py", "qml_plugin/strategies/qml_strategy.py",
            "qml_plugin/_configs/qml_with_ml.yaml", "qml_plugin/_data/EURUSD_1h.csv.gz"} <= set(names)


def test_installed_wheel_and_a_users_own_strategies_package_both_import(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], check=True,
                          capture_output=True, text=True).stdout.strip()
    # the fresh venv also sees this environment's packages (numpy, backtesting, pip ...), not the repository
    (venv / site.split(str(venv) + "/", 1)[1] / "outer_env.pth").write_text(sysconfig.get_path("purelib") + "\n")
    # --ignore-installed: the outer environment (seen through the .pth) may hold qml-plugin already, as in CI;
    # pip must still install the wheel into this venv (and never touch the outer one)
    subprocess.run([py, "-m", "pip", "install", "--no-deps", "--ignore-installed", "-q", str(wheel)], check=True,
                   capture_output=True)
    assert (venv / "bin" / "qml").is_file()

    user = tmp_path / "project"
    (user / "strategies").mkdir(parents=True)
    (user / "strategies" / "__init__.py").write_text("MINE = \"the user's strategies\"\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([py, "-c", f"VENV = {str(venv)!r}\n" + USER_CODE], cwd=user, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "both imports ok" in done.stdout
    # and from a folder without one, nothing called `strategies` is importable: the wheel brought none
    elsewhere = subprocess.run([py, "-c", "import importlib.util; print(importlib.util.find_spec('strategies'))"],
                               cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert elsewhere.stdout.strip() == "None"
