"""``chunkstore report STORE --out DIR``: PNG plots of a store and an ``index.html`` showing them.

Plots are drawn from the stored statistics (``stats/<scope>``) and split arrays, never from the
sample chunks, so a report of a large store is quick. A plot whose statistic is absent is
skipped with a note in the HTML saying which command computes it. matplotlib is the optional
``report`` extra, imported lazily with the Agg backend.

A store without heads (features only, e.g. token sequences) skips the per-head plots with that
reason; a store of integer features adds a ``value_counts`` plot (rank-frequency of
``stats/<scope>/value_counts``, the token frequency table).
"""

from __future__ import annotations

import html
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chunkstore.errors import IncompleteStoreWarning, ReportError
from chunkstore.report.info import StoreInfo, store_info
from chunkstore.store.stats_io import Stats, available_scopes, load_stats
from chunkstore.store.view import StoreView

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PLOTS = ("distributions", "correlation", "class_balance", "mask_coverage", "split_sizes",
         "mutual_info")
HEAD_PLOTS = ("class_balance", "mask_coverage", "mutual_info")
INTEGER_PLOTS = ("value_counts",)  # drawn for integer features only
VALUE_COUNTS = "value_counts"  # stats/<scope>/value_counts, see chunkstore.stats.value_counts


@dataclass(frozen=True)
class Plot:
    name: str
    title: str
    file: str | None  # relative to the output directory; None when skipped
    note: str  # why it was skipped, or what it shows


@dataclass(frozen=True)
class ReportSummary:
    out: str
    index: str
    plots: tuple[Plot, ...]

    def format(self) -> str:
        lines = [f"report           {self.index}"]
        for p in self.plots:
            lines.append(f"  {p.name:16} {p.file or 'skipped: ' + p.note}")
        return "\n".join(lines)


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as e:
        raise ReportError("chunkstore report needs matplotlib: pip install "
                          "'chunkstore[report]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def selected_features(st: Stats | None, n_features: int, k: int) -> list[int]:
    """Feature indices to plot: the top ``k`` by mutual information with the first head when
    computed, else the first ``k`` features."""
    if st is not None and st.mutual_info:
        mi = next(iter(st.mutual_info.values()))
        order = np.argsort(np.where(np.isfinite(mi), -mi, np.inf), kind="stable")
        return [int(i) for i in order[:k]]
    return list(range(min(k, n_features)))


def _grid(plt: Any, n: int, cols: int = 4, size: float = 3.0) -> tuple[Figure, list[Any]]:
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * 0.8 * rows),
                             squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _distributions(plt: Any, st: Stats, picked: list[int], k: int) -> Figure | str:
    if st.hist is None or st.hist_edges is None:
        return f"no histograms in stats/{st.scope}: run `chunkstore stats STORE`"
    fig, axes = _grid(plt, len(picked))
    for ax, i in zip(axes, picked, strict=True):
        edges = st.hist_edges[i]
        ax.stairs(st.hist[i], edges, fill=True)
        ax.set_title(st.feature_names[i], fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"feature distributions (stats/{st.scope})")
    return fig


FULL_CORR_MAX = 64  # above this many features a full heatmap is unreadable: show the selected


def _correlation(plt: Any, st: Stats, picked: list[int], k: int) -> Figure | str:
    if st.corr is None:
        return f"no correlation in stats/{st.scope}: run `chunkstore stats STORE` " \
               "without --no-correlation"
    n = len(st.feature_names)
    idx = list(range(n)) if n <= FULL_CORR_MAX else picked
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(st.corr[np.ix_(idx, idx)], cmap="RdBu_r", vmin=-1, vmax=1,
                   interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="Pearson r")
    if len(idx) <= 32:
        labels = [st.feature_names[i] for i in idx]
        ax.set_xticks(range(len(idx)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(idx)), labels, fontsize=7)
    which = f"all {n} features" if len(idx) == n else f"{len(idx)} selected of {n} features"
    ax.set_title(f"correlation, {which} (stats/{st.scope})", fontsize=10)
    return fig


def _per_head(plt: Any, st: Stats, counts: dict[str, Any], ylabel: str, title: str,
              scale: float) -> Figure:
    from matplotlib.ticker import MaxNLocator

    fig, axes = _grid(plt, len(counts), cols=3, size=4.0)
    for ax, (h, c) in zip(axes, counts.items(), strict=True):
        ax.bar(np.arange(len(c)), np.asarray(c) / scale)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(h, fontsize=10)
        ax.set_xlabel("class", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"{title} (stats/{st.scope})")
    return fig


def _class_balance(plt: Any, st: Stats, picked: list[int], k: int) -> Figure | str:
    if not st.class_counts:
        return f"no class_counts in stats/{st.scope}: run `chunkstore stats STORE`"
    shares = {h: np.asarray(c) / max(1, int(np.sum(c))) for h, c in st.class_counts.items()}
    return _per_head(plt, st, shares, "share of labelled rows", "class balance", 1.0)


def _mask_coverage(plt: Any, st: Stats, picked: list[int], k: int) -> Figure | str:
    if not st.mask_counts:
        return f"no mask_counts in stats/{st.scope}: run `chunkstore stats STORE`"
    rows = max(1, st.rows)
    return _per_head(plt, st, dict(st.mask_counts), "share of rows where valid",
                     "mask coverage", rows)


def _mutual_info(plt: Any, st: Stats, picked: list[int], k: int) -> Figure | str:
    if not st.mutual_info:
        return f"no mutual information in stats/{st.scope}: run `chunkstore stats STORE`"
    fig, axes = _grid(plt, len(st.mutual_info), cols=3, size=4.5)
    for ax, h in zip(axes, st.mutual_info, strict=True):
        top = st.top_mutual_info(h, k)[::-1]
        ax.barh([n for n, _ in top], [v for _, v in top])
        ax.set_title(h, fontsize=10)
        ax.set_xlabel("mutual information (nats)", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"top {k} features by mutual information (stats/{st.scope})")
    return fig


def _split_sizes(plt: Any, info: StoreInfo) -> Figure | str:
    if not info.splits:
        return "no splits: run `chunkstore split STORE`"
    fig, axes = _grid(plt, len(info.splits), cols=3, size=4.0)
    for ax, sp in zip(axes, info.splits, strict=True):
        ax.bar(list(sp.rows), list(sp.rows.values()))
        ax.set_title(f"splits/{sp.name} ({sp.method})", fontsize=10)
        ax.set_ylabel("rows", fontsize=8)
    fig.suptitle("split sizes")
    return fig


def value_counts_figure(plt: Any, counts: Any, scope: str, top: int = 20) -> Figure | str:
    """Rank-frequency (log-log) of the values, and the ``top`` most frequent values' shares."""
    c = np.asarray(counts, dtype=np.int64)
    total = int(c.sum())
    if total == 0:
        return f"stats/{scope}/{VALUE_COUNTS} counts no values"
    order = np.argsort(-c, kind="stable")
    seen = order[c[order] > 0]
    fig, (rank, best) = plt.subplots(1, 2, figsize=(10, 3.8))
    rank.loglog(np.arange(1, len(seen) + 1), c[seen] / total)
    rank.set_xlabel("rank", fontsize=8)
    rank.set_ylabel("share of all values", fontsize=8)
    rank.set_title(f"{len(seen):,} of {len(c):,} values occur", fontsize=10)
    shown_ = seen[:top][::-1]
    best.barh([str(v) for v in shown_], c[shown_] / total)
    best.set_xlabel("share of all values", fontsize=8)
    best.set_title(f"top {len(shown_)} values", fontsize=10)
    for ax in (rank, best):
        ax.tick_params(labelsize=7)
    fig.suptitle(f"value counts (stats/{scope}/{VALUE_COUNTS}, {total:,} values)")
    return fig


def _value_counts(plt: Any, ds: StoreView, scope: str) -> Figure | str:
    path = f"stats/{scope}/{VALUE_COUNTS}"
    if path not in ds.group:
        return (f"no {path}: run chunkstore.stats.value_counts.write_value_counts(STORE, "
                f"{scope!r})")
    return value_counts_figure(plt, ds.group[path][...], scope)


STAT_PLOTS: dict[str, Callable[[Any, Stats, list[int], int], Figure | str]] = {
    "distributions": _distributions, "correlation": _correlation,
    "class_balance": _class_balance, "mask_coverage": _mask_coverage,
    "mutual_info": _mutual_info}
TITLES = {"distributions": "Feature distributions", "correlation": "Correlation",
          "class_balance": "Class balance per head", "mask_coverage": "Mask coverage per head",
          "split_sizes": "Split sizes", "mutual_info": "Mutual information ranking",
          "value_counts": "Value counts (token frequencies)"}


def write_report(store: str, out: str, *, features: int = 12, scope: str = "all"
                 ) -> ReportSummary:
    """Write PNG plots of a store and an ``index.html`` with them and the info summary.

    Parameters
    ----------
    store : path of a store.
    out : output directory, created if absent; existing plot files are replaced.
    features : how many features the distribution, correlation (above 64 features) and
        mutual-information plots show: the top ones by mutual information with the first head
        when computed, else the first ones.
    scope : the statistics scope to plot ("all", "train", ...).

    Returns
    -------
    ReportSummary: the index path and, per plot, its file or the reason it was skipped.

    Raises
    ------
    ReportError
        If matplotlib is not installed.
    NotAStoreError
        If ``store`` holds no chunkstore store.
    """
    plt = _pyplot()
    info = store_info(store)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IncompleteStoreWarning)  # info reports it as status
        ds = StoreView(store)
    st = load_stats(ds, scope) if scope in available_scopes(ds.group) else None
    picked = selected_features(st, len(ds.feature_names), features)

    def draw(name: str) -> Figure | str:
        if name == "split_sizes":
            return _split_sizes(plt, info)
        if name in HEAD_PLOTS and not ds.heads:
            return "the store has no heads (features only): nothing per head to plot"
        if name == "value_counts":
            return _value_counts(plt, ds, scope)
        if st is None:
            return f"no statistics for scope {scope!r}: run `chunkstore stats STORE`"
        return STAT_PLOTS[name](plt, st, picked, features)

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    plots = []
    integer = np.dtype(ds.features.dtype).kind in "iu"
    for name in PLOTS + (INTEGER_PLOTS if integer else ()):
        result = draw(name)
        if isinstance(result, str):
            plots.append(Plot(name, TITLES[name], None, result))
            continue
        result.tight_layout()
        result.savefig(root / f"{name}.png", dpi=80)
        plt.close(result)
        plots.append(Plot(name, TITLES[name], f"{name}.png", ""))
    index = root / "index.html"
    index.write_text(render_html(info, plots))
    return ReportSummary(str(root), str(index), tuple(plots))


def render_html(info: StoreInfo, plots: list[Plot]) -> str:
    """The ``index.html`` page: the info summary, then each plot or the note why it is absent."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>chunkstore report: "
             f"{html.escape(info.path)}</title></head><body>",
             f"<h1>chunkstore report: {html.escape(info.path)}</h1>",
             f"<pre>{html.escape(info.format())}</pre>"]
    for p in plots:
        parts.append(f"<h2>{html.escape(p.title)}</h2>")
        if p.file:
            parts.append(f"<img src='{html.escape(p.file)}' alt='{html.escape(p.title)}'>")
        else:
            parts.append(f"<p class='skipped'>Not drawn: {html.escape(p.note)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
