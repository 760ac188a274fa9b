"""A realistic producer for the ``python`` source: one replay file in, a variable number of
training samples out (some replays are empty: abandoned games).

It stands in for a user's preprocessing (parse a replay, extract 893 state features and 7
action heads per step). Nothing here is chunkstore-specific: chunkstore only calls
``list_replays()`` once and ``process_replay(name)`` once per replay, in worker processes.

``REPLAYS_INCLUDE_CORRUPT=1`` adds one corrupt replay whose parser raises, to show the error
(naming the item); ``REPLAYS_REPAIRED=1`` then stands for repairing that file, and the rerun
resumes without redoing committed replays. ``REPLAYS_N`` sets the number of replays and
``REPLAYS_WORK_MS`` adds simulated parsing cost per replay.
"""

from __future__ import annotations

import hashlib
import os
import time

import numpy as np

from chunkstore.core.schema import Schema
from chunkstore.sources.synthetic import SyntheticOptions, SyntheticSource

HEADS = {"action_type": 12, "ability": 48, "target_unit": 64, "target_x": 32, "target_y": 32,
         "queue": 2, "delay": 16}
_GEN = SyntheticSource(SyntheticOptions(n_samples=1, seed=0),
                       Schema.from_dict({"features": 893, "heads": HEADS}))


def list_replays() -> list[str]:
    n = int(os.environ.get("REPLAYS_N", "200"))
    names = [f"replays/game_{k:06d}.rep" for k in range(n)]
    if os.environ.get("REPLAYS_INCLUDE_CORRUPT"):
        names.insert(n // 2, "replays/corrupt_000.rep")
    return names


def _steps(name: str) -> int:
    """Game length is only known after parsing: 0 (abandoned) to ~1,500 steps."""
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    return 0 if h % 10 == 0 else int(h % 1_500)


def process_replay(name: str) -> dict:
    if "corrupt" in name and not os.environ.get("REPLAYS_REPAIRED"):
        raise ValueError(f"{name}: truncated header (expected 64 bytes, found 17)")
    n = _steps(name)
    work_ms = float(os.environ.get("REPLAYS_WORK_MS", "0"))
    if work_ms:
        time.sleep(work_ms / 1000)
    stem = name.rsplit("_", 1)[1].split(".")[0]
    episode = int(stem) if stem.isdigit() else 10**6
    b = _GEN.generate(episode, n)
    return {"features": b.features, "labels": dict(b.labels), "masks": dict(b.masks),
            "group": np.full(n, episode, dtype=np.int64)}


def count_steps(name: str) -> int:
    """What a cheap index lookup would give, for placement: ordered."""
    return _steps(name)
