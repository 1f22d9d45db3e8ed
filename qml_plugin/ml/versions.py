"""Record a saved model version in the registry's ``ml_model_versions`` table.

One place turns a fitted :class:`~.model.SignalQualityModel` and its saved folder (XGBoost JSON +
metadata with sha256) into a registry row, for every producer of versions: ``qml train``, the
walk-forward models of ``qml run`` and the candidates of ``qml learn``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..registry import PatternRegistry
from .metrics import json_safe
from .model import METADATA_FILE, SignalQualityModel

__all__ = ["record_version"]


def record_version(reg: PatternRegistry, model: SignalQualityModel, path: str | Path, *, model_name: str,
                   status: str, metrics: dict | None = None, **overrides: Any) -> str:
    """Add the version saved at ``path`` to ``ml_model_versions``; return its ``model_id``.

    ``overrides`` replace or add columns (``validation_samples``, ``notes``, ``feature_schema`` ...).
    """
    path = Path(path)
    meta = json.loads((path / METADATA_FILE).read_text())
    fields = {"trained_on_start": str(model.trained_on_start_), "trained_on_end": str(model.trained_on_end_),
              "features_used": model.feature_names, "feature_schema": model.feature_schema_,
              "params": json_safe(model.xgb_params()), "metrics": json_safe(metrics or meta.get("metrics") or {}),
              "training_samples": int(model.training_samples_), "model_path": str(path.resolve()),
              "model_sha256": meta["model_sha256"]}
    return reg.add_model_version(model_name, status=status, **(fields | overrides))
