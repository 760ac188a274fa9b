"""What ``verify`` found: one :class:`Problem` per bad thing, in a :class:`VerifyReport`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = ("attrs", "shape", "missing", "corrupt", "stats", "split", "journal", "incomplete")


@dataclass(frozen=True)
class Problem:
    """One problem in a store.

    Attributes
    ----------
    kind : one of :data:`KINDS`.
    array : the array (``"features"``, ``"labels/move"``) or node it is in, "" for the store.
    detail : what was expected and what was found.
    chunk : the row-chunk (or shard) index along rows, -1 when not about one chunk.
    key : the chunk's store key, e.g. ``"features/c/3/0"``.
    rows : ``(start, stop)`` rows the chunk holds, ``(0, 0)`` when not about rows.
    writer : the task (ordered placement) or source items (streaming) that wrote those rows.
    """

    kind: str
    array: str
    detail: str
    chunk: int = -1
    key: str = ""
    rows: tuple[int, int] = (0, 0)
    writer: str = ""

    def format(self) -> str:
        where = [self.array or "store"]
        if self.key:
            where.append(f"chunk {self.key!r}")
        if self.rows != (0, 0):
            where.append(f"rows [{self.rows[0]}, {self.rows[1]})")
        if self.writer:
            where.append(f"written by {self.writer}")
        return f"{self.kind}: {', '.join(where)}: {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows"] = list(self.rows)
        return d


@dataclass(frozen=True)
class VerifyReport:
    """Everything ``verify`` checked and found; ``ok`` when nothing is wrong."""

    store: str
    problems: tuple[Problem, ...]
    chunks_checked: int
    bytes_read: int
    seconds: float
    status: str
    n_samples: int
    placement: str = "ordered"
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems

    def bad_chunks(self) -> dict[str, list[int]]:
        """Array -> sorted chunk indices reported missing or corrupt (what repair rewrites)."""
        out: dict[str, set[int]] = {}
        for p in self.problems:
            if p.kind in ("missing", "corrupt") and p.chunk >= 0:
                out.setdefault(p.array, set()).add(p.chunk)
        return {a: sorted(c) for a, c in sorted(out.items())}

    def to_dict(self) -> dict[str, Any]:
        return {"store": self.store, "ok": self.ok, "status": self.status,
                "n_samples": self.n_samples, "placement": self.placement,
                "chunks_checked": self.chunks_checked, "bytes_read": self.bytes_read,
                "seconds": round(self.seconds, 3), "notes": list(self.notes),
                "problems": [p.to_dict() for p in self.problems]}

    def format(self) -> str:
        head = (f"store {self.store!r} ({self.placement}, {self.status}, {self.n_samples:,} "
                f"rows): {self.chunks_checked:,} chunks read ({self.bytes_read / 2**20:,.1f} MiB "
                f"stored) in {self.seconds:.2f} s")
        lines = [head, *(f"note: {n}" for n in self.notes)]
        if self.ok:
            lines.append("OK: every chunk exists and passes its checksum; shapes, attrs, splits "
                         "and statistics agree")
        else:
            lines.append(f"{len(self.problems)} problem(s):")
            lines += [f"  {p.format()}" for p in self.problems]
            if self.bad_chunks():
                lines.append("fix: chunkstore repair CONFIG (the config the store was built "
                             "from) rewrites these chunks from the source")
        return "\n".join(lines)


@dataclass(frozen=True)
class RepairSummary:
    """What ``repair`` found, what it rewrote, and the verify report afterwards."""

    store: str
    before: VerifyReport
    rewritten: tuple[str, ...]
    after: VerifyReport
    seconds: float

    def format(self) -> str:
        if self.before.ok:
            return f"store {self.store!r} verified clean: nothing to repair"
        lines = [f"store {self.store!r}: {len(self.before.problems)} problem(s) found, "
                 f"{len(self.rewritten)} rewritten in {self.seconds:.2f} s:"]
        lines += [f"  {w}" for w in self.rewritten]
        lines.append("verify afterwards: " + ("OK" if self.after.ok else
                                              f"{len(self.after.problems)} problem(s) remain"))
        if not self.after.ok:
            lines += [f"  {p.format()}" for p in self.after.problems]
        return "\n".join(lines)
