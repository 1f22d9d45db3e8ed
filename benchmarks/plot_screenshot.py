"""Screenshot of ``bt.plot()`` for a QMLStrategy run: the pattern levels and the trades (docs/bt_plot.png).

    PYTHONPATH=$PWD python benchmarks/plot_screenshot.py [docs/bt_plot.png]

Writes the interactive plot as HTML beside the PNG. The PNG is rendered by bokeh's ``export_png``
in headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by Selenium).
"""
from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path

from backtesting import Backtest
from bokeh.io import export_png
from selenium import webdriver

from qml_plugin import load_ohlcv
from qml_plugin.strategies import QMLStrategy


def main(out: str = "docs/bt_plot.png") -> None:
    df = load_ohlcv("EURUSD_1h", resample="4h").loc["2012-01-01":"2012-06-30"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = Backtest(df, QMLStrategy, cash=1_000_000)
        stats = bt.run(register_patterns=False)
        layout = bt.plot(open_browser=False, filename=str(Path(out).with_suffix(".html")), plot_width=1400)
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1500,1100"):
        opts.add_argument(arg)
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    driver = webdriver.Chrome(options=opts, service=service)   # local binaries: no download, no network
    try:
        export_png(layout, filename=out, webdriver=driver)
    finally:
        driver.quit()
    print(f"{out}: {len(stats._trades)} trades, {len(stats._strategy.patterns)} patterns")


if __name__ == "__main__":
    main(*sys.argv[1:])
