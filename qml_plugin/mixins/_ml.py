"""``MLFilterMixin``: the ``ml:`` block (SPEC §7, §13) applied to every ``buy()`` / ``sell()``.

The decision rule itself lives in :mod:`qml_plugin.filter` (modes, sizing bands), engine-free; the
kill switch in :mod:`._kill`. This module turns them into backtesting.py orders.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import MLConfig, parse_ml_block
from ..errors import ConfigError
from ..filter import band_decisions, decide, size_band, size_fraction
from ..scoring import decision_labels, score_or_baseline
from . import _kill, _plot
from ._signals import _SignalMixin

FEATURE_PREFIXES = ("ctx_", "geo_", "temp_", "vol_", "mom_", "volu_", "regime_")


class MLFilterMixin(_SignalMixin):
    """Applies the ``ml:`` block (SPEC §7, §13) to every ``buy()``/``sell()``; ``ml_config=None`` = off.

    After ``init()``, ``self.pattern_decisions`` holds, for each row of ``self.patterns`` (if the
    strategy has them), computed in one pass:

    * ``take`` (the order goes out), ``score`` (the mode's score, ranks patterns of one bar),
      ``ml_confidence``, ``expected_r``, ``stop_risk``;
    * ``band_size``: with ``ml.size_bands``, the fraction of the asked order size the bands give
      (NaN without bands); ``ml_decision``: ``take``, ``reduce_size`` (a band below 1) or
      ``skip``, the model's decision as the prediction log records it; ``acting``: whether that
      decision is in force (False with ML off, and after the kill switch tripped);
    * ``decision``: what the registry stores, ``pass:<mode>`` / ``reduce_size:<mode>`` /
      ``skip:<mode>`` (``technical`` with ML off; ``pass:technical`` / ``skip:technical`` or
      ``skip:halted`` for patterns detected after the kill switch tripped).

    **Sizing bands** (``ml.size_bands``): an order the mode takes is sized by the highest band its
    ``ml_confidence`` reaches (:func:`qml_plugin.filter.size_band`), as a fraction of the size the
    strategy asked for: a fraction of equity (backtesting.py's default, ~1.0 = all of it) is
    multiplied by it (0.5 = half the equity); a whole number of units is multiplied and rounded
    down, to at least 1 unit. Below the lowest band the order is skipped (``buy()`` returns None);
    a pattern the mode skips stays skipped.

    **Kill switch** (``ml.kill_switch``): see :mod:`qml_plugin.mixins._kill`; the trip is kept as
    ``self.ml_kill_switch`` (None until it trips).
    """

    ml_config = None  # a path to a YAML file holding the ml: block, or that block as a YAML string

    def _prepare(self) -> None:
        super()._prepare()
        self._ml = parse_ml_block(self.ml_config) if self.ml_config else MLConfig()
        self._ml_scorer = None
        self._ml_status = "off"
        pats = getattr(self, "patterns", None)
        if self._ml.enabled:
            self._ml_scorer, self._ml_status = score_or_baseline(
                self._ml, self.data.df, pats, getattr(self, "pattern_features", None),
                registry_db=getattr(self, "registry_db", None), regimes=getattr(self, "pattern_regimes", None))
        if pats is not None:
            s = self._ml_scorer
            nan = np.full(len(pats), np.nan)
            conf, exp_r, risk = ((getattr(s, h).reindex(pats["pattern_id"]).to_numpy()
                                  if s is not None and getattr(s, h) is not None else nan)
                                 for h in ("confidence", "expected_r", "stop_risk"))
            take, score = decide(pats["validity_score"].to_numpy(), conf, mode=self._mode,
                                 min_score=float(getattr(self, "min_score", 0.5)), ml_weight=self._ml.ml_weight,
                                 confidence_threshold=self._ml.confidence_threshold, expected_r=exp_r,
                                 min_expected_r=self._ml.min_expected_r)
            band = self._bands(conf, len(pats))
            take = take & ~(band <= 0)
            ml_decision = band_decisions(take, np.nan_to_num(band, nan=1.0))
            self.pattern_decisions = pd.DataFrame(
                {"take": take, "score": score, "ml_confidence": conf, "expected_r": exp_r, "stop_risk": risk,
                 "band_size": band, "ml_decision": ml_decision, "acting": self._mode is not None,
                 "decision": [f"{_registry_word(x)}:{self._mode or 'technical'}" for x in ml_decision]},
                index=pats.index)
            self._decision_rows = self.pattern_decisions.to_dict("records")  # O(1) lookups per order
        self.ml_kill_switch = None
        spec = self._ml.kill_switch
        # armed only while the model acts; read by the bar hook through the instance dict
        self._qml_kill = None
        if spec and self._mode is not None:
            first = None                           # the first bar a model scored a pattern on
            if pats is not None:
                scored = ~np.isnan(self.pattern_decisions["ml_confidence"].to_numpy())
                first = int(pats["detection_bar"].to_numpy()[scored].min()) if scored.any() else None
            self._qml_kill = _kill.KillSwitchState(spec, self.equity, armed_from=first)

    def _bands(self, conf, n: int) -> np.ndarray:
        """``band_size`` of each confidence (NaN: no bands, or ML not acting)."""
        if self._ml.size_bands is None or self._mode is None:
            return np.full(n, np.nan)
        return size_band(conf, self._ml.size_bands)

    def trade_band_sizes(self) -> np.ndarray:
        """The sizing band's fraction of each closed trade's asked size (1.0 where no band applied).

        Aligned with ``self.closed_trades``, hence with ``stats._trades``: what a scorer of the
        trades needs to give each its equity share (``FULL_SIZE * fraction``).
        """
        band = {s["row"]["pattern_id"]: s.get("band_size") for s in self._signals if s["take"]}
        out = np.array([band.get(pid, np.nan) if pid is not None else np.nan for pid in self.trade_pattern_ids()],
                       dtype=float)
        return np.where(np.isnan(out), 1.0, out)

    def _kill_switch_check(self, bar: int) -> None:
        """Called by the bar hook before ``next()`` at ``bar`` while the switch is armed (see ``_kill``)."""
        trip = _kill.check(self, self._qml_kill, bar)
        if trip is None:
            return
        self.ml_kill_switch = trip
        self._qml_kill = None                      # tripped: no more checks
        pats = getattr(self, "patterns", None)
        if pats is not None and len(pats):
            d = self.pattern_decisions
            after = pats["detection_bar"].to_numpy() >= trip["bar"]
            if trip["action"] == "halt":
                take, score, word = np.zeros(len(pats), bool), d["score"].to_numpy(), "skip:halted"
            else:
                take, score = decide(pats["validity_score"].to_numpy(), np.nan, mode=None,
                                     min_score=float(getattr(self, "min_score", 0.5)))
                word = None
            d["take"] = np.where(after, take, d["take"].to_numpy())
            d["score"] = np.where(after, score, d["score"].to_numpy())
            d["acting"] = d["acting"].to_numpy() & ~after
            tech = word or np.where(d["take"].to_numpy(), "pass:technical", "skip:technical")
            d["decision"] = np.where(after, tech, d["decision"].to_numpy())
            d.loc[after, "band_size"] = np.nan
            self._decision_rows = d.to_dict("records")
        self._decisions_changed()

    def _declare_overlays(self) -> None:
        super()._declare_overlays()
        pats = getattr(self, "patterns", None)
        if self._mode is not None and pats is not None and len(pats):
            conf = self.pattern_decisions["ml_confidence"].to_numpy()
            _plot.declare_score(self, pats["detection_bar"].to_numpy(), conf)

    @property
    def _mode(self) -> str | None:
        return self._ml.prediction_mode if self._ml_scorer is not None else None

    @property
    def predictions(self) -> pd.DataFrame | None:
        """This backtest's scoring events, ready for ``PatternRegistry.log_predictions(frame, run_id=...)``
        (:meth:`qml_plugin.scoring.Scorer.prediction_frame`: each scored pattern with its model version,
        decision and top contributions; canary / shadow versions with ``acting`` False). None with ML off.
        The registry mixin writes them with its registrations, or leaves them here in collect mode."""
        s = self._ml_scorer
        if s is None:
            return None
        done = self.__dict__.get("_predictions_at")     # after the last bar nothing changes: build it once
        if done is not None and done[0] == len(self.data):
            return done[1]
        pats, d = getattr(self, "patterns", None), getattr(self, "pattern_decisions", None)
        dec, v, acting = pd.Series(dtype=object), None, None
        if pats is not None and d is not None:
            ids = pats["pattern_id"].to_numpy()
            dec = pd.Series(decision_labels(d), index=ids)
            v = pd.Series(pats["validity_score"].to_numpy(float), index=ids)
            acting = pd.Series(d["acting"].to_numpy(dtype=bool), index=ids) if "acting" in d.columns else None
        signals = [x for x in getattr(self, "_signals", []) if x["row"]["pattern_id"] not in dec.index]
        if signals:                    # tag-row signals: the model's own word (reduce_size under bands), else take
            extra = pd.DataFrame({"take": [bool(x.get("take", str(x.get("decision")).startswith("pass")))
                                           for x in signals],
                                  "ml_decision": [x.get("ml_decision") for x in signals]})
            dec = pd.concat([dec, pd.Series(decision_labels(extra), index=[x["row"]["pattern_id"] for x in signals])])
        rule = dict(min_score=float(getattr(self, "min_score", 0.5)), ml_weight=self._ml.ml_weight,
                    confidence_threshold=self._ml.confidence_threshold, min_expected_r=self._ml.min_expected_r)
        frame = s.prediction_frame(dec[~dec.index.duplicated(keep="last")], mode=self._ml.prediction_mode,
                                   validity_score=v, rule=rule, acting=acting)
        if len(self.data) == getattr(self, "_n_bars", -1):
            self._predictions_at = (len(self.data), frame)
        return frame

    @property
    def ml_status(self) -> str:
        """``off``, ``out-of-sample``, ``IN-SAMPLE`` or ``baseline: <why>``: shown in every output."""
        return self._ml_status

    def _ml_decide(self, row: dict, direction: int) -> dict:
        pid = row["pattern_id"]
        known = pid in self._pattern_index and hasattr(self, "_decision_rows")
        if self.ml_kill_switch is not None:
            return self._after_trip(row, direction, known)
        if known:
            out = dict(self._decision_rows[self._pattern_index[pid]])
        elif self._mode is None:
            return super()._ml_decide(row, direction)
        else:
            heads = self._score_row(row)
            conf = heads["ml_confidence"]
            v = row.get("validity_score")
            min_score = float(getattr(self, "min_score", 0.5))
            if v is None or pd.isna(v):  # a signal without a technical score: the technical rule passes it
                v = max(min_score, 0.0)
            take, score = decide([v], [conf], mode=self._mode, min_score=min_score, ml_weight=self._ml.ml_weight,
                                 confidence_threshold=self._ml.confidence_threshold, expected_r=[heads["expected_r"]],
                                 min_expected_r=self._ml.min_expected_r)
            band = self._bands([conf], 1)
            take = take & ~(band <= 0)
            ml_decision = band_decisions(take, np.nan_to_num(band, nan=1.0))[0]
            kill = self._qml_kill
            if kill is not None and kill.armed_from == _kill.NOT_ARMED and not np.isnan(conf):
                kill.armed_from = len(self.data) - 1      # a row given at run time: armed from its bar
            out = {"take": bool(take[0]), "ml_confidence": conf, "score": float(score[0]),
                   "expected_r": heads["expected_r"], "stop_risk": heads["stop_risk"], "band_size": float(band[0]),
                   "ml_decision": ml_decision, "acting": True,
                   "decision": f"{_registry_word(ml_decision)}:{self._mode}"}
        if self._ml.size_by_score and out["take"] and self._mode is not None:
            out["size"] = float(size_fraction([out["score"]])[0])
        return out

    def _after_trip(self, row: dict, direction: int, known: bool) -> dict:
        """An order after the kill switch tripped: the technical rule (``baseline``) or none (``halt``).

        The model is not asked again; a known pattern keeps the record of what the model said."""
        if known:
            out = dict(self._decision_rows[self._pattern_index[row["pattern_id"]]])
        else:
            out = {**super()._ml_decide(row, direction), "ml_decision": None}
        v = row.get("validity_score")
        technical = v is None or pd.isna(v) or v >= float(getattr(self, "min_score", 0.5))
        halt = self.ml_kill_switch["action"] == "halt"
        out.update(take=bool(technical and not halt), acting=False, band_size=np.nan,
                   decision="skip:halted" if halt else f"{'pass' if technical else 'skip'}:technical")
        out.pop("size", None)
        return out

    def _score_row(self, row: dict) -> dict[str, float]:
        feats = {k: v for k, v in row.items() if str(k).startswith(FEATURE_PREFIXES)}
        if not feats:
            raise ConfigError(
                f"signal {row['pattern_id']!r} at {row['detection_time']} has no features for the ML filter: "
                f"pass a tag row with the model's feature columns ({', '.join(FEATURE_PREFIXES)}...)")
        return self._ml_scorer.score_row_heads(row)


def _registry_word(ml_decision: str) -> str:
    """The registry's word for a decision: ``pass`` (as before sizing bands), ``reduce_size`` or ``skip``."""
    return "pass" if ml_decision == "take" else ml_decision
