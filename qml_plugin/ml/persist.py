"""Saving and loading a :class:`~.model.SignalQualityModel`: XGBoost JSON + JSON metadata, no pickle.

A model directory holds one XGBoost native JSON file per head (``model.json`` for ``ml_confidence``,
``expected_r.json``, ``stop_risk.json``) and ``metadata.json``: features in order, schema hash,
training period, params, metrics, calibrators, the winsorizing bounds of ``expected_r``, and the
sha256 of every head file and of the metadata itself. Loading never executes code: it parses JSON
and lets XGBoost read its own format. Anything wrong (a file edited after saving, a missing or
malformed metadata key, a file XGBoost cannot read) is a :class:`~qml_plugin.errors.ModelError`,
so ``ml.on_model_error: baseline`` can trade unfiltered instead of crashing. Versions live in
``models/signal_quality/v0001/``, ``v0002/`` ...

    >>> sorted(HEAD_FILES.values())
    ['expected_r.json', 'model.json', 'stop_risk.json']
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn
import xgboost as xgb

from ..errors import ModelError
from .metrics import json_safe

__all__ = ["MODEL_FILE", "METADATA_FILE", "HEAD_FILES", "REQUIRED_KEYS", "save", "load", "claim_version_dir"]

MODEL_FILE = "model.json"
"""XGBoost's native JSON model of the ``ml_confidence`` head inside a model directory."""
METADATA_FILE = "metadata.json"
"""The metadata next to it: ``json.loads(Path(d, METADATA_FILE).read_text())["features"]``."""
HEAD_FILES = {"confidence": MODEL_FILE, "expected_r": "expected_r.json", "stop_risk": "stop_risk.json"}
"""One file per head."""
REQUIRED_KEYS = ("format", "format_version", "model_name", "version", "features", "n_features", "feature_schema",
                 "trained_on_start", "trained_on_end", "training_samples", "base_rate", "init_params", "heads",
                 "metrics", "model_sha256", "metadata_sha256")
"""Keys a metadata file must have (format version 2)."""
_FORMAT = "qml-plugin/signal-quality"
_VERSION_DIR = re.compile(r"^v(\d+)$")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _metadata_digest(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != "metadata_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def missing_features_error(missing: list[str], where: str) -> ModelError:
    shown = ", ".join(missing[:25]) + (f" ... ({len(missing) - 25} more)" if len(missing) > 25 else "")
    return ModelError(f"{where} lacks {len(missing)} feature(s) the model was trained on: {shown}. "
                      "Retrain the model on the current feature set, or use the extractor version it was trained with")


def save(model: Any, folder: Path, *, metrics: dict | None, overwrite: bool) -> Path:
    if (folder / METADATA_FILE).exists() and not overwrite:
        raise FileExistsError(f"{folder} already holds a model; pass overwrite=True or use save_version()")
    match = _VERSION_DIR.match(folder.name)
    heads = {h: {"file": HEAD_FILES[h], "sha256": None, "objective": model.xgb_params(h)["objective"],
                 "calibration": model.calibrations_.get(h)} for h in model.heads_}
    meta = {
        "format": _FORMAT, "format_version": 2, "model_name": model.model_name,
        "version": int(match.group(1)) if match else None,
        "features": model.feature_names, "n_features": int(model.n_features_in_),
        "feature_schema": model.feature_schema_,
        "trained_on_start": json_safe(model.trained_on_start_), "trained_on_end": json_safe(model.trained_on_end_),
        "training_samples": int(model.training_samples_), "base_rate": model.base_rate_,
        "init_params": json_safe(model.get_params()), "params": json_safe(model.xgb_params()),
        "metrics": json_safe(metrics if metrics is not None else getattr(model, "metrics_", {}) or {}),
        "heads": heads, "r_clip": model.r_clip_, "calibration": model.calibrations_.get("confidence"),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "xgboost_version": xgb.__version__, "sklearn_version": sklearn.__version__,
        "model_file": MODEL_FILE, "model_sha256": None,
    }
    json.dumps(meta, allow_nan=False)                    # not JSON? fail before writing anything
    folder.mkdir(parents=True, exist_ok=True)
    for head, info in heads.items():
        target = folder / info["file"]
        model.boosters_[head].save_model(str(target))
        info["sha256"] = sha256_file(target)
    meta["model_sha256"] = heads["confidence"]["sha256"]
    meta["metadata_sha256"] = _metadata_digest(meta)
    tmp = folder / (METADATA_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, allow_nan=False))
    os.replace(tmp, folder / METADATA_FILE)
    return folder


def claim_version_dir(root: Path) -> Path:
    """Create and return the next free ``root/vNNNN`` (an atomic mkdir, safe between processes)."""
    root.mkdir(parents=True, exist_ok=True)
    while True:
        taken = [int(m.group(1)) for p in root.iterdir() if (m := _VERSION_DIR.match(p.name))]
        folder = root / f"v{max(taken, default=0) + 1:04d}"
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder


def _read_metadata(folder: Path) -> dict:
    meta_file = folder / METADATA_FILE
    if not meta_file.is_file():
        raise ModelError(f"{meta_file} is missing: a model directory needs {MODEL_FILE} and {METADATA_FILE}")
    try:
        meta = json.loads(meta_file.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{meta_file} is not valid JSON ({exc}); the metadata was damaged") from exc
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise ModelError(f"{meta_file} is not a qml-plugin signal-quality model (format {_FORMAT!r} expected)")
    if meta.get("format_version") == 1 and "heads" not in meta:     # one-head models of earlier releases
        meta = {**meta, "heads": {"confidence": {"file": meta.get("model_file", MODEL_FILE),
                                                 "sha256": meta.get("model_sha256"),
                                                 "calibration": meta.get("calibration")}}}
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ModelError(f"{meta_file} lacks the key(s) {missing}: not a complete model metadata file "
                         f"(needs {list(REQUIRED_KEYS)}); retrain or restore the model")
    if meta["metadata_sha256"] != _metadata_digest({k: v for k, v in meta.items() if k != "heads"}
                                                   if meta.get("format_version") == 1 else meta):
        raise ModelError(f"{meta_file}: metadata sha256 does not match the recorded {meta['metadata_sha256']}; "
                         "the metadata was edited after saving")
    return meta


def load(cls: type, path: Path, *, version: int | None = None) -> Any:
    folder = _model_dir(path, version)
    meta = _read_metadata(folder)
    meta_file = folder / METADATA_FILE
    try:
        features, n = list(map(str, meta["features"])), int(meta["n_features"])
        heads = dict(meta["heads"])
        if "confidence" not in heads or not set(heads) <= set(HEAD_FILES):
            raise ValueError(f"heads must include 'confidence' and be among {list(HEAD_FILES)}, got {list(heads)}")
        model = cls(**meta["init_params"])
    except (TypeError, ValueError, AttributeError) as exc:
        raise ModelError(f"{meta_file}: malformed metadata ({exc})") from exc
    boosters, calibrations = {}, {}
    for head, info in heads.items():
        try:
            file, recorded = folder / str(info["file"]), info["sha256"]
        except (TypeError, KeyError) as exc:
            raise ModelError(f"{meta_file}: head {head!r} lacks 'file' / 'sha256'") from exc
        if not file.is_file():
            raise ModelError(f"{file} is missing (the metadata in {folder} refers to it)")
        actual = sha256_file(file)
        if actual != recorded:
            raise ModelError(f"{file}: sha256 {actual} does not match metadata sha256 {recorded}; "
                             "the file was modified after saving, refusing to load it")
        booster = xgb.Booster()
        try:
            booster.load_model(str(file))
        except (xgb.core.XGBoostError, ValueError, OSError, UnicodeDecodeError) as exc:
            raise ModelError(f"{file} is not a model XGBoost can read: {str(exc)[:200]}") from exc
        if booster.num_features() != n or len(features) != n:
            raise ModelError(f"{file} has {booster.num_features()} features but its metadata lists {len(features)}")
        booster.set_param({"nthread": model.n_jobs})
        boosters[head], calibrations[head] = booster, info.get("calibration")
    model.boosters_, model.calibrations_, model.heads_ = boosters, calibrations, list(boosters)
    model.classes_ = np.array([0, 1])
    model.r_clip_ = tuple(meta["r_clip"]) if meta.get("r_clip") else None
    model.feature_names_in_, model.n_features_in_ = np.asarray(features, dtype=object), n
    model.training_samples_, model.base_rate_ = meta["training_samples"], meta["base_rate"]
    model.feature_schema_ = meta["feature_schema"]
    try:
        model.trained_on_start_, model.trained_on_end_ = (
            pd.Timestamp(v) if isinstance(v, str) else v for v in (meta["trained_on_start"], meta["trained_on_end"]))
    except ValueError as exc:
        raise ModelError(f"{meta_file}: trained_on_start / trained_on_end are not times ({exc})") from exc
    model.version_, model.metrics_, model.metadata_ = meta["version"], meta["metrics"], meta
    return model


def _model_dir(path: Path, version: int | None) -> Path:
    if path.is_file():
        return path.parent
    if not path.is_dir():
        raise ModelError(f"no model at {path}: expected a model directory, its {MODEL_FILE}, or a directory "
                         "of versions v0001, v0002 ...")
    if version is None and ((path / METADATA_FILE).exists() or (path / MODEL_FILE).exists()):
        return path
    versions = {int(m.group(1)): p for p in path.iterdir() if (m := _VERSION_DIR.match(p.name)) and p.is_dir()}
    if version is not None:
        if int(version) not in versions:
            raise ModelError(f"version {version} not found in {path}; available: {sorted(versions) or 'none'}")
        return versions[int(version)]
    complete = [v for v, p in versions.items() if (p / METADATA_FILE).is_file()]
    if not complete:
        raise ModelError(f"{path} holds no saved model ({METADATA_FILE} missing and no complete version v0001 ...)")
    return versions[max(complete)]
