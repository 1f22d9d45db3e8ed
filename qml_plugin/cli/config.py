"""``qml config schema [run|sweep|optimize]`` and ``qml config check FILE...``: the config contract from the shell.

    $ qml config schema sweep > sweep.schema.json     # JSON Schema for an editor (e.g. yaml-language-server)
    $ qml config check configs/*.yaml                  # validate files; the kind is inferred from the keys

The schemas are :func:`qml_plugin.config.config_schema`; checking is the loaders' own validation,
so a file that passes here loads in ``qml run`` / ``qml sweep`` / ``qml optimize``.
"""
from __future__ import annotations

import argparse
import json

from ..config import MODELS, config_schema, load_any_config


def add_parser(sub) -> None:
    p = sub.add_parser("config", help="print the JSON Schema of a config kind, or check config files",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    s = actions.add_parser("schema", help="print the JSON Schema of a config kind",
                           description="Print the JSON Schema of a config kind (default: run).")
    s.add_argument("kind", nargs="?", default="run", choices=list(MODELS), help="config kind (default: run)")
    s.set_defaults(func=_schema)
    c = actions.add_parser("check", help="validate config files (kind inferred: sweep:, optimize:, else run)",
                           description="Validate config files; exit 2 on the first invalid one.")
    c.add_argument("files", nargs="+", metavar="FILE", help="config path or shipped name")
    c.set_defaults(func=_check)


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(config_schema(args.kind), indent=2))
    return 0


def _check(args: argparse.Namespace) -> int:
    for name in args.files:
        kind, _ = load_any_config(name)
        print(f"{name}: a valid {kind} config")
    return 0
