"""``qml migrate``, ``qml stats``, ``qml label`` and ``qml registry copy``: the registry from the command line.

``--db`` is a file path or a URL (``sqlite:///...``, ``postgresql://user@host:port/dbname``).
``qml registry copy --from results/experiments.db --to postgresql://...`` copies a whole registry
into an empty one on any backend and checks the row count of every table
(:func:`qml_plugin.registry.transfer.copy_registry`).

``qml label`` is interactive but reads plain lines from stdin, so it also works with piped input
(``printf 'w\\nl\\nq\\n' | qml label --limit 3``). For each unlabeled pattern it shows the pattern
(its ``ml_confidence at registration``: the value stored when it was registered, none when no model
acted), its latest logged prediction (a later ``qml run`` scores patterns without changing that value),
a few key features and its nearest labeled neighbours (standardized distance), then takes one of
``w`` (win), ``l`` (loss), ``i`` (ignore: keep out of training), ``s`` or an empty line (skip) or
``q`` (quit); any other answer is asked again. Each label is written as soon as it is given, so
nothing is lost when the session ends early: stdin closing before ``q`` (EOF) is one line on stderr
and exit code 2, with the labels given so far kept. ``--limit`` is 1 .. :data:`MAX_LIMIT`.
"""
from __future__ import annotations

import argparse
import sys

from ..errors import UsageError
from ..registry import PatternRegistry
from ..registry.connection import display_url
from ..registry.migrations import migrate
from ..registry.transfer import copy_registry
from .common import int_in

_KEYS = {"w": "win", "l": "loss", "i": "ignore"}
MAX_LIMIT = 10_000
"""Most patterns one ``qml label`` session shows (a person labels a few dozen at a sitting)."""
_SHOWN_FEATURES = ("geo_head_depth_atr", "geo_rr", "ctx_rsi_14", "ctx_adx_14", "vol_atr_pctile_500",
                   "mom_ret_20", "regime_efficiency_20")


def add_parser(sub) -> None:
    for name, func, text in (("migrate", _migrate, "create or upgrade the registry schema"),
                             ("stats", _stats, "counts by symbol, type, label, label source and regime"),
                             ("label", _label, "label unlabeled patterns interactively (w/l/i/s/q on stdin)")):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--db", default="results/experiments.db",
                       help="registry path, sqlite:/// or postgresql://user@host:port/dbname URL")
        if name == "label":
            p.add_argument("--limit", type=int_in(1, MAX_LIMIT), default=20,
                           help=f"how many patterns to show, 1 .. {MAX_LIMIT:,} (default 20)")
            p.add_argument("--web", action="store_true",
                           help="label in the browser instead: a local page on 127.0.0.1 with a token (SPEC §14)")
            p.add_argument("--port", type=int_in(0, 65535), default=8765,
                           help="port of the --web page (default 8765; 0 = any)")
        p.set_defaults(func=func)
    reg = sub.add_parser("registry", help="whole-registry operations (copy between backends)",
                         description="whole-registry operations")
    ops = reg.add_subparsers(dest="registry_command", required=True)
    cp = ops.add_parser("copy", help="copy a registry into an empty one (SQLite <-> PostgreSQL) and check counts",
                        description="copy every table (patterns, labels, outcomes, model versions, eval history, "
                                    "predictions) into an empty registry, then compare row counts per table")
    cp.add_argument("--from", dest="source", required=True, help="source registry: path or URL")
    cp.add_argument("--to", dest="target", required=True, help="target registry (empty): path or URL")
    cp.set_defaults(func=_copy)


def _copy(args: argparse.Namespace) -> int:
    counts = copy_registry(args.source, args.target)
    for table, n in counts.items():
        print(f"  {table:<22} {n:>10,} rows (counts match)")
    print(f"copied {sum(counts.values()):,} rows from {display_url(args.source)} to {display_url(args.target)}")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    applied = migrate(args.db)
    print(f"{args.db}: " + (f"applied migrations {applied}" if applied else "schema is up to date"))
    return 0


def _stats(args: argparse.Namespace) -> int:
    with PatternRegistry(args.db) as reg:
        st = reg.get_statistics()
    if not st["total"]:
        print(f"{st['db']}: empty registry (run `qml run` or a backtest with the registry mixin first)")
        return 0
    wr = "n/a" if st["win_rate"] is None else f"{st['win_rate']:.1%}"
    print(f"{st['db']}: {st['total']:,} patterns, {st['labeled']:,} labeled ({st['wins']:,} wins, "
          f"win rate {wr}), {st['unlabeled']:,} unlabeled, {st['ignored']:,} ignored; "
          f"{st['first_detection']} .. {st['last_detection']}")
    for key, value in st.items():
        if isinstance(value, dict):
            print(f"\nby {key.removeprefix('by_')}:")
            for k, c in value.items():
                print(f"  {str(k):<24} {c:>8,}")
    return 0


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _answer() -> str | None:
    """The next answer's first letter ('' = skip), or None once stdin is closed (EOF)."""
    while True:
        try:
            line = sys.stdin.readline() if sys.stdin is not None else ""
        except (ValueError, OSError):  # stdin closed by the caller: the same as EOF
            line = ""
        if not line:
            return None
        key = line.strip().lower()[:1]
        if key in ("", "s", "q", *_KEYS):
            return key
        print(f"  {line.strip()[:20]!r}? answer w, l, i, s or q: ", end="", flush=True)


def registered_confidence(value) -> str:
    """The ``ml_confidence`` stored with the pattern when it was registered, named as such: it is none when
    the backtest that registered it ran without an ML model, and it is not the newest logged prediction
    (:func:`prediction_lines` shows that one, on its own line)."""
    if value is None or (isinstance(value, float) and value != value):
        return "ml_confidence at registration: none (no model acted)"
    return f"ml_confidence at registration {_fmt(float(value))}"


def prediction_lines(pred: dict | None) -> list[str]:
    """The pattern's newest logged prediction (:meth:`PatternRegistry.latest_prediction`, the lookup the web
    page uses): model version, the three heads, the decision, and its top contributions, largest first."""
    if pred is None:
        return ["  prediction: none logged (a `qml run` or an ML backtest with a registry logs one)"]
    heads = "  ".join(f"{k} {'n/a' if pred[k] is None else _fmt(pred[k])}"
                      for k in ("ml_confidence", "expected_r", "stop_risk"))
    out = [f"  latest logged prediction by {pred['model_id']} ({pred['mode']}, run {pred['run_id'] or '-'}): "
           f"{heads}  decision {pred['decision'] or '-'}"]
    if pred["contributions"]:
        out.append("  top contributions (log-odds): " + "  ".join(f"{k} {v:+.3f}" for k, v in pred["contributions"]))
    return out


def _label(args: argparse.Namespace) -> int:
    if args.web:
        from ..web import serve

        serve(args.db, port=args.port)
        return 0
    done = 0
    with PatternRegistry(args.db) as reg:
        todo = reg.get_unlabeled_patterns(limit=args.limit)
        if not todo:
            print("nothing to label: every pattern has a label")
            return 0
        for i, p in enumerate(todo, 1):
            print(f"\n[{i}/{len(todo)}] {p['pattern_id']}  {p['symbol']} {p.get('timeframe') or ''}  "
                  f"{p['pattern_type']}  detected {p['detection_time']}")
            print(f"  entry {_fmt(p.get('entry'))}  stop {_fmt(p.get('stop'))}  target {_fmt(p.get('target'))}  "
                  f"validity {_fmt(p.get('validity_score'))}  {registered_confidence(p.get('ml_confidence'))}")
            print(*prediction_lines(reg.latest_prediction(p["pattern_id"])), sep="\n")
            feats = reg.get_features(p["pattern_id"])
            shown = {k: feats[k] for k in _SHOWN_FEATURES if k in feats}
            if shown:
                print("  " + "  ".join(f"{k}={v:.3g}" for k, v in shown.items()))
            if feats:
                try:
                    near = reg.find_similar_patterns(feats, n=5)
                except Exception as e:  # noqa: BLE001 - neighbours are a help, never a blocker
                    near, why = [], str(e)
                else:
                    why = "no labeled patterns yet"
                print("  nearest labeled:" if near else f"  nearest labeled: none ({why})")
                for nb in near:
                    print(f"    {nb['pattern_id']}  distance {nb['distance']:.2f}  label {nb.get('label')}  "
                          f"R {_fmt(nb.get('r_multiple'))}  {nb.get('symbol')} {nb.get('detection_time')}")
            print("  label? [w]in [l]oss [i]gnore [s]kip [q]uit: ", end="", flush=True)
            key = _answer()
            if key is None:
                print()
                raise UsageError(f"stdin closed after {i - 1} of {len(todo)} pattern(s) with no 'q'; {done} label(s) "
                                 f"given before were saved; answer w, l, i, s or q, one per line")
            if key == "q":
                print("quit")
                break
            if key in _KEYS:
                reg.label_pattern(p["pattern_id"], _KEYS[key])
                done += 1
                print(_KEYS[key])
            else:
                print("skipped")
    print(f"\n{done} pattern(s) labeled")
    return 0
