"""The ``qml run`` report in a real headless Chromium: every section is there, and nothing is broken.

Chromium (Debian's ``chromium`` and ``chromium-driver``) must exist in CI (``QML_REQUIRE_BROWSER=1``); the page
is opened from a file with no network at all, so a chart that needed a CDN would draw nothing and fail.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from test_web import browser_or_skip

from qml_plugin.badprints import BadPrintWarning, apply_bad_prints
from qml_plugin.config import load_config
from qml_plugin.job import run_universe_job
from qml_plugin.report import write_report
from qml_plugin.synthetic import planted_universe

SECTIONS = ["Cumulative R against the random filter", "R per trade by mode", "Calibration",
            "Best- and worst-scored out-of-sample patterns"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    universe, _ = planted_universe(8, 6000, strength=1.5, seed=1)
    df = universe["SYN00_4h"]                         # one bad print, repaired; the other markets only checked
    df.iloc[3000, df.columns.get_loc("Low")] = 0.5 * df[["Open", "Close"]].iloc[3000].min()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadPrintWarning)
        universe = {k: apply_bad_prints(v, bad_prints="repair" if k == "SYN00_4h" else "warn")
                    for k, v in universe.items()}
    cfg = load_config({"ml": {"enabled": True, "prediction_mode": "filter"},
                       "walk_forward": {"min_train_labels": 40, "retrain_every_months": 6, "random_seeds": 100}})
    where = tmp_path_factory.mktemp("report")
    cwd = os.getcwd()
    os.chdir(where)
    try:
        res = run_universe_job(cfg, universe=universe, scheduler="serial", progress=False, schemes=["pooled"],
                               model_params={"n_estimators": 40})
        path = write_report(where / "report.html", **res.report_content)
    finally:
        os.chdir(cwd)
    return res, path


def test_the_report_carries_every_chart_section_and_no_cdn(report):
    res, path = report
    text = path.read_text()
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in text, title
    assert "cdn.bokeh.org" not in text and "https://" not in text.split("<body>", 1)[1].split("Bokeh", 1)[0]
    assert "random filter 5-95 %" in text and "ECE" in text


def test_the_universe_report_tables_the_bad_prints_of_its_data(report):
    res, path = report
    page = path.read_text()
    assert "1 bad print(s) in 1 of the 8 datasets checked" in page
    row = page.split("<h2>Bad prints</h2>", 1)[1].split("</table>", 1)[0]
    stamp = res.report_content["bad_prints"]["time"].astype(str).iloc[0]
    assert "<td>SYN00_4h</td>" in row and f"<td>{stamp}</td>" in row and "<td>repair</td>" in row
    assert "% below the body" in row and "<td>clip Low to " in row


def test_the_report_states_the_pooled_ece_beside_a_perfect_models_noise_and_draws_its_curve(report):
    res, path = report
    page = path.read_text()
    cal = res.report_content["verdict_calibration"]
    assert cal["n"] > 200 and 0 < cal["ece_calibrated_p95"] < 0.2
    assert (f"ECE {cal['ece']:.3f} (a perfectly calibrated model shows &lt;= {cal['ece_calibrated_p95']:.3f} in "
            f"95 % of draws) over {cal['n']:,} out-of-sample predictions") in page
    drawn = res.report_content["charts"]["calibration"]
    assert (drawn["ece"], drawn["ece_reference"]) == (cal["ece"], cal["ece_calibrated_p95"])   # one figure, twice
    assert sum(b["n"] for b in drawn["table"]) == cal["n"] and "<h2>Calibration</h2>" in page


def test_the_report_renders_in_headless_chromium(report, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser, driver = browser_or_skip()
    res, path = report
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage",
                 "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",  # no network at all
                 f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1300,2400"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(driver), options=opts)
    try:
        drv.get(path.as_uri())
        wait = WebDriverWait(drv, 90, poll_frequency=0.05)   # not the default 0.5 s between looks
        # bokeh drew every chart section: each section holds a rendered root (a canvas in its shadow DOM)
        roots = ("return window.Bokeh === undefined ? 0 : "
                 "Bokeh.documents.reduce((n, doc) => n + doc.roots().length, 0)")
        wait.until(lambda d: d.execute_script(roots) >= len(SECTIONS))
        titles = [h.text for h in drv.find_elements(By.TAG_NAME, "h2")]
        assert all(t in titles for t in SECTIONS), titles
        broken = drv.execute_script("return Array.from(document.images).filter(i => !i.complete || "
                                    "i.naturalWidth === 0).map(i => i.alt)")
        assert broken == []
        drawn = drv.execute_script(
            "return Array.from(document.querySelectorAll('section.chart')).map(s => s.querySelector('div') !== null"
            " && s.getBoundingClientRect().height > 150)")
        assert drawn == [True] * len(SECTIONS), drawn
        errors = [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors
        shots = Path(os.environ.get("QML_SCREENSHOT_DIR", tmp_path))
        shots.mkdir(parents=True, exist_ok=True)
        assert drv.save_screenshot(str(shots / "report.png"))
    finally:
        drv.quit()
