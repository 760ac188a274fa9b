"""Worker processes that die with their parent.

A ``ProcessPoolExecutor`` worker blocks on its call queue; when the coordinator is SIGKILLed
nobody closes that queue, so the workers (and the resource tracker they keep open) would live
on, holding their memory. :func:`exit_with_parent` starts a daemon thread in the worker that
waits on the parent's sentinel (a pipe ``multiprocessing`` gives every spawned child, readable
once the parent is gone) and ends the worker at once. :func:`process_pool` is a spawned pool
whose workers all do that before their own initializer.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from multiprocessing.connection import wait
from typing import Any

_WATCHING: list[bool] = []


def _watch(sentinel: Any) -> None:
    wait([sentinel])
    os._exit(70)  # the parent is gone: nothing here is worth finishing (EX_SOFTWARE)


def exit_with_parent() -> None:
    """In a spawned child: exit as soon as the parent process dies (SIGKILL included).

    A no-op in the main process and when already watching.
    """
    parent = multiprocessing.parent_process()
    if parent is None or _WATCHING:
        return
    _WATCHING.append(True)
    threading.Thread(target=_watch, args=(parent.sentinel,), name="chunkstore-parent-watch",
                     daemon=True).start()


def _init(initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    exit_with_parent()
    if initializer is not None:
        initializer(*initargs)


def process_pool(workers: int, initializer: Callable[..., None] | None = None,
                 initargs: tuple[Any, ...] = ()) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes that exit when this process dies.

    Spawned, not forked: forking a process that runs zarr's event-loop thread is unsafe.
    """
    ctx = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init,
                               initargs=(initializer, initargs))


def stop_threads(*pools: Executor) -> None:
    """Cancel what is queued and join the workers of thread pools, as a reader's ``finally``
    does when its iteration ends or is left. Nothing at interpreter exit: a generator left
    unfinished is closed then, after the modules the executors need are torn down (the join
    would raise "'NoneType' object has no attribute 'Empty'"), and the interpreter joins the
    threads itself."""
    if sys.is_finalizing():
        return
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)
