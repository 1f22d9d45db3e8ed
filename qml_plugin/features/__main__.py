"""``python -m qml_plugin.features [--list | --markdown]``."""
from .docs import main

raise SystemExit(main())
