"""Streaming ingest benchmark (issue 6): user preprocessing code with unknown counts per item.

The producer is ``examples/replay_producer.py``: one replay in, 0 to ~1,500 samples out (10% of
replays are empty), 893 float32 features and 7 heads per sample. ``REPLAYS_N`` sets the number
of replays; ``REPLAYS_WORK_MS`` adds simulated parsing cost (a sleep) per replay on top of the
sample generation, which is itself CPU work, so ``process`` dominates every method below.

Compared in one run (each measured run is a separate process tree, see ``common.py``):

(a) ``chunkstore ingest`` with streaming placement (``source.count`` unset: the default);
(b) ``chunkstore ingest`` with ordered placement and the opt-in counting pass
    (``counting_pass: true``: ``process`` runs once to count, then again to write);
(c) the baseline users run today: a ``multiprocessing.Pool`` of the same number of workers runs
    ``process_replay`` on each replay and saves one uncompressed ``.npz`` batch file per replay
    (c1); then one process merges all batch files into preallocated numpy arrays and
    ``np.save``\\ s them (c2; the two-pass merge of ``bench_ingest.py``); (c) = c1 + c2;
(a') streaming again with a quarter of the replays, to show that worker peak RSS does not
    depend on N.

Then it verifies: the streaming stores' ``meta/source`` holds every (item, row) pair exactly
once and nothing else; N equals the baseline's N; a few replays' rows in both stores equal
``process_replay`` and the baseline's arrays. Prints one table and writes the ``bench_streaming``
section of ``benchmarks/RESULTS.md``. Run with ``--help`` for the options.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EXAMPLES = REPO / "examples"
SECTION = "bench_streaming"
TITLE = "## Streaming ingest from user code (issue 6)"
TARGET_ROWS = 547_000
TARGET_SPEEDUP = 1.5  # ordered-with-counting-pass wall / streaming wall, at least
TARGET_RSS_GROWTH = 1.25  # worker peak RSS at N / at N/4, at most ("independent of N")

HEADS = {"action_type": 12, "ability": 48, "target_unit": 64, "target_x": 32, "target_y": 32,
         "queue": 2, "delay": 16}  # those of examples/replay_producer.py
SCHEMA = {"features": 893, "heads": HEADS}


def replay_names(n: int) -> list[str]:
    """``list_replays()`` for ``REPLAYS_N=n`` (without the corrupt one)."""
    return [f"replays/game_{k:06d}.rep" for k in range(n)]


def _producer() -> Any:
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    import replay_producer

    return replay_producer


def replays_for(rows: int) -> tuple[int, int]:
    """The fewest replays whose samples add up to at least ``rows``: (replays, samples)."""
    steps = _producer()._steps
    total = k = 0
    while total < rows:
        total += steps(f"replays/game_{k:06d}.rep")
        k += 1
    return k, total


# --------------------------------------------------------------------------------------------
# (c) the baseline, run as its own processes: numpy, multiprocessing and the producer only
# --------------------------------------------------------------------------------------------

def _produce_one(job: tuple[int, str, str]) -> int:
    k, name, out_dir = job
    d = _producer().process_replay(name)
    arrays = {"strategic_features": d["features"], "group": d["group"]}
    for h in HEADS:
        arrays[f"labels_{h}"] = d["labels"][h]
        arrays[f"masks_{h}"] = d["masks"][h]
    np.savez(os.path.join(out_dir, f"replay_{k:06d}.npz"), **arrays)
    return len(d["features"])


def baseline_produce(out_dir: str, workers: int) -> dict[str, Any]:
    """(c1) A pool runs ``process_replay`` per replay and saves one ``.npz`` per replay."""
    import multiprocessing

    t0 = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    names = _producer().list_replays()
    with multiprocessing.Pool(workers) as pool:
        rows = sum(pool.imap_unordered(_produce_one, [(k, n, out_dir) for k, n in
                                                      enumerate(names)]))
    return {"files": len(names), "rows": rows, "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------------------------
# chunkstore runs
# --------------------------------------------------------------------------------------------

def write_config(path: Path, store: Path, ordered: bool, workers: int) -> str:
    import yaml

    source: dict[str, Any] = {"kind": "python", "path": [str(EXAMPLES)],
                              "items": "replay_producer:list_replays",
                              "process": "replay_producer:process_replay", "group": True}
    if ordered:
        source.update(placement="ordered", counting_pass=True)
    cfg = {"store": str(store), "schema": SCHEMA, "source": source,
           "ingest": {"workers": workers}}
    text = ("# written by benchmarks/bench_streaming.py (examples/replay_producer.py; "
            "REPLAYS_N / REPLAYS_WORK_MS from the environment)\n"
            + yaml.safe_dump(cfg, sort_keys=False))
    path.write_text(text)
    return text


def read_summary(store: Path) -> dict[str, Any]:
    """The summary ``chunkstore ingest`` saved in the store (the one it printed)."""
    return dict(json.loads((store / "_chunkstore" / "summary.json").read_text()))


# --------------------------------------------------------------------------------------------
# verification
# --------------------------------------------------------------------------------------------

class Mismatch(AssertionError):
    pass


def check_exactly_once(store: Path, counts: list[int]) -> str:
    """Every (item, row < counts[item]) pair is in ``meta/source`` once, and nothing else."""
    import zarr

    g: Any = zarr.open_group(str(store), mode="r")  # Any: zarr's member types are unions
    attrs = g.attrs["chunkstore"]
    n = sum(counts)
    if attrs.get("status") != "complete" or attrs.get("n_samples") != n:
        raise Mismatch(f"{store.name}: status {attrs.get('status')!r}, n_samples "
                       f"{attrs.get('n_samples')!r}; expected 'complete', {n}")
    src = g["meta/source"][:]
    if src.shape != (n, 2) or any(g[a].shape[0] != n for a in ("features", "meta/group")):
        raise Mismatch(f"{store.name}: meta/source {src.shape}, features {g['features'].shape}; "
                       f"expected {n} rows")
    found = np.sort(src[:, 0] * 2**32 + src[:, 1])
    expected = np.concatenate([k * 2**32 + np.arange(c, dtype=np.int64)
                               for k, c in enumerate(counts)])
    if not np.array_equal(found, expected):
        dup = int((np.diff(found) == 0).sum())
        raise Mismatch(f"{store.name}: meta/source is not each (item, row) exactly once "
                       f"({dup} duplicates, {len(np.setdiff1d(expected, found))} missing)")
    return (f"`{store.name}`: `meta/source` holds each of the {n:,} (item, row) pairs of "
            f"{len(counts)} replays exactly once, nothing else; N = {n:,}")


def _same(what: str, expected: Any, found: Any) -> None:
    expected, found = np.asarray(expected), np.asarray(found)
    if expected.shape != found.shape or not np.array_equal(expected, found):
        raise Mismatch(f"{what}: store and reference differ (shapes {found.shape}, "
                       f"{expected.shape})")


def check_rows(streaming: Path, ordered: Path, npy_dir: Path, counts: list[int],
               n_items: int = 4) -> str:
    """A few replays: store rows == ``process_replay`` == the baseline's merged arrays."""
    import zarr

    producer = _producer()
    s: Any = zarr.open_group(str(streaming), mode="r")  # Any: zarr's member types are unions
    o: Any = zarr.open_group(str(ordered), mode="r")
    src = s["meta/source"][:]
    offsets = np.concatenate([[0], np.cumsum(counts)])
    feats = np.load(npy_dir / "strategic_features.npy", mmap_mode="r")
    if feats.shape[0] != offsets[-1]:
        raise Mismatch(f"baseline: {feats.shape[0]} rows, expected {offsets[-1]}")
    rng = np.random.default_rng(6)
    nonempty = [k for k, c in enumerate(counts) if c]
    picked = sorted({nonempty[0], nonempty[-1], *rng.choice(nonempty, n_items - 2).tolist()})
    for k in picked:
        ref = producer.process_replay(replay_names(len(counts))[k])
        where = np.flatnonzero(src[:, 0] == k)
        where = where[np.argsort(src[where, 1])]
        a, b = int(offsets[k]), int(offsets[k + 1])
        _same(f"replay {k} features (baseline)", ref["features"], feats[a:b])
        _same(f"replay {k} features (ordered)", ref["features"], o["features"][a:b])
        _same(f"replay {k} features (streaming)", ref["features"], s["features"].oindex[where])
        for h in HEADS:
            for kind in ("labels", "masks"):
                want = ref[kind][h]
                _same(f"replay {k} {kind}/{h} (baseline)", want,
                      np.load(npy_dir / f"{kind}_{h}.npy", mmap_mode="r")[a:b])
                _same(f"replay {k} {kind}/{h} (ordered)", want, o[f"{kind}/{h}"][a:b])
                _same(f"replay {k} {kind}/{h} (streaming)", want,
                      s[f"{kind}/{h}"].oindex[where])
        _same(f"replay {k} group (streaming)", ref["group"], s["meta/group"].oindex[where])
    return (f"replays {', '.join(map(str, picked))}: features, all labels and masks equal "
            "`process_replay` in the streaming store (rows found via `meta/source`), the ordered "
            "store and the baseline's merged .npy (rows at the item's offset)")


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------

def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def process_roles(run: Any) -> tuple[int, int]:
    """(VmHWM of the command's own process, largest VmHWM of its worker processes), bytes.

    The command's process is the oldest of the tree (the lowest pid); the multiprocessing
    resource tracker is not a worker.
    """
    procs = sorted(run.processes, key=lambda p: p.pid)
    if not procs:
        return 0, 0
    workers = [p.hwm for p in procs[1:] if "resource_tracker" not in p.cmd]
    return procs[0].hwm, max(workers, default=0)


def build_report(r: dict[str, Any]) -> tuple[str, str]:
    """(the table printed on stdout, the RESULTS.md section)."""
    from common import markdown_table

    runs = r["runs"]
    rows = []
    for key, label in (("streaming", "(a) chunkstore, streaming (default)"),
                       ("ordered", "(b) chunkstore, ordered + counting pass"),
                       ("produce", "(c1) baseline: Pool -> one .npz per replay"),
                       ("merge", "(c2) baseline: merge -> np.save"),
                       ("baseline", "(c) baseline total, c1 + c2"),
                       ("small", "(a') chunkstore, streaming, 1/4 of the replays")):
        m = runs[key]
        left = (f"{m['leftover']:,} ({100 * m['leftover'] / m['rows']:.2f}%)"
                if m.get("leftover") is not None else "-")
        rows.append([label, f"{m['replays']:,}", f"{m['rows']:,}", f"{m['wall']:.1f}",
                     f"{m['rows'] / m['wall']:,.0f}", _mib(m["tree_rss"]),
                     _mib(m["coordinator"]), _mib(m["worker"]) if m["worker"] else "-",
                     left, f"{m['wall'] / runs['streaming']['wall']:.2f}"])
    table = markdown_table(
        ["method", "replays", "rows", "wall s", "rows/s", "peak RSS tree MiB",
         "coordinator MiB", "largest worker MiB", "leftover rows (share)",
         "wall / (a)"], rows)
    q = r["ratios"]
    ratio_table = markdown_table(
        ["target", "measured", "wanted", "result"],
        [["(b) wall / (a) wall: streaming vs ordered + counting pass", f"{q['speedup']:.2f}x",
          f">= {TARGET_SPEEDUP}x", "PASS" if q["speedup"] >= TARGET_SPEEDUP else "MISS"],
         ["largest worker RSS at N / at N/4 (chunkstore's ru_maxrss)",
          f"{q['worker_growth']:.2f}", f"<= {TARGET_RSS_GROWTH}",
          "PASS" if q["worker_growth"] <= TARGET_RSS_GROWTH else "MISS"],
         ["same, from the poller's VmHWM of the worker processes",
          f"{q['worker_growth_hwm']:.2f}", f"<= {TARGET_RSS_GROWTH}",
          "PASS" if q["worker_growth_hwm"] <= TARGET_RSS_GROWTH else "MISS"],
         ["(c) wall / (a) wall: streaming vs batch files + merge (no target)",
          f"{q['vs_baseline']:.2f}x", "-", "-"],
         ["(c) peak RSS / (a) peak RSS, process trees (no target)",
          f"{q['rss_vs_baseline']:.1f}x", "-", "-"]], align="lrrl")
    stdout_text = f"{table}\n\n{ratio_table}"
    load_table = markdown_table(
        ["run", "load avg before (1/5/15 min)", "CPU s (tree)",
         "other processes' CPU s (share of the machine)", "waited for other benchmarks s"],
        [[k, " ".join(f"{x:.2f}" for x in runs[k]["load"]), f"{runs[k]['cpu']:.1f}",
          f"{runs[k]['other_cpu']:.1f} "
          f"({runs[k]['other_cpu'] / (runs[k]['wall'] * r['machine']['nproc']):.0%})",
          f"{runs[k]['lock_wait']:.0f}"]
         for k in ("streaming", "ordered", "produce", "merge", "small")])
    m, s = r["machine"], runs["streaming"]
    lines = [
        TITLE, "",
        f"Written by `benchmarks/bench_streaming.py` on {r['date']}; rerun it to update this "
        "section.", "",
        f"**Machine:** {m['nproc']} CPUs ({m['cpu_model']}), {m['ram_bytes'] / 2**30:.1f} GiB "
        f"RAM, Python {m['python']}; **chunkstore:** {r['code']}. **Shared machine:** "
        f"`uptime` at the start: `{r['uptime_start']}`; at the end: `{r['uptime_end']}`. Other "
        "agents' jobs ran at the same time, so wall times are disturbed (per-run load below).",
        "",
        f"**Command:** `{r['command']}`", "",
        f"**Job:** `examples/replay_producer.py` with `REPLAYS_N={r['replays']}` (the fewest "
        f"replays whose samples reach {TARGET_ROWS:,}: {r['rows']:,} samples, mean "
        f"{r['rows'] / r['replays']:.0f} per replay, {r['empty']} empty replays) and "
        f"`REPLAYS_WORK_MS={r['work_ms']:g}` (simulated parsing, a sleep, on top of generating "
        f"the samples: {r['gen_ms']:.0f} ms of CPU per replay on average, measured in the "
        f"benchmark process before the runs). (a') uses `REPLAYS_N={r['small_replays']}` "
        f"({runs['small']['rows']:,} samples). {r['workers']} workers everywhere.", "",
        stdout_text, "",
        "### How it was measured", "",
        f"- (a), (b), (a') run `{r['cs_cmd']}` (store deleted first) with the configs below; "
        "(b) sets `placement: ordered` and `counting_pass: true`, so `process` runs for every "
        "replay in a counting pass and again in the write tasks (a replay cut by a task "
        "boundary is processed by both tasks).",
        "- (c1) runs `bench_streaming.py --baseline-produce DIR --workers W`: a "
        "`multiprocessing.Pool(W)` (fork) maps `process_replay` over the replays, each worker "
        "saving one uncompressed `np.savez` batch file per replay (`strategic_features`, "
        "`labels_<head>`, `masks_<head>`, `group`); (c2) runs `bench_streaming.py "
        "--baseline-merge DIR OUT`: the two-pass merge of `bench_ingest.py` (row counts, "
        "preallocated arrays, copy, `np.save` per array) in one process.",
        "- Wall time: process start to exit, as a user sees it. Peak RSS tree: the largest sum "
        "of VmRSS over the process tree (coordinator + workers) at one poll every "
        f"{r['interval'] * 1000:.0f} ms; (c) takes the larger of its two phases. Coordinator / "
        "largest worker: chunkstore's own summary (`ru_maxrss` of each process) for (a), (b), "
        "(a'); the poller's VmHWM for the baseline. rows/s = rows / wall.",
        "- Leftover rows: the rows the coordinator packed into the last chunks at the end "
        "(chunkstore's summary line `leftover rows`); at most workers x chunk rows.",
        "- Runs are in the order (a), (b), (c1), (c2), (a'), one each; `os.sync()` before each.",
        "", "Load during each run:", "", load_table, "",
        "Worker peak RSS, (a) vs (a'): chunkstore's summary "
        f"{_mib(s['worker'])} vs {_mib(runs['small']['worker'])} MiB; the poller's largest "
        f"worker VmHWM {_mib(s['worker_hwm'])} vs {_mib(runs['small']['worker_hwm'])} MiB.", "",
        "chunkstore's summary for (a):", "", "```", r["stdout"]["streaming"].strip(), "```", "",
        "and for (b):", "", "```", r["stdout"]["ordered"].strip(), "```", "",
        "Config of (a) ((b) adds `placement: ordered`, `counting_pass: true`):", "",
        "```yaml", r["config_text"].strip(), "```", "",
        "**Verification (passed):**", "", *[f"- {c}" for c in r["checks"]],
    ]
    return stdout_text, "\n".join(lines)


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replays", type=int, default=0,
                   help="REPLAYS_N (default: the fewest replays giving >= 547,000 samples)")
    p.add_argument("--work-ms", type=float, default=200.0,
                   help="REPLAYS_WORK_MS: simulated parsing per replay (default 200)")
    p.add_argument("--workers", type=int, default=2, help="workers for every method")
    p.add_argument("--workdir", default=str(HERE / "work" / "streaming"),
                   help="configs, stores and batch files (default benchmarks/work/streaming)")
    p.add_argument("--rev", default=None,
                   help="benchmark chunkstore as of this git revision (git archive into the "
                        "workdir, first on PYTHONPATH) instead of the working tree")
    p.add_argument("--interval", type=float, default=0.1, help="memory poll interval, seconds")
    p.add_argument("--idle-wait", type=float, default=20.0,
                   help="before each run wait up to this many seconds for the CPU to go idle")
    p.add_argument("--no-lock", action="store_true",
                   help="do not take turns with other benchmarks' measured runs (for trying the "
                        "script out; figures may then be disturbed by them)")
    p.add_argument("--keep", action="store_true", help="keep stores and batch files afterwards")
    p.add_argument("--results", default=str(HERE / "RESULTS.md"), help="results file to update")
    p.add_argument("--no-results", action="store_true", help="print only; leave RESULTS.md")
    p.add_argument("--baseline-produce", metavar="OUT_DIR", help=argparse.SUPPRESS)
    p.add_argument("--baseline-merge", nargs=2, metavar=("BATCH_DIR", "OUT_DIR"),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.workers < 1 or args.replays < 0 or args.work_ms < 0:
        p.error("--workers must be positive, --replays and --work-ms not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(HERE))
    from bench_ingest import baseline_merge, export_rev

    if args.baseline_produce:
        print(json.dumps(baseline_produce(args.baseline_produce, args.workers)))
        return 0
    if args.baseline_merge:
        print(json.dumps(baseline_merge(*args.baseline_merge)))
        return 0

    from common import _run_measured, git_state, machine_info, now_iso, run_measured, write_section

    def say(msg: str) -> None:
        print(f"[bench_streaming {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def uptime() -> str:
        return os.popen("uptime").read().strip()

    command = "python benchmarks/bench_streaming.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.pop("REPLAYS_INCLUDE_CORRUPT", None)
    if args.rev:
        src, sha = export_rev(args.rev, work)
        env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [env.get("PYTHONPATH")])])
        where = subprocess.run(
            [sys.executable, "-c", "import chunkstore; print(chunkstore.__file__)"],
            env=env, cwd=work, capture_output=True, text=True, check=True)
        if not Path(where.stdout.strip()).resolve().is_relative_to(src.resolve()):
            raise SystemExit(f"--rev: the runs would import chunkstore from {where.stdout.strip()}"
                             f", not from {src}")
        code = f"{sha[:12]} (`--rev {args.rev}`, exported with git archive)"
    else:
        code = git_state(REPO, ["chunkstore"]) + " (working tree)"
    uptime_start = uptime()
    say(f"uptime: {uptime_start}")

    producer = _producer()
    replays = args.replays or replays_for(TARGET_ROWS)[0]
    small_replays = max(1, replays // 4)
    counts = [producer._steps(n) for n in replay_names(replays)]
    small_counts = counts[:small_replays]
    t0 = time.process_time()  # CPU cost of generating a sample, times the mean replay length
    sample_rows = sum(len(producer.process_replay(n)["features"])
                      for n in replay_names(replays)[:: max(1, replays // 20)])
    gen_ms = (time.process_time() - t0) / max(1, sample_rows) * sum(counts) / replays * 1000
    say(f"{replays} replays -> {sum(counts):,} samples; a'): {small_replays} replays; "
        f"generation ~{gen_ms:.0f} ms CPU per replay; REPLAYS_WORK_MS={args.work_ms:g}")

    cs_cmd = ["-m", "chunkstore.cli", "ingest", "CONFIG", "--quiet", "--overwrite"]
    paths = {k: work / f"{k}.zarr" for k in ("streaming", "ordered", "small")}
    batch_dir, npy_dir = work / "batches", work / "npy"
    config_text = ""
    runs: dict[str, dict[str, Any]] = {}
    stdout: dict[str, str] = {}

    def measure(key: str, argv_: list[str], n_replays: int, clean: Path) -> Any:
        shutil.rmtree(clean, ignore_errors=True)
        os.sync()
        say(f"running {key} ({n_replays} replays)")
        run_env = {**env, "REPLAYS_N": str(n_replays), "REPLAYS_WORK_MS": f"{args.work_ms:g}"}
        if args.no_lock:
            run = _run_measured(argv_, interval=args.interval, pss=True, cwd=work, env=run_env)
        else:
            run = run_measured(argv_, interval=args.interval, cwd=work, env=run_env,
                               idle_wait=args.idle_wait, log=say)
        run.check()
        coord, worker = process_roles(run)
        runs[key] = {"replays": n_replays, "wall": run.wall_seconds, "tree_rss":
                     run.peak_rss_total, "coordinator": coord, "worker": worker,
                     "worker_hwm": worker, "cpu": run.cpu_seconds,
                     "other_cpu": run.other_cpu_seconds, "load": run.load_before,
                     "lock_wait": run.lock_wait_seconds + run.idle_wait_seconds}
        stdout[key] = run.stdout
        say(f"{key}: {run.wall_seconds:.1f} s, peak RSS tree {_mib(run.peak_rss_total)} MiB")
        return run

    for key, ordered, n_replays in (("streaming", False, replays), ("ordered", True, replays)):
        cfg = work / f"{key}.yaml"
        text = write_config(cfg, paths[key], ordered, args.workers)
        config_text = config_text or text
        measure(key, [sys.executable, *cs_cmd[:3], str(cfg), *cs_cmd[4:]], n_replays, paths[key])
    me = str(Path(__file__).resolve())
    measure("produce", [sys.executable, me, "--baseline-produce", str(batch_dir),
                        "--workers", str(args.workers)], replays, batch_dir)
    measure("merge", [sys.executable, me, "--baseline-merge", str(batch_dir), str(npy_dir)],
            replays, npy_dir)
    cfg = work / "small.yaml"
    write_config(cfg, paths["small"], False, args.workers)
    measure("small", [sys.executable, *cs_cmd[:3], str(cfg), *cs_cmd[4:]], small_replays,
            paths["small"])
    uptime_end = uptime()

    for key in ("streaming", "ordered", "small"):
        summ = read_summary(paths[key])
        runs[key].update(rows=summ["rows"], coordinator=summ["coordinator_peak_rss"],
                         worker=summ["worker_peak_rss"], leftover=summ.get("leftover_rows"))
    produced = json.loads(stdout["produce"].strip().splitlines()[-1])
    merged = json.loads(stdout["merge"].strip().splitlines()[-1])
    runs["produce"]["rows"] = produced["rows"]
    runs["merge"].update(rows=merged["rows"], worker=0)
    c1, c2 = runs["produce"], runs["merge"]
    runs["baseline"] = {"replays": replays, "rows": merged["rows"], "wall": c1["wall"] + c2["wall"],
                        "tree_rss": max(c1["tree_rss"], c2["tree_rss"]),
                        "coordinator": max(c1["coordinator"], c2["coordinator"]),
                        "worker": c1["worker"]}

    say("verifying")
    try:
        if merged["rows"] != sum(counts) or produced["rows"] != sum(counts):
            raise Mismatch(f"baseline N {merged['rows']:,} (produced {produced['rows']:,}); "
                           f"expected {sum(counts):,}")
        checks = [check_exactly_once(paths["streaming"], counts) + ", equal to the baseline's "
                  f"N ({merged['rows']:,})",
                  check_exactly_once(paths["small"], small_counts)]
        if runs["ordered"]["rows"] != merged["rows"]:
            raise Mismatch(f"ordered store: {runs['ordered']['rows']:,} rows, baseline "
                           f"{merged['rows']:,}")
        checks.append(f"ordered store: N = {runs['ordered']['rows']:,}, equal to the baseline's")
        checks.append(check_rows(paths["streaming"], paths["ordered"], npy_dir, counts))
    except Mismatch as e:
        print(f"\nVERIFICATION FAILED: {e}\nRESULTS.md was not updated.", file=sys.stderr)
        return 2
    say("verification passed")

    s, o, b, sm = (runs[k] for k in ("streaming", "ordered", "baseline", "small"))
    ratios = {"speedup": o["wall"] / s["wall"], "vs_baseline": b["wall"] / s["wall"],
              "rss_vs_baseline": b["tree_rss"] / s["tree_rss"],
              "worker_growth": s["worker"] / sm["worker"],
              "worker_growth_hwm": s["worker_hwm"] / max(1, sm["worker_hwm"])}
    report = {"date": now_iso(), "machine": machine_info(), "code": code, "command": command,
              "uptime_start": uptime_start, "uptime_end": uptime_end, "replays": replays,
              "rows": sum(counts), "empty": counts.count(0), "work_ms": args.work_ms,
              "gen_ms": gen_ms, "small_replays": small_replays, "workers": args.workers,
              "runs": runs, "ratios": ratios, "interval": args.interval, "stdout": stdout,
              "cs_cmd": "python " + " ".join(cs_cmd), "config_text": config_text,
              "checks": checks}
    stdout_text, section = build_report(report)
    print(stdout_text)
    if not args.no_results:
        write_section(args.results, SECTION, section)
        say(f"wrote section {SECTION!r} of {args.results}")
    if not args.keep:
        for p in (*paths.values(), batch_dir, npy_dir):
            shutil.rmtree(p, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
