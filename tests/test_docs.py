"""The API reference builds from the docstrings with pdoc, every public module, without a single warning."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_api_reference_builds_without_warnings(tmp_path):
    # a fresh interpreter: pdoc imports every module itself, with no warning filter of the test session
    run = subprocess.run([sys.executable, str(REPO / "docs" / "build_api.py"), "-o", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "pages in" in run.stdout
    pages = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.html")}
    for page in ("qml_plugin/config.html", "qml_plugin/errors.html", "qml_plugin/cli/main.html",
                 "qml_plugin/patterns/qml.html", "qml_plugin/registry.html", "qml_plugin/vbt.html"):
        assert page in pages
    config = (tmp_path / "qml_plugin" / "config.html").read_text()
    assert "resolve_config" in config and "load_sweep_config" in config
