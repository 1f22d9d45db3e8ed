"""The verdict statistics (SPEC §11): random filters per market, p_random, Holm, block bootstrap, MDE, ECE.

Outcomes come from the real detector and labeler on random-walk markets (nothing in them is
predictable); "skill" is planted by letting a score see the outcome, "no skill" by scores that see
only what was known at detection (geometry, noise).
"""
from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from qml_plugin.comparison import (
    block_bootstrap_ci,
    holm,
    minimum_detectable_effect,
    p_random,
    placeable,
    random_keep,
    random_keep_sums,
)
from qml_plugin.filter import decide
from qml_plugin.job.verdict import MODES, POOLS, VERDICT_COLUMNS, pattern_rows, verdict_table
from qml_plugin.job.verdict_text import format_verdict, verdict_sentence, write_verdict_csv
from qml_plugin.ml.calibration import calibrated_ece_quantile, calibration_report, expected_calibration_error
from qml_plugin.patterns import detect_patterns, label_patterns
from qml_plugin.synthetic import random_walk_ohlcv
from qml_plugin.tradesim import select_trades


@cache
def _universe(seed: int, n_markets: int = 6, n_bars: int = 5000) -> tuple:
    """Labeled patterns of ``n_markets`` random-walk markets (4h bars, UTC)."""
    out = []
    for k in range(n_markets):
        sym = f"RW{k:02d}"
        df = random_walk_ohlcv(n_bars, seed=seed * 101 + k, freq="4h", symbol=sym)
        out.append((f"{sym}_4h", sym, df.index, label_patterns(df, detect_patterns(df))))
    return tuple(out)


def _decisions(lab: pd.DataFrame, rng: np.random.Generator, skill: float) -> pd.DataFrame:
    """ml_confidence and expected_r that see the outcome with weight ``skill`` (0 = only geometry and noise)."""
    win = lab["label"].fillna(0.5).to_numpy() - 0.5
    geometry = -np.log(lab["rr"].to_numpy(float))          # what a real model learns first: P(win) ~ 1 / (1 + rr)
    conf = 1.0 / (1.0 + np.exp(-(0.5 * geometry + 4.0 * skill * win + rng.normal(0, 1, len(lab)))))
    er = skill * lab["r_multiple"].fillna(0.0).to_numpy() + rng.normal(0, 0.5, len(lab))
    ok = placeable(lab)
    v = lab["validity_score"].to_numpy(float)
    out = pd.DataFrame({"placeable": ok, "technical": v >= 0.5, "validity_score": v, "ml_confidence": conf,
                        "expected_r": er})
    for mode in ("filter", "score_enhancement", "replace"):
        out[f"taken_{mode}"] = decide(v, conf, mode=mode)[0] & ok
    out["taken_expected_value"] = (v >= 0.5) & (er > 0.0) & ok
    return out


def _inputs(seed: int, skill: float, *, schemes=("pooled",), trades: bool = False, n_markets: int = 6):
    """``patterns`` (and optionally ``trades``, ``equity``) as the universe run hands them to the verdict."""
    rng = np.random.default_rng(seed + 7)
    pats, trs, eqs = [], [], []
    for scheme in schemes:
        for dataset, market, index, lab in _universe(seed, n_markets):
            dec = _decisions(lab, rng, skill)
            known = pd.DatetimeIndex(lab["detection_time"]).tz_localize("UTC") + pd.Timedelta("4h")
            p = pd.DataFrame({"scheme": scheme, "dataset": dataset, "market": market, "known_at_utc": known,
                              "r_net": lab["r_multiple"].to_numpy(float)})
            p = pd.concat([p, dec, lab[["detection_bar", "p1_bar", "fill_bar", "exit_bar"]].reset_index(drop=True)],
                          axis=1)
            pats.append(p)
            if not trades:
                continue
            for mode in ("baseline",) + MODES:
                take = (dec["technical"] & dec["placeable"]).to_numpy() if mode == "baseline" \
                    else dec[f"taken_{mode}"].to_numpy()
                chosen = select_trades(lab, take, dec["validity_score"].to_numpy(), max_wait=20)
                t = lab[chosen & lab["r_multiple"].notna().to_numpy()]
                trs.append(pd.DataFrame({"scheme": scheme, "mode": mode, "dataset": dataset, "market": market,
                                         "entry_time_utc": index[t["fill_bar"].astype(int)].tz_localize("UTC"),
                                         "r_net": t["r_multiple"].to_numpy(float)}))
                equity = np.r_[1.0, np.cumprod(1.0 + 0.01 * t["r_multiple"].to_numpy(float))]
                times = pd.DatetimeIndex([index[0], *index[t["exit_bar"].astype(int)]]).tz_localize("UTC")
                eqs.append(pd.DataFrame({"scheme": scheme, "mode": mode, "dataset": dataset, "market": market,
                                         "time_utc": times, "equity": equity}))
    patterns = pd.concat(pats, ignore_index=True)
    if not trades:
        return patterns
    return patterns, pd.concat(trs, ignore_index=True), pd.concat(eqs, ignore_index=True)


# --- the statistics, against hand computations and simulations ---

def test_holm_matches_a_hand_computed_example():
    # sorted p: 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, max(1*0.04, 0.06)
    assert np.allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    assert np.allclose(holm([0.01, 0.02, 0.03, 0.04, 0.05]), [0.05, 0.08, 0.09, 0.09, 0.09])
    out = holm([0.5, np.nan, 0.9])
    assert np.isnan(out[1]) and np.allclose(out[[0, 2]], [1.0, 1.0])      # NaN is not counted in m


def test_minimum_detectable_effect_has_80_percent_power_in_simulation():
    sd, n = 1.3, 400
    mde = minimum_detectable_effect(sd, n)
    assert mde == pytest.approx((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * sd * np.sqrt(2 / n))
    rng = np.random.default_rng(0)
    a = rng.normal(mde, sd, (4000, n))
    b = rng.normal(0.0, sd, (4000, n))
    z = (a.mean(1) - b.mean(1)) / np.sqrt((a.var(1, ddof=1) + b.var(1, ddof=1)) / n)
    assert np.mean(np.abs(z) > stats.norm.ppf(0.975)) == pytest.approx(0.80, abs=0.025)


def test_block_bootstrap_ci_covers_the_true_mean_and_iid_resampling_does_not():
    rng = np.random.default_rng(1)
    blocks = np.repeat(np.arange(60), 10)
    cover = {"block": 0, "iid": 0}
    reps = 200
    for _ in range(reps):
        # a shared effect per block (a market-month's regime) plus a skewed per-trade outcome; true mean 0
        v = rng.normal(0, 0.6, 60)[blocks] + rng.exponential(1.0, 600) - 1.0
        lo, hi = block_bootstrap_ci(v, blocks, n_boot=500, rng=rng)
        cover["block"] += lo <= 0.0 <= hi
        lo, hi = block_bootstrap_ci(v, np.arange(600), n_boot=300, rng=rng)
        cover["iid"] += lo <= 0.0 <= hi
    assert 0.89 <= cover["block"] / reps <= 0.99
    assert cover["iid"] / reps < 0.80              # trades of one block are not independent


def test_random_keep_draws_exactly_the_modes_count_per_market_from_its_pool_uniformly():
    rng = np.random.default_rng(2)
    groups = rng.integers(0, 3, 300)
    pool = rng.random(300) < 0.8
    keep = np.array([(pool & (groups == g)).sum() for g in range(3)]) * np.array([1, 3, 7]) // 10
    masks = random_keep(pool, groups, keep, seeds=2000, rng=rng)
    assert not masks[:, ~pool].any()
    for g in range(3):
        assert (masks[:, groups == g].sum(axis=1) == keep[g]).all()
        freq = masks[:, pool & (groups == g)].mean(axis=0)          # each member kept with probability k / n
        assert np.allclose(freq, keep[g] / (pool & (groups == g)).sum(), atol=0.045)
    values = rng.normal(size=300)
    sums = random_keep_sums(values, pool, groups, keep, seeds=50, rng=np.random.default_rng(9))
    masks = random_keep(pool, groups, keep, seeds=50, rng=np.random.default_rng(9))
    for g in range(3):
        assert np.allclose(sums[:, g], (masks * values)[:, groups == g].sum(axis=1))
    with pytest.raises(ValueError, match="cannot keep"):
        random_keep(pool, groups, keep + 1000, seeds=2, rng=rng)


def test_p_random_counts_the_mode_as_one_draw():
    assert p_random(0.5, [0.0] * 99) == pytest.approx(0.01)
    assert p_random(-1.0, [0.0] * 99) == 1.0
    assert np.isnan(p_random(np.nan, [0.0]))


# --- the verdict table ---

def test_planted_selection_skill_gives_a_small_p_random_and_a_ci_above_zero():
    table = verdict_table(_inputs(0, skill=1.0), primary_mode="filter", seeds=1000, n_boot=500)
    pooled = table[(table["market"] == "all") & table["mode"].isin(MODES)].set_index("mode")
    for mode in MODES:
        assert pooled.loc[mode, "p_random"] < 0.01, mode
    for mode in ("filter", "replace", "expected_value"):
        assert pooled.loc[mode, "mean_r_lo"] > 0.0, mode
        assert pooled.loc[mode, "mean_r"] > pooled.loc[mode, "random_p95"], mode
    assert "Verdict: edge" in verdict_sentence(table)


def test_verdict_table_shape_primary_row_and_holm_families():
    pats = _inputs(1, skill=0.0, schemes=("pooled", "per_market"))
    table = verdict_table(pats, primary_mode="score_enhancement", seeds=300, n_boot=200)
    assert list(table.columns) == VERDICT_COLUMNS
    assert table["primary"].sum() == 1
    prim = table[table["primary"]].iloc[0]
    assert (prim["level"], prim["scheme"], prim["mode"], prim["market"]) == \
        ("pattern", "pooled", "score_enhancement", "all")
    assert prim["p_holm"] == prim["p_random"]
    family = (table["market"] == "all") & ~table["primary"] & table["p_random"].notna()
    assert np.allclose(table.loc[family, "p_holm"], holm(table.loc[family, "p_random"]))
    markets = table[(table["market"] != "all") & (table["mode"] == "replace") & (table["scheme"] == "per_market")]
    assert len(markets) == 6 and np.allclose(markets["p_holm"], holm(markets["p_random"]))
    assert table.loc[table["market"] != "all", "mde"].isna().all()
    assert table.loc[family, "mde"].gt(0).all()
    # per market, the mode's count is the random filters' count: both sides see the same patterns
    known = pats[pats["scheme"] == "pooled"].dropna(subset=["r_net"])
    n_filter = known[known["taken_filter"]].groupby("market").size()
    rows = table[(table["scheme"] == "pooled") & (table["mode"] == "filter") & (table["market"] != "all")]
    assert rows.set_index("market")["n"].to_dict() == n_filter.to_dict()
    assert verdict_table(pats, primary_mode="score_enhancement", seeds=300, n_boot=200).equals(table)
    text = format_verdict(table, markets=False)
    assert len(text) == (table["market"] == "all").sum() and (text[""] == "*").sum() == 1


def test_no_pooled_scheme_means_no_primary_test():
    table = verdict_table(_inputs(1, skill=0.0, schemes=("per_market",)), primary_mode="filter", seeds=100,
                          n_boot=0)
    assert not table["primary"].any()
    assert verdict_sentence(table).startswith("No primary test")


def test_random_decisions_give_a_uniform_p_random():
    """Decisions drawn at random within each market's pool: the pooled p_random is a valid p-value (uniform)."""
    reps = []
    for seed in range(20):
        base = _inputs(seed, skill=0.0)
        rng = np.random.default_rng(1000 + seed)
        for rep in range(5):                   # each replicate a "scheme", so one call judges them all
            pats = base.assign(scheme=f"s{seed}r{rep}")
            for mode in MODES:
                pool = pats["placeable"] & (pats["technical"] if POOLS[mode] == "technical" else True)
                pats[f"taken_{mode}"] = pool & (rng.random(len(pats)) < rng.uniform(0.2, 0.8))
            reps.append(pats)
    rows = pattern_rows(pd.concat(reps, ignore_index=True), seeds=200, n_boot=0, seed=5)
    ps = rows.loc[rows["mode"].isin(MODES) & (rows["market"] == "all"), "p_random"].to_numpy()
    assert len(ps) == 400
    assert stats.kstest(ps, "uniform").pvalue > 0.001
    assert 0.025 <= np.mean(ps < 0.05) <= 0.08
    assert 0.45 <= np.mean(ps < 0.5) <= 0.55


def test_null_calibration_on_random_walk_universes_20_seeds_x_4_modes():
    """Issue 12's null: p_random < 0.05 in at most 9 of 80 (seed, mode) pairs (binomial 99th pct of 5 %)."""
    hits = 0
    for seed in range(20):
        rows = pattern_rows(_inputs(seed, skill=0.0), seeds=500, n_boot=0, seed=seed)
        pooled = rows[(rows["market"] == "all") & rows["mode"].isin(MODES)]
        assert len(pooled) == 4
        hits += int((pooled["p_random"] < 0.05).sum())
    assert stats.binom.ppf(0.99, 80, 0.05) == 9
    assert hits <= 9, hits


def test_trade_level_rows_replay_the_one_position_rule_and_read_the_equity(tmp_path):
    pats, trades, equity = _inputs(2, skill=1.0, trades=True)
    table = verdict_table(pats, trades=trades, equity=equity, primary_mode="filter", seeds=300, trade_seeds=200,
                          n_boot=300)
    tr = table[table["level"] == "trade"]
    assert set(tr["mode"]) == {"baseline", *MODES}
    pooled = tr[tr["market"] == "all"].set_index("mode")
    assert pooled.loc["baseline", "n"] == len(trades[trades["mode"] == "baseline"])
    assert pooled.loc["baseline", ["random_median", "p_random"]].isna().all()
    for mode in ("filter", "replace", "expected_value"):
        assert pooled.loc[mode, "p_random"] < 0.02, mode
    # the equal-weight portfolio of per-market curves, each 1.0 at its start: total return by hand
    ends = equity[equity["mode"] == "filter"].groupby("dataset")["equity"].last()
    assert pooled.loc["filter", "total_return"] == pytest.approx((ends.mean() - 1) * 100)
    assert np.isfinite(pooled.loc["filter", "sharpe"]) and pooled.loc["filter", "max_drawdown"] <= 0
    path = write_verdict_csv(table, tmp_path / "verdict.csv")
    back = pd.read_csv(path)
    assert list(back.columns) == VERDICT_COLUMNS and len(back) == len(table)


def test_a_taken_pattern_outside_its_pool_is_refused():
    pats = _inputs(3, skill=0.0)
    pats.loc[~pats["technical"], "taken_filter"] = True
    with pytest.raises(ValueError, match="outside the mode's pool"):
        pattern_rows(pats, seeds=10, n_boot=0)
    with pytest.raises(ValueError, match="lacks columns"):
        pattern_rows(pats.drop(columns="technical"), seeds=10)
    naive = _inputs(3, skill=0.0)
    naive["known_at_utc"] = naive["known_at_utc"].dt.tz_localize(None)
    with pytest.raises(ValueError, match="tz-aware"):
        pattern_rows(naive, seeds=10)


# --- calibration ---

def test_ece_of_a_calibrated_model_sits_within_its_simulated_noise():
    rng = np.random.default_rng(3)
    p = np.clip(rng.beta(3, 5, 2243), 0.01, 0.99)
    assert calibrated_ece_quantile(p) == pytest.approx(0.035, abs=0.005)     # issue 12: "about 0.035 for 2,243"
    y = (rng.random(len(p)) < p).astype(float)
    good = calibration_report(y, p, n_boot=300, n_sim=500)
    assert good["within_noise"] == 1 and good["ece_sd"] > 0
    bad = calibration_report(y, np.clip(p * 1.5, 0, 1), n_boot=300, n_sim=500)    # overconfident
    assert bad["within_noise"] == 0 and bad["ece"] > good["ece"] + 3 * good["ece_sd"]


def test_ece_uses_equal_count_bins():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.1, 0.1, 0.1, 0.9, 0.9])
    # 3 equal-count bins by rank: {0.1, 0.1}, {0.1, 0.1}, {0.9, 0.9}: gaps 0.1, 0.4, 0.1
    assert expected_calibration_error(y, p, bins=3) == pytest.approx((0.1 + 0.4 + 0.1) / 3)
    with pytest.raises(ValueError, match="bins"):
        expected_calibration_error(y, p, bins=0)


def test_the_report_names_the_primary_test_and_shows_the_per_market_rows(tmp_path):
    from qml_plugin.report import write_report

    pats = _inputs(0, skill=1.0, schemes=("pooled", "per_market"))
    table = verdict_table(pats, primary_mode="expected_value", seeds=200, n_boot=100)
    rng = np.random.default_rng(0)
    p = rng.uniform(0.2, 0.6, 800)
    cal = calibration_report((rng.random(800) < p).astype(float), p, n_boot=100, n_sim=200)
    path = write_report(tmp_path / "report.html", title="universe", table=pd.DataFrame({"mode": ["baseline"]}),
                        equity={"baseline": pd.Series([1.0, 1.1], index=pd.date_range("2020-01-01", periods=2))},
                        verdict=table, verdict_calibration=cal)
    page = path.read_text()
    assert "Primary test (pooled scheme, expected_value mode, pattern level)" in page
    assert "Verdict: edge" in page
    assert "Per-market rows (" in page and ">RW05<" in page
    assert "200 random filters per pattern-level row" in page
    assert f"ECE {cal['ece']:.3f}" in page and "within that noise" in page


def test_equity_figures_by_hand():
    from qml_plugin.comparison import equal_weight_portfolio, equity_figures

    days = pd.date_range("2024-01-01", periods=4, freq="D")
    curve = pd.Series([1.0, 1.1, 0.99, 1.089], index=days)        # +10 %, -10 %, +10 %
    f = equity_figures(curve)
    rets = np.array([0.1, -0.1, 0.1])
    assert f["total_return"] == pytest.approx(8.9)
    assert f["max_drawdown"] == pytest.approx(-10.0)
    assert f["sharpe"] == pytest.approx(rets.mean() / rets.std(ddof=1) * np.sqrt(365.25))   # 4 days in 4 days
    late = pd.Series([1.0, 1.2], index=days[2:])
    both = equal_weight_portfolio([curve, late])                   # before its start a curve counts 1.0
    assert both.tolist() == pytest.approx([1.0, 1.05, 0.995, 1.1445])


def test_a_mode_that_keeps_its_whole_pool_made_no_choice_and_rows_keep_their_order():
    pats, trades, _ = _inputs(4, skill=0.0, trades=True)
    pats["taken_expected_value"] = pats["technical"] & pats["placeable"]      # no expected_r: the baseline
    trades = pd.concat([trades[trades["mode"] != "baseline"], trades[trades["mode"] == "baseline"]])
    table = verdict_table(pats, trades=trades, primary_mode="filter", seeds=100, trade_seeds=50, n_boot=0)
    ev = table[table["mode"] == "expected_value"]
    assert ev["p_random"].isna().all() and ev["p_holm"].isna().all()
    assert np.allclose(ev.loc[ev["level"] == "pattern", "random_median"], ev.loc[ev["level"] == "pattern", "mean_r"])
    for level in ("pattern", "trade"):
        rows = table[(table["level"] == level) & (table["market"] == "all")]
        assert rows["mode"].tolist() == ["baseline", *MODES]
    assert table["level"].tolist() == sorted(table["level"].tolist())            # pattern rows first
