"""Regime models (SPEC §13, issue 14): one model per regime with enough labels, the pooled one elsewhere,
inside the walk-forward trainer. Planted: the effect of a feature flips sign between regimes."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from qml_plugin.ml import SignalQualityModel
from qml_plugin.ml.walkforward import train_walk_forward


def _universe(flip: bool, n=2400, seed=7):
    rng = np.random.default_rng(seed)
    regime = rng.choice(["trending", "ranging", "volatile"], size=n, p=[0.48, 0.48, 0.04])
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=["ctx_a", "ctx_b", "ctx_c", "ctx_d"])
    sign = np.where((regime == "ranging") & flip, -1.0, 1.0)
    p = 1 / (1 + np.exp(-2.0 * sign * X["ctx_a"].to_numpy()))
    y = (rng.random(n) < p).astype(float)
    known = pd.date_range("2015-01-01", periods=n, freq="1D")
    exits = known + pd.Timedelta("3D")
    return X, y, p, regime, known, exits


def _fit(tmp_path, name, flip, regime_models):
    X, y, p, regime, known, exits = _universe(flip)
    wf = train_walk_forward(X, y, known, exits, root=tmp_path / name, every_months=12, min_labels=200,
                            embargo=pd.Timedelta("1D"), regimes=regime if regime_models else None,
                            min_regime_labels=100,
                            model_factory=lambda: SignalQualityModel(n_estimators=60, calibration=None))
    scored = wf.oos_proba.notna().to_numpy()
    return wf, roc_auc_score(y[scored], wf.oos_proba[scored]), roc_auc_score(y[scored], p[scored]), regime


@pytest.mark.parametrize("flip", [True, False], ids=["sign flips", "regimes do not matter"])
def test_regime_models_win_out_of_sample_only_where_regimes_matter(tmp_path, flip):
    pooled, auc_pooled, ceiling, _ = _fit(tmp_path, "pooled", flip, False)
    by_regime, auc_regime, _, regime = _fit(tmp_path, "regimes", flip, True)
    # trending and ranging have their own models; volatile (~4 %, < 100 labels) uses the pooled one
    assert by_regime.regime_models == ["ranging", "trending"] and pooled.regime_models == []
    assert set(by_regime.model_family) == {"pooled", "ranging", "trending"}
    if flip:
        assert auc_pooled < 0.6 and auc_regime > ceiling - 0.06 and auc_regime > auc_pooled + 0.15
    else:
        assert abs(auc_regime - auc_pooled) < 0.03, (auc_regime, auc_pooled)
    # every regime model was trained on its own regime only, before the patterns it scored
    for model, family in zip(by_regime.models, by_regime.model_family, strict=True):
        if family != "pooled":
            assert model.training_samples_ >= 100
