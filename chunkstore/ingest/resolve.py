"""What a caller hands to ``chunkstore.ingest`` / ``chunkstore.append`` as a config (a Config,
a mapping or a YAML path; python-source callables; a scheduler address), made into one Config."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from chunkstore.config import Config, load_config
from chunkstore.errors import ConfigError
from chunkstore.ingest.executors import check_reachable
from chunkstore.store import urls as storage


def resolve_config(config: Any, items: Any, process: Any, count: Any) -> Config:
    """A Config from a Config, mapping or YAML path, with a python source's callables (given
    from Python) replacing the names in its config."""
    if isinstance(config, Mapping):
        config = Config.from_dict(config)
    elif not isinstance(config, Config):
        config = load_config(config)
    if items is None and process is None and count is None:
        return config
    if config.source.kind != "python":
        raise ConfigError(f"items=/process=/count= need source kind 'python'; config "
                          f"{config.file!r} has kind {config.source.kind!r}")
    options = config.source.options.with_callables(items, process, count)
    return replace(config, source=replace(config.source, options=options))


def with_scheduler(config: Config, scheduler: str | None) -> Config:
    """``scheduler`` (when given) replaces ``ingest.scheduler``; on a cluster a local store
    path is made absolute, since the workers' working directory may differ from ours."""
    address = scheduler or config.ingest.scheduler
    if not address:
        return config
    check_reachable(config.store, address)
    store = os.path.abspath(config.store) if storage.is_local(config.store) else config.store
    return replace(config, store=store, ingest=replace(config.ingest, scheduler=address))
