"""Static reading of parsed templates: which context paths they read, and where a value
is written into the text as it is (for the shell-injection warning)."""

from __future__ import annotations

from jinja2 import nodes

__all__ = ["collect_chains", "collect_paths", "shell_safe", "shell_warning"]

# Filters whose result is one harmless shell word whatever their input.
_SHELL_SAFE_FILTERS = frozenset(
    {
        "shell_quote",
        "int",
        "float",
        "length",
        "count",
        "abs",
        "round",
        "slugify",
        "urlencode_strict",
        "wordcount",
        "filesizeformat",
    }
)


def shell_safe(node: nodes.Node) -> bool:
    if isinstance(node, nodes.Filter):
        return node.name in _SHELL_SAFE_FILTERS
    return isinstance(node, nodes.Test | nodes.Const)


def _chain(node: nodes.Node) -> tuple[list[str], nodes.Node] | None:
    """``a.b['c']`` as (["a", "b", "c"], Name(a)); None when the root is not a name."""
    parts: list[str] = []
    while True:
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
            node = node.node
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            parts.append(str(node.arg.value))
            node = node.node
        elif isinstance(node, nodes.Getitem):
            parts.clear()  # a dynamic key: only the part before it is known
            node = node.node
        elif isinstance(node, nodes.Name):
            parts.append(node.name)
            parts.reverse()
            return parts, node
        else:
            return None


def collect_paths(node: nodes.Node, roots: frozenset[str], found: set[str]) -> None:
    if isinstance(node, nodes.Getattr | nodes.Getitem | nodes.Name):
        chain = _chain(node)
        if chain is not None and chain[0] and chain[0][0] in roots:
            found.add(".".join(chain[0]))
            if isinstance(node, nodes.Getitem):
                collect_paths(node.arg, roots, found)
            return
    for child in node.iter_child_nodes():
        collect_paths(child, roots, found)


def collect_chains(node: nodes.Node, free: set[str], out: list[list[str]]) -> None:
    if isinstance(node, nodes.Getattr | nodes.Getitem | nodes.Name):
        chain = _chain(node)
        if chain is not None and chain[0] and chain[0][0] in free:
            out.append(chain[0])
    for child in node.iter_child_nodes():
        collect_chains(child, free, out)


def shell_warning(found: list[tuple[str, int]]) -> str | None:
    """The ``validate`` warning for ``(dotted path, line)`` pasted unquoted into a shell script."""
    if not found:
        return None
    paths = list(dict.fromkeys(dotted for dotted, _ in found))
    lines = sorted({line for _, line in found})
    shown = ", ".join(f"`{{{{ {p} }}}}`" for p in paths[:3]) + (", …" if len(paths) > 3 else "")
    first = paths[0]
    name = first.rpartition(".")[2].upper() or "VALUE"
    where = f"line {lines[0]}" if len(lines) == 1 else f"lines {', '.join(map(str, lines))}"
    return (
        f"`script` ({where}) pastes {shown} into a shell script unquoted: a value"
        " holding a quote, `;` or `$(...)` runs as shell code. Write"
        f" `{{{{ {first} | shell_quote }}}}`, or pass it through `env:`"
        f' ({name}: "{{{{ {first} }}}}") and use "${name}" in the script'
    )
