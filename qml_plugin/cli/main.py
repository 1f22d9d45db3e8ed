"""The ``qml`` command line: argument parsing and error handling for every command.

Each command lives in its own module under ``qml_plugin.cli`` and exposes ``add_parser(sub)``,
which declares its arguments and sets ``func``. This module only wires them together and turns any
qml-plugin error (bad data, bad config, bad model) into **one line on stderr and exit code 2**, as
argparse does for a bad flag.
"""
from __future__ import annotations

import argparse
import sys

from ..errors import QMLError
from . import data, detect, features, learn, models, registry, run, sweep

_COMMANDS = [run, detect, models, registry, sweep, learn, features, data]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qml",
        description="Quasimodo (QML) patterns, registry and ML signal filter for backtesting.py and vectorbt.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in _COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (QMLError, ValueError, FileNotFoundError) as e:
        msg = " ".join(str(e).split())
        print(f"qml {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `qml features --list | head`: the reader left, nothing is wrong
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("qml: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
