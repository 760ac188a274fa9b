"""What an ingest did: rows, bytes, compression, wall time and peak memory."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

MIB = 2**20


@dataclass(frozen=True)
class IngestSummary:
    """What an ingest did; printed by the CLI and saved as ``_chunkstore/summary.json``.

    ``already_complete`` marks a rerun that found the store finished and did no work: its
    summary reports what the store holds, not rates or a compression ratio computed from no
    work (the stored bytes may by then include splits and statistics written later).
    """

    store: str
    rows: int
    tasks_total: int
    tasks_run: int
    tasks_skipped: int
    workers: int
    raw_bytes: int
    stored_bytes: int
    wall_seconds: float
    coordinator_peak_rss: int
    worker_peak_rss: int
    leftover_rows: int | None = None  # streaming: rows packed by the coordinator at the end
    already_complete: bool = False

    @property
    def ratio(self) -> float:
        return self.raw_bytes / self.stored_bytes if self.stored_bytes else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "compression_ratio": self.ratio}

    def format(self) -> str:
        """The text the CLI prints: what was done, or that nothing was left to do."""
        if self.already_complete:
            return "\n".join([
                f"store            {self.store}  (already complete: nothing to do)",
                f"rows             {self.rows:,}",
                f"{self._unit():17}{self.tasks_total} already done",
                f"stored bytes     {self.stored_bytes / MIB:,.1f} MiB",
            ])
        rate = self.raw_bytes / MIB / self.wall_seconds if self.wall_seconds else 0.0
        return "\n".join([
            f"store            {self.store}  (complete)",
            f"rows             {self.rows:,}",
            f"{self._unit():17}{self.tasks_run} run, {self.tasks_skipped} already done, "
            f"{self.workers} workers",
            f"raw bytes        {self.raw_bytes / MIB:,.1f} MiB",
            f"stored bytes     {self.stored_bytes / MIB:,.1f} MiB  "
            f"(compression ratio {self.ratio:.2f}x)",
            f"wall time        {self.wall_seconds:,.1f} s  ({rate:,.0f} MiB/s raw)",
            f"peak memory      coordinator {self.coordinator_peak_rss / MIB:,.0f} MiB, "
            f"largest worker {self.worker_peak_rss / MIB:,.0f} MiB",
        ] + ([] if self.leftover_rows is None else [
            f"leftover rows    {self.leftover_rows:,} packed by the coordinator "
            f"({100 * self.leftover_rows / max(1, self.rows):.2f}% of rows)"]))

    def _unit(self) -> str:
        return "items" if self.leftover_rows is not None else "tasks"
