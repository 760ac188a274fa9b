"""Ingest benchmark (issue 2): the users' two-pass npz merge vs ``chunkstore ingest``.

Steps (each measured run is a separate process, so its memory is measured in isolation):

1. Generate the dataset as ``.npz`` batch files of ``--batch-rows`` rows (the users' batch-file
   convention: ``strategic_features`` (n, 893) float32, ``labels_<head>`` (n,) int64,
   ``masks_<head>`` (n, K) int8, ``group`` (n,) int64), saved uncompressed with ``np.savez``,
   from chunkstore's synthetic source with the schema of ``configs/large.yaml``. Streaming: at
   most one episode plus one batch of rows is in memory. Not measured.
2. (a) Baseline, what users run today: a two-pass sequential merge in one process: pass 1 reads
   every file's row count, then preallocates full arrays for features, every label head, every
   mask head and group; pass 2 loads each batch file and copies it in; then ``np.save`` of each
   array to ``.npy``.
3. (b) ``python -m chunkstore.cli ingest CONFIG --workers N --overwrite --quiet`` with an npz
   source over the same files and the schema of ``configs/large.yaml`` (store deleted first, so
   every run does the full ingest: with an identical config an existing complete store would
   be skipped as already done).
4. Verify: random row ranges of features and masks, every head's labels and the groups are
   compared between the ``.npy`` output and the store; one batch file is compared with both.
5. Print the table and write the ``Ingest (issue 2)`` section of ``benchmarks/RESULTS.md``.

Memory: see ``benchmarks/common.py`` (sampled sum of RSS over the process tree, plus exact
per-process high-water marks). Run with ``--help`` for the options.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SECTION = "bench_ingest"
TITLE = "## Ingest (issue 2)"
LARGE_CONFIG = REPO / "configs" / "large.yaml"
SEED = 0

# Targets of issue 2: chunkstore / baseline.
TARGET_WALL = 1.0  # strictly below
TARGET_RSS = 0.25  # at most
TARGET_BYTES = 0.5  # at most


# --------------------------------------------------------------------------------------------
# (a) the baseline, run as its own process: numpy and the standard library only
# --------------------------------------------------------------------------------------------

def baseline_merge(batch_dir: str, out_dir: str) -> dict[str, Any]:
    """Two-pass sequential merge of every ``*.npz`` in ``batch_dir`` into ``.npy`` files.

    This is the "careful two-pass rewrite" users run today: it never holds more than the final
    arrays plus one batch, but the final arrays are the whole dataset.
    """
    import resource

    t0 = time.perf_counter()
    files = sorted(glob.glob(os.path.join(batch_dir, "*.npz")))
    if not files:
        raise SystemExit(f"baseline: no .npz files in {batch_dir!r}")
    with np.load(files[0]) as z:  # keys, dtypes and row shapes from the first file
        spec = {k: (z[k].shape[1:], z[k].dtype) for k in z.files}
    count_key = next(k for k in spec if k.startswith("labels_"))  # a small array

    # pass 1: row counts
    counts = []
    for f in files:
        with np.load(f) as z:
            counts.append(len(z[count_key]))
    n = sum(counts)
    arrays = {k: np.empty((n, *tail), dtype=dtype) for k, (tail, dtype) in spec.items()}
    t1 = time.perf_counter()

    # pass 2: copy every batch into place
    row = 0
    for f, c in zip(files, counts, strict=True):
        with np.load(f) as z:
            for k, a in arrays.items():
                a[row:row + c] = z[k]
        row += c
    t2 = time.perf_counter()

    os.makedirs(out_dir, exist_ok=True)
    for k, a in arrays.items():
        np.save(os.path.join(out_dir, f"{k}.npy"), a)
    t3 = time.perf_counter()
    return {"files": len(files), "rows": n, "pass1_seconds": t1 - t0, "pass2_seconds": t2 - t1,
            "save_seconds": t3 - t2, "total_seconds": t3 - t0,
            "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


# --------------------------------------------------------------------------------------------
# dataset generation
# --------------------------------------------------------------------------------------------

def large_config() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(LARGE_CONFIG.read_text())


def manifest_of(rows: int, batch_rows: int, schema: dict[str, Any]) -> dict[str, Any]:
    return {"rows": rows, "batch_rows": batch_rows, "seed": SEED, "schema": schema}


def generate(batch_dir: Path, rows: int, batch_rows: int, schema_dict: dict[str, Any]) -> float:
    """Write ``rows`` synthetic rows as ``batch_NNNNNN.npz`` files; return seconds taken.

    Episodes are generated one at a time and cut into files of ``batch_rows`` rows (the last
    file may be shorter), so memory stays at one episode plus one file of rows. The manifest
    is written last: a directory without it is an interrupted generation.
    """
    from chunkstore.core.schema import Schema
    from chunkstore.sources.synthetic import SyntheticOptions, SyntheticSource

    t0 = time.perf_counter()
    schema = Schema.from_dict(schema_dict)
    source = SyntheticSource(SyntheticOptions(n_samples=rows, seed=SEED), schema)
    counts = source.counts()
    if batch_dir.exists():
        shutil.rmtree(batch_dir)
    batch_dir.mkdir(parents=True)

    heads = [h.name for h in schema.heads]
    pending: list[dict[str, np.ndarray]] = []
    buffered = written = n_files = 0

    def as_arrays(b: Any) -> dict[str, np.ndarray]:
        d = {"strategic_features": np.asarray(b.features, dtype=np.float32)}
        for h in heads:
            d[f"labels_{h}"] = np.asarray(b.labels[h], dtype=np.int64)
            d[f"masks_{h}"] = np.asarray(b.masks[h], dtype=np.int8)
        d["group"] = np.asarray(b.group, dtype=np.int64)
        return d

    def write(n: int) -> None:
        nonlocal pending, buffered, written, n_files
        merged = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
        np.savez(batch_dir / f"batch_{n_files:06d}.npz", **{k: v[:n] for k, v in merged.items()})
        rest = {k: v[n:] for k, v in merged.items()}
        pending = [rest] if len(rest["group"]) else []
        buffered -= n
        written += n
        n_files += 1

    for item, c in enumerate(counts):
        pending.append(as_arrays(source.read(item, 0, c)))
        buffered += c
        while buffered >= batch_rows:
            write(batch_rows)
    if buffered:
        write(buffered)
    assert written == rows, (written, rows)
    manifest = manifest_of(rows, batch_rows, schema_dict)
    manifest.update(files=n_files, episodes=len(counts))
    (batch_dir / "_manifest.json").write_text(json.dumps(manifest, indent=1))
    return time.perf_counter() - t0


def check_manifest(batch_dir: Path, rows: int, batch_rows: int, schema: dict[str, Any]) -> None:
    mpath = batch_dir / "_manifest.json"
    if not mpath.exists():
        raise SystemExit(f"--skip-generate: {mpath} is missing (no complete generated dataset "
                         "there); run once without --skip-generate")
    m = json.loads(mpath.read_text())
    want = manifest_of(rows, batch_rows, schema)
    diff = sorted(k for k in want if m.get(k) != want[k])
    if diff:
        raise SystemExit(f"--skip-generate: the batches in {batch_dir} were generated with other "
                         "settings ("
                         f"{', '.join(f'{k}={m.get(k)!r}' for k in diff if k != 'schema')}"
                         f"{' schema' if 'schema' in diff else ''}); rerun without --skip-generate")


# --------------------------------------------------------------------------------------------
# (b) chunkstore
# --------------------------------------------------------------------------------------------

def write_config(path: Path, store: Path, batch_dir: Path, large: dict[str, Any]) -> None:
    import yaml

    cfg: dict[str, Any] = {
        "store": str(store),
        "schema": large["schema"],
        "source": {"kind": "npz", "paths": str(batch_dir / "*.npz")},
    }
    if large.get("ingest"):
        cfg["ingest"] = large["ingest"]
    path.write_text("# written by benchmarks/bench_ingest.py: schema of configs/large.yaml, "
                    "npz source over the generated batches\n"
                    + yaml.safe_dump(cfg, sort_keys=False))


SUMMARY_FIELDS = {
    "rows": r"rows\s+([\d,]+)",
    "tasks": r"tasks\s+(\d+) run",
    "raw_mib": r"raw bytes\s+([\d,.]+) MiB",
    "stored_mib": r"stored bytes\s+([\d,.]+) MiB",
    "compression_ratio": r"compression ratio ([\d.]+)x",
    "wall_seconds": r"wall time\s+([\d,.]+) s",
    "mib_per_s": r"\(([\d,.]+) MiB/s raw\)",
    "coordinator_peak_mib": r"coordinator ([\d,.]+) MiB",
    "worker_peak_mib": r"largest worker ([\d,.]+) MiB",
}


def parse_summary(text: str) -> dict[str, float]:
    """The numbers of the summary ``chunkstore ingest`` prints; fails if one is missing."""
    import re

    out = {}
    for key, pattern in SUMMARY_FIELDS.items():
        m = re.search(pattern, text)
        if not m:
            raise SystemExit(f"could not find {key!r} in chunkstore's summary:\n{text}")
        out[key] = float(m.group(1).replace(",", ""))
    return out


# --------------------------------------------------------------------------------------------
# verification
# --------------------------------------------------------------------------------------------

class Mismatch(AssertionError):
    pass


def _same(what: str, expected: np.ndarray, found: np.ndarray, start: int = 0) -> None:
    """Exact equality (float compared bitwise, so NaN == NaN); raise naming the first diff."""
    expected, found = np.asarray(expected), np.asarray(found)
    if expected.shape != found.shape:
        raise Mismatch(f"{what}: shape {found.shape} in the store, {expected.shape} expected")
    if expected.dtype.kind == "f" or found.dtype.kind == "f":
        if expected.dtype != found.dtype:
            raise Mismatch(f"{what}: dtype {found.dtype} in the store, {expected.dtype} expected")
        a = expected.view(f"u{expected.dtype.itemsize}")
        b = found.view(f"u{found.dtype.itemsize}")
    else:
        a, b = expected.astype(np.int64), found.astype(np.int64)  # int16 store vs int64 npy
    bad = a != b
    if bad.any():
        idx = np.argwhere(bad)[0]
        col = f", column {int(idx[1])}" if len(idx) > 1 else ""
        raise Mismatch(f"{what}: {int(bad.sum())} values differ; first at row "
                       f"{start + int(idx[0])}{col}"
                       f": store {found[tuple(idx)]!r}, expected {expected[tuple(idx)]!r}")


def verify(npy_dir: Path, store: Path, batch_dir: Path, heads: list[str], rows: int,
           batch_rows: int, n_ranges: int = 8) -> list[str]:
    """Compare the baseline's .npy files, the store and one batch file; raise Mismatch."""
    import zarr

    checks: list[str] = []
    g = zarr.open_group(str(store), mode="r")
    attrs = g.attrs["chunkstore"]
    if attrs.get("status") != "complete" or attrs.get("n_samples") != rows:
        raise Mismatch(f"store attrs: status {attrs.get('status')!r}, n_samples "
                       f"{attrs.get('n_samples')!r}; expected 'complete', {rows}")
    feats = np.load(npy_dir / "strategic_features.npy", mmap_mode="r")
    if feats.shape[0] != rows:
        raise Mismatch(f"baseline features have {feats.shape[0]} rows, expected {rows}")

    rng = np.random.default_rng(12345)
    ranges = [(0, min(rows, 1500)), (max(0, rows - 1234), rows)]
    for _ in range(n_ranges - len(ranges)):
        length = int(rng.integers(1, min(rows, 6000) + 1))
        a = int(rng.integers(0, rows - length + 1))
        ranges.append((a, a + length))
    for a, b in ranges:
        _same(f"features[{a}:{b}]", feats[a:b], g["features"][a:b], a)
        for h in heads:
            m = np.load(npy_dir / f"masks_{h}.npy", mmap_mode="r")
            _same(f"masks/{h}[{a}:{b}]", m[a:b], g[f"masks/{h}"][a:b], a)
    checks.append(f"features and all {len(heads)} mask heads, {len(ranges)} row ranges: "
                  + ", ".join(f"[{a}:{b}]" for a, b in ranges))
    for h in heads:
        _same(f"labels/{h} (all rows)", np.load(npy_dir / f"labels_{h}.npy"), g[f"labels/{h}"][:])
    checks.append(f"labels of all {len(heads)} heads, all {rows:,} rows")
    _same("meta/group (all rows)", np.load(npy_dir / "group.npy"), g["meta/group"][:])
    checks.append("meta/group, all rows")

    files = sorted(batch_dir.glob("*.npz"))
    k = int(rng.integers(0, len(files)))
    a = k * batch_rows  # every file but the last has batch_rows rows
    with np.load(files[k]) as z:
        n = len(z["group"])
        for key in z.files:
            store_key = {"strategic_features": "features", "group": "meta/group"}.get(
                key, key.replace("labels_", "labels/").replace("masks_", "masks/"))
            npy = np.load(npy_dir / f"{key}.npy", mmap_mode="r")
            _same(f"{files[k].name}:{key} vs .npy", z[key], npy[a:a + n], a)
            _same(f"{files[k].name}:{key} vs store {store_key}", z[key], g[store_key][a:a + n], a)
    checks.append(f"every array of batch file {files[k].name} (rows [{a}:{a + n}]) against "
                  "both outputs")
    return checks


# --------------------------------------------------------------------------------------------
# where a chunkstore task spends its time (optional, --profile)
# --------------------------------------------------------------------------------------------

def profile_tasks(store: Path, config_path: Path, n_tasks: int = 3) -> dict[str, Any]:
    """Time the phases of a few of the store's tasks in this process, then cProfile one.

    Uses chunkstore's own pieces (``assemble``, ``partial_stats``, the zarr writes and
    ``journal.write_record``) in ``run_task``'s order, with one Blosc thread as in a worker.
    The tasks rewrite the same chunks with the same bytes and the same records, so the store
    stays valid (it was verified before this runs).
    """
    import cProfile
    import io
    import pstats

    import zarr

    from chunkstore import journal
    from chunkstore.config import load_config
    from chunkstore.core.plan import Plan
    from chunkstore.ingest.coordinator import finalize  # noqa: F401  (import cost paid before timing,
    from chunkstore.ingest.task import (
        TaskSpec,
        _config_and_source,
        assemble,
        init_worker,
        partial_stats,
        run_task,
    )

    init_worker(1)
    config = load_config(config_path)
    plan = Plan.from_dict(journal.read_json(journal.journal_dir(str(store)) / "plan.json"))
    cfg_json = json.dumps({"config": config.to_dict(), "file": config.file})
    cfg, source = _config_and_source(cfg_json)
    has_group = "meta/group" in zarr.open_group(str(store), mode="r")
    full = [t for t in plan.tasks if t.rows == plan.tasks[0].rows]
    picked = [full[i] for i in np.linspace(0, len(full) - 1, min(n_tasks, len(full))).astype(int)]

    phases: dict[str, float] = {}

    def add(name: str, t0: float) -> float:
        t = time.perf_counter()
        phases[name] = phases.get(name, 0.0) + t - t0
        return t

    rows = nbytes = 0
    for task in picked:
        t = time.perf_counter()
        # the same reads assemble() does, once more separately, to split read from copy/check
        for p in task.pieces:
            source.read(p.item, p.item_start, p.item_stop)
        t = add("source.read alone (the reads assemble does, timed separately)", t)
        buffers = assemble(task, cfg, source, has_group)
        t = add("assemble (source.read + check_batch + copy)", t)
        stats = partial_stats(buffers, cfg)
        t = add("partial_stats (float64 moments, class counts)", t)
        group = zarr.open_group(str(store), mode="r+")
        t = add("zarr.open_group", t)
        for name, data in buffers.items():
            group[name][task.start:task.stop] = data
            t = add("zarr write: features" if name == "features" else
                    "zarr write: 15 small arrays (labels, masks, group)", t)
        journal.write_record(str(store), task.task_id, {"task_id": task.task_id,
                             "start": task.start, "stop": task.stop}, stats)
        add("journal record (fsync)", t)
        rows += task.rows
        nbytes += sum(b.nbytes for b in buffers.values())
    phases = {k: v / len(picked) for k, v in phases.items()}

    # cProfile one real run_task (rewrites the same chunks and the same record)
    task = picked[len(picked) // 2]
    spec = TaskSpec(str(store), cfg_json, has_group, task)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.runcall(run_task, spec)
    run_seconds = time.perf_counter() - t0
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(18)
    tottime = buf.getvalue()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(25)
    return {"tasks_timed": len(picked), "task_rows": task.rows,
            "task_pieces": [len(t.pieces) for t in picked], "task_bytes": nbytes // len(picked),
            "phases_seconds_per_task": phases, "run_task_seconds_profiled": run_seconds,
            "cprofile_tottime": tottime, "cprofile_cumulative": buf.getvalue()}


def export_rev(rev: str, dest_root: Path) -> tuple[Path, str]:
    """``git archive`` the ``chunkstore`` package at ``rev`` into ``dest_root``; (dir, sha)."""
    import io
    import subprocess
    import tarfile

    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                         capture_output=True, text=True, check=True).stdout.strip()
    dest = dest_root / f"chunkstore-{sha[:12]}"
    if not (dest / "chunkstore" / "__init__.py").exists():
        tar = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", sha,
                              "chunkstore"], capture_output=True, check=True).stdout
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
            tf.extractall(tmp, filter="data")
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    return dest, sha


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------

def codec_pipeline() -> str:
    """The zarr codec pipeline a fresh process would use (env vars included)."""
    import zarr

    return str(zarr.config.get("codec_pipeline.path"))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def build_report(r: dict[str, Any]) -> tuple[str, str]:
    """(the table printed on stdout, the RESULTS.md section)."""
    from common import markdown_table, mib

    base, cs = r["baseline"], r["chunkstore"]
    table = markdown_table(
        ["method", "wall s", "peak RSS total MiB", "bytes on disk MiB"],
        [["(a) baseline: two-pass npz merge -> .npy (1 process)", f"{base['wall']:.1f}",
          f"{mib(base['rss']):,.0f}", f"{mib(base['bytes']):,.1f}"],
         [f"(b) chunkstore ingest --workers {r['workers']}", f"{cs['wall']:.1f}",
          f"{mib(cs['rss']):,.0f}", f"{mib(cs['bytes']):,.1f}"],
         *([["(b') same, zarrs codec pipeline (experiment)", f"{r['zarrs']['wall']:.1f}",
             f"{mib(r['zarrs']['rss']):,.0f}", f"{mib(r['zarrs']['bytes']):,.1f}"]]
           if r.get("zarrs") else [])])
    ratios = r["ratios"]
    ratio_table = markdown_table(
        ["ratio (chunkstore / baseline)", "measured", "target", "result"],
        [["wall time", f"{ratios['wall']:.3f}", f"< {TARGET_WALL}",
          verdict(ratios["wall"] < TARGET_WALL)],
         ["peak RSS total", f"{ratios['rss']:.3f}", f"<= {TARGET_RSS}",
          verdict(ratios["rss"] <= TARGET_RSS)],
         ["stored bytes / npy bytes", f"{ratios['bytes']:.3f}", f"<= {TARGET_BYTES}",
          verdict(ratios["bytes"] <= TARGET_BYTES)]],
        align="lrrl")
    stdout_text = f"{table}\n\n{ratio_table}"
    if r.get("zarrs"):
        z = r["zarrs"]
        stdout_text += (f"\n\n(b') with the zarrs pipeline, for comparison: wall time ratio "
                        f"{z['wall'] / base['wall']:.3f}, peak RSS ratio "
                        f"{z['rss'] / base['rss']:.3f}, bytes ratio "
                        f"{z['bytes'] / base['bytes']:.3f}.")

    cpu_table = markdown_table(
        ["method", "wall s", "CPU s (tree, user+sys)", "CPU s / wall s",
         "other load during run", "load avg before", "attempts (walls s)"],
        [[name, f"{m['wall']:.1f}", f"{m['cpu']:.1f}", f"{m['cpu'] / m['wall']:.2f}",
          f"{m['other_cpu']:.1f} CPU s ({r['attempts'][key]['other_load']:.0%})",
          " ".join(f"{x:.2f}" for x in m["load_before"]),
          f"kept {r['attempts'][key]['kept']} of {r['attempts'][key]['attempts']} ("
          + ", ".join(f"{w:.1f}" for w in r['attempts'][key]['all_walls']) + ")"]
         for name, key, m in (("(a) baseline", "baseline", base),
                              ("(b) chunkstore", "chunkstore", cs),
                              ("(b') zarrs pipeline", "zarrs", r.get("zarrs")))
         if m is not None])
    mem_rows = []
    for name, m in (("(a) baseline", base), ("(b) chunkstore", cs),
                    ("(b') zarrs pipeline", r.get("zarrs"))):
        if m is None:
            continue
        mem_rows.append([name, f"{mib(m['rss']):,.0f}", f"{mib(m['pss']):,.0f}",
                         f"{mib(m['sum_hwm']):,.0f}", f"{mib(m['max_single']):,.0f}",
                         f"{mib(m['rusage']):,.0f}", str(m["nproc"]), str(m["polls"])])
    mem_table = markdown_table(
        ["method", "peak sum RSS", "peak sum PSS", "sum of per-process HWM",
         "largest process (HWM)", "largest process (RUSAGE_CHILDREN)", "processes", "polls"],
        mem_rows)
    proc_table = markdown_table(
        ["process (chunkstore run)", "peak RSS MiB (VmHWM)", "max sampled PSS MiB"],
        [[p["cmd"][:90].replace("|", "/"), f"{mib(p['hwm']):,.0f}", f"{mib(p['max_pss']):,.0f}"]
         for p in cs["processes"]], align="lrr")
    disk_table = markdown_table(
        ["output", "files", "apparent MiB", "allocated MiB (du)"],
        [["input: npz batch files", f"{r['input']['files']:,}", f"{mib(r['input']['bytes']):,.1f}",
          f"{mib(r['input']['alloc']):,.1f}"],
         ["(a) .npy files", f"{base['files']:,}", f"{mib(base['bytes']):,.1f}",
          f"{mib(base['alloc']):,.1f}"],
         ["(b) store without _chunkstore/", f"{cs['files']:,}", f"{mib(cs['bytes']):,.1f}",
          f"{mib(cs['alloc']):,.1f}"],
         *[[f"(b) of which {name}/", f"{files:,}", f"{mib(nb):,.1f}", f"{mib(al):,.1f}"]
           for name, (nb, al, files) in r["store_parts"].items() if name != "_chunkstore"],
         ["(b) _chunkstore/ journal (not counted)", f"{r['store_parts']['_chunkstore'][2]:,}",
          f"{mib(r['store_parts']['_chunkstore'][0]):,.1f}",
          f"{mib(r['store_parts']['_chunkstore'][1]):,.1f}"]])
    m = r["machine"]
    v = r["versions"]
    bt = r["baseline_child"]
    s = r["summary"]
    lines = [
        TITLE,
        "",
        f"Written by `benchmarks/bench_ingest.py` on {r['date']}; rerun it to update this "
        "section (everything between this section's markers is replaced).",
        "",
        f"**Machine:** {m['nproc']} CPUs ({m['cpu_model']}), {m['ram_bytes'] / 2**30:.1f} GiB "
        f"RAM, {m['os']}, Python {m['python']}. **Packages:** "
        + ", ".join(f"{k} {v[k]}" for k in v) + ". "
        f"**chunkstore:** {r['git']}; zarr codec pipeline "
        f"`{r['codec_pipeline']}`.",
        "",
        f"**Command:** `{r['command']}`",
        "",
        f"**Data:** {r['rows']:,} rows = {r['input']['files']:,} `.npz` batch files of "
        f"{r['batch_rows']} rows (uncompressed `np.savez`, the batch-file convention), from "
        f"`SyntheticSource(SyntheticOptions(n_samples={r['rows']}, seed={SEED}))` with the "
        "schema of `configs/large.yaml` (893 float32 features, 7 heads, 206 mask columns, "
        "episode group ids).",
        "",
        stdout_text,
        "",
        f"**Order and cache:** {r['order_note']}",
        "",
        "### How it was measured",
        "",
        "- (a) runs `bench_ingest.py --baseline-merge BATCHES OUT` in its own process: pass 1 "
        "reads every file's row count (one small label array per file), preallocates full "
        "arrays for features, each label head, each mask head and group (dtypes as in the "
        "files: float32, int64, int8, int64), pass 2 loads each batch file and copies it in, "
        f"then `np.save` per array. Its own split: pass 1 {bt['pass1_seconds']:.1f} s, pass 2 "
        f"{bt['pass2_seconds']:.1f} s, np.save {bt['save_seconds']:.1f} s.",
        f"- (b) runs `{r['chunkstore_cmd']}` with the config below; the store is deleted "
        "before the run so the whole ingest is measured (an identical config on a complete "
        "store would be skipped as done).",
        "- Wall time: from process start to exit, as a user sees it (interpreter start-up and "
        "imports included). Neither side calls fsync on its data, so writeback to disk after "
        "the process exits is not included for either; `os.sync()` is called before each run "
        "so the previous step's dirty pages do not slow it.",
        f"- Memory: the process tree (command + every descendant) is polled every "
        f"{r['interval'] * 1000:.0f} ms; *peak RSS total* is the largest sum of VmRSS over the "
        "tree at one poll (so coordinator + pool workers together). Cross-checks below: the same "
        "with PSS (shared library pages split between processes instead of counted in each), "
        "the sum of each process's exact kernel high-water mark (VmHWM; an upper bound, peaks "
        "need not coincide), and the largest single process from VmHWM and from "
        "`getrusage(RUSAGE_CHILDREN).ru_maxrss` in a wrapper process (exact but a max over "
        "processes, not a sum: it would understate a multi-process job, so it is not the "
        "headline number).",
        "- CPU: user + system seconds of the whole tree (kernel accounting of the waited-for "
        "processes). *Other load* is the machine's busy CPU time during the run minus the "
        "tree's and the poller's: work of unrelated processes or kernel threads (e.g. page "
        "writeback). This is a shared machine: before each run the script waits until CPU use "
        f"stays below 15% for 3 s, and a run during which other load exceeded "
        f"{r['max_other_load']:.0%} of the machine's CPU time is repeated (at most "
        f"{r['max_attempts']} runs; the least disturbed is kept).",
        "- Bytes on disk: apparent file sizes; the store's `_chunkstore/` journal is excluded, "
        "as in chunkstore's own summary.",
        "",
        "CPU detail:",
        "",
        cpu_table,
        "",
        "Memory detail, MiB:",
        "",
        mem_table,
        "",
        proc_table,
        "",
        "Disk detail:",
        "",
        disk_table,
        "",
        "chunkstore's own summary (its peak memory figures are each process's "
        "`ru_maxrss`):",
        "",
        "```",
        r["chunkstore_stdout"].strip(),
        "```",
        "",
        f"Parsed: {s['rows']:,.0f} rows, {s['tasks']:.0f} tasks, compression ratio "
        f"{s['compression_ratio']:.2f}x, {s['mib_per_s']:,.0f} MiB/s raw inside ingest() "
        f"({s['wall_seconds']:.1f} s of the {cs['wall']:.1f} s process wall time).",
        "",
        "Config used for (b):",
        "",
        "```yaml",
        r["config_text"].strip(),
        "```",
        "",
        "**Verification (passed):** the store and the `.npy` output are identical in:",
        "",
        *[f"- {c}" for c in r["checks"]],
    ]
    if r.get("profile"):
        p = r["profile"]
        ph = p["phases_seconds_per_task"]
        lines += [
            "",
            "### Where a chunkstore task's time goes (`--profile`)",
            "",
            f"Mean over {p['tasks_timed']} full tasks of {p['task_rows']:,} rows "
            f"({p['task_bytes'] / 2**20:.1f} MiB of store-dtype buffers, "
            f"{'/'.join(map(str, p['task_pieces']))} source pieces), run one at a time in the "
            "benchmark process with one Blosc thread, after the measured runs (warm cache):",
            "",
            markdown_table(["phase", "seconds per task"],
                           [[k, f"{v:.3f}"] for k, v in ph.items()]),
            "",
            f"cProfile of one `run_task` ({p['run_task_seconds_profiled']:.2f} s under the "
            "profiler), top functions by own time:",
            "",
            "```",
            p["cprofile_tottime"].strip(),
            "```",
        ]
    return stdout_text, "\n".join(lines)


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=547_000, help="rows to generate (default 547000)")
    p.add_argument("--batch-rows", type=int, default=500, help="rows per npz batch file")
    p.add_argument("--workdir", default=str(HERE / "work"),
                   help="where batches, .npy output and the store go (default benchmarks/work)")
    p.add_argument("--workers", type=int, default=2, help="chunkstore worker processes")
    p.add_argument("--skip-generate", action="store_true",
                   help="reuse the batch files of an earlier run (checked against its manifest)")
    p.add_argument("--rev", default=None,
                   help="benchmark chunkstore as of this git revision (exported with git archive "
                        "into the workdir and put first on PYTHONPATH) instead of the working "
                        "tree, e.g. HEAD while others have uncommitted edits")
    p.add_argument("--zarrs", action="store_true",
                   help="also run chunkstore with the zarrs codec pipeline (set through the "
                        "ZARR_CODEC_PIPELINE__PATH environment variable; an experiment, not "
                        "chunkstore's default)")
    p.add_argument("--profile", action="store_true",
                   help="afterwards, time the phases of a few chunkstore tasks and cProfile one")
    p.add_argument("--interval", type=float, default=0.05, help="memory poll interval, seconds")
    p.add_argument("--idle-wait", type=float, default=600.0,
                   help="before each run, wait up to this many seconds for the machine's CPU "
                        "use to stay below 15%% (0: do not wait)")
    p.add_argument("--attempts", type=int, default=3,
                   help="runs per method at most, while other processes disturb the timing")
    p.add_argument("--max-other-load", type=float, default=0.10,
                   help="largest share of the machine's CPU time that unrelated processes may "
                        "use during a kept run (default 0.10)")
    p.add_argument("--results", default=str(HERE / "RESULTS.md"), help="results file to update")
    p.add_argument("--no-results", action="store_true", help="print only; leave RESULTS.md")
    p.add_argument("--baseline-merge", nargs=2, metavar=("BATCH_DIR", "OUT_DIR"),
                   help=argparse.SUPPRESS)  # internal: the measured baseline process
    args = p.parse_args(argv)
    if min(args.rows, args.batch_rows, args.workers, args.attempts) < 1:
        p.error("--rows, --batch-rows, --workers and --attempts must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.baseline_merge:
        print(json.dumps(baseline_merge(*args.baseline_merge)))
        return 0

    sys.path.insert(0, str(HERE))
    from common import (
        git_state,
        machine_info,
        now_iso,
        package_versions,
        run_measured,
        tree_bytes,
        write_section,
    )

    command = "python benchmarks/bench_ingest.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    work = Path(args.workdir).resolve()
    batch_dir, npy_dir = work / "batches", work / "npy"
    store, config_path = work / "store.zarr", work / "ingest.yaml"
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.rev:
        src, sha = export_rev(args.rev, work)
        sys.path.insert(0, str(src))  # this process (generation, --profile) uses it too
        env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [env.get("PYTHONPATH")])])
        import chunkstore

        if not Path(chunkstore.__file__).resolve().is_relative_to(src.resolve()):
            raise SystemExit(f"--rev: chunkstore was imported from {chunkstore.__file__}, not "
                             f"from {src}")
        code_state = f"{sha[:12]} (`--rev {args.rev}`, exported with git archive)"
    else:
        code_state = git_state(REPO, ["chunkstore"]) + " (working tree)"
    large = large_config()
    heads = list(large["schema"]["heads"])

    def say(msg: str) -> None:
        print(f"[bench_ingest {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    if args.skip_generate:
        check_manifest(batch_dir, args.rows, args.batch_rows, large["schema"])
        say(f"reusing {batch_dir}")
    else:
        say(f"generating {args.rows:,} rows as {args.batch_rows}-row npz files in {batch_dir}")
        secs = generate(batch_dir, args.rows, args.batch_rows, large["schema"])
        say(f"generated in {secs:.1f} s (not measured)")
    in_bytes, in_alloc, in_files = tree_bytes(batch_dir)
    in_files -= 1  # the manifest
    in_bytes -= (batch_dir / "_manifest.json").stat().st_size

    nproc = machine_info()["nproc"]

    def measure(label: str, argv: list[str], clean: Path, run_env: dict[str, str] | None = None
                ) -> tuple[Any, dict[str, Any]]:
        """Run ``argv`` up to ``--attempts`` times until no other load disturbed it.

        Before each attempt: delete the output, ``os.sync()`` (so earlier writes do not slow
        this run), wait for other benchmarks' measured runs to end and for the machine to go
        idle. After it: if unrelated processes used more than ``--max-other-load`` of the
        machine's CPU time during the run, try again; the attempt with the least other load is
        kept.
        """
        tried = []
        for attempt in range(1, args.attempts + 1):
            if clean.exists():
                shutil.rmtree(clean)
            os.sync()
            say(f"running {label} (attempt {attempt})")
            # cwd is the workdir: with -m the cwd comes first on sys.path, and the repo as cwd
            # would shadow a --rev export
            run = run_measured(argv, interval=args.interval, cwd=work, env=run_env or env,
                               idle_wait=args.idle_wait, log=say).check()
            waited = run.idle_wait_seconds + run.lock_wait_seconds
            other = run.other_cpu_seconds / (run.wall_seconds * nproc)
            tried.append((other, attempt, waited, run))
            say(f"{label}: {run.wall_seconds:.1f} s, peak RSS {run.peak_rss_total / 2**20:,.0f} "
                f"MiB, other load {other:.0%} of the machine")
            if other <= args.max_other_load:
                break
            if attempt < args.attempts:
                say(f"other processes used {other:.0%} of the CPU during the run (more than "
                    f"{args.max_other_load:.0%}); measuring again")
        other, attempt, waited, run = min(tried, key=lambda t: t[0])
        return run, {"attempts": len(tried), "kept": attempt, "other_load": other,
                     "waited": waited, "all_walls": [t[3].wall_seconds for t in tried],
                     "all_other": [t[0] for t in tried]}

    # (a) baseline
    base_run, base_att = measure("(a) baseline merge", [
        sys.executable, str(Path(__file__).resolve()), "--baseline-merge", str(batch_dir),
        str(npy_dir)], npy_dir)
    base_child = json.loads(base_run.stdout.strip().splitlines()[-1])

    # (b) chunkstore
    write_config(config_path, store, batch_dir, large)
    cs_run, cs_att = measure("(b) chunkstore ingest", [
        sys.executable, "-m", "chunkstore.cli", "ingest", str(config_path),
        "--workers", str(args.workers), "--overwrite", "--quiet"], store)
    summary = parse_summary(cs_run.stdout)
    zs = None
    if args.zarrs:
        z_store, z_config = work / "store_zarrs.zarr", work / "ingest_zarrs.yaml"
        write_config(z_config, z_store, batch_dir, large)
        z_env = {**env, "ZARR_CODEC_PIPELINE__PATH": "zarrs.ZarrsCodecPipeline"}
        z_run, z_att = measure("(b') chunkstore ingest, zarrs codec pipeline", [
            sys.executable, "-m", "chunkstore.cli", "ingest", str(z_config),
            "--workers", str(args.workers), "--overwrite", "--quiet"], z_store, z_env)
        zs = {"run": z_run, "att": z_att, "store": z_store}

    # verify before anything is reported
    say("verifying the store against the .npy output")
    try:
        checks = verify(npy_dir, store, batch_dir, heads, args.rows, args.batch_rows)
        if zs:
            verify(npy_dir, zs["store"], batch_dir, heads, args.rows, args.batch_rows)
            checks.append("the same checks passed for the zarrs-pipeline store")
    except Mismatch as e:
        print(f"\nVERIFICATION FAILED: {e}\nRESULTS.md was not updated.", file=sys.stderr)
        return 2
    say("verification passed")

    npy_bytes, npy_alloc, npy_files = tree_bytes(npy_dir)
    st_bytes, st_alloc, st_files = tree_bytes(store, exclude=("_chunkstore",))
    cs_sum = json.loads((store / "_chunkstore" / "summary.json").read_text())
    store_parts = {p.name: tree_bytes(p) for p in sorted(store.iterdir()) if p.is_dir()}
    if cs_sum["stored_bytes"] != st_bytes:
        say(f"note: chunkstore reports {cs_sum['stored_bytes']:,} stored bytes, we count "
            f"{st_bytes:,}")

    def mem(run: Any, nbytes: int, alloc: int, files: int, wall: float) -> dict[str, Any]:
        return {"wall": wall, "cpu": run.cpu_seconds, "other_cpu": run.other_cpu_seconds,
                "load_before": run.load_before, "rss": run.peak_rss_total,
                "pss": run.peak_pss_total,
                "sum_hwm": run.sum_hwm, "max_single": run.max_rss_single,
                "rusage": run.rusage_maxrss, "nproc": len(run.processes), "polls": run.polls,
                "bytes": nbytes, "alloc": alloc, "files": files,
                "processes": [vars(p) for p in run.processes]}

    r: dict[str, Any] = {
        "date": now_iso(), "command": command, "rows": args.rows, "batch_rows": args.batch_rows,
        "workers": args.workers, "interval": args.interval,
        "max_other_load": args.max_other_load, "max_attempts": args.attempts,
        "machine": machine_info(),
        "versions": package_versions(["numpy", "zarr", "numcodecs", "zarrs", "psutil"]),
        "git": code_state,
        "codec_pipeline": codec_pipeline(),
        "input": {"bytes": in_bytes, "alloc": in_alloc, "files": in_files},
        "baseline": mem(base_run, npy_bytes, npy_alloc, npy_files, base_run.wall_seconds),
        "chunkstore": mem(cs_run, st_bytes, st_alloc, st_files, cs_run.wall_seconds),
        "attempts": {"baseline": base_att, "chunkstore": cs_att},
        "baseline_child": base_child, "summary": summary, "summary_json": cs_sum,
        "chunkstore_stdout": cs_run.stdout, "chunkstore_cmd": "python -m chunkstore.cli ingest "
        f"{config_path.name} --workers {args.workers} --overwrite --quiet",
        "config_text": config_path.read_text(), "checks": checks, "store_parts": store_parts,
        "order_note": "in this order: generate the batch files"
        f"{' (earlier run, --skip-generate)' if args.skip_generate else ''}, (a) baseline "
        f"({base_att['attempts']} run(s)), (b) chunkstore ({cs_att['attempts']} run(s)). "
        "The input files (~"
        f"{in_bytes / 2**30:.1f} GiB) fit in RAM, so both read them from the page cache (warm); "
        "the baseline's .npy output was also still cached while chunkstore ran.",
    }
    if zs:
        zb, za, zf = tree_bytes(zs["store"], exclude=("_chunkstore",))
        r["zarrs"] = mem(zs["run"], zb, za, zf, zs["run"].wall_seconds)
        r["attempts"]["zarrs"] = zs["att"]
    r["ratios"] = {"wall": cs_run.wall_seconds / base_run.wall_seconds,
                   "rss": cs_run.peak_rss_total / base_run.peak_rss_total,
                   "bytes": st_bytes / npy_bytes}
    if args.profile:
        say("profiling chunkstore tasks")
        r["profile"] = profile_tasks(store, config_path)

    table, section = build_report(r)
    print(table)
    (work / "bench_ingest.json").write_text(json.dumps(r, indent=1, default=str))
    if not args.no_results:
        write_section(args.results, SECTION, section)
        say(f"updated section {TITLE!r} in {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
