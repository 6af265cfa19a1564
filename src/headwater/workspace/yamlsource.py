"""YAML to plain data, remembering where every node came from.

PyYAML's composer gives nodes with start marks; we build the Python value ourselves from
those nodes and record, for every path (``("actions", "poll", "script")``), the location
of the value and of its key. Later stages (pydantic errors, cross-reference checks) only
know paths, and a ``SourceMap`` turns a path back into ``file:line:col``.

Two deliberate differences from ``yaml.safe_load``:
- dates and times stay strings (``2026-01-15`` is a ``date`` input's value, and JSON has
  no date type);
- a key repeated in one mapping is an error instead of "the last one wins".
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from headwater.errors import Problem, Severity

__all__ = ["Location", "ParsedFile", "SourceMap", "YamlPath", "parse_yaml_file", "parse_yaml_text"]

YamlPath = tuple[str | int, ...]

_MAX_DEPTH = 200  # guards against alias bombs and recursive anchors


@dataclass(frozen=True, slots=True)
class Location:
    """A 1-based position in a file."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class SourceMap:
    """Where each path of the loaded data was written."""

    def __init__(self) -> None:
        self._values: dict[YamlPath, Location] = {}
        self._keys: dict[YamlPath, Location] = {}

    def add_value(self, path: YamlPath, location: Location) -> None:
        self._values[path] = location

    def add_key(self, path: YamlPath, location: Location) -> None:
        self._keys[path] = location

    def add_value_default(self, path: YamlPath, location: Location) -> None:
        """Record ``location`` unless the path already has one (merging files)."""
        self._values.setdefault(path, location)

    def add_key_default(self, path: YamlPath, location: Location) -> None:
        self._keys.setdefault(path, location)

    def entries(self) -> Iterator[tuple[YamlPath, Location, bool]]:
        """Every recorded (path, location, is_key)."""
        for path, loc in self._values.items():
            yield path, loc, False
        for path, loc in self._keys.items():
            yield path, loc, True

    def value(self, path: YamlPath) -> Location | None:
        """The location of the value at ``path``, or of its nearest known ancestor."""
        for end in range(len(path), -1, -1):
            loc = self._values.get(path[:end])
            if loc is not None:
                return loc
        return None

    def key(self, path: YamlPath) -> Location | None:
        """The location of the key naming ``path`` (falls back to the value's location)."""
        loc = self._keys.get(path)
        return loc if loc is not None else self.value(path)

    def problem(
        self,
        message: str,
        path: YamlPath,
        *,
        severity: Severity = Severity.ERROR,
        at_key: bool = False,
    ) -> Problem:
        """A Problem located at ``path`` (its key when ``at_key``)."""
        loc = self.key(path) if at_key else self.value(path)
        return Problem(
            message=message,
            file=loc.file if loc else None,
            line=loc.line if loc else None,
            column=loc.column if loc else None,
            severity=severity,
            path=path,
        )


class _Loader(yaml.SafeLoader):
    """SafeLoader without the timestamp resolver (dates stay strings)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(slots=True)
class ParsedFile:
    file: str
    data: Any
    source_map: SourceMap
    problems: list[Problem]


def parse_yaml_file(path: Path) -> ParsedFile:
    """Read and parse one YAML file; problems (I/O, syntax, duplicate keys) are collected."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return ParsedFile(str(path), None, SourceMap(), [_file_problem(str(path), str(exc))])
    return parse_yaml_text(text, str(path))


def parse_yaml_text(text: str, file: str) -> ParsedFile:
    source_map = SourceMap()
    problems: list[Problem] = []
    try:
        # The reader refuses control characters as soon as it is built, before parsing.
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:
        before = text[: exc.position]
        line = before.count("\n") + 1
        column = exc.position - (before.rfind("\n") + 1) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        message = f"invalid YAML: the character U+{char:04X} is not allowed in YAML"
        problems.append(Problem(message=message, file=file, line=line, column=column))
        return ParsedFile(file, None, source_map, problems)
    try:
        node = loader.get_single_node()
        if node is None:
            return ParsedFile(file, None, source_map, problems)
        builder = _Builder(loader, file, source_map, problems)
        data = builder.build(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(part for part in (exc.context, exc.problem) if part) or str(exc)
        problems.append(
            Problem(
                message=f"invalid YAML: {message}",
                file=file,
                line=mark.line + 1 if mark else None,
                column=mark.column + 1 if mark else None,
            )
        )
        return ParsedFile(file, None, source_map, problems)
    except yaml.YAMLError as exc:
        problems.append(_file_problem(file, f"invalid YAML: {exc}"))
        return ParsedFile(file, None, source_map, problems)
    finally:
        loader.dispose()
    return ParsedFile(file, data, source_map, problems)


def _file_problem(file: str, message: str) -> Problem:
    return Problem(message=message, file=file)


class _Builder:
    def __init__(
        self, loader: _Loader, file: str, source_map: SourceMap, problems: list[Problem]
    ) -> None:
        self._loader = loader
        self._file = file
        self._map = source_map
        self._problems = problems

    def _loc(self, node: Node) -> Location:
        return Location(self._file, node.start_mark.line + 1, node.start_mark.column + 1)

    def build(self, node: Node, path: YamlPath, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise yaml.MarkedYAMLError(
                problem="nesting too deep (recursive anchor?)", problem_mark=node.start_mark
            )
        self._map.add_value(path, self._loc(node))
        if isinstance(node, ScalarNode):
            return self._loader.construct_object(node)
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        if isinstance(node, MappingNode):
            return self._mapping(node, path, depth)
        raise yaml.MarkedYAMLError(problem="unsupported YAML node", problem_mark=node.start_mark)

    def _mapping(self, node: MappingNode, path: YamlPath, depth: int) -> dict[str, Any]:
        # Keys written in this mapping; keys brought in by a "<<" merge may be overridden.
        written = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
        # Resolves "<<" merge keys into node.value, as the constructor would.
        self._loader.flatten_mapping(node)
        result: dict[str, Any] = {}
        seen: dict[str, Location] = {}
        explicit: set[str] = set()
        for key_node, value_node in node.value:
            key = _key_text(key_node)
            key_loc = self._loc(key_node)
            is_written = id(key_node) in written
            if key in seen and is_written and key in explicit:
                self._problems.append(
                    Problem(
                        message=f"duplicate key `{key}` (first written at {seen[key]})",
                        file=key_loc.file,
                        line=key_loc.line,
                        column=key_loc.column,
                        path=(*path, key),
                    )
                )
                continue
            seen[key] = key_loc
            if is_written:
                explicit.add(key)
            self._map.add_key((*path, key), key_loc)
            result[key] = self.build(value_node, (*path, key), depth + 1)
        return result


def _key_text(node: Node) -> str:
    # Keys are names (actions, steps, env vars): keep the text as written, so `on:` stays
    # "on" and `200:` stays "200" instead of becoming True and 200.
    if isinstance(node, ScalarNode):
        return str(node.value)
    raise yaml.MarkedYAMLError(
        problem="a mapping key must be a plain name, not a list or mapping",
        problem_mark=node.start_mark,
    )
