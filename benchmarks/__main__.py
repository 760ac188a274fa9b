"""``python -m benchmarks list | run CASE [CASE...] [--rows N] [--repeats K] | render``."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys

from . import harness, render
from .cases import CASES

RESULTS = harness.BENCH / "results"
SMOKE = harness.WORK / "smoke-results"  # runs below a case's full size: never rendered


def meta() -> dict:
    import platform
    from importlib.metadata import version

    import psutil

    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(harness.REPO), *a], capture_output=True,
                              text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--", "chunkstore")
    model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                  if ln.startswith("model name")), platform.processor())
    return {"code": git("rev-parse", "--short", "HEAD") + (" (uncommitted changes)" if dirty
                                                              else ""),
            "machine": f"{harness.NCPU} CPUs ({model.split()[0]}), "
                       f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM, Python "
                       f"{platform.python_version()}, " + ", ".join(
                           f"{p} {version(p)}" for p in ("numpy", "zarr", "numcodecs", "dask"))}


def export_rev(rev: str) -> harness.Path:
    """``git archive REV`` under work/ (once), to benchmark another version of chunkstore."""
    sha = subprocess.run(["git", "-C", str(harness.REPO), "rev-parse", "--short=12", rev],
                         capture_output=True, text=True, check=True).stdout.strip()
    dest = harness.WORK / f"rev-{sha}"
    if not dest.exists():
        dest.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(harness.REPO), "archive", sha, "chunkstore"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def run(args: argparse.Namespace) -> int:
    import datetime as dt

    unknown = sorted(set(args.cases) - set(CASES))
    if unknown:
        sys.exit(f"unknown case(s): {', '.join(unknown)}; see `python -m benchmarks list`")
    if args.rev:
        harness.use_code(export_rev(args.rev))
    smoke = False
    with harness.exclusive(lambda m: print(m, file=sys.stderr, flush=True)):
        for name in args.cases:
            mod = importlib.import_module(f"benchmarks.cases.{name}")
            rows = args.rows or mod.DEFAULT_ROWS
            ctx = harness.Context(name, rows, args.repeats, args.idle_wait,
                                  smoke=rows < mod.DEFAULT_ROWS)
            smoke |= ctx.smoke
            out = {"case": name, "title": mod.TITLE, "smoke": ctx.smoke, "rows": rows,
                   "repeats": args.repeats,
                   "command": "python -m benchmarks " + " ".join(sys.argv[1:]),
                   "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **meta(),
                   **mod.run(ctx)}
            if args.rev:  # the code measured is the exported revision, not the working tree
                out.update(rev=args.rev, code=harness.CODE[0].name.removeprefix("rev-"))
            out["max_other_load_pct"] = round(max((r.other_load for r in ctx.runs), default=0), 1)
            dest = SMOKE if ctx.smoke else RESULTS
            dest.mkdir(parents=True, exist_ok=True)
            path = dest / f"{name}{'-' + args.rev if args.rev else ''}.json"
            path.write_text(json.dumps(out, indent=1, default=float) + "\n")
            print(render.case_markdown(out))
            print(f"\nsaved {path.relative_to(harness.REPO)}", file=sys.stderr)
    if not smoke:
        render.write(RESULTS)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the cases and their full sizes")
    r = sub.add_parser("run", help="run cases; save results/<case>.json; render RESULTS.md")
    r.add_argument("cases", nargs="+", metavar="CASE")
    r.add_argument("--rows", type=int, help="rows (default: the case's full size; fewer rows = "
                   "a smoke run, saved under work/smoke-results/ and never rendered)")
    r.add_argument("--repeats", type=int, default=3, help="interleaved repeats (fastest kept)")
    r.add_argument("--idle-wait", type=float, default=120.0,
                   help="before each run, wait up to S s for the machine to be idle (0: no wait)")
    r.add_argument("--rev", help="benchmark chunkstore at this git revision (git archive); "
                   "results saved as results/<case>-<rev>.json")
    sub.add_parser("render", help="rewrite RESULTS.md from results/*.json")
    s = sub.add_parser("step")  # internal: one measured step, in its own process
    s.add_argument("func")
    s.add_argument("kwargs")
    args = p.parse_args(argv)
    if args.cmd == "list":
        for c in CASES:
            mod = importlib.import_module(f"benchmarks.cases.{c}")
            print(f"{c:<15} {mod.DEFAULT_ROWS:>9,} rows  {mod.TITLE}")
    elif args.cmd == "run":
        return run(args)
    elif args.cmd == "render":
        render.write(RESULTS)
    else:
        harness.run_step(args.func, args.kwargs)
    return 0


sys.exit(main())
