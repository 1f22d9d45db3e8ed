"""The labelling page: 127.0.0.1 only, a token on every request, no files served, and a real browser labels a pattern.

The browser test drives Debian's chromium through chromedriver with Selenium. It must run in CI (``.ci/run``
installs both); locally it skips only when neither binary exists, and says so.
"""
from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from qml_plugin import load_ohlcv
from qml_plugin.features import FeatureExtractor
from qml_plugin.patterns import detect_patterns, label_patterns
from qml_plugin.registry import PatternRegistry
from qml_plugin.web import HOST, LabelServer

N_LABELED = 40


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """EURUSD_1h patterns of 2013-2014: the first N_LABELED with triple-barrier outcomes, the rest unlabeled."""
    df = load_ohlcv("EURUSD_1h")
    pats = detect_patterns(df)
    pats = pats[(pats["detection_time"] >= "2013-01-01") & (pats["detection_time"] < "2014-01-01")].head(60)
    X = FeatureExtractor().extract(df, pats)
    X = X.drop(columns=[c for c in ("pattern_id", "regime_at_detection") if c in X.columns])
    db = str(tmp_path_factory.mktemp("web") / "reg.db")
    with PatternRegistry(db) as reg:
        reg.register_patterns(pats, X.set_axis(pats["pattern_id"].to_numpy()))
        reg.record_outcomes(label_patterns(df, pats.head(N_LABELED)))
        unlabeled = [p["pattern_id"] for p in reg.get_unlabeled_patterns(limit=100)]
        contrib = {f"feat_{i}": c for i, c in enumerate([0.5, -2.0, 0.1, 1.5, -0.2, 0.05, 0.3])}
        reg.log_predictions(pd.DataFrame({"pattern_id": [unlabeled[0]], "ml_confidence": [0.61], "expected_r": [0.35],
                                          "decision": ["take"], "contributions": [contrib]}),
                            model_id="m1", mode="filter", run_id="r1")
    assert len(unlabeled) >= 10
    return db, unlabeled


@pytest.fixture(scope="module")
def server(registry):
    with LabelServer(registry[0]) as srv:
        yield srv


def _get(url, **headers):
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_binds_loopback_only_and_prints_a_url_with_a_random_token(server):
    assert HOST == "127.0.0.1" and server._server.config.host == "127.0.0.1"
    assert server.url.startswith(f"http://127.0.0.1:{server.port}/?token=") and len(server.token) >= 20
    with LabelServer(str(server._db)) as other:
        assert other.token != server.token and other.port != server.port


def test_requests_without_the_token_are_refused(server):
    base = f"http://127.0.0.1:{server.port}"
    for path in ("/", "/api/next", "/?token=wrong", "/api/next?token=" + server.token[:-1]):
        status, body = _get(base + path)
        assert status == 403, path
        assert "token" in body and server.token not in body
    assert _get(base + "/", **{"X-QML-Token": server.token})[0] == 200
    status, page = _get(server.url)
    assert status == 200 and "Bokeh" in page and "cdn.bokeh.org" not in page


def test_nothing_outside_its_own_assets_is_served(server):
    t = server.token
    base = f"http://127.0.0.1:{server.port}"
    for path in ("/../../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/static/..%2f..%2fetc%2fpasswd",
                 "/api/../../etc/passwd", "//etc/passwd", "/tests/test_web.py", "/qml_plugin/web/app.py"):
        status, body = _get(f"{base}{path}?token={t}")
        assert status == 404, (path, status)
        assert "root:" not in body and "import" not in body


def test_a_label_posted_without_a_valid_key_changes_nothing(server, registry):
    db, unlabeled = registry
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}/api/label?token={server.token}", method="POST",
                                 data=json.dumps({"pattern_id": unlabeled[-1], "key": "x"}).encode(),
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 400 and "allowed: w, l, i" in e.value.read().decode()
    with PatternRegistry(db) as reg:
        assert reg.get_pattern(unlabeled[-1])["user_label"] is None


def test_next_pattern_comes_with_its_chart_and_labeled_neighbours(server, registry):
    status, body = _get(f"http://127.0.0.1:{server.port}/api/next?token={server.token}")
    data = json.loads(body)
    assert status == 200 and not data["done"]
    assert data["pattern"]["pattern_id"] == registry[1][0]
    assert data["chart"] is not None and "doc" in data["chart"]
    assert 1 <= len(data["neighbours"]) <= 4
    assert all(nb["info"]["label"] in (0, 1) and nb["chart"] is not None for nb in data["neighbours"])
    pred = data["prediction"]  # the prediction log's scores and top 5 contributions, largest |value| first
    assert pred["ml_confidence"] == 0.61 and pred["expected_r"] == 0.35
    assert [k for k, _ in pred["contributions"]] == ["feat_1", "feat_3", "feat_0", "feat_6", "feat_4"]


def _chromium():
    for browser, driver in (("/usr/bin/chromium", "/usr/bin/chromedriver"),):
        if shutil.which(browser) and shutil.which(driver):
            return browser, driver
    return None


def browser_or_skip():
    """Debian's chromium + chromedriver; a skip locally without them, a failure where QML_REQUIRE_BROWSER=1 (CI)."""
    found = _chromium()
    if found is None:
        msg = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        if os.environ.get("QML_REQUIRE_BROWSER") == "1":
            pytest.fail(msg + "; QML_REQUIRE_BROWSER=1 says this machine must have them")
        pytest.skip(msg + "; set QML_REQUIRE_BROWSER=1 to make this a failure")
    return found


def test_a_real_browser_draws_the_chart_and_pressing_w_labels_the_pattern_win(registry, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    db, unlabeled = registry
    browser, driver = browser_or_skip()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1400,900"):
        opts.add_argument(flag)
    with LabelServer(db) as srv:
        drv = webdriver.Chrome(service=Service(driver), options=opts)
        try:
            drv.get(srv.url)
            wait = WebDriverWait(drv, 60, poll_frequency=0.05)   # not the default 0.5 s between looks
            wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-chart-drawn") == "1")
            first = drv.find_element(By.TAG_NAME, "body").get_attribute("data-pattern-id")
            with PatternRegistry(db) as reg:
                assert reg.get_pattern(first)["user_label"] is None
            # the chart is really drawn: bokeh made a document with the figure's renderers in it
            assert first == unlabeled[0]
            info = drv.find_element(By.ID, "info").text
            assert "ml_confidence 0.610" in info and "expected_r 0.35" in info
            assert "feat_1" in drv.find_element(By.ID, "contrib").text  # top contributions from the prediction log
            n_roots = drv.execute_script("return Bokeh.documents.length")
            assert n_roots >= 2  # the pattern and at least one neighbour
            shots = Path(os.environ.get("QML_SCREENSHOT_DIR", tmp_path))  # docs/ pictures come from here
            shots.mkdir(parents=True, exist_ok=True)
            assert drv.save_screenshot(str(shots / "label_page.png"))
            drv.find_element(By.TAG_NAME, "body").send_keys("w")
            wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-pattern-id") not in
                       ("", first) and d.find_element(By.TAG_NAME, "body").get_attribute("data-chart-drawn") == "1")
            with PatternRegistry(db) as reg:
                row = reg.get_pattern(first)
            assert row["user_label"] == "win" and row["label_source"] == "user"
            second = drv.find_element(By.TAG_NAME, "body").get_attribute("data-pattern-id")
            drv.find_element(By.TAG_NAME, "body").send_keys("s")  # skip: a new pattern, nothing written
            wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-pattern-id") != second)
            with PatternRegistry(db) as reg:
                assert reg.get_pattern(second)["user_label"] is None
        finally:
            drv.quit()
