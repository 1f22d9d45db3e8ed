"""``qml features --list | --markdown``: the feature catalogue, generated from the code.

``--list`` prints one line per feature (name and meaning); ``--markdown`` prints the document that
``docs/FEATURES.md`` holds, so ``qml features --markdown > docs/FEATURES.md`` regenerates it.
"""
from __future__ import annotations

import argparse

from ..features.docs import main as features_main


def add_parser(sub) -> None:
    p = sub.add_parser("features", help="list every feature with a one-line meaning",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--list", action="store_true", help="one line per feature (default)")
    g.add_argument("--markdown", action="store_true", help="the docs/FEATURES.md document")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    return features_main(["--markdown"] if args.markdown else ["--list"])
