"""Synthetic episode-ordered stores for shuffle-quality tests and benchmarks.

Real preprocessing output is ordered: one episode (a game, a recording, a gene) after another,
each about a chunk long, with labels that persist inside an episode. :func:`episode_items`
writes such data as npz-convention items (one item per episode, ``group`` = the episode):

* ``action`` (12 classes): runs of about ``chunk_rows / 16`` rows inside an episode (an action
  held for a while), a new run at every episode start;
* ``outcome`` (2 classes): one value per episode (win / loss);
* ``map`` (12 classes): one value per episode -- the hard case for a chunk-aware shuffle,
  since a chunk then holds a single class.

``order="class"`` gives the worst case instead: the same rows sorted by ``action``.
"""

from __future__ import annotations

import numpy as np

HEADS = {"action": 12, "outcome": 2, "map": 12}


def episode_items(n_episodes: int, chunk_rows: int, *, n_features: int = 4, seed: int = 0,
                  order: str = "episode") -> list[dict[str, np.ndarray]]:
    """Items of ``n_episodes`` episodes of about ``chunk_rows`` rows each (lognormal lengths,
    sigma 0.3); ``order="class"`` sorts all rows by the ``action`` label (one item per
    ``chunk_rows`` rows)."""
    if order not in ("episode", "class"):
        raise ValueError(f"order must be 'episode' or 'class', found {order!r}")
    rng = np.random.default_rng(seed)
    sizes = np.maximum(8, (chunk_rows * rng.lognormal(0, 0.3, n_episodes)).astype(np.int64))
    episode = np.repeat(np.arange(n_episodes), sizes)
    n = len(episode)
    starts = np.r_[True, episode[1:] != episode[:-1]]
    run = np.cumsum(starts | (rng.random(n) < 16 / chunk_rows)) - 1
    labels = {"action": rng.integers(0, 12, run[-1] + 1)[run],
              "outcome": rng.integers(0, 2, n_episodes)[episode],
              "map": rng.integers(0, 12, n_episodes)[episode]}
    features = rng.normal(size=(n, n_features)).astype(np.float32)
    features[:, 0] = labels["action"]  # something to learn
    rows = np.argsort(labels["action"], kind="stable") if order == "class" else np.arange(n)
    cuts = (np.flatnonzero(starts) if order == "episode"
            else np.arange(0, n, chunk_rows))
    items = []
    for a, b in zip(cuts, [*cuts[1:], n], strict=True):
        r = rows[a:b]
        item: dict[str, np.ndarray] = {"strategic_features": features[r],
                                       "group": episode[r].astype(np.int64)}
        for h, k in HEADS.items():
            item[f"labels_{h}"] = labels[h][r]
            item[f"masks_{h}"] = np.ones((len(r), k), np.int8)
        items.append(item)
    return items
