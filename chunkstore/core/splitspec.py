"""Split specs: the methods there are, and one validated :class:`SplitSpec` per split array.

Pure. The CLI, the config and the split writer all take the method list and the checks from
here, so there is one list and one rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

import numpy as np
from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr, model_validator

from chunkstore.core.schema import Section, Where, invalid, parse
from chunkstore.errors import SplitError, SplitLookupError

Method = Literal["random", "group", "stratified", "stratified-group", "kfold", "ordered"]
METHODS: tuple[str, ...] = get_args(Method)
GROUPED = ("group", "stratified-group")
STRATIFIED = ("stratified", "stratified-group")
MAX_PARTS = 127  # codes are int8
FRACTION_TOL = 1e-6
DEFAULT_FRACTIONS = (("train", 0.8), ("val", 0.1), ("test", 0.1))


@dataclass(frozen=True)
class SplitSpec:
    """One split array ``splits/<name>``: how samples are assigned to named parts.

    ``fractions`` are ``(part, fraction)`` pairs in code order; for ``kfold`` they are the ``k``
    folds ``fold0..fold{k-1}``. ``by`` is a head (stratified methods, kfold) or a ``meta/<name>``
    order key (ordered). ``group`` keys kfold by ``meta/group``. ``dedup`` keeps every exact
    duplicate group (``meta/duplicate_of``) in one part: for grouped methods a duplicate group
    merges with the groups of its members; otherwise every copy takes its first occurrence's
    part. See :mod:`chunkstore.core.assign`.
    """

    name: str = "default"
    method: str = "random"
    fractions: tuple[tuple[str, float], ...] = DEFAULT_FRACTIONS
    seed: int = 0
    by: str | None = None
    k: int | None = None
    group: bool = False
    dedup: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.fractions)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"method": self.method, "seed": self.seed, "by": self.by}
        if self.dedup:  # only when set: specs written before --dedup compare equal
            d["dedup"] = True
        if self.method == "kfold":
            return {**d, "k": self.k, "group": self.group}
        return {**d, "fractions": dict(self.fractions)}

    def problem(self) -> tuple[str, str] | None:
        """``(key, what is wrong)`` for the first invalid field, else None (a pure check)."""
        return spec_problem(self)

    @classmethod
    def from_dict(cls, name: str, d: Any, where: Where) -> SplitSpec:
        """Parse ``splits.<name>``; ConfigError naming the key (``splits.s.fractions``)."""
        spec = parse(SplitSection, d, where).to_spec(name)
        bad = spec.problem()
        if bad:
            raise where.child(bad[0]).error(bad[1])
        return spec


class SplitSection(Section):
    """``splits.<name>: {method, fractions, seed, by, k, group}`` as written in a config.

    Field checks only; the rules between fields are :func:`spec_problem`'s, shared with the CLI.
    """

    method: Method = "random"
    fractions: dict[str, StrictFloat | StrictInt] | None = Field(
        default=None, description="part -> fraction, summing to 1 (not for kfold)")
    seed: Annotated[StrictInt, Field(ge=0)] = 0
    by: StrictStr | None = None
    k: StrictInt | None = None
    group: StrictBool = False

    @model_validator(mode="after")
    def _kfold_has_no_fractions(self) -> SplitSection:
        if self.method == "kfold" and self.fractions is not None:
            raise invalid("kfold takes 'k' (equal folds), not fractions", "fractions")
        return self

    def to_spec(self, name: str) -> SplitSpec:
        """The spec named ``name`` (not yet checked: see :meth:`SplitSpec.problem`)."""
        if self.method == "kfold":
            k = self.k
            fractions = kfold_fractions(k) if k and k > 0 else ()
        else:
            given = dict(DEFAULT_FRACTIONS) if self.fractions is None else self.fractions
            fractions = tuple((str(n), float(f)) for n, f in given.items())
        return SplitSpec(name, self.method, fractions, self.seed, self.by, self.k, self.group)


def kfold_fractions(k: int) -> tuple[tuple[str, float], ...]:
    return tuple((f"fold{i}", 1.0 / k) for i in range(k))


def parse_fractions(text: str) -> tuple[tuple[str, float], ...]:
    """``"train=0.8,val=0.1,test=0.1"`` -> ``(("train", 0.8), ...)``; SplitError if malformed."""
    out = []
    for part in text.split(","):
        name, eq, value = part.strip().partition("=")
        if not eq:
            raise SplitError(f"expected NAME=FRACTION pairs separated by commas, found {part!r} "
                             f"in {text!r} (e.g. train=0.8,val=0.1,test=0.1)")
        try:
            out.append((name.strip(), float(value)))
        except ValueError:
            raise SplitError(f"fraction of {name.strip()!r} is not a number: {value!r}") from None
    return tuple(out)


def split_set_problem(name: object) -> str | None:
    """Why ``name`` cannot name a split set (the array ``splits/<name>``), else None.

    The one rule for every command and reader, and for the split writer: identifier-like
    (letters, digits, underscores; not starting with a digit), so a name is never empty, a
    path (``a/b``, ``/abs``), ``.`` or ``..``.
    """
    if isinstance(name, str) and name.isidentifier():
        return None
    return (f"split set name {str(name)[:80]!r} is not valid: it names the array splits/NAME, "
            "so it must be identifier-like (letters, digits, underscores; not empty, a path, "
            "'.' or '..'), e.g. 'default' or 'cv5'")


def check_split_set(name: object) -> str:
    """``name`` if it can name a split set, else SplitLookupError (see :func:`split_set_problem`).
    """
    problem = split_set_problem(name)
    if problem is not None:
        raise SplitLookupError(problem)
    return str(name)


def spec_problem(spec: SplitSpec) -> tuple[str, str] | None:
    """``(key, message)`` for the first invalid field of a split spec, else None."""
    m = spec.method
    if m not in METHODS:
        return "method", f"expected one of {list(METHODS)}, found {m!r}"
    name_problem = split_set_problem(spec.name)
    if name_problem is not None:
        return "name", name_problem
    if m == "kfold":
        if spec.k is None or spec.k < 2 or spec.k > MAX_PARTS:
            return "k", f"kfold needs 2 <= k <= {MAX_PARTS} folds, found k={spec.k}"
    elif spec.k is not None:
        return "k", f"k is only for method kfold, found k={spec.k} with method {m!r}"
    names = spec.names
    if not 1 <= len(names) <= MAX_PARTS:
        return "fractions", f"expected 1 to {MAX_PARTS} parts, found {len(names)}"
    for n in names:
        if not n.isidentifier() or n == "all":
            return "fractions", (f"part names must be identifier-like and not 'all' (the stats "
                                 f"scope of every row), found {n!r}")
    if len(set(names)) != len(names):
        return "fractions", f"part names must be unique, found {list(names)}"
    fr = [f for _, f in spec.fractions]
    if any(not np.isfinite(f) or f < 0 for f in fr):
        return "fractions", f"fractions must be >= 0, found {dict(spec.fractions)}"
    if abs(sum(fr) - 1.0) > FRACTION_TOL:
        return "fractions", f"fractions must sum to 1, found {dict(spec.fractions)} (sum {sum(fr)})"
    if spec.seed < 0 or spec.seed >= 2**64:
        return "seed", f"expected an integer in [0, 2**64), found {spec.seed}"
    if spec.group and m != "kfold":
        return "group", "group: true is for kfold; use method 'group' or 'stratified-group'"
    if m in STRATIFIED and spec.by is None:
        return "by", f"method {m!r} needs 'by': the head whose classes to balance"
    if m in ("random", "group") and spec.by is not None:
        other = "stratified" if m == "random" else "stratified-group"
        return "by", f"method {m!r} takes no 'by'; to balance classes of {spec.by!r} use {other!r}"
    if m == "ordered" and spec.by is not None and not spec.by.startswith("meta/"):
        return "by", f"ordered takes an order key 'meta/<name>' as 'by', found {spec.by!r}"
    return None
