"""Build the API reference of qml-plugin from its docstrings with pdoc (the tool backtesting.py's docs use).

    $ python docs/build_api.py              # writes docs/api/index.html, one page per public module
    $ python docs/build_api.py -o /tmp/api

Every public module of the package is documented: pdoc alone follows only the submodules a package
lists in ``__all__``, and ``qml_plugin.__all__`` names functions, so the modules are listed here,
found with ``pkgutil`` (private ``_modules`` are skipped). Any warning (a module that fails to
import, a docstring pdoc cannot read) is an error: the build stops, so the reference never silently
loses a page. Needs every extra installed (``pip install ".[dev,all]"``): the Dask, PostgreSQL and
web modules are documented too.
"""
from __future__ import annotations

import argparse
import pkgutil
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def public_modules(package: str = "qml_plugin") -> list[str]:
    """``package`` and every submodule whose dotted name has no ``_private`` part, sorted."""
    mod = __import__(package)
    names = [package]
    for info in pkgutil.walk_packages(mod.__path__, prefix=f"{package}."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def _fix_namedtuples(names: list[str]) -> None:
    """A ``NamedTuple``'s generated ``__new__`` claims a module of its own (``namedtuple_X``), so pdoc
    cannot resolve its postponed annotations (``np.ndarray``); point it at the module defining the class."""
    import importlib

    for name in names:
        for obj in vars(importlib.import_module(name)).values():
            new = getattr(obj, "__new__", None)
            if isinstance(obj, type) and issubclass(obj, tuple) and hasattr(obj, "_fields") \
                    and str(getattr(new, "__module__", "")).startswith("namedtuple_"):
                new.__module__ = obj.__module__


def build(output: Path) -> list[Path]:
    """Render the reference into ``output``; returns the HTML files written. Warnings are errors."""
    import pdoc
    import pdoc.render

    pdoc.render.configure(docformat="restructuredtext", show_source=False,
                          footer_text="qml-plugin API reference")
    import pdoc.extract

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fix_namedtuples(public_modules())
        specs: list[str] = []
        covered: set[str] = set()
        for name in public_modules():  # pdoc walks a package's submodules itself unless its __all__ hides them
            if name not in covered:
                specs.append(name)
                covered.update(pdoc.extract.walk_specs([name]))
        pdoc.pdoc(*specs, output_directory=output)
    problems = sorted({" ".join(str(w.message).split())[:300] for w in caught if not _foreign(w)})
    if problems:
        raise SystemExit(f"pdoc: {len(problems)} warning(s), the reference is incomplete:\n  " + "\n  ".join(problems))
    return sorted(output.rglob("*.html"))


def _foreign(w: warnings.WarningMessage) -> bool:
    """A deprecation warning raised while importing a third-party library is not ours to fix."""
    return issubclass(w.category, DeprecationWarning) and "site-packages" in str(w.filename)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "api", help="output folder")
    args = parser.parse_args(argv)
    pages = build(args.output)
    print(f"{len(pages)} pages in {args.output}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
