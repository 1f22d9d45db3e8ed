"""The report's bokeh charts hold the data they claim to show."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qml_plugin import load_ohlcv
from qml_plugin.figures import calibration_curve, equity_with_band, gallery, r_distribution, sections_html
from qml_plugin.ml.metrics import calibration_table
from qml_plugin.patterns import detect_patterns, label_patterns


def _named(model, prefix):
    return [r for r in model.renderers if (r.name or "").startswith(prefix)]


def test_equity_curves_sit_in_front_of_the_random_band():
    idx = pd.date_range("2020-01-01", periods=50, freq="D")
    band = pd.DataFrame({"p05": np.linspace(1, 0.9, 50), "p95": np.linspace(1, 1.2, 50)}, index=idx)
    fig = equity_with_band({"baseline": pd.Series(np.linspace(1, 1.05, 50), idx),
                            "filter": pd.Series(np.linspace(1, 1.1, 50), idx)}, band)
    names = [r.name for r in fig.renderers]
    assert names[0] == "random_band" and set(names[1:]) == {"equity:baseline", "equity:filter"}
    area = fig.renderers[0].glyph
    src = fig.renderers[0].data_source.data
    np.testing.assert_allclose(src[area.y1], band["p05"].to_numpy())
    np.testing.assert_allclose(src[area.y2], band["p95"].to_numpy())


def test_r_distribution_bins_are_shares_of_each_modes_trades():
    fig = r_distribution({"baseline": [-1, -1, 2.0, 0.5], "filter": [2.0, 2.0]})
    for r in fig.renderers:
        assert abs(sum(r.data_source.data["top"]) - 1.0) < 1e-12
    labels = [item.label.value for item in fig.legend[0].items]
    assert labels == ["baseline (n=4, mean +0.12 R)", "filter (n=2, mean +2.00 R)"]


def test_calibration_curve_plots_the_metrics_table_and_names_its_ece():
    rng = np.random.default_rng(3)
    p = rng.uniform(size=400)
    y = (rng.uniform(size=400) < p).astype(int)
    cal = calibration_table(y, p)
    fig = calibration_curve(cal, ece=0.0421, ece_reference=0.05)
    pts = _named(fig, "calibration")[0].data_source.data
    np.testing.assert_allclose(pts["observed_rate"], pd.DataFrame(cal)["observed_rate"].to_numpy())
    assert "ECE 0.042" in fig.title.text and "0.050" in fig.title.text and "400 predictions" in fig.title.text


@pytest.fixture(scope="module")
def labeled():
    df = load_ohlcv("EURUSD_1h").iloc[:8000]
    pats = label_patterns(df, detect_patterns(df))
    pats["dataset"] = "EURUSD_1h"
    pats["ml_confidence"] = np.linspace(0, 1, len(pats))
    return df, pats


def test_gallery_draws_the_six_highest_and_six_lowest_scored_patterns(labeled):
    df, pats = labeled
    lay = gallery(pats, {"EURUSD_1h": df})
    known = pats[np.isfinite(pats["r_multiple"])].sort_values("ml_confidence")
    for name, expect in (("highest", known.tail(6)), ("lowest", known.head(6))):
        titles = sorted(f.title.text for f in lay.select({"name": f"gallery:{name}"}))
        cols = [expect[c] for c in ("detection_time", "ml_confidence", "exit_reason", "r_multiple")]
        want = sorted(f"EURUSD_1h {t:%Y-%m-%d} ml_confidence {s:.2f}: {x} {r:+.2f} R" for t, s, x, r in zip(*cols))
        assert titles == want


def test_sections_are_self_contained_html(labeled):
    df, pats = labeled
    head, body = sections_html({"Gallery": gallery(pats, {"EURUSD_1h": df}, n=2)})
    assert "cdn.bokeh.org" not in head + body and "<h2>Gallery</h2>" in body and len(head) > 100_000
