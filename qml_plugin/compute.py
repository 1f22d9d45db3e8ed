"""Where work units run: in this process, in a local process pool, or on a Dask cluster (SPEC §12).

A *work unit* is a pure function of its inputs (one market of a universe run, one block of sweep
combinations, one optimize trial). This module only decides where units run and returns their
results **in the order of the inputs**, so a result never depends on the scheduler. It owns no
pool logic of its own: the pool is the standard library's ``concurrent.futures.ProcessPoolExecutor``,
the cluster is ``dask.distributed``.

    >>> with Scheduler("serial") as sch:
    ...     sch.map(abs, [-1, 2, -3])
    [1, 2, 3]

What every unit of one ``map`` needs (a market's bars, a model's scores) goes in ``shared=`` and
travels to each worker **once**, not once per unit; each unit then computes ``fn(shared, item)``:

    >>> with Scheduler("serial") as sch:
    ...     sch.map(pow, [1, 2, 3], shared=2)        # pow(2, 1), pow(2, 2), pow(2, 3)
    [2, 4, 8]

Workers never write to the registry: a unit returns frames, the driver writes them.

Choices where SPEC.md is silent:
- ``processes`` uses the ``forkserver`` start method where the platform has it, ``spawn`` elsewhere. Not
  ``fork``: a process that has already trained an XGBoost model holds an OpenMP thread pool, and a child
  forked from it hangs in its own first fit (seen with a notebook that fits, then runs a universe). The
  fork server is a fresh interpreter that imports ``qml_plugin.compute`` once; each worker is forked from
  it, so workers start fast and never inherit a thread pool. Work units must therefore be importable
  functions with picklable arguments (they had to be for Dask anyway);
- a failing unit raises :class:`WorkUnitError` whose message names the unit (``label(item)``, e.g.
  the market) and carries the original exception as ``__cause__``; it is a bug or a data problem of
  that unit, so it is not a :class:`~qml_plugin.errors.QMLError` unless the unit's own error was one,
  in which case that error is re-raised unchanged with the unit named in a note;
- ``shared`` reaches the workers once per ``shared`` object: on Dask by ``client.scatter(shared,
  broadcast=True)`` (every unit gets the scattered future, kept for every later ``map`` of the same
  object); on processes as the pool's initializer argument (the pool is started, or restarted, for a new
  ``shared`` object and kept for every later ``map`` of the same one);
- ``inherit=True`` (processes, on Linux) forks the workers from the calling process instead: they start
  in milliseconds with its imports, compiled numba kernels and ``shared`` already in memory (nothing is
  pickled for them). Only for units that run no OpenMP code (no XGBoost ``fit`` / ``predict``): a child
  forked from a process that already ran OpenMP hangs in its own first parallel region. The sweep's and
  ``qml optimize``'s units are numba and numpy only, and score any model on the driver;
- the fork server (no ``inherit``) is started by the first process pool of a process and preloads
  ``qml_plugin.compute`` and the module of that pool's first work function, so its workers are forked
  with those imports done; later pools reuse it as it is;
- ``dask`` with ``address=None`` starts a ``LocalCluster`` of ``workers`` single-threaded worker
  processes (default 2) and closes it on exit; with an address it connects to that scheduler and
  leaves the cluster running.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tqdm.auto import tqdm

from .errors import ConfigError, QMLError

__all__ = ["Scheduler", "SCHEDULERS", "WorkUnitError"]

SCHEDULERS = ("serial", "processes", "dask")
"""Names accepted by ``compute.scheduler`` in every config and by ``--scheduler`` on the CLI."""


class WorkUnitError(RuntimeError):
    """A work unit failed; the message names the unit (market, combinations, trial)."""


_NOTHING = object()
_SHARED: dict[str, Any] = {}
"""Worker side: the ``shared`` object of this process pool (set by :func:`_install`)."""


def _install(shared: Any) -> None:
    """Pool initializer: keep ``shared`` in the worker for every unit it runs."""
    _SHARED["shared"] = shared


def _call_installed(fn: Callable, item: Any, name: str) -> Any:
    return _call(fn, item, name, _SHARED["shared"])


def _call(fn: Callable, item: Any, name: str, shared: Any = _NOTHING) -> Any:
    try:
        return fn(item) if shared is _NOTHING else fn(shared, item)
    except QMLError as e:
        e.add_note(f"in work unit {name}")
        raise
    except Exception as e:  # a bug or an unexpected failure of this unit: name it, keep the cause
        raise WorkUnitError(f"work unit {name} failed: {type(e).__name__}: {e}") from e


class Scheduler:
    """Run work units serially, in processes or on Dask, with one ``map`` interface.

    Parameters are stored as given and used when the scheduler is entered (``with Scheduler(...)``):
    ``scheduler`` is one of :data:`SCHEDULERS`; ``workers`` the number of processes or Dask workers
    (None: the machine's cores for processes, 2 for a local Dask cluster); ``address`` an existing
    Dask scheduler (``tcp://host:8786``), only with ``scheduler="dask"``; ``inherit=True`` forks
    process workers from this process (see the module docstring: never for units that run XGBoost).
    """

    def __init__(self, scheduler: str = "processes", *, workers: int | None = None, address: str | None = None,
                 progress: bool = True, inherit: bool = False):
        if scheduler not in SCHEDULERS:
            raise ConfigError(f"compute.scheduler = {scheduler!r} is not allowed; allowed: {', '.join(SCHEDULERS)}")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ConfigError(f"compute.workers = {workers!r} is not allowed; allowed: an integer >= 1 or null")
        if address is not None and scheduler != "dask":
            raise ConfigError(f"compute.address = {address!r} needs compute.scheduler: dask "
                              f"(got {scheduler!r})")
        self.scheduler, self.workers, self.address, self.progress = scheduler, workers, address, progress
        self.inherit = bool(inherit)
        self._pool = self._client = self._cluster = self._ctx = None
        self._pool_shared: Any = _NOTHING
        self._scatter: tuple | None = None

    # -- context ---------------------------------------------------------------------------------
    def __enter__(self) -> Scheduler:
        if self.scheduler == "processes":
            methods = mp.get_all_start_methods()
            if self.inherit and sys.platform.startswith("linux") and "fork" in methods:
                method = "fork"
            else:
                method = "forkserver" if "forkserver" in methods else "spawn"
            self._ctx = mp.get_context(method)            # the pool itself starts at the first map
        elif self.scheduler == "dask":
            try:
                from dask.distributed import Client, LocalCluster
            except ImportError:  # pragma: no cover - depends on the install
                raise ConfigError('compute.scheduler = dask needs the [dask] extra: '
                                  'pip install ".[dask]" from the qml-plugin source folder') from None
            if self.address is None:
                self._cluster = LocalCluster(n_workers=self.workers or 2, threads_per_worker=1, processes=True,
                                             dashboard_address=None)
                self._client = Client(self._cluster)
            else:
                self._client = Client(self.address)
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        self._pool = self._client = self._cluster = self._ctx = None
        self._pool_shared, self._scatter = _NOTHING, None

    def _process_pool(self, fn: Callable, shared: Any):
        """The process pool for a map of ``fn`` with ``shared``: the running one, or a new one holding ``shared``."""
        from concurrent.futures import ProcessPoolExecutor

        if self._pool is not None and (shared is _NOTHING or shared is self._pool_shared):
            return self._pool
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._ctx.get_start_method() == "forkserver":          # effective when the server starts (first pool)
            module = getattr(fn, "__module__", None)
            self._ctx.set_forkserver_preload(["qml_plugin.compute",
                                              *([module] if module and module != "__main__" else [])])
        init = {} if shared is _NOTHING else {"initializer": _install, "initargs": (shared,)}
        self._pool = ProcessPoolExecutor(max_workers=self.workers or os.cpu_count() or 1, mp_context=self._ctx,
                                         **init)
        self._pool_shared = shared
        return self._pool

    def _scattered(self, shared: Any):
        """The Dask future of ``shared`` on every worker: scattered once per object, then reused."""
        if self._scatter is None or self._scatter[0] is not shared:
            self._scatter = (shared, self._client.scatter(shared, broadcast=True, hash=False))
        return self._scatter[1]

    # -- work ------------------------------------------------------------------------------------
    def map(self, fn: Callable, items: Iterable, *, shared: Any = None, label: Callable[[Any], str] = repr,
            desc: str | None = None) -> list:
        """``[fn(item) for item in items]``, run where the scheduler says, in the order of ``items``.

        With ``shared`` given (not None), each unit computes ``fn(shared, item)`` and ``shared`` is sent to each
        worker once (see the module docstring), so put there what every unit needs (the bars) and keep
        the items small (blocks of combinations). ``fn`` must be a module-level function (picklable)
        for ``processes`` and ``dask``; ``label(item)`` names a unit in errors and defaults to ``repr``.
        """
        items: Sequence = list(items)
        names = [str(label(it))[:200] for it in items]
        bar = tqdm(total=len(items), desc=desc, disable=not self.progress or desc is None, unit="unit")
        try:
            if self.scheduler == "serial" or len(items) == 0:
                out = []
                for it, name in zip(items, names):
                    out.append(_call(fn, it, name, _NOTHING if shared is None else shared))
                    bar.update(1)
                return out
            if self._ctx is None and self._client is None:
                raise RuntimeError("Scheduler.map needs `with Scheduler(...) as sch:` for processes or dask")
            if self._ctx is not None:
                pool = self._process_pool(fn, _NOTHING if shared is None else shared)
                call = _call if shared is None else _call_installed
                futures = [pool.submit(call, fn, it, name) for it, name in zip(items, names)]
            else:
                extra = [] if shared is None else [[self._scattered(shared)] * len(items)]
                futures = self._client.map(_call, [fn] * len(items), items, names, *extra, pure=False)
            out = []
            for f in futures:
                out.append(f.result())
                bar.update(1)
            return out
        finally:
            bar.close()
