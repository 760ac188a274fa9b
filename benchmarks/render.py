"""RESULTS.md from ``results/*.json``: one section per case, then the static PREVIOUS.md."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from .cases import CASES
from .harness import BENCH, REPO


def cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:
            return "-"
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.2f}" if abs(v) >= 1 else f"{v:.3g}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def table(rows: list[dict[str, Any]]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    body = [[cell(r.get(c)) for c in cols] for r in rows]
    w = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(cols)]
    line = lambda cs: "| " + " | ".join(  # noqa: E731
        c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(cs)) + " |"
    rule = "|" + "|".join(":" + "-" * (x + 1) if i == 0 else "-" * (x + 1) + ":"
                          for i, x in enumerate(w)) + "|"
    return "\n".join([line(cols), rule, *(line(b) for b in body)])


def case_markdown(r: dict[str, Any]) -> str:
    about = importlib.import_module(f"benchmarks.cases.{r['case']}").ABOUT.strip()
    rev = f" -- chunkstore at `{r['rev']}`" if r.get("rev") else ""
    out = [f"## {r['title']}{rev}", "",
           f"`{r['command']}` -- {r['date']}, code {r['code']}; {r['machine']}. {r['rows']:,} "
           f"rows, fastest of {r['repeats']} interleaved run(s); largest other load during a "
           f"run: {r['max_other_load_pct']}% of the machine.", "", about]
    for t in r["tables"]:
        out += ["", *([f"**{t['title']}**", ""] if t.get("title") else []), table(t["rows"])]
    if r["targets"]:
        out += ["", table([{"target": t["name"], "measured": t["measured"], "wanted": t["target"],
                            "result": {True: "PASS", False: "MISS", None: "-"}[t["pass"]]}
                           for t in r["targets"]])]
    out += [""] + [f"- {n}" for n in r.get("notes", [])]
    return "\n".join(out).replace(str(REPO) + "/", "").replace(str(REPO), ".")


def write(results: Path) -> Path:
    parts = ["# Benchmark results", "",
             "Rendered by `python -m benchmarks render` from `benchmarks/results/*.json`; do not "
             "edit by hand. Rerun a case with `python -m benchmarks run CASE` (see "
             "`benchmarks/README.md`). Wall s: process start to exit; peak RSS: largest sum over "
             "the process tree (single-process steps: the kernel's exact high-water mark); "
             "other load: CPU used by other processes during the run (a shared machine)."]
    for case in CASES:
        for path in sorted(results.glob(f"{case}*.json")):
            r = json.loads(path.read_text())
            if r["case"] == case and not r.get("smoke"):
                parts += ["", case_markdown(r)]
    parts += ["", (BENCH / "PREVIOUS.md").read_text().strip(), ""]
    dest = BENCH / "RESULTS.md"
    dest.write_text("\n".join(parts))
    return dest
