"""Versions of a store: small immutable records of what each completed operation left.

A store only grows at the end (appends never move a row), so version ``v`` is the row prefix
``[0, N_v)`` plus the split and statistics arrays it saw. Those arrays can later be overwritten
(``chunkstore split --overwrite``, ``chunkstore stats``), so a version keeps a copy of each, by
content: ``_chunkstore/versions/blobs/<sha256>.npz`` (the same content is stored once, however
many versions see it). Layout, all plain files beside the Zarr nodes:

- ``_chunkstore/versions/<id>.json``: one record per version, created once (create-if-absent)
  and never rewritten: id, time, command, n_samples, config/source digests, heads, the blob of
  every split array and stats scope, chunkstore version, parent id.
- ``_chunkstore/versions/tags.json``: tag name -> version id.

Plain ``zarr.open()`` reads the latest version (the live arrays) and never sees these files.
:func:`gc` drops the records of untagged versions (but the latest) and every blob no kept
record refers to.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr
from numpy.typing import NDArray

from chunkstore._version import __version__
from chunkstore.errors import VersionError
from chunkstore.store import journal, layout
from chunkstore.store.stats_io import STATS, available_scopes, node_group
from chunkstore.store.urls import StorePath, open_group

VERSIONS = "versions"
TAGS = "tags.json"
BLOBS = "blobs"


def versions_dir(store: str) -> StorePath:
    return journal.journal_dir(store) / VERSIONS


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _put_blob(store: str, arrays: dict[str, NDArray[Any]], attrs: dict[str, Any],
              compress: bool = False) -> str:
    """Store arrays + attrs once by content; returns the content's sha256.

    ``compress`` for split codes (a few distinct int8 values: zlib shrinks them several
    times, quickly); statistics are float64 noise that zlib shrinks by ~4% at ~50x the time
    (1.5 s for a 893 x 893 correlation matrix), paid on every version commit."""
    h = hashlib.sha256(json.dumps(attrs, sort_keys=True, default=str).encode())
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    sha = h.hexdigest()
    path = versions_dir(store) / BLOBS / f"{sha}.npz"
    if not path.exists():
        buf = io.BytesIO()
        payload: dict[str, Any] = {"_attrs": np.array(json.dumps(attrs, default=str)), **arrays}
        (np.savez_compressed if compress else np.savez)(buf, **payload)
        path.parent.mkdir()
        journal.atomic_write_bytes(path, buf.getvalue())
    return sha


def read_blob(store: str, sha: str) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
    """The arrays and attrs of one blob."""
    data = (versions_dir(store) / BLOBS / f"{sha}.npz").read_bytes()
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "_attrs"}
        attrs = json.loads(str(z["_attrs"]))
    return arrays, attrs


def _scope_arrays(group: zarr.Group, scope: str) -> dict[str, NDArray[Any]]:
    out: dict[str, NDArray[Any]] = {}
    sub = node_group(group, f"{STATS}/{scope}")

    def walk(g: zarr.Group, prefix: str) -> None:
        for name, a in g.arrays():
            out[prefix + name] = np.asarray(a[...])
        for name, s in g.groups():
            walk(s, f"{prefix}{name}/")

    walk(sub, "")
    return out


def snapshot(store: str, n_samples: int) -> tuple[dict[str, str], dict[str, str]]:
    """Blobs of every split array (its first ``n_samples`` codes) and stats scope."""
    group = open_group(store, mode="r")
    splits: dict[str, str] = {}
    sub = group.get(layout.SPLITS)
    if isinstance(sub, zarr.Group):
        for name, arr in sorted(sub.arrays()):
            splits[name] = _put_blob(store, {"codes": np.asarray(arr[:n_samples])},
                                     dict(arr.attrs), compress=True)
    stats = {scope: _put_blob(store, _scope_arrays(group, scope),
                              dict(group[f"{STATS}/{scope}"].attrs))
             for scope in available_scopes(group)}
    return splits, stats


@dataclass(frozen=True)
class Version:
    """One version record (see the module docstring)."""

    id: str
    time: str
    command: str
    n_samples: int
    heads: dict[str, int]
    splits: dict[str, str] = field(default_factory=dict)
    stats: dict[str, str] = field(default_factory=dict)
    config_sha256: str | None = None
    source_sha256: str | None = None
    chunkstore_version: str = __version__
    parent: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Version:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def log(store: str) -> list[Version]:
    """Every kept version of the store, oldest first."""
    return [Version.from_dict(journal.read_json(p)) for p in versions_dir(store).iterdir()
            if p.name.endswith(".json") and p.name != TAGS and not p.name.startswith(".")]


def tags(store: str) -> dict[str, str]:
    path = versions_dir(store) / TAGS
    return dict(journal.read_json(path)) if path.exists() else {}


def commit_version(store: str, command: str, *, config_sha256: str | None = None,
                   source_sha256: str | None = None) -> Version:
    """Record the store as it is now (after a completed operation) as a new version."""
    attrs = layout.read_attrs(store)
    n = int(attrs["n_samples"])
    splits, stats = snapshot(store, n)
    heads = {h: int(d["classes"]) for h, d in attrs.get("heads", {}).items()}
    versions_dir(store).mkdir()
    for _ in range(100):  # another process may take the same id: create-if-absent, retry
        kept = log(store)
        parent = kept[-1].id if kept else None
        vid = f"{int(parent) + 1 if parent else 1:06d}"
        v = Version(vid, layout.now_iso(), command, n, heads, splits, stats, config_sha256,
                    source_sha256, parent=parent)
        data = json.dumps(v.to_dict(), indent=1, sort_keys=True).encode()
        if (versions_dir(store) / f"{vid}.json").create(data):
            return v
    raise VersionError(f"could not commit a version of store {store!r}: ids kept colliding")


def resolve(store: str, ref: str | int | None = None) -> Version:
    """The version named by an id (``"3"``, ``"000003"``), a tag, or None/``"latest"``."""
    kept = log(store)
    if not kept:
        raise VersionError(f"store {store!r} has no versions yet (they are recorded when an "
                           "ingest, append, add-head, split or stats run completes)")
    if ref is None or ref == "latest":
        return kept[-1]
    name = str(ref)
    vid = tags(store).get(name)
    if vid is None and name.isdigit():
        vid = f"{int(name):06d}"
    for v in kept:
        if v.id == vid:
            return v
    raise VersionError(f"store {store!r} has no version or tag {name!r}; kept versions: "
                       f"{[v.id for v in kept][-10:]}, tags: {sorted(tags(store))}")


def tag(store: str, name: str, version: str | int | None = None) -> Version:
    """Name a version (the latest by default); a tag is never moved silently."""
    if not name or name.isdigit() or name == "latest" or "/" in name:
        raise VersionError(f"tag name {name!r} is not allowed: use a name with a letter, "
                           "no '/', other than 'latest'")
    v = resolve(store, version)
    now = tags(store)
    if name in now and now[name] != v.id:
        raise VersionError(f"tag {name!r} of store {store!r} already names version "
                           f"{now[name]}; choose another name")
    now[name] = v.id
    journal.write_json(versions_dir(store) / TAGS, now)
    return v


def gc(store: str) -> dict[str, int]:
    """Drop untagged versions (never the latest) and unreferenced blobs; returns counts."""
    kept = log(store)
    if not kept:
        return {"versions_removed": 0, "blobs_removed": 0, "versions_kept": 0}
    keep_ids = set(tags(store).values()) | {kept[-1].id}
    removed = 0
    refs: set[str] = set()
    for v in kept:
        if v.id in keep_ids:
            refs |= set(v.splits.values()) | set(v.stats.values())
        else:
            (versions_dir(store) / f"{v.id}.json").unlink()
            removed += 1
    blobs = 0
    for p in (versions_dir(store) / BLOBS).iterdir():
        if p.name.endswith(".npz") and p.name[:-4] not in refs:
            p.unlink()
            blobs += 1
    return {"versions_removed": removed, "blobs_removed": blobs, "versions_kept": len(keep_ids)}


class StoreVersion:
    """A store read as of one version: rows ``[0, n_samples)``, that version's splits/stats.

    Examples
    --------
    >>> v = open_version("data/demo.zarr", "paper-2026")  # doctest: +SKIP
    >>> x = v.rows("features", 0, 1000); codes = v.split()  # doctest: +SKIP
    """

    def __init__(self, path: str, version: str | int | None = None) -> None:
        self.path = path
        self.version = resolve(path, version)
        self.n_samples = self.version.n_samples
        self.heads = dict(self.version.heads)
        self.group = open_group(path, mode="r")

    def array(self, name: str) -> zarr.Array:
        """A live sample array; only rows ``[0, n_samples)`` belong to this version."""
        node = self.group[name]
        if not isinstance(node, zarr.Array):
            raise KeyError(f"{name!r} in store {self.path!r} is a group, not an array")
        return node

    def rows(self, name: str, start: int = 0, stop: int | None = None) -> NDArray[Any]:
        stop = self.n_samples if stop is None else min(stop, self.n_samples)
        return np.asarray(self.array(name)[start:stop])

    def split(self, name: str = layout.DEFAULT_SPLITS) -> NDArray[np.int8]:
        """The split codes this version saw (one per row)."""
        if name not in self.version.splits:
            raise VersionError(f"version {self.version.id} of {self.path!r} has no split "
                               f"{name!r}; it has {sorted(self.version.splits)}")
        return read_blob(self.path, self.version.splits[name])[0]["codes"]

    def split_attrs(self, name: str = layout.DEFAULT_SPLITS) -> dict[str, Any]:
        return read_blob(self.path, self.version.splits[name])[1]

    def stats(self, scope: str = "all") -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
        """``(arrays, attrs)`` of ``stats/<scope>`` as this version saw it."""
        if scope not in self.version.stats:
            raise VersionError(f"version {self.version.id} of {self.path!r} has no statistics "
                               f"scope {scope!r}; it has {sorted(self.version.stats)}")
        return read_blob(self.path, self.version.stats[scope])


def open_version(path: str, version: str | int | None = None) -> StoreVersion:
    """Read ``path`` as of a version id or tag (None: the latest); VersionError if unknown."""
    return StoreVersion(path, version)
