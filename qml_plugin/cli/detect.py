"""``qml detect``: find QML patterns in a dataset and summarise them by type and by outcome.

    $ qml detect --data EURUSD_1h --resample 4h --swing-n 3
"""
from __future__ import annotations

import argparse

import pandas as pd

from ..data import load_ohlcv
from ..patterns import QMLParams, detect_patterns, label_patterns
from .common import finite_float, int_in


def add_parser(sub) -> None:
    p = sub.add_parser("detect", help="detect QML patterns and print counts by type and outcome",
                       description="Detect QML patterns (no look-ahead) and label their triple-barrier outcomes.")
    p.add_argument("--data", default="EURUSD_1h", help="shipped dataset name or a csv/parquet path")
    p.add_argument("--resample", default=None, help="pandas rule, e.g. 4h (default: none)")
    p.add_argument("--swing-n", type=int_in(1, 1000), default=QMLParams.swing_n, help="bars on each side of a swing")
    p.add_argument("--head-min-atr", type=finite_float(0.0), default=QMLParams.head_min_atr)
    p.add_argument("--target", choices=["swing", "rr"], default=QMLParams.target)
    p.set_defaults(func=run)


def summarize(labeled: pd.DataFrame) -> str:
    """Counts by pattern type and outcome, win rate and mean R of closed trades, as text."""
    if labeled.empty:
        return "no patterns found"
    outcome = labeled["exit_reason"].fillna(labeled["status"].where(labeled["status"] == "expired", "open"))
    table = pd.crosstab(labeled["pattern_type"], outcome, margins=True, margins_name="total")
    closed = labeled.dropna(subset=["label"])
    lines = [table.to_string(), ""]
    passing = (labeled["validity_score"] >= QMLParams.min_score).mean()
    lines.append(f"closed trades: {len(closed)}  win rate: {closed['label'].mean():.1%}  "
                 f"mean R: {closed['r_multiple'].mean():+.3f}  "
                 f"validity_score >= {QMLParams.min_score}: {passing:.1%}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    df = load_ohlcv(args.data, resample=args.resample)
    params = QMLParams(swing_n=args.swing_n, head_min_atr=args.head_min_atr, target=args.target)
    pats = detect_patterns(df, params)
    labeled = label_patterns(df, pats)
    print(f"{df.attrs.get('symbol')} {df.attrs.get('timeframe') or ''}: {len(df):,} bars "
          f"{df.index[0]} .. {df.index[-1]}, {len(pats):,} patterns")
    print(summarize(labeled))
    return 0
