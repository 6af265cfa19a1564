"""The flow of a task as an SVG: steps in columns by dependency depth, edges as curves.

Laid out on the server (a few rectangles, no layout library): a step's column is one
more than its deepest dependency's, its row its place among its column's steps in the
order the workspace lists them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["layout"]

NODE_W = 150
NODE_H = 34
GAP_X = 48
GAP_Y = 12
PAD = 6
_LABEL_CHARS = 19


def _depths(steps: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    deps = {s["name"]: [d for d in s.get("depends_on", ()) if d != s["name"]] for s in steps}
    depth: dict[str, int] = {}

    def of(name: str, seen: frozenset[str]) -> int:
        if name in depth:
            return depth[name]
        if name in seen:  # a cycle (an invalid workspace): stop instead of recursing forever
            return 0
        parents = [d for d in deps.get(name, ()) if d in deps]
        depth[name] = 1 + max((of(p, seen | {name}) for p in parents), default=-1)
        return depth[name]

    for name in deps:
        of(name, frozenset())
    return depth


def layout(
    steps: Sequence[Mapping[str, Any]], statuses: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Nodes (x, y, name, label, status), edges (an SVG path each) and the size."""
    statuses = statuses or {}
    depth = _depths(steps)
    rows: dict[int, int] = {}
    nodes: dict[str, dict[str, Any]] = {}
    for step in steps:
        name = step["name"]
        col = depth.get(name, 0)
        row = rows.get(col, 0)
        rows[col] = row + 1
        label = name if len(name) <= _LABEL_CHARS else name[: _LABEL_CHARS - 1] + "…"
        nodes[name] = {
            "name": name,
            "label": label,
            "status": statuses.get(name, "pending"),
            "x": PAD + col * (NODE_W + GAP_X),
            "y": PAD + row * (NODE_H + GAP_Y),
        }
    edges = []
    for step in steps:
        child = nodes[step["name"]]
        for dep in step.get("depends_on", ()):
            parent = nodes.get(dep)
            if parent is None or parent is child:
                continue
            x1, y1 = parent["x"] + NODE_W, parent["y"] + NODE_H / 2
            x2, y2 = child["x"], child["y"] + NODE_H / 2
            mid = (x1 + x2) / 2
            edges.append(
                f"M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"
            )
    cols = max(depth.values(), default=0) + 1
    height_rows = max(rows.values(), default=1)
    return {
        "nodes": list(nodes.values()),
        "edges": edges,
        "width": 2 * PAD + cols * NODE_W + (cols - 1) * GAP_X,
        "height": 2 * PAD + height_rows * NODE_H + (height_rows - 1) * GAP_Y,
        "node_w": NODE_W,
        "node_h": NODE_H,
    }
