"""backtesting.py integration: register every signal, and filter it with the ML model.

Two drop-in mixins for any :class:`backtesting.Strategy`, QML or not. Adding them needs no other
change to the strategy (SPEC §6): they hook ``init()`` and ``next()`` themselves, keep the
strategy's own order tags, and work on any index backtesting.py accepts::

    class MyStrategy(PatternRegistryMixin, MLFilterMixin, Strategy):
        def init(self):                          # no super().init() needed
            ...
        def next(self):
            if signal:
                self.buy(sl=..., tp=..., tag={"pattern_type": "my_setup", "validity_score": 0.7})

``buy()`` / ``sell()`` keep backtesting.py's signature. Before an order goes out, the signal it is
for is resolved to a *pattern row*: the ``tag`` itself when it is a row (dict / Series) or a known
``pattern_id``, else the pattern the strategy detected at the current bar in the order's direction
(``self.patterns``, if the strategy has one), else a row made from the bar and the side. Then:

* :class:`MLFilterMixin` applies the ``ml:`` mode (:func:`qml_plugin.filter.decide`) and skips
  (returns None), sizes or passes the order. Scores of the strategy's own patterns are computed
  once, after ``init()``, in one batch; a row given at run time is scored when its order is placed
  (one call per order, never per bar). A row without the model's features is a :class:`ConfigError`.
* :class:`PatternRegistryMixin` keeps the pattern, its features, its ``ml_confidence`` and the
  decision in memory and writes everything once, after the last bar, together with the outcomes of
  trades closed so far (``label_source="trade"``); with ``registry_db=None`` it writes nothing and
  leaves :class:`Registrations` on the strategy (collect mode, SPEC §12). Trades that
  backtesting.py closes after the last ``next()`` get their outcome from :func:`record_run`.

The order goes out through ``super().buy()`` / ``super().sell()``, tagged with the user's own tag if
it has one, else with the ``pattern_id``: so ``stats._trades["Tag"]`` is the pattern id exactly when
the strategy did not tag it otherwise, and the mixins join trades to patterns through their own
record of which order was for which pattern (:meth:`PatternRegistryMixin.trade_pattern_ids`).
With a strategy that has ``self.patterns``, the patterns are declared with ``self.I()`` so
``bt.plot()`` draws them (QML level, head, break level, entry / stop / target while each pattern's
order is live, and the ML score as its own panel when ML is on).

Settings are class attributes, so ``Backtest.run(**kw)`` and ``optimize`` can set them per run.
No private attribute of backtesting.py is read.
"""
from ._ml import MLFilterMixin
from ._registry import PatternRegistryMixin, Registrations, record_run, write_registrations
from ._signals import series_identity

__all__ = ["PatternRegistryMixin", "MLFilterMixin", "Registrations", "record_run", "write_registrations",
           "series_identity"]
