"""``qml data``: the shipped datasets and their bad prints.

    $ qml data list
    $ qml data check                 # every shipped dataset
    $ qml data check AAPL_1d my.csv  # names, paths, globs, hourly / daily / all

The work is done by :func:`qml_plugin.badprints.bad_print_report`; this module parses and prints.
"""
from __future__ import annotations

import argparse

import pandas as pd

from ..badprints import BAD_PRINT_COLUMNS, bad_print_report
from ..data import dataset_info, list_datasets


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="list the shipped datasets, or check data for bad prints",
                       description="The shipped datasets (with their clocks) and the bad-print check of SPEC §1.")
    cmds = p.add_subparsers(dest="data_command", metavar="ACTION")
    cmds.required = True
    ls = cmds.add_parser("list", help="the shipped datasets with symbol, timeframe, asset class and time zone")
    ls.set_defaults(func=run_list)
    check = cmds.add_parser("check", help="print the bad prints found (one row per suspect bar)",
                            description="Judge every bar causally by the rule of qml_plugin.badprints and print "
                                        "the suspect ones; a run's data.bad_prints (warn | repair | fail) "
                                        "decides what happens to them.")
    check.add_argument("sources", nargs="*", default=["all"],
                       help="dataset names, paths, globs, or hourly / daily / all (default: all)")
    check.add_argument("--tz", default=None, help="time zone of user files (default UTC)")
    check.add_argument("--csv", default=None, help="also write the table to this CSV file")
    check.set_defaults(func=run_check)


def run_list(args: argparse.Namespace) -> int:
    rows = [dataset_info(n) for n in list_datasets()]
    print(pd.DataFrame(rows).fillna("").to_string(index=False))
    return 0


def run_check(args: argparse.Namespace) -> int:
    report = bad_print_report(args.sources, tz=args.tz)
    checked = report.attrs["checked"]
    counts = report["dataset"].value_counts()
    for name, bars in checked.items():
        print(f"{name}: {bars:,} bars, {int(counts.get(name, 0))} bad print(s)")
    if len(report):
        table = report[["dataset", *BAD_PRINT_COLUMNS]].copy()
        for c in ("dataset", "reason", "repair"):  # text reads best left-aligned
            table[c] = table[c].str.ljust(int(table[c].str.len().max()))
        with pd.option_context("display.max_colwidth", 400, "display.width", 400, "display.max_rows", None):
            print()
            print(table.to_string(index=False, justify="left"))
    print(f"\n{len(report)} bad print(s) in {len(checked)} dataset(s)")
    if args.csv:
        report.to_csv(args.csv, index=False)
        print(f"table: {args.csv}")
    return 0
