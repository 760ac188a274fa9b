"""Where a store lives: a local directory, or an fsspec URL (``s3://``, ``gs://``, ``memory://``).

Zarr reads and writes URLs itself; the journal, the stale-lock check, streaming's chunk moves
and the stored-bytes count need a handful of plain file operations, which :class:`StorePath`
provides for both kinds of location with the same guarantees:

=====================  ==================================  ==================================
operation              local directory                     object storage (fsspec)
=====================  ==================================  ==================================
atomic write           temp file + ``os.replace``          one PUT (an object appears whole)
create if absent       temp file + ``os.link``             ``pipe_file(mode="create")``: a
                                                           conditional PUT (``If-None-Match:
                                                           *`` on S3)
move a chunk file      hard link, then unlink              server-side copy, then delete
=====================  ==================================  ==================================

Storage options (credentials, ``endpoint_url``, ...) belong to one store. :func:`configure`
registers them under the store's URL, in a registry inside this module (never in
``fsspec.config.conf``, which every filesystem of a protocol would share: a second store's
endpoint or credentials would replace the first's). :func:`storage_options` finds the options
of a URL by the longest registered URL it lies under, so the journal, the lock and the chunk
files below a store use the store's options; :func:`open_group` (every zarr open in the
package) and :func:`filesystem` (every :class:`StorePath`) pass them explicitly. fsspec's own
configuration (``FSSPEC_S3`` environment variables, ``fsspec.config.conf``) still supplies
defaults for whatever the registered options leave out. Ingest registers the store's options in
the coordinator and in every worker process; ``chunkstore.open(url, storage_options=...)``
registers them for reading.

Listing caches are off for URL stores unless the options (or fsspec's configuration) turn them
on (``use_listings_cache: true``): other processes write the store, and s3fs would answer
"file not found" from a listing cached before they did.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chunkstore.errors import ConfigError

LOCAL_PROTOCOLS = ("file", "local")
IN_PROCESS_PROTOCOLS = ("memory",)  # filesystems that exist only inside one process


def split_protocol(url: str) -> tuple[str | None, str]:
    """``("s3", "bucket/x.zarr")`` for a URL; ``(None, path)`` for a local path."""
    if "://" not in url:
        return None, url
    protocol, rest = url.split("://", 1)
    return protocol.lower(), rest


def normalize(url: str) -> str:
    """``file:///data/x.zarr`` -> ``/data/x.zarr``; other URLs and local paths are unchanged.

    Local stores are always handled as paths, so they get zarr's ``LocalStore`` (atomic
    rename of every chunk) and the journal's POSIX guarantees.
    """
    protocol, rest = split_protocol(url)
    return rest if protocol in LOCAL_PROTOCOLS else url


def is_local(url: str) -> bool:
    return split_protocol(normalize(url))[0] is None


def in_process_only(url: str) -> bool:
    """True for ``memory://`` stores, which other processes cannot see."""
    return split_protocol(url)[0] in IN_PROCESS_PROTOCOLS


def _key(url: str) -> str:
    """The registry key of a URL: normalized, lower-case protocol, no trailing slash."""
    protocol, rest = split_protocol(normalize(url))
    return f"{protocol}://{rest.rstrip('/')}" if protocol else rest


_OPTIONS: dict[str, dict[str, Any]] = {}  # store URL key -> its storage options
_OPTIONS_LOCK = threading.Lock()  # ingest's thread pool registers from several threads


def configure(url: str, storage_options: Mapping[str, Any] | None) -> None:
    """Register ``storage_options`` as the options of the store at ``url`` in this process.

    Every file and zarr open of ``url`` or of a path below it then uses them (see
    :func:`storage_options`); other stores, on the same protocol or not, are unaffected.
    ``None`` keeps what is registered already (nothing, or the options of an earlier call);
    a mapping replaces it. Nothing happens for local paths. ``fsspec.config.conf`` is never
    written.

    Examples
    --------
    >>> configure("s3://bucket/x.zarr", {"endpoint_url": "http://127.0.0.1:9000"})  # doctest: +SKIP
    >>> open_group("s3://bucket/x.zarr")  # uses the endpoint  # doctest: +SKIP
    """
    if is_local(url) or storage_options is None:
        return
    with _OPTIONS_LOCK:
        _OPTIONS[_key(url)] = dict(storage_options)


def storage_options(url: str) -> dict[str, Any]:
    """The fsspec options for ``url``: those registered for the longest store URL that is
    ``url`` or a parent of it, with listing caches off unless turned on; ``{}`` for a local
    path.

    >>> configure("s3://b/x.zarr", {"anon": True})
    >>> storage_options("s3://b/x.zarr/_chunkstore/lock")
    {'use_listings_cache': False, 'anon': True}
    >>> storage_options("s3://b/x.zarr2")
    {'use_listings_cache': False}
    """
    if is_local(url):
        return {}
    import fsspec.config

    key = _key(url)
    with _OPTIONS_LOCK:
        found = max((k for k in _OPTIONS if key == k or key.startswith(k + "/")),
                    key=len, default=None)
        registered = dict(_OPTIONS[found]) if found is not None else {}
    protocol = split_protocol(key)[0]
    # fsspec's configuration (FSSPEC_S3_* variables) may turn listing caches on: respect it
    configured = fsspec.config.conf.get(protocol or "", {})
    defaults = {} if "use_listings_cache" in configured else {"use_listings_cache": False}
    return {**defaults, **registered}


def open_group(url: str, mode: str = "r", **kwargs: Any) -> Any:
    """``zarr.open_group`` of a store, with the storage options registered for it.

    Every chunkstore module opens stores through this function, so how options reach zarr is
    decided here only.
    """
    import zarr

    url = normalize(os.fspath(url))
    if not is_local(url):  # zarr refuses storage_options for a local path
        kwargs["storage_options"] = storage_options(url)
    return zarr.open_group(url, mode=mode, **kwargs)  # type: ignore[arg-type]


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem and path of a URL, made with its registered storage options
    (ConfigError naming the package to install)."""
    import fsspec

    protocol, _ = split_protocol(url)
    try:
        return fsspec.core.url_to_fs(url, **storage_options(url))
    except ImportError as e:
        raise ConfigError(f"store {url!r} needs the fsspec backend for {protocol!r}, which is not "
                          f"installed ({e}); for s3:// run pip install 'chunkstore[s3]'") from e
    except ValueError as e:
        raise ConfigError(f"store {url!r}: unknown protocol {protocol!r} ({e})") from e


def store_path(url: StorePath | str | os.PathLike[str]) -> StorePath:
    """A :class:`StorePath` for a local path (str or Path) or a URL."""
    if isinstance(url, StorePath):
        return url
    url = normalize(os.fspath(url))
    if is_local(url):
        return StorePath(url)
    fs, path = filesystem(url)
    return StorePath(url, fs, path)


@dataclass(frozen=True)
class StorePath:
    """A file or directory, local (``fs is None``) or on an fsspec filesystem.

    The few ``pathlib`` operations the journal needs, with the guarantees listed in the module
    docstring. ``str()`` gives the local path or the URL, for messages.
    """

    url: str
    fs: Any = field(default=None, compare=False)
    path: str = ""  # the filesystem's own path (no protocol); unused for local paths

    def __str__(self) -> str:
        return self.url

    def __truediv__(self, name: str) -> StorePath:
        if self.fs is None:
            return StorePath(os.path.join(self.url, name))
        return StorePath(f"{self.url.rstrip('/')}/{name}", self.fs,
                         f"{self.path.rstrip('/')}/{name}")

    @property
    def local(self) -> bool:
        return self.fs is None

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1] if self.fs else Path(self.url).name

    @property
    def stem(self) -> str:
        return self.name.rsplit(".", 1)[0] if "." in self.name[1:] else self.name

    @property
    def parent(self) -> StorePath:
        if self.fs is None:
            return StorePath(str(Path(self.url).parent))
        return StorePath(self.url.rstrip("/").rsplit("/", 1)[0], self.fs,
                         self.path.rstrip("/").rsplit("/", 1)[0])

    def _fresh(self) -> Any:
        """The filesystem, with cached listings of this path dropped: other processes write
        here, and s3fs would otherwise answer from listings made before they did."""
        self.fs.invalidate_cache(self.path)
        return self.fs

    # ------------------------------------------------------------------ queries

    def exists(self) -> bool:
        if self.fs is None:
            return os.path.exists(self.url)
        return bool(self._fresh().exists(self.path))

    def is_dir(self) -> bool:
        if self.fs is None:
            return os.path.isdir(self.url)
        return bool(self._fresh().isdir(self.path))

    def iterdir(self) -> Iterator[StorePath]:
        """Entries of a directory (an empty listing when it does not exist)."""
        if self.fs is None:
            if os.path.isdir(self.url):
                yield from (self / n for n in sorted(os.listdir(self.url)))
            return
        try:
            entries = self._fresh().ls(self.path, detail=False)
        except FileNotFoundError:
            return
        mine = self.path.rstrip("/")
        for p in sorted(entries):
            if p.rstrip("/") != mine:  # some filesystems list a directory's own marker
                yield self / p.rstrip("/").rsplit("/", 1)[-1]

    def read_bytes(self) -> bytes:
        if self.fs is None:
            return Path(self.url).read_bytes()
        return bytes(self._fresh().cat_file(self.path))

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def du(self, exclude: tuple[str, ...] = ()) -> int:
        """Total bytes of the files below this directory, skipping directories named in
        ``exclude`` (at any depth)."""
        if self.fs is None:
            total = 0
            for root, dirs, files in os.walk(self.url):
                dirs[:] = [d for d in dirs if d not in exclude]
                total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
            return total
        base = self.path.rstrip("/")
        sizes = self._fresh().find(self.path, detail=True)
        return sum(int(info.get("size") or 0) for p, info in sizes.items()
                   if not set(p[len(base):].strip("/").split("/")[:-1]) & set(exclude))

    # ------------------------------------------------------------------ changes

    def mkdir(self) -> None:
        """Create the directory and its parents (object stores have no directories)."""
        if self.fs is None:
            os.makedirs(self.url, exist_ok=True)

    def write_atomic(self, data: bytes) -> None:
        """Readers see the old content or all of ``data``, never a part.

        No fsync: like zarr's own chunk writes, this survives a killed process, not a power cut.
        """
        if self.fs is not None:
            self.fs.pipe_file(self.path, data)  # one PUT
            return
        self._via_temp_file(data, os.replace)

    def create(self, data: bytes) -> bool:
        """Write ``data`` only if nothing is there yet, atomically; False if something was."""
        try:
            if self.fs is not None:
                self.fs.pipe_file(self.path, data, mode="create")  # a conditional PUT
            else:  # a link fails if the name exists; the content is complete before it appears
                self._via_temp_file(data, os.link)
        except FileExistsError:
            return False
        return True

    def _via_temp_file(self, data: bytes, publish: Callable[[str, str], None]) -> None:
        """Write ``data`` to a temp file beside this local path, then ``publish(temp, path)``
        (rename or link); the temp file is gone afterwards, whatever happened."""
        parent = os.path.dirname(self.url) or "."
        os.makedirs(parent, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{self.name}.", suffix=".partial")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            publish(tmp, self.url)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def touch(self) -> None:
        self.write_atomic(b"")

    def unlink(self, missing_ok: bool = True) -> None:
        if self.fs is None:
            Path(self.url).unlink(missing_ok=missing_ok)
            return
        try:
            self.fs.rm_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def remove(self) -> None:
        """Delete a file or a whole directory tree (nothing if absent)."""
        if self.fs is None:
            if os.path.isdir(self.url) and not os.path.islink(self.url):
                shutil.rmtree(self.url)
            else:
                Path(self.url).unlink(missing_ok=True)
            return
        try:
            self.fs.rm(self.path, recursive=True)
        except FileNotFoundError:
            pass

    def copy_to(self, dst: StorePath) -> None:
        """``dst`` becomes a complete copy of this file: a hard link locally (no data copied),
        a server-side copy on object storage. Whatever was at ``dst`` is replaced."""
        if self.fs is None:
            Path(dst.url).unlink(missing_ok=True)
            os.makedirs(os.path.dirname(dst.url) or ".", exist_ok=True)
            os.link(self.url, dst.url)
            return
        self.fs.copy(self.path, dst.path)
