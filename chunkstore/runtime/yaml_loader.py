"""The YAML loader of config files: safe, strict about duplicate keys, bounded in expansion.

A YAML alias (``*name``) reuses a node; nine nested aliases in a 569-byte file expand to
billions of values, which ``yaml.safe_load`` builds. :class:`BoundedLoader` counts aliases and
the expanded size of the composed node graph (cheap: each node once, with memoized sizes) and
refuses the document before constructing a single value.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_ALIASES = 64  # YAML aliases (*name) a config may use
MAX_VALUES = 100_000  # scalars, lists and mappings a config may expand to, aliases followed
MAX_MESSAGE = 2_000  # characters of a config error shown; a longer one is cut


def _expanded_size(node: Any, memo: dict[int, int]) -> int:
    """Values ``node`` stands for once every alias is expanded (shared nodes counted each
    time they are used), computed without expanding anything."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # a node that contains itself counts once more per cycle, not forever
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_size(v, memo) for v in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    memo[id(node)] = total
    return total


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys instead of keeping the last one, and
    refuses alias bombs: more than :data:`MAX_ALIASES` aliases, or a document that expands to
    more than :data:`MAX_VALUES` values, is an error before any value is built."""

    aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"more than {MAX_ALIASES} aliases (*name); configs this large "
                    "in expansion are refused", mark)
        return super().compose_node(parent, index)

    def compose_document(self) -> Any:
        node = super().compose_document()
        try:
            size = _expanded_size(node, {})
        except RecursionError:
            size = MAX_VALUES + 1
        if size > MAX_VALUES:
            raise yaml.composer.ComposerError(
                None, None, f"the document expands to {size:,} values through its aliases (at "
                f"most {MAX_VALUES:,}): refused before building it",
                getattr(node, "start_mark", None))
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)
