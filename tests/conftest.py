"""Shared test helpers: hand-built zigzag series and random-walk OHLCV."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
# XGBoost's OpenMP pool (libgomp) is not fork-safe: once a fit with more than one OpenMP thread ran in
# this process, a forked worker that fits again hangs (compute.Scheduler("processes") forks). Tests fit
# in the pytest process and then fork, so they keep OpenMP to one thread; read before xgboost loads.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent
# ../shared/data beside the repository (/work/main), or two levels up from a worktree (/work/wt/<name>)
SHARED_DATA = next((p for p in (REPO.parent / "shared" / "data", REPO.parent.parent / "shared" / "data")
                    if p.is_dir()), REPO.parent / "shared" / "data")


def make_ohlcv(high, low, close, open_=None, start="2020-01-01", freq="1h", symbol="TEST", volume=None):
    high, low, close = (np.asarray(x, float) for x in (high, low, close))
    if open_ is None:
        open_ = np.r_[close[0], close[:-1]]
        open_ = np.clip(open_, low, high)
    df = pd.DataFrame(
        {"Open": open_, "High": high, "Low": low, "Close": close,
         "Volume": np.zeros(len(high)) if volume is None else volume},
        index=pd.date_range(start, periods=len(high), freq=freq),
    )
    df.attrs["symbol"] = symbol
    df.attrs["timeframe"] = freq
    return df


def zigzag(pivots, half_range=0.5, **kw):
    """OHLCV whose mid price runs linearly through ``pivots`` [(bar, price), ...].

    High = mid + half_range, Low = mid - half_range, Close = mid, Open = previous Close (clipped),
    so every interior pivot is a swing with the expected High / Low.
    """
    bars = [b for b, _ in pivots]
    mid = np.interp(np.arange(bars[-1] + 1), bars, [p for _, p in pivots])
    return make_ohlcv(mid + half_range, mid - half_range, mid, **kw)


def random_walk(n_bars, seed, vol=0.01, start_price=100.0, freq="1h"):
    """A geometric random walk with realistic candles (never invalid OHLC)."""
    rng = np.random.default_rng(seed)
    close = start_price * np.exp(np.cumsum(rng.normal(0, vol, n_bars)))
    open_ = np.r_[start_price, close[:-1]] * np.exp(rng.normal(0, vol / 4, n_bars))
    spread = np.abs(rng.normal(0, vol, (2, n_bars)))
    high = np.maximum(open_, close) * np.exp(spread[0])
    low = np.minimum(open_, close) * np.exp(-spread[1])
    vol_ = rng.integers(0, 1000, n_bars).astype(float)
    return make_ohlcv(high, low, close, open_=open_, freq=freq, volume=vol_, symbol="RW")


def reference_atr14(df):
    """Wilder's ATR14 written out in plain Python, as SPEC §2 states it."""
    h, l, c = df["High"].to_numpy(), df["Low"].to_numpy(), df["Close"].to_numpy()
    tr = [h[0] - l[0]] + [max(h[i] - l[i], abs(h[i] - c[i - 1]), abs(l[i] - c[i - 1])) for i in range(1, len(h))]
    atr = [float("nan")] * len(h)
    if len(h) >= 14:
        atr[13] = sum(tr[:14]) / 14
        for i in range(14, len(h)):
            atr[i] = (13 * atr[i - 1] + tr[i]) / 14
    return np.array(atr)


@pytest.fixture(scope="session")
def eurusd_4h():
    from qml_plugin import load_ohlcv

    return load_ohlcv("EURUSD_1h", resample="4h")


# -- registry backends (SPEC §5): one suite, run on SQLite and on a real PostgreSQL server ----------
POSTGRES_ENV = "QML_TEST_POSTGRES_URL"
"""The environment variable naming the PostgreSQL server the registry tests use (``.ci/run`` sets it)."""


def postgres_url_or_skip() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url and os.environ.get("QML_REQUIRE_POSTGRES"):
        pytest.fail(f"{POSTGRES_ENV} is not set but QML_REQUIRE_POSTGRES is (CI): the PostgreSQL registry tests "
                    "must run; .ci/run starts the server", pytrace=False)
    if not url:
        pytest.skip(f"PostgreSQL registry tests need a server: set {POSTGRES_ENV}=postgresql://user@host:port/db "
                    "(.ci/run starts a throw-away one)")
    return url


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory, eurusd_4h):
    """A model trained on 2007-2012 patterns of EURUSD 4h (trained_on_end in late 2012): ``(model, path)``."""
    from qml_plugin.features import FeatureExtractor
    from qml_plugin.ml.model import SignalQualityModel
    from qml_plugin.patterns import detect_patterns, label_patterns

    df = eurusd_4h[:"2012-12-31"]
    pats = detect_patterns(df)
    lab = label_patterns(df, pats).dropna(subset=["label"])
    X = FeatureExtractor().extract(df, lab)
    # the trees these fixtures' thresholds were tuned on (SignalQualityModel's defaults before 150 x 0.1 / 64 bins)
    model = SignalQualityModel(n_estimators=60, learning_rate=0.05, max_bin=256, n_jobs=1).fit(
        X, lab["label"].astype(int), detection_times=lab["detection_time"], exit_times=lab["exit_time"])
    path = tmp_path_factory.mktemp("model") / "m"
    model.save(path)
    return model, path


@pytest.fixture(scope="session")
def postgres_databases():
    """Empty PostgreSQL databases, made on first use, emptied after each test and reused (``registry_backends``)."""
    from registry_backends import RecycledDatabases

    pool = RecycledDatabases()
    yield pool
    pool.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_db(request, tmp_path):
    """A fresh, empty registry location on each backend: an SQLite file, or a PostgreSQL database in the
    state of a new one (made new, or a used one emptied back and checked: ``RecycledDatabases``)."""
    if request.param == "sqlite":
        yield str(tmp_path / "reg.db")
        return
    server = postgres_url_or_skip()
    with request.getfixturevalue("postgres_databases").database(server) as url:
        yield url


@pytest.fixture
def reg(registry_db):
    from qml_plugin.registry import PatternRegistry

    with PatternRegistry(registry_db) as r:
        yield r


# -- one two-worker Dask cluster for the tests that compare schedulers' results -----------------------
_DASK: dict = {}


@pytest.fixture(scope="session")
def dask_address():
    """The address of a local two-worker Dask cluster (``compute.address``), started at first use.

    Starting a cluster and importing pandas, XGBoost and vectorbt in its fresh workers took 8-14 s
    per test; the tests that only ask "same table on Dask?" share this one instead (their units,
    scatter and gather are the same as on a cluster ``Scheduler`` starts itself; test_compute still
    has Scheduler start its own). It is closed after the last test that asks for it, so that no
    later test forks the test process while the cluster's threads run.
    """
    from dask.distributed import LocalCluster

    _DASK["cluster"] = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    yield _DASK["cluster"].scheduler_address
    _close_dask()


def _close_dask() -> None:
    cluster = _DASK.pop("cluster", None)
    if cluster is not None:
        cluster.close()


def pytest_runtest_teardown(item, nextitem):
    if "cluster" in _DASK and not any("dask_address" in getattr(it, "fixturenames", ())
                                      for it in item.session.items[item.session.items.index(item) + 1:]):
        _close_dask()
