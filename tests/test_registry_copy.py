"""``qml registry copy`` (SPEC §5): a whole registry into an empty one on another backend, and back.

With ``registry_db`` on PostgreSQL this is SQLite -> PostgreSQL -> SQLite; on SQLite, file to file.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qml_plugin.cli.main import main
from qml_plugin.errors import RegistryError
from qml_plugin.registry import PatternRegistry
from qml_plugin.registry.transfer import copy_registry


def fill(db):
    """Every kind of row: two feature sets, all label sources, versions, evaluations, predictions."""
    rng = np.random.default_rng(3)
    n = 120
    det = pd.date_range("2022-01-03", periods=n, freq="4h")
    p = pd.DataFrame({"pattern_id": [f"c{i}" for i in range(n)], "symbol": np.where(np.arange(n) % 3, "EURUSD", "BTC"),
                      "timeframe": "4h", "pattern_type": "bullish_qml", "direction": 1, "detection_time": det,
                      "known_at_utc": det + pd.Timedelta("4h"), "validity_score": rng.random(n),
                      "label": (rng.random(n) < 0.5).astype(float), "r_multiple": rng.normal(0.2, 1.2, n),
                      "exit_reason": np.where(rng.random(n) < 0.5, "stop", "target"),
                      "exit_time": det + pd.Timedelta("1D"), "exit_known_at_utc": det + pd.Timedelta("28h")})
    p.loc[::7, ["label", "r_multiple", "exit_reason"]] = np.nan, np.nan, None
    f = pd.DataFrame(rng.normal(size=(n, 6)), columns=[f"ctx_{j}" for j in range(6)])
    with PatternRegistry(db) as reg:
        reg.register_patterns(p.iloc[:100], f.iloc[:100], run_id="r1", ml_confidence=rng.random(100))
        reg.register_patterns(p.iloc[100:], f.iloc[100:, :4].set_axis(p.index[100:]).rename(columns=str.upper))
        reg.record_outcomes(p.iloc[:5][["pattern_id"]].assign(label=1.0, r_multiple=2.0, label_source="trade"))
        reg.label_pattern("c1", "loss")
        reg.label_pattern("c2", "ignore")
        v1 = reg.add_model_version("sq", metrics={"auc": 0.6}, features_used=list(f.columns), status="production")
        reg.add_model_version("sq", status="shadow", params={"max_depth": 3})
        reg.add_eval("sq", "promote", candidate_version=1, metrics={"auc": 0.6})
        reg.log_predictions(pd.DataFrame({"pattern_id": ["c0", "c3", "c4"], "ml_confidence": [0.7, 0.4, 0.55],
                                          "decision": ["take", "skip", "reduce_size"],
                                          "contributions": [{"ctx_0": 0.3}, None, {"ctx_1": -0.2}]}),
                            model_id=v1, mode="filter", run_id="r1")
    return f.iloc[9].to_dict()


def snapshot(db, query):
    with PatternRegistry(db) as reg:
        X, t = reg.get_training_data(min_labels=1, targets=True)
        stats = {k: v for k, v in reg.get_statistics().items() if k != "db"}
        return {"X": X, "t": t, "stats": stats, "patterns": [reg.get_pattern(f"c{i}") for i in range(120)],
                "versions": reg.list_model_versions(), "evals": reg.eval_history(),
                "predictions": reg.get_predictions(), "perf": reg.prediction_performance(),
                "similar": reg.find_similar_patterns(query, n=5)}


def same(a, b):
    pd.testing.assert_frame_equal(a["X"], b["X"])
    pd.testing.assert_frame_equal(a["t"], b["t"])
    pd.testing.assert_frame_equal(a["predictions"], b["predictions"])
    pd.testing.assert_frame_equal(a["perf"], b["perf"])
    for k in ("stats", "patterns", "versions", "evals"):
        assert a[k] == b[k], k
    assert [{**s, "distance": pytest.approx(s["distance"], rel=1e-12)} for s in a["similar"]] == b["similar"]


def test_copy_to_another_backend_and_back_keeps_every_row_and_answer(tmp_path, registry_db, capsys):
    origin = str(tmp_path / "origin.db")
    query = fill(origin)
    before = snapshot(origin, query)
    assert main(["registry", "copy", "--from", origin, "--to", registry_db]) == 0
    out = capsys.readouterr().out
    assert "ml_pattern_registry           120 rows (counts match)" in out and "ml_predictions" in out
    same(before, snapshot(registry_db, query))
    back = str(tmp_path / "back.db")
    assert copy_registry(registry_db, back) == {"feature_sets": 2, "ml_pattern_registry": 120,
                                                "ml_model_versions": 2, "ml_eval_history": 1, "ml_predictions": 3}
    same(before, snapshot(back, query))
    with PatternRegistry(registry_db) as reg:                       # the copy keeps working as a registry
        reg.add_eval("sq", "reject", candidate_version=2)
        reg.register_patterns(pd.DataFrame({"pattern_id": ["new"], "symbol": ["X"]}),
                              pd.DataFrame({"brand_new": [1.0]}))
        assert [e["eval_id"] for e in reg.eval_history()] == [1, 2]


def test_copy_refuses_a_target_that_is_not_empty_and_writes_nothing(tmp_path, registry_db):
    origin = str(tmp_path / "origin.db")
    fill(origin)
    with PatternRegistry(registry_db) as reg:
        reg.add_model_version("other")
    with pytest.raises(RegistryError, match=r"target .* is not empty \(\{'ml_model_versions': 1\}\)"):
        copy_registry(origin, registry_db)
    with PatternRegistry(registry_db) as reg:
        assert reg.get_statistics()["total"] == 0
    with pytest.raises(RegistryError, match="same registry"):
        copy_registry(origin, f"sqlite:///{origin}")
    missing = tmp_path / "nowhere" / "x.db"
    with pytest.raises(RegistryError, match=r"no registry at '.*nowhere/x\.db' to copy from"):
        copy_registry(str(missing), registry_db)
    assert not missing.parent.exists()
