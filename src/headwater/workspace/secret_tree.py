"""Nested ``secrets:`` values, as Strøm writes them: ``db: {host: .., password: ..}``.

The workspace model keeps secrets flat, one string per leaf under its dotted path
(``db.password``), so resolving, redacting and shipping them to workers is unchanged;
templates see the tree again (``{{ secret.db.password }}``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["SEPARATOR", "flatten_secrets", "secret_scope", "secret_tree"]

SEPARATOR = "."


def flatten_secrets(
    value: Mapping[str, Any], scalar: Callable[[object], object]
) -> dict[str, object]:
    """``{"db": {"password": "x"}}`` -> ``{"db.password": "x"}``; leaves go through
    ``scalar`` (a number becomes its text). Keys that are not maps are kept as they are."""
    flat: dict[str, object] = {}
    for key, leaf in value.items():
        if isinstance(leaf, Mapping) and leaf:
            for sub, sub_leaf in flatten_secrets(leaf, scalar).items():
                flat[f"{key}{SEPARATOR}{sub}"] = sub_leaf
        else:
            flat[str(key)] = leaf if isinstance(leaf, str) else scalar(leaf)
    return flat


def secret_tree(flat: Mapping[str, str]) -> dict[str, Any]:
    """The template view of flat secrets: dotted names become nested maps."""
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        if SEPARATOR not in name:
            tree.setdefault(name, value)
            continue
        *parents, leaf = name.split(SEPARATOR)
        node = tree
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[leaf] = value
    return tree


def secret_scope(flat: Mapping[str, str]) -> dict[str, Any]:
    """The ``secret`` / ``secrets`` names of a template context."""
    tree = secret_tree(flat)
    return {"secret": tree, "secrets": tree}
