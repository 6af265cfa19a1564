"""A renderer for the Go-template subset deploy/helm/headwater uses (no ``helm`` binary here).

Supported, with Go's semantics: ``{{ .Values.a.b }}``, ``{{ .Release.Name }}`` (and
``.Release.Namespace``, ``.Chart.*``), ``{{ if X }}…{{ else }}…{{ end }}``, the ``{{-``/``-}}``
whitespace trims, and the pipeline functions ``toYaml``, ``nindent N``, ``indent N`` and
``quote``. Anything else raises ``TemplateError``, and so does a value missing from
values.yaml (Helm would print nothing: here that is a typo caught), so the chart cannot
quietly grow a construct this renderer gets wrong.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.DOTALL)


class TemplateError(Exception):
    pass


@dataclass
class _Node:
    kind: str  # "text", "expr", "if"
    text: str = ""
    then: list[_Node] = field(default_factory=list)
    otherwise: list[_Node] = field(default_factory=list)


def _tokens(source: str) -> list[tuple[str, str]]:
    """(kind, text) pairs with the trim markers already applied to the neighbouring text."""
    out: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    for match in _ACTION.finditer(source):
        text = source[pos : match.start()]
        if trim_next:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        out.append(("text", text))
        out.append(("action", match.group(2)))
        trim_next = bool(match.group(3))
        pos = match.end()
    tail = source[pos:]
    out.append(("text", tail.lstrip() if trim_next else tail))
    return out


def _parse(tokens: list[tuple[str, str]]) -> list[_Node]:
    root: list[_Node] = []
    # Each frame: (node list being filled, the "if" node owning it or None).
    stack: list[tuple[list[_Node], _Node | None]] = [(root, None)]
    for kind, text in tokens:
        body = stack[-1][0]
        if kind == "text":
            body.append(_Node("text", text))
        elif text.startswith("if "):
            node = _Node("if", text[3:].strip())
            body.append(node)
            stack.append((node.then, node))
        elif text == "else":
            owner = stack[-1][1]
            if owner is None or body is owner.otherwise:
                raise TemplateError("else outside an if")
            stack[-1] = (owner.otherwise, owner)
        elif text == "end":
            if len(stack) == 1:
                raise TemplateError("end without an if")
            stack.pop()
        elif text.startswith("/*"):
            continue
        else:
            body.append(_Node("expr", text))
    if len(stack) != 1:
        raise TemplateError("if without an end")
    return root


def _lookup(path: str, context: dict[str, Any]) -> Any:
    if not path.startswith("."):
        raise TemplateError(f"unsupported operand: {path!r}")
    value: Any = context
    for part in path[1:].split("."):
        if not isinstance(value, dict) or part not in value:
            raise TemplateError(f"{path} is not defined")
        value = value[part]
    return value


def _operand(arg: str, context: dict[str, Any]) -> Any:
    if arg.startswith("."):
        return _lookup(arg, context)
    if arg.isdigit():
        return int(arg)
    raise TemplateError(f"unsupported operand: {arg!r}")


def _to_yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=True).rstrip("\n")


def _stringify(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        raise TemplateError("printing a map or list needs toYaml")
    return str(value)


def _eval(pipeline: str, context: dict[str, Any]) -> Any:
    value: Any = None
    for index, command in enumerate(part.split() for part in pipeline.split("|")):
        if not command:
            raise TemplateError(f"empty command in {pipeline!r}")
        name, args = command[0], command[1:]
        if name.startswith("."):
            if index or args:
                raise TemplateError(f"unsupported pipeline: {pipeline!r}")
            value = _lookup(name, context)
            continue
        operands = [_operand(a, context) for a in args]
        if index:
            operands.append(value)
        if name == "toYaml" and len(operands) == 1:
            value = _to_yaml(operands[0])
        elif name == "quote" and len(operands) == 1:
            value = json.dumps(_stringify(operands[0]))
        elif name in ("nindent", "indent") and len(operands) == 2:
            pad = " " * int(operands[0])
            lines = _stringify(operands[1]).split("\n")
            value = ("\n" if name == "nindent" else "") + "\n".join(pad + ln for ln in lines)
        else:
            raise TemplateError(f"unsupported function: {name} in {pipeline!r}")
    return value


def _truthy(value: Any) -> bool:
    # Go templates: false, 0, nil and empty strings, maps and lists are false.
    return bool(value)


def _render(nodes: list[_Node], context: dict[str, Any]) -> str:
    out: list[str] = []
    for node in nodes:
        if node.kind == "text":
            out.append(node.text)
        elif node.kind == "expr":
            out.append(_stringify(_eval(node.text, context)))
        else:
            branch = node.then if _truthy(_eval(node.text, context)) else node.otherwise
            out.append(_render(branch, context))
    return "".join(out)


def render_string(source: str, context: dict[str, Any]) -> str:
    return _render(_parse(_tokens(source)), context)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's values merge: maps merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def render_chart(
    chart: Path,
    overrides: dict[str, Any] | None = None,
    release: str = "hw",
    namespace: str = "default",
) -> dict[str, str]:
    """Template file name -> rendered text, like ``helm template`` (NOTES.txt included)."""
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    values = merge(yaml.safe_load((chart / "values.yaml").read_text()), overrides or {})
    context = {
        "Values": values,
        "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
        "Chart": {
            "Name": meta["name"],
            "Version": meta["version"],
            "AppVersion": meta["appVersion"],
        },
    }
    return {
        path.name: render_string(path.read_text(), context)
        for path in sorted((chart / "templates").iterdir())
        if path.suffix in (".yaml", ".txt")
    }
