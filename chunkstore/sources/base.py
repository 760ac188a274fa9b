"""The ``Source`` interface every source kind implements, and the checks every batch passes.

A source is a list of *items* (a batch file, an episode, a gene) with known row counts. The
planner turns counts into write tasks; a worker asks ``read(item, start, stop)`` for the rows it
needs and hands them to :func:`check_batch`, which converts dtypes and fails loudly, naming the
item and the row, when the data does not match the schema.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
from numpy.typing import NDArray

from chunkstore.core.schema import HeadSpec, Schema, Section, Where, parse
from chunkstore.errors import SourceError


@dataclass(frozen=True)
class Batch:
    """Rows of one item: features (n, F), a label (n,) and a mask (n, K) per head, groups (n,),
    and optionally the source's own provenance (n, 2) for ``meta/source`` (see
    :attr:`Source.has_source`)."""

    features: NDArray[Any]
    labels: Mapping[str, NDArray[Any]]
    masks: Mapping[str, NDArray[Any]]
    group: NDArray[Any] | None = None
    source: NDArray[Any] | None = None

    def __len__(self) -> int:
        return int(self.features.shape[0])


class SourceOptions(Section):
    """A source kind's options: a frozen pydantic model of the ``source:`` keys but ``kind``.

    Validators that need the schema (one entry per head) read it from the validation context
    (``info.context["schema"]``), which :meth:`from_dict` passes; ``to_dict`` gives the config
    form that the store's config hash is computed from, so it must stay stable.
    """

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: Where, schema: Schema) -> Self:
        """Validate ``d`` (the ``source:`` section without ``kind``) against ``schema``.

        Raises
        ------
        ConfigError
            Naming ``where``'s file and the key, e.g. ``key 'source.n_samples'``.
        """
        return parse(cls, d, where, context={"schema": schema})

    @abstractmethod
    def to_dict(self) -> dict[str, Any]: ...


class Source(ABC):
    """Items with row counts, and random access to rows of one item.

    Subclasses set ``Options`` and implement :meth:`counts` and :meth:`read`. A source must be
    cheap to construct: every worker process builds its own from the config.
    """

    Options: ClassVar[type[SourceOptions]]

    def __init__(self, options: Any, schema: Schema) -> None:
        self.options = options
        self.schema = schema

    @abstractmethod
    def counts(self) -> list[int]:
        """Row count of every item, in item order. Raises SourceError if there are none."""

    @abstractmethod
    def read(self, item: int, start: int, stop: int) -> Batch:
        """Rows ``[start, stop)`` of ``item``, as found in the input (checked by the caller)."""

    @property
    def has_group(self) -> bool:
        """Whether batches carry ``group`` ids (then the store gets ``meta/group``)."""
        return False

    @property
    def has_source(self) -> bool:
        """Whether batches carry their own provenance (``source``, (n, 2) integers), which the
        store then keeps as ``meta/source`` instead of chunkstore's (item, row within item)."""
        return False

    def describe(self, item: int) -> str:
        """Where ``item`` comes from, for error messages."""
        return f"item {item}"


def _first_bad_row(bad: NDArray[np.bool_]) -> int:
    rows = bad.reshape(bad.shape[0], -1).any(axis=1) if bad.ndim > 1 else bad
    return int(np.flatnonzero(rows)[0])


def check_batch(
    batch: Batch,
    schema: Schema,
    *,
    where: str,
    item_start: int,
    rows: int,
    has_group: bool,
    has_source: bool = False,
    nan_policy: str = "allow",
) -> Batch:
    """Validate a batch against the schema and convert it to the store's dtypes.

    Parameters
    ----------
    batch : the rows as read from the source.
    schema : the store's schema.
    where : the item's description for messages, e.g. ``"file 'b/003.npz' (item 3)"``.
    item_start : the item row of ``batch`` row 0, so messages give rows within the item.
    rows : how many rows were asked for.
    has_group : whether a ``group`` array is required.
    has_source : whether a ``source`` provenance array (rows, 2) is required; one that is
        present is checked and kept either way.
    nan_policy : ``"allow"`` or ``"error"`` (NaN in features is refused).

    Returns
    -------
    Batch with features in the schema's dtype, labels and masks in each head's dtypes.

    Raises
    ------
    SourceError
        Naming the item, the array, the row, what was expected and what was found.
    """
    check = _BatchCheck(where, item_start, rows)
    features = check.features(batch.features, schema, nan_policy)
    labels: dict[str, NDArray[Any]] = {}
    masks: dict[str, NDArray[Any]] = {}
    for head in schema.heads:
        labels[head.name] = check.labels(batch.labels, head)
        masks[head.name] = check.mask(batch.masks, head)
    group = None
    if has_group:
        if batch.group is None:
            raise check.fail("no group ids, but earlier items had them; every item needs "
                             "'group'")
        g = check.numeric("group", batch.group, 1)
        if g.dtype.kind == "f":
            raise check.fail(f"group ids have dtype {g.dtype}; expected integers")
        group = g.astype(np.int64)
    if has_source and batch.source is None:
        raise check.fail("no 'source' provenance, but the source declares it; every item "
                         "needs 'source' (rows, 2)")
    source = None if batch.source is None else check.provenance(batch.source)
    return Batch(features, labels, masks, group, source)


@dataclass(frozen=True)
class _BatchCheck:
    """The steps of :func:`check_batch`, each failing with the item and the row."""

    where: str
    item_start: int
    rows: int

    def fail(self, what: str, row: int | None = None) -> SourceError:
        at = f", row {self.item_start + row} of the item" if row is not None else ""
        return SourceError(f"{self.where}{at}: {what}")

    def numeric(self, name: str, a: Any, ndim: int) -> NDArray[Any]:
        a = np.asarray(a)
        if a.dtype.kind not in "biuf":
            raise self.fail(f"{name} has dtype {a.dtype}; expected a numeric array")
        if a.ndim != ndim or a.shape[0] != self.rows:
            exp = f"({self.rows},)" if ndim == 1 else f"({self.rows}, ...)"
            raise self.fail(f"{name} has shape {a.shape}; expected {exp}")
        return a

    def provenance(self, raw: Any) -> NDArray[np.int64]:
        """(rows, 2) integers (e.g. document, first token offset) as int64."""
        s = np.asarray(raw)
        if s.dtype.kind not in "iu" or s.ndim != 2 or s.shape != (self.rows, 2):
            raise self.fail(f"'source' provenance has shape {s.shape} and dtype {s.dtype}; "
                            f"expected ({self.rows}, 2) integers, one (a, b) pair per row")
        if s.dtype == np.uint64 and s.size and int(s.max()) > np.iinfo(np.int64).max:
            r = _first_bad_row(s > np.iinfo(np.int64).max)
            raise self.fail("'source' provenance does not fit int64", r)
        return s.astype(np.int64, copy=False)

    def features(self, raw: Any, schema: Schema, nan_policy: str) -> NDArray[Any]:
        """(rows, F) in the schema's dtype; no overflow, no NaN if the policy says so."""
        f = self.numeric("features", raw, 2)
        if f.shape[1] != schema.n_features:
            raise self.fail(f"features have {f.shape[1]} columns; the schema has "
                            f"{schema.n_features} features")
        ftype = np.dtype(schema.feature_dtype)
        if f.dtype.kind == "f" and f.dtype.itemsize > ftype.itemsize:
            big = np.abs(f) > np.finfo(ftype).max
            if big.any():
                r = _first_bad_row(big & np.isfinite(f))
                raise self.fail(f"feature value {f[r][big[r]][0].item()!r} overflows {ftype} "
                                "(dtype overflow)", r)
        if ftype.kind in "iu":
            self.integer_features(f, schema)
        features = f.astype(ftype, copy=False)
        if nan_policy == "error" and features.dtype.kind == "f":
            nan = np.isnan(features)
            if nan.any():
                r = _first_bad_row(nan)
                col = int(np.flatnonzero(nan[r])[0])
                raise self.fail(f"NaN in feature {schema.feature_names[col]!r} and "
                                "ingest.nan_policy is 'error'", r)
        return features

    def integer_features(self, f: NDArray[Any], schema: Schema) -> None:
        """Integer features (token ids, codes) must be integral and fit the dtype/vocabulary."""
        info = np.iinfo(schema.feature_dtype)
        hi = info.max if schema.vocab_size is None else schema.vocab_size - 1
        lo = info.min if schema.vocab_size is None else 0
        bad = (f < lo) | (f > hi)
        if f.dtype.kind == "f":
            bad |= ~np.isfinite(f) | (f != np.round(f))
        if bad.any():
            r = _first_bad_row(bad)
            col = int(np.flatnonzero(bad[r])[0])
            raise self.fail(f"feature {schema.feature_names[col]!r} value {f[r, col].item()!r} "
                            f"is not an integer in [{lo}, {hi}] (dtype {schema.feature_dtype}"
                            f"{'' if schema.vocab_size is None else ', vocab_size'})", r)

    def labels(self, given: Mapping[str, Any], head: HeadSpec) -> NDArray[Any]:
        """(rows,) integer class ids in ``[0, classes)``, in the head's label dtype."""
        if head.name not in given:
            raise self.fail(f"no labels for head {head.name!r}")
        lab = self.numeric(f"labels[{head.name!r}]", given[head.name], 1)
        if lab.dtype.kind == "f":
            frac = ~np.isfinite(lab) | (lab != np.round(lab))
            if frac.any():
                r = _first_bad_row(frac)
                raise self.fail(f"label {lab[r]!r} of head {head.name!r} is not an integer", r)
        out = (lab < 0) | (lab >= head.classes)
        if out.any():
            r = _first_bad_row(out)
            raise self.fail(f"label {lab[r].item()!r} of head {head.name!r} is outside "
                            f"[0, {head.classes})", r)
        return lab.astype(head.label_dtype)

    def mask(self, given: Mapping[str, Any], head: HeadSpec) -> NDArray[Any]:
        """(rows, classes) in the head's mask dtype; values must fit it."""
        if head.name not in given:
            raise self.fail(f"no mask for head {head.name!r}")
        m = self.numeric(f"masks[{head.name!r}]", given[head.name], 2)
        if m.shape[1] != head.classes:
            raise self.fail(f"mask of head {head.name!r} has width {m.shape[1]}; expected "
                            f"{head.classes} (the head's classes)")
        mtype = np.dtype(head.mask_dtype)
        if mtype != np.bool_ and m.dtype != mtype:
            info = np.iinfo(mtype)
            bad = (m < info.min) | (m > info.max) | (m != np.round(m))
            if bad.any():
                r = _first_bad_row(bad)
                raise self.fail(f"mask value of head {head.name!r} does not fit {mtype} "
                                "(dtype overflow or not an integer)", r)
        return m.astype(mtype)
