"""``qml label --web``: a local page for labelling patterns by looking at them (SPEC §14).

People label shapes by looking at them. This page shows one unlabeled pattern at a time as an
interactive chart (:func:`qml_plugin.plot.plot_pattern`) with its ``ml_confidence``, ``expected_r``
and top feature contributions when the registry has them, and beside it the nearest labeled patterns
(:meth:`PatternRegistry.find_similar_patterns`) as small charts with their outcomes. Keys **W / L / I /
S** label win / loss / ignore or skip; a label goes through the registry's own ``label_pattern``, the
call the terminal labeller makes (``label_source = user``).

Security (the page can write to your registry):
- it binds **127.0.0.1 only**; there is no option to bind elsewhere;
- every request needs the random token printed in the URL (``?token=...``, or the ``X-QML-Token``
  header); without it the answer is 403;
- it serves **no files**: the page, its script and bokeh's JavaScript are built in memory (bokeh's
  INLINE resources, so it works with no internet); any other path is a 404, so there is nothing a
  ``../`` could reach.

HTTP is left to Starlette and uvicorn; charts to bokeh (``json_item`` + ``Bokeh.embed.embed_item``).

Choices where SPEC.md is silent:
- the registry stores a pattern's levels but not its swings, so the candles come from the data: the
  shipped dataset ``SYMBOL_TIMEFRAME`` or a frame passed in ``data=`` under that key. The pattern is found
  again by ``pattern_id`` among the patterns detected with ``params`` (default ``QMLParams()``), else by
  detection time and type; a pattern whose data cannot be found is shown with its numbers and no chart;
- skipped patterns are skipped for this page's session only (they stay unlabeled in the registry).
"""
from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from bokeh.embed import json_item
from bokeh.resources import INLINE
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..data import list_datasets, load_ohlcv
from ..errors import QMLError
from ..patterns import QMLParams, detect_patterns, label_patterns
from ..plot import plot_pattern
from ..registry import PatternRegistry
from .page import PAGE

__all__ = ["create_app", "new_token"]

_KEYS = {"w": "win", "l": "loss", "i": "ignore"}


def new_token() -> str:
    """A random URL-safe token (128 bits) for one labelling session."""
    return secrets.token_urlsafe(16)


class _TokenGate(BaseHTTPMiddleware):
    def __init__(self, app, token: str):
        super().__init__(app)
        self._token = token

    async def dispatch(self, request: Request, call_next):
        given = request.query_params.get("token") or request.headers.get("x-qml-token") or ""
        if not secrets.compare_digest(given.encode(), self._token.encode()):
            return Response("forbidden: this page needs the token printed by `qml label --web`", status_code=403,
                            media_type="text/plain")
        return await call_next(request)


class _Charts:
    """Finds a registry pattern's candles and swings again, one detection per dataset (memoized)."""

    def __init__(self, data: Mapping[str, pd.DataFrame] | None, params: QMLParams):
        self._data = dict(data or {})
        self._params = params
        self._patterns: dict[str, pd.DataFrame | None] = {}

    def _frame(self, key: str) -> pd.DataFrame | None:
        if key not in self._data:
            self._data[key] = load_ohlcv(key) if key in list_datasets() else None
        return self._data[key]

    def locate(self, row: Mapping[str, Any]) -> tuple[pd.DataFrame, pd.Series] | None:
        key = f"{row.get('symbol')}_{row.get('timeframe')}"
        df = self._frame(key)
        if df is None:
            return None
        if key not in self._patterns:
            pats = detect_patterns(df, self._params, symbol=row.get("symbol"), timeframe=row.get("timeframe"))
            self._patterns[key] = label_patterns(df, pats).set_index("pattern_id", drop=False) if len(pats) else None
        pats = self._patterns[key]
        if pats is None:
            return None
        if row["pattern_id"] in pats.index:
            return df, pats.loc[row["pattern_id"]]
        same = pats[(pats["detection_time"].astype(str) == str(row.get("detection_time"))[:19])
                    & (pats["pattern_type"] == row.get("pattern_type"))]
        if len(same) == 0:
            return None
        best = (same["entry"] - float(row.get("entry") or np.nan)).abs().fillna(np.inf).to_numpy().argmin()
        return df, same.iloc[best]

    def chart(self, row: Mapping[str, Any], *, small: bool = False) -> dict | None:
        found = self.locate(row)
        if found is None:
            return None
        df, p = found
        p = p.copy()
        if not small:  # the pattern being labelled: its outcome is what the user judges, so do not show it
            p[["fill_bar", "fill_price", "exit_bar", "exit_price", "r_multiple"]] = np.nan
        fig = plot_pattern(df, p, bars_before=30 if small else 60, width=340 if small else 900,
                           height=220 if small else 440, title=None if not small else
                           _small_title(row))
        if small:
            fig.toolbar_location = None
            fig.legend.visible = False
        return json_item(fig)


def _small_title(row: Mapping[str, Any]) -> str:
    r = row.get("r_multiple")
    r = "n/a" if r is None or (isinstance(r, float) and np.isnan(r)) else f"{float(r):+.2f}"
    return f"{row.get('symbol')} {row.get('outcome') or row.get('label')}  R {r}"


def _latest_prediction(reg: PatternRegistry, pattern_id: str) -> dict[str, Any] | None:
    """The newest logged prediction of a pattern (:meth:`PatternRegistry.latest_prediction`, the lookup the
    terminal labeller uses too), made JSON-safe: scores and top contributions as ``[feature, value]`` pairs."""
    pred = reg.latest_prediction(pattern_id)
    if pred is None:
        return None
    out = _jsonable({k: pred[k] for k in ("ml_confidence", "expected_r", "stop_risk", "decision", "model_id")})
    out["contributions"] = [[k, v] for k, v in pred["contributions"]]
    return out


def _jsonable(d: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not np.isfinite(v):
            v = None
        out[k] = v if isinstance(v, str | int | float | bool | type(None)) else str(v)
    return out


def create_app(db: str, *, token: str, data: Mapping[str, pd.DataFrame] | None = None,
               params: QMLParams | None = None, neighbours: int = 4) -> Starlette:
    """The labelling app for the registry ``db``; every request must carry ``token``."""
    charts = _Charts(data, params or QMLParams())
    with PatternRegistry(db):  # fail now, with the registry's own message, not on the first request
        pass

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE.replace("{{BOKEH}}", INLINE.render_js()).replace("{{TOKEN}}", json.dumps(token)))

    async def next_pattern(request: Request) -> JSONResponse:
        skip = {s for s in request.query_params.get("skip", "").split(",") if s}
        with PatternRegistry(db) as reg:
            todo = [p for p in reg.get_unlabeled_patterns(limit=len(skip) + 1) if p["pattern_id"] not in skip]
            if not todo:
                return JSONResponse({"done": True})
            p = todo[0]
            feats = reg.get_features(p["pattern_id"])
            near = []
            if feats:
                try:
                    near = reg.find_similar_patterns(feats, n=neighbours, exclude=p["pattern_id"])
                except QMLError:
                    near = []
            pred = _latest_prediction(reg, p["pattern_id"])
        body = {"done": False, "pattern": _jsonable(p), "chart": charts.chart(p), "prediction": pred,
                "neighbours": [{"info": _jsonable(nb), "chart": charts.chart(nb, small=True)} for nb in near]}
        return JSONResponse(body)

    async def label(request: Request) -> JSONResponse:
        try:
            payload = await request.json()
            pid, key = str(payload["pattern_id"]), str(payload["key"]).lower()
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "send JSON {pattern_id, key} with key one of w, l, i"}, status_code=400)
        if key not in _KEYS:
            return JSONResponse({"error": f"key {key[:20]!r} is not allowed; allowed: w, l, i"}, status_code=400)
        try:
            with PatternRegistry(db) as reg:
                reg.label_pattern(pid, _KEYS[key])
        except QMLError as e:
            return JSONResponse({"error": str(e)[:300]}, status_code=400)
        return JSONResponse({"pattern_id": pid, "user_label": _KEYS[key]})

    routes = [Route("/", index), Route("/api/next", next_pattern), Route("/api/label", label, methods=["POST"])]
    return Starlette(routes=routes, middleware=[Middleware(_TokenGate, token=token)])
