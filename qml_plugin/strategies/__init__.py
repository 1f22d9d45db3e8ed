"""Ready strategies that users run as they are or subclass: ``from qml_plugin.strategies import QMLStrategy``.

They live inside the package (SPEC §0), so the wheel installs no top-level ``strategies`` module that
could shadow, or be shadowed by, a user's own ``strategies/`` folder. A config's ``strategy.class``
is looked up here only (``qml_plugin.strategies.QMLStrategy``), or in a module the user names on the
command line; the old spelling ``strategies.qml_strategy.QMLStrategy`` still resolves, with a
``DeprecationWarning`` (see :func:`qml_plugin.cli.common.resolve_strategy`).
"""
from .qml_strategy import QMLStrategy

__all__ = ["QMLStrategy"]
