"""The ``qml`` command line: argument parsing and error handling for every command.

Each command lives in its own module under ``qml_plugin.cli`` and exposes ``add_parser(sub)``,
which declares its arguments and sets ``func``. This module only wires them together and tells bad
input from a bug (SPEC §15):

- a :class:`~qml_plugin.errors.QMLError` (bad data, bad config, bad model, bad registry input) is
  **one line on stderr and exit code 2**, like a bad flag (argparse's message, kept to one line too):
  ``qml run: error: ...``;
- any other exception is a bug in qml-plugin: its traceback is printed, followed by a line that
  says so and where to report it, and the exit code is **1**;
- a closed pipe (``qml features --list | head``) exits 0 quietly; Ctrl-C exits 130.

A message is cut to :data:`MAX_MESSAGE` characters, so a huge value never floods the terminal.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
import warnings

from ..errors import QMLError
from ..job.runs import ECHO_MODULE
from . import config, data, detect, features, learn, models, optimize, registry, run, sweep

_COMMANDS = [run, detect, models, registry, sweep, optimize, learn, features, data, config]

MAX_MESSAGE = 2000
"""Longest error line the CLI prints (values inside a message are already cut to about 200 characters)."""

BUG_REPORT = ("this is a bug in qml-plugin, not a problem with your input; please report it with the "
              "traceback above and the command you ran (see 'Reporting bugs' in the README)")
"""What the CLI says under the traceback of an unexpected exception."""


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad flag reported in one line (``qml label: error: argument --limit: ...``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="qml",
        description="Quasimodo (QML) patterns, registry and ML signal filter for backtesting.py and vectorbt.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in _COMMANDS:
        module.add_parser(sub)
    return parser


def one_line(error: BaseException) -> str:
    """``error`` (and its notes) as one line of at most :data:`MAX_MESSAGE` characters."""
    text = " ".join(" ".join([str(error), *getattr(error, "__notes__", [])]).split())
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + f"... ({len(text):,} characters)"


def main(argv: list[str] | None = None) -> int:
    """Run ``qml`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code (0, 1, 2 or 130)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a bad flag (2): argparse has printed what to say
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        with warnings.catch_warnings():   # a job's warnings are printed in its summary: not again on stderr
            warnings.filterwarnings("ignore", module=re.escape(ECHO_MODULE) + r"\Z")
            return int(args.func(args) or 0)
    except QMLError as e:
        print(f"qml {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `qml features --list | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("qml: interrupted", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - anything else is a bug: show it whole, and say so
        traceback.print_exc()
        print(f"qml {args.command}: internal error: {BUG_REPORT}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
