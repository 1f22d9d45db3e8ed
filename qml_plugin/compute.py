"""Where work units run: in this process, in a local process pool, or on a Dask cluster (SPEC §12).

A *work unit* is a pure function of its inputs (one market of a universe run, one block of sweep
combinations, one optimize trial). This module only decides where units run and returns their
results **in the order of the inputs**, so a result never depends on the scheduler. It owns no
pool logic of its own: the pool is the standard library's ``concurrent.futures.ProcessPoolExecutor``,
the cluster is ``dask.distributed``.

    >>> with Scheduler("serial") as sch:
    ...     sch.map(abs, [-1, 2, -3])
    [1, 2, 3]

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
- ``dask`` with ``address=None`` starts a ``LocalCluster`` of ``workers`` single-threaded worker
  processes (default 2) and closes it on exit; with an address it connects to that scheduler and
  leaves the cluster running.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tqdm.auto import tqdm

from .errors import ConfigError, QMLError

__all__ = ["Scheduler", "SCHEDULERS", "WorkUnitError"]

SCHEDULERS = ("serial", "processes", "dask")
"""Names accepted by ``compute.scheduler`` in every config and by ``--scheduler`` on the CLI."""


class WorkUnitError(RuntimeError):
    """A work unit failed; the message names the unit (market, combinations, trial)."""


def _call(fn: Callable, item: Any, name: str) -> Any:
    try:
        return fn(item)
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
    Dask scheduler (``tcp://host:8786``), only with ``scheduler="dask"``.
    """

    def __init__(self, scheduler: str = "processes", *, workers: int | None = None, address: str | None = None,
                 progress: bool = True):
        if scheduler not in SCHEDULERS:
            raise ConfigError(f"compute.scheduler = {scheduler!r} is not allowed; allowed: {', '.join(SCHEDULERS)}")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ConfigError(f"compute.workers = {workers!r} is not allowed; allowed: an integer >= 1 or null")
        if address is not None and scheduler != "dask":
            raise ConfigError(f"compute.address = {address!r} needs compute.scheduler: dask "
                              f"(got {scheduler!r})")
        self.scheduler, self.workers, self.address, self.progress = scheduler, workers, address, progress
        self._pool = self._client = self._cluster = None

    # -- context ---------------------------------------------------------------------------------
    def __enter__(self) -> Scheduler:
        if self.scheduler == "processes":
            from concurrent.futures import ProcessPoolExecutor

            method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
            ctx = mp.get_context(method)
            if method == "forkserver":
                ctx.set_forkserver_preload(["qml_plugin.compute"])
            self._pool = ProcessPoolExecutor(max_workers=self.workers or os.cpu_count() or 1, mp_context=ctx)
        elif self.scheduler == "dask":
            try:
                from dask.distributed import Client, LocalCluster
            except ImportError:  # pragma: no cover - depends on the install
                raise ConfigError('compute.scheduler = dask needs the [dask] extra: '
                                  'pip install "qml-plugin[dask]"') from None
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
        self._pool = self._client = self._cluster = None

    # -- work ------------------------------------------------------------------------------------
    def map(self, fn: Callable, items: Iterable, *, label: Callable[[Any], str] = repr,
            desc: str | None = None) -> list:
        """``[fn(item) for item in items]``, run where the scheduler says, in the order of ``items``.

        ``fn`` must be a module-level function (picklable) for ``processes`` and ``dask``;
        ``label(item)`` names a unit in errors and defaults to ``repr``.
        """
        items: Sequence = list(items)
        names = [str(label(it))[:200] for it in items]
        bar = tqdm(total=len(items), desc=desc, disable=not self.progress or desc is None, unit="unit")
        try:
            if self.scheduler == "serial" or len(items) == 0:
                out = []
                for it, name in zip(items, names):
                    out.append(_call(fn, it, name))
                    bar.update(1)
                return out
            if self._pool is None and self._client is None:
                raise RuntimeError("Scheduler.map needs `with Scheduler(...) as sch:` for processes or dask")
            if self._pool is not None:
                futures = [self._pool.submit(_call, fn, it, name) for it, name in zip(items, names)]
                out = []
                for f in futures:
                    out.append(f.result())
                    bar.update(1)
                return out
            futures = self._client.map(_call, [fn] * len(items), items, names, pure=False)
            out = []
            for f in futures:
                out.append(f.result())
                bar.update(1)
            return out
        finally:
            bar.close()
