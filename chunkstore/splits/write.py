"""Writing ``splits/<name>``: compute a split block by block, tally it, store it with attrs.

``chunkstore split`` and the ``splits:`` of an ingest config end here. The global table (if the
method needs one) is computed first; only then is the array created, so bad input or an
unreadable chunk leaves the store unchanged. Each block task writes whole chunks of the split
array (one writer per chunk) and returns a small tally (rows, class counts, group ids per part).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec

from chunkstore.config import Config
from chunkstore.core import splitspec
from chunkstore.core.schema import Compression, Where
from chunkstore.core.splitspec import DEFAULT_FRACTIONS, SplitSpec
from chunkstore.errors import SplitError
from chunkstore.runtime.dask import compute, dask_client, local_scheduler
from chunkstore.runtime.messages import say
from chunkstore.splits.duplicates import Duplicates, load_duplicates
from chunkstore.splits.graphs import (
    SPLITS_GROUP,
    Inputs,
    assignment_of,
    check_spec,
    code_blocks,
    is_grouped,
    is_stratified,
    merged_groups,
    table_graph,
    tree_reduce,
)
from chunkstore.splits.summary import SplitSummary, Tally, tally_block, tally_table
from chunkstore.store import journal, layout, versions
from chunkstore.store.urls import open_group
from chunkstore.store.view import StoreView

# ------------------------------------------------------------------------------ writing --

def _write_block(codes: np.ndarray, labels: np.ndarray | None, groups: np.ndarray | None,
                 arr: zarr.Array, start: int, n_parts: int, n_classes: int) -> Tally:
    arr[start:start + codes.shape[0]] = codes
    return tally_block(codes, labels, groups, n_parts, n_classes)


@contextmanager
def _scheduler(address: str | None) -> Iterator[Any]:
    """The ``scheduler=`` for ``dask.compute``: a client for an address, else local."""
    if address:
        with dask_client(address, "split") as client:
            yield client
        return
    yield local_scheduler()


def _report_head(ds: StoreView, spec: SplitSpec) -> str | None:
    """The head whose class balance the summary reports; None for a store without heads."""
    return spec.by if spec.by in ds.heads else next(iter(ds.heads), None)


def compute_split(ds: StoreView, spec: SplitSpec, *, overwrite: bool = False,
                  scheduler: str | None = None, progress: bool = False) -> SplitSummary:
    """Compute ``spec`` over ``ds`` and write ``splits/<name>``; the caller holds the lock.

    Everything is checked and the global table computed before the array is created, so bad
    input or an unreadable chunk leaves the store unchanged. ``progress`` shows a bar on stderr.
    """
    from dask import delayed

    t0 = time.perf_counter()
    check_spec(ds, spec)
    path = f"{SPLITS_GROUP}/{spec.name}"
    if path in ds.group and not overwrite:
        raise SplitError(f"split array {path!r} already exists in store {ds.path!r}; pass "
                         "--overwrite (overwrite=True) to replace it, or choose another "
                         "--split-set")
    dups = load_duplicates(ds, required=spec.dedup)
    inp, head = Inputs(ds, merged_groups(ds, spec)), _report_head(ds, spec)
    k, n_parts = (0 if head is None else ds.heads[head]), len(spec.names)
    grouped = is_grouped(spec)
    # zarr's codec pipeline handles a block's chunks in one batch instead of one at a time:
    # reads ~1.4x and writes ~2x faster than its default batch of 1 (affects only this run).
    batch = {"codec_pipeline.batch_size": inp.block_rows // ds.chunk_rows}
    with _scheduler(scheduler) as run_on, zarr.config.set(batch):
        table, key_runs, kept = _first_pass(inp, spec, head, run_on, progress)
        k_by = ds.heads[spec.by] if spec.by in ds.heads else 0
        assignment = None if table is None else assignment_of(spec, table, k_by)
        lazy, lengths = code_blocks(inp, spec, None if assignment is None
                                    else delayed(assignment), key_runs, kept)
        blocks: list[Any] = list(lazy)
        if spec.dedup and not grouped and dups is not None:
            blocks = _copies_follow_firsts(lazy, lengths, dups, run_on, progress)
        arr = _create_array(ds, path, inp.block_rows)
        labels = ([None] * len(blocks) if grouped or head is None
                  else kept if kept and head == spec.by
                  else inp.blocks(inp.read(f"labels/{head}")))
        groups = ([None] * len(blocks) if grouped or "group" not in ds.meta
                  else inp.blocks(inp.read("meta/group")))
        starts = np.r_[0, np.cumsum(lengths)[:-1]]
        tasks = [delayed(_write_block)(c, lab, g, arr, int(s), n_parts, k)
                 for c, lab, g, s in zip(blocks, labels, groups, starts, strict=True)]
        tally = compute(tree_reduce(tasks, Tally.merge), scheduler=run_on, progress=progress,
                        what=f"split: writing {path}")[0]
    if grouped and table is not None and assignment is not None:
        # the table has every (group, class) count: no second read for the tally
        tally = tally_table(table, assignment, n_parts, k, with_classes=head is not None)
    leaked = None if dups is None else dups.leakage(np.asarray(arr[:]), n_parts)
    summary = SplitSummary.of(ds.path, spec, ds.n_samples, inp.key_name(spec), head, tally,
                              time.perf_counter() - t0, leaked)
    arr.update_attributes(summary.to_attrs())
    return summary


def _first_pass(inp: Inputs, spec: SplitSpec, head: str | None, run_on: Any, progress: bool
                ) -> tuple[Any, list[Any], list[np.ndarray]]:
    """The method's global table, the key runs of lookup methods and, for stratified methods,
    the labels of ``by`` as numpy blocks: read once here, they also give the codes and the
    tally (1-2 bytes a row kept in memory, instead of a second read)."""
    lazy_table, lazy_runs = table_graph(inp, spec, head if is_grouped(spec) else spec.by)
    if lazy_table is None:
        return None, [], []
    keep = (inp.blocks(inp.read(f"labels/{spec.by}"))
            if is_stratified(spec) and not is_grouped(spec) else [])
    table, key_runs, kept = compute(lazy_table, lazy_runs, keep, scheduler=run_on,
                                    progress=progress, what="split: counting keys")
    return table, key_runs, list(kept)


def _copies_follow_firsts(blocks: list[Any], lengths: Sequence[int], dups: Duplicates,
                          run_on: Any, progress: bool) -> list[np.ndarray]:
    """``--dedup`` for per-row methods: compute every code (1 byte a row), then give each copy
    the code of its first occurrence."""
    codes = np.concatenate(compute(blocks, scheduler=run_on, progress=progress,
                                   what="split: assigning rows")[0]).astype(np.int8)
    dups.fix_codes(codes)
    starts = np.r_[0, np.cumsum(lengths)]
    return [codes[a:b] for a, b in zip(starts[:-1], starts[1:], strict=True)]


def _create_array(ds: StoreView, path: str, shard_rows: int) -> zarr.Array:
    """The split array: chunks of the store's rows, in shards of one block each (one writer
    per shard, as per chunk; a few files instead of one per chunk). The crc32c checksum of the
    store's compression settings is kept, Blosc is not: codes are 1 byte per row (< 0.1% of a
    store), and encoding hundreds of tiny chunks would cost more than reading the inputs."""
    comp = Compression.from_dict(ds.attrs["compression"], Where(ds.path, "compression"))
    group = open_group(ds.path, mode="r+")
    return group.create_array(path, shape=(ds.n_samples,), chunks=(ds.chunk_rows,),
                              shards=(shard_rows,), dtype="int8",
                              compressors=[Crc32cCodec()] if comp.checksum else None,
                              fill_value=-1,
                              dimension_names=("sample",), overwrite=True)


def write_split(store: str, spec: SplitSpec, *, overwrite: bool = False,
                scheduler: str | None = None, progress: bool = False) -> SplitSummary:
    """Compute a split lazily over the store's chunks and write it as ``splits/<spec.name>``.

    Parameters
    ----------
    store : path of a complete store.
    spec : method, fractions (or k), seed, by, group; see :class:`~chunkstore.schema.SplitSpec`.
    overwrite : replace an existing split array of the same name.
    scheduler : ``tcp://host:8786`` to compute on a dask.distributed cluster.
    progress : show a progress bar on stderr.

    Returns
    -------
    SplitSummary with rows, groups and class counts per part (also stored as the array's attrs).

    Raises
    ------
    SplitError
        Bad fractions or names, k < 2, unknown head, a grouped method without ``meta/group``, an
        incomplete store, or an existing name without ``overwrite``; the store is unchanged.
    StoreLockedError
        An ingest or another split is writing the store.

    Examples
    --------
    >>> s = write_split("data/demo.zarr", SplitSpec(method="group", seed=0))  # doctest: +SKIP
    >>> print(s.format())  # doctest: +SKIP
    """
    if layout.read_attrs(store).get("status") != layout.COMPLETE:  # before StoreView warns
        raise SplitError(f"store {store!r} is incomplete; finish the ingest (rerun it) before "
                         "computing splits")
    ds = StoreView(store)  # opened once: a view reads only metadata, ~25 ms per open
    check_spec(ds, spec)
    with journal.StoreLock(store):
        summary = compute_split(ds, spec, overwrite=overwrite, scheduler=scheduler,
                                progress=progress)
        versions.commit_version(store, f"split {spec.name}")
        return summary


def command(store: str, spec: SplitSpec) -> str:
    """The ``chunkstore split`` command line that writes ``spec``."""
    args = [f"chunkstore split {store} --split-set {spec.name} --method {spec.method}"]
    if spec.method == "kfold":
        args.append(f"--k {spec.k}" + (" --group" if spec.group else ""))
    else:
        args.append("--fractions " + ",".join(f"{n}={f:g}" for n, f in spec.fractions))
    args.append(f"--seed {spec.seed}" + (f" --by {spec.by}" if spec.by else ""))
    return " ".join(args)


def write_declared_splits(store: str, specs: Sequence[SplitSpec], *, overwrite: bool = False,
                          scheduler: str | None = None, progress: bool = False
                          ) -> list[SplitSummary]:
    """Write the splits an ingest config declares; the caller (ingest) holds the store lock.

    A split already stored with the same spec is kept; a missing one is written (so a rerun on a
    complete store writes newly declared splits); one stored with a different spec is an error
    unless ``overwrite``. Every spec is checked before anything is written.
    """
    ds = StoreView(store)
    todo = []
    for spec in specs:
        check_spec(ds, spec)
        path = f"{SPLITS_GROUP}/{spec.name}"
        old = dict(ds.group[path].attrs) if path in ds.group else None
        if old is not None and old.get("complete") and old.get("spec") == spec.to_dict():
            continue
        if old is not None and old.get("complete") and not overwrite:
            raise SplitError(
                f"split array {path!r} in store {store!r} was written with {old.get('spec')}, "
                f"but the config declares {spec.to_dict()}; rewrite it with `{command(store, spec)}"
                " --overwrite`, rename the split in the config, or rerun the ingest with "
                "--overwrite (which rebuilds the store)")
        todo.append(spec)
    return [compute_split(ds, s, overwrite=True, scheduler=scheduler, progress=progress)
            for s in todo]


def check_config_splits(config: Config, has_group: bool) -> None:
    """Before an ingest writes anything: a grouped split needs a source with group ids."""
    for spec in config.splits:
        if is_grouped(spec) and not has_group:
            raise Where(config.file, f"splits.{spec.name}.method").error(
                f"method {spec.method!r}{' with group: true' if spec.group else ''} needs "
                f"meta/group, but source kind {config.source.kind!r} gives no group ids; use "
                "'random' or 'stratified', or give the source a group key")


def write_config_splits(config: Config, *, overwrite: bool = False, progress: bool = False
                        ) -> list[SplitSummary]:
    """At the end of an ingest: write the config's declared splits (see write_declared_splits)."""
    if not config.splits:
        return []
    with journal.StoreLock(config.store):
        done = write_declared_splits(config.store, config.splits, overwrite=overwrite,
                                     scheduler=config.ingest.scheduler, progress=progress)
        if done:
            versions.commit_version(config.store,
                                    "split " + ",".join(s.spec.name for s in done))
    if progress:
        for s in done:
            parts = ", ".join(f"{n} {r:,}" for n, r in zip(s.spec.names, s.rows, strict=True))
            say(f"split  splits/{s.spec.name} ({s.spec.method}): {parts}")
    return done


def run_split(store: str, *, method: str = "random", fractions: str | None = None, seed: int = 0,
              by: str | None = None, name: str = "default", k: int | None = None,
              group: bool = False, overwrite: bool = False, scheduler: str | None = None,
              progress: bool = False, dedup: bool = False) -> SplitSummary:
    """``chunkstore split``: build a :class:`SplitSpec` from command-line values and write it.

    ``fractions`` is ``"train=0.8,val=0.1,test=0.1"`` (the default); kfold takes ``k`` instead.
    Raises SplitError for any bad value, before the store is touched.
    """
    if method == "kfold":
        if fractions is not None:
            raise SplitError("--fractions is not used with --method kfold: give --k K for K "
                             "equal folds fold0..fold{K-1}")
        parts = splitspec.kfold_fractions(k) if k is not None and k >= 2 else ()
    else:
        try:
            parts = (splitspec.parse_fractions(fractions) if fractions is not None
                     else DEFAULT_FRACTIONS)
        except ValueError as e:
            raise SplitError(f"--fractions: {e}") from None
    spec = SplitSpec(name, method, parts, seed, by, k, group, dedup)
    bad = spec.problem()
    if bad:
        flag = {"name": "split-set"}.get(bad[0], bad[0])
        raise SplitError(f"--{flag}: {bad[1]}")
    return write_split(store, spec, overwrite=overwrite, scheduler=scheduler, progress=progress)
