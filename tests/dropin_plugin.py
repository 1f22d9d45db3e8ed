"""pytest plugin: run backtesting.py's own test suite with the qml mixins added to every test strategy.

Loaded with ``-p dropin_plugin`` by ``tests/test_dropin.py`` (never by our own suite). The
environment chooses the run:

* ``QML_DROPIN=none``: the suite as shipped (the reference);
* ``QML_DROPIN=off`` / ``on``: every ``Strategy`` subclass that the suite's module defines (at import
  or inside a test) gets ``PatternRegistryMixin, MLFilterMixin`` prepended to its bases, exactly as a
  user would write ``class SmaCross(PatternRegistryMixin, MLFilterMixin, Strategy)``, with
  ``register_patterns`` off or on (writing to ``QML_DROPIN_DB``), ML off.

Every test's outcome (subtests included) and the names of the classes given the mixins are
written as JSON to ``QML_DROPIN_OUT``.
"""
from __future__ import annotations

import json
import os

MODE = os.environ.get("QML_DROPIN", "none")
_outcomes: dict[str, str] = {}
_injected: list[str] = []


def _inject(register: bool, registry_db: str) -> None:
    from backtesting import Strategy

    from qml_plugin.mixins import MLFilterMixin, PatternRegistryMixin

    _SignalMixin = next(c for c in PatternRegistryMixin.__mro__ if c.__name__ == "_SignalMixin")

    PatternRegistryMixin.register_patterns = register
    PatternRegistryMixin.registry_db = registry_db
    MLFilterMixin.ml_config = None
    hook_mixins = _SignalMixin.__init_subclass__.__func__

    def __init_subclass__(cls, **kwargs):
        # the suite's own classes only; `in __mro__`, not issubclass(): ABCMeta caches issubclass answers
        if cls.__module__.rsplit(".", 1)[-1] == "_test" and _SignalMixin not in cls.__mro__:
            cls.__bases__ = (PatternRegistryMixin, MLFilterMixin, *cls.__bases__)
            _injected.append(cls.__qualname__)
            hook_mixins(cls, **kwargs)   # what subclassing the mixins does: hook init() and next()
            return
        super(Strategy, cls).__init_subclass__(**kwargs)

    Strategy.__init_subclass__ = classmethod(__init_subclass__)


def pytest_configure(config):
    if MODE in ("off", "on"):
        _inject(MODE == "on", os.environ["QML_DROPIN_DB"])


def pytest_runtest_logreport(report):
    ctx = getattr(report, "context", None)
    key = report.nodeid
    if ctx is not None:
        key += f" [{ctx.msg}] {dict(sorted(ctx.kwargs.items()))}"
    if report.outcome == "failed":
        _outcomes[key] = "failed"
    elif report.outcome == "skipped":
        _outcomes.setdefault(key, "skipped")
    elif report.when == "call":
        _outcomes.setdefault(key, "passed")


def pytest_sessionfinish(session, exitstatus):
    out = os.environ.get("QML_DROPIN_OUT")
    if out:
        with open(out, "w") as f:
            json.dump({"mode": MODE, "injected": sorted(set(_injected)), "outcomes": _outcomes}, f,
                      indent=1, sort_keys=True)
