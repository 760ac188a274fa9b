"""Dask set-up shared by every operation: the cluster to use and the client to run on.

* :func:`dask_scheduler` — the ``--scheduler ADDR`` / ``--cluster local`` options of ``ingest``,
  ``stats`` and ``split``: yields the scheduler address to use (a new
  ``distributed.LocalCluster`` for ``--cluster local``), or None for local execution.
* :func:`dask_client` — a ``distributed.Client`` for an address, announcing its dashboard.
* :func:`local_scheduler` — the ``scheduler=`` for ``dask.compute`` without an address.
* :func:`compute` — ``dask.compute`` with an optional progress bar on stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, redirect_stdout
from typing import Any

from chunkstore.errors import ChunkstoreError, ConfigError, ReadError
from chunkstore.runtime.messages import say

CLUSTERS = ("local",)


@contextmanager
def dask_scheduler(scheduler: str | None = None, cluster: str | None = None,
                   workers: int | None = None) -> Iterator[str | None]:
    """The scheduler address for ``--scheduler ADDR`` / ``--cluster local``, or None.

    Parameters
    ----------
    scheduler : an existing scheduler's address, e.g. ``tcp://10.0.0.5:8786``.
    cluster : ``"local"`` starts a ``distributed.LocalCluster`` of ``workers`` processes with
        one thread each for the duration of the ``with`` block (its dashboard link is printed).
    workers : LocalCluster size (default: the CPU count); without a cluster or a scheduler, the
        number of threads of local Dask computations inside the ``with`` block (Dask's
        ``num_workers``; default: the CPU count). A scheduler's cluster has its own workers.

    Raises
    ------
    ConfigError
        If both are given, or ``cluster`` is not ``"local"``.

    Examples
    --------
    >>> with dask_scheduler(cluster="local", workers=2) as address:  # doctest: +SKIP
    ...     compute_stats("data/demo.zarr", scheduler=address)
    """
    if scheduler and cluster:
        raise ConfigError(f"give either a scheduler address ({scheduler!r}) or --cluster "
                          f"{cluster}, not both")
    if not cluster:
        import dask

        threads = dask.config.set(num_workers=workers) if workers and not scheduler else None
        with threads or nullcontext():
            yield scheduler or None
        return
    if cluster not in CLUSTERS:
        raise ConfigError(f"unknown cluster {cluster!r}; expected one of {list(CLUSTERS)} (for "
                          "an existing cluster pass its address with --scheduler)")
    from distributed import LocalCluster

    n = workers or os.cpu_count() or 1
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as local:
        say(f"started a Dask LocalCluster ({n} worker processes x 1 thread) at "
            f"{local.scheduler_address}; dashboard {local.dashboard_link}")
        yield local.scheduler_address


@contextmanager
def dask_client(address: str, what: str) -> Iterator[Any]:
    """A ``distributed.Client`` connected to ``address``; ``what`` names the command."""
    from distributed import Client

    with Client(address) as client:
        say(f"{what} on the Dask cluster at {address}; dashboard {client.dashboard_link}")
        yield client


def local_scheduler() -> Any:
    """``scheduler=`` for ``dask.compute`` with no address: Dask's default when distributed is
    already in use (a client may be active), else the threaded scheduler.

    Naming the threaded scheduler spares a plain run the import of distributed (~0.7 s), which
    Dask's default lookup does to check for an active client.
    """
    if "distributed" in sys.modules:
        return None
    from dask.threaded import get

    return get


def compute(*graphs: Any, scheduler: Any, progress: bool = False, what: str = ""
            ) -> tuple[Any, ...]:
    """``dask.compute(*graphs, scheduler=scheduler)``, with a progress bar on stderr if asked.

    Parameters
    ----------
    graphs : Dask collections, or lists/tuples of them (``dask.compute`` nesting).
    scheduler : a ``distributed.Client`` or anything ``dask.compute`` takes as ``scheduler=``.
    progress : show a bar. Dask's local bar is drawn on stderr; distributed's text bar writes
        to stdout, so it is sent to stderr too: a command's stdout holds only its result.
    what : announced (INFO) before the bar, e.g. ``"split: assigning rows"``.

    Returns
    -------
    The computed values, one per graph.
    """
    try:
        return _compute(graphs, scheduler, progress, what)
    except ChunkstoreError:
        raise  # already says what and where (e.g. the chunk decoder's ReadError)
    except (ValueError, RuntimeError) as e:
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "checksum" not in text.lower() and "blosc" not in text.lower():
            raise
        raise ReadError(f"{what or 'the computation'} failed: a chunk of the store is corrupt "
                        f"({text[:200]}); run `chunkstore verify STORE` to list the bad chunks "
                        "(array, chunk file, rows) and `chunkstore repair CONFIG` to rewrite "
                        "them from the source") from e


def _compute(graphs: tuple[Any, ...], scheduler: Any, progress: bool, what: str
             ) -> tuple[Any, ...]:
    import dask

    if not progress:
        return tuple(dask.compute(*graphs, scheduler=scheduler))
    if what:
        say(what)
    if _is_client(scheduler):
        from distributed import progress as show_progress

        future = scheduler.compute(dask.delayed(graphs))
        with redirect_stdout(sys.stderr):
            show_progress(future)
        return tuple(future.result())
    from dask.diagnostics import ProgressBar

    with ProgressBar(out=sys.stderr):
        return tuple(dask.compute(*graphs, scheduler=scheduler))


def _is_client(scheduler: Any) -> bool:
    distributed = sys.modules.get("distributed")  # a Client exists only if it was imported
    return distributed is not None and isinstance(scheduler, distributed.Client)
