"""plot_pattern draws each part of a pattern at its own time and price, on a self-contained page."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import zigzag

from qml_plugin.errors import DataError
from qml_plugin.patterns import QMLParams, detect_patterns, label_patterns
from qml_plugin.plot import pattern_html, plot_pattern

# the hand-made bullish QML of test_patterns: P1 low bar 24 (94.5), P2 high bar 28 (99.5), head bar 33 (91.5),
# break at bar 41; extended so the limit order at 94.5 fills on the way back down and the trade exits.
BULL = [(0, 100), (19, 100), (24, 95), (28, 99), (33, 92), (45, 104), (50, 103), (58, 94), (75, 110), (90, 108)]


@pytest.fixture(scope="module")
def drawn():
    df = zigzag(BULL)
    pats = label_patterns(df, detect_patterns(df, QMLParams(swing_n=2)))
    assert len(pats) >= 1
    p = pats.iloc[0]
    return df, p, plot_pattern(df, p)


def _renderer(fig, name):
    found = [r for r in fig.renderers if r.name == name]
    assert found, f"no renderer named {name!r}"
    return found[0].data_source.data


def test_swings_are_marked_at_their_bars_and_prices(drawn):
    df, p, fig = drawn
    sw = _renderer(fig, "swings")
    assert list(sw["x"]) == [df.index[int(p[k])] for k in ("p1_bar", "p2_bar", "p3_bar")]
    assert list(sw["y"]) == [p["p1_price"], p["p2_price"], p["p3_price"]]
    assert (p["p1_bar"], p["p1_price"], p["p3_bar"], p["p3_price"]) == (24, 94.5, 33, 91.5)


def test_levels_carry_the_pattern_prices_from_their_bars(drawn):
    df, p, fig = drawn
    qml = _renderer(fig, "qml_level")
    assert qml["y"] == [p["p1_price"]] and qml["x0"] == [df.index[24]]
    assert _renderer(fig, "p2_level")["y"] == [p["p2_price"]]
    assert _renderer(fig, "p2_level")["x1"] == [df.index[int(p["break_bar"])]]
    assert _renderer(fig, "break")["x"] == [df.index[int(p["break_bar"])]]
    for name in ("entry", "stop", "target"):
        lv = _renderer(fig, name)
        assert lv["y"] == [p[name]] and lv["x0"] == [df.index[int(p["detection_bar"])]]


def test_fill_and_exit_are_drawn_when_the_outcome_is_known(drawn):
    df, p, fig = drawn
    assert p["status"] == "filled" and np.isfinite(p["exit_bar"])
    assert _renderer(fig, "fill")["x"] == [df.index[int(p["fill_bar"])]]
    assert _renderer(fig, "fill")["y"] == [p["fill_price"]]
    assert _renderer(fig, "exit")["x"] == [df.index[int(p["exit_bar"])]]
    assert _renderer(fig, "exit")["y"] == [p["exit_price"]]


def test_an_unlabeled_pattern_has_no_fill_or_exit():
    df = zigzag(BULL)
    p = detect_patterns(df, QMLParams(swing_n=2)).iloc[0]
    fig = plot_pattern(df, p)
    names = {r.name for r in fig.renderers}
    assert {"entry", "stop", "target", "swings"} <= names and not names & {"fill", "exit"}


def test_candles_cover_the_window(drawn):
    df, p, fig = drawn
    c = _renderer(fig, "candles")
    last = int(p["exit_bar"]) + 10  # bars_before=60 reaches back to bar 0; the window ends 10 bars after the exit
    assert list(c["x"]) == list(df.index[: last + 1])
    np.testing.assert_array_equal(c["high"], df["High"].to_numpy()[: last + 1])


def test_page_is_self_contained(drawn):
    html = pattern_html(drawn[2])
    assert "cdn.bokeh.org" not in html and "<script src=" not in html.replace(" ", "")
    assert "Bokeh" in html and len(html) > 100_000  # the library itself is inlined


def test_a_row_without_swings_is_a_clear_error():
    df = zigzag(BULL)
    with pytest.raises(DataError, match="no 'p1_bar'"):
        plot_pattern(df, {"detection_bar": 3})
