"""Safe YAML with line numbers, and pydantic errors turned into ``file:line`` problems.

Every file people write (``scheduler.yaml``, ``peach.yaml``) goes through here so that
each error can point at a line. Loading is safe (no Python objects), keeps dates as
strings (``2024-01-01`` stays text, as papermill learned), a key given twice in one
mapping is reported instead of silently keeping the last one, and a file whose aliases
expand it beyond ``MAX_NODES`` values ("billion laughs") is refused before it is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import ConfigProblem

Path_ = tuple[Any, ...]

# Aliases let a small file stand for a huge document, and building it (and its line map)
# expands every alias. Real files have a few hundred values.
MAX_NODES = 100_000
# The YAML specification limits a key written without '?' to 1024 characters; PyYAML
# then stops with a syntax error that does not say why.
MAX_KEY_CHARS = 1024


class _Loader(yaml.SafeLoader):
    """SafeLoader without the implicit timestamp type."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass
class LineMap:
    """Where each key and list item of a document stands (1-based lines)."""

    lines: dict[Path_, int] = field(default_factory=dict)
    duplicates: list[tuple[Path_, int]] = field(default_factory=list)

    def line_of(self, path: Path_) -> int | None:
        """Line of ``path``, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)


def load_yaml(text: str, file: str) -> tuple[Any, LineMap]:
    """Parse one YAML document; raise ``ConfigProblem`` naming file and line."""
    loader = _Loader(text)
    lines = LineMap()
    try:
        node = loader.get_single_node()
        if node is None:
            return None, lines
        if _expanded_size(node) > MAX_NODES:
            raise ConfigProblem(file, None, f"this file expands to more than {MAX_NODES} YAML values through "
                                            "aliases; write the values out instead of nesting aliases")
        lines.lines[()] = node.start_mark.line + 1
        return _build(loader, node, (), lines, set()), lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        long_key = _long_key(text, mark.line) if mark else None
        if long_key is not None:
            at, length = long_key
            raise ConfigProblem(file, at, f"this key is {length} characters long; YAML reads a key of at most "
                                          f"{MAX_KEY_CHARS} characters, so the line cannot be read. Use a shorter "
                                          "name (a task name, a setting)") from None
        what = exc.problem or str(exc)
        raise ConfigProblem(file, line, f"YAML syntax error: {what}; fix the YAML syntax on this line") from None
    except yaml.YAMLError as exc:
        raise ConfigProblem(file, None, f"YAML error: {exc}; fix the file") from None
    finally:
        loader.dispose()


def _long_key(text: str, line: int) -> tuple[int, int] | None:
    """(1-based line, length) of a ``key:`` longer than YAML allows at or just before the
    0-based ``line`` of a syntax error: the parser then stops with a misleading message
    ("mapping values are not allowed here")."""
    rows = text.splitlines()
    for index in (line, line - 1):
        if not 0 <= index < len(rows):
            continue
        content = rows[index].lstrip(" ").removeprefix("- ").lstrip(" ")
        key = re.match(r"(.*?):(\s|$)", content)
        if key is not None and len(key.group(1)) > MAX_KEY_CHARS:
            return index + 1, len(key.group(1).strip("'\""))
    return None


def _expanded_size(root: yaml.Node) -> int:
    """Values in the document with every alias expanded, counted up to ``MAX_NODES + 1``.

    An iterative post-order walk with memoised sizes: linear in the composed graph even
    when the expanded document is exponential; a cycle counts once (``_build`` reports it).
    """
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            sizes[key] = min(MAX_NODES + 1, 1 + sum(sizes.get(id(c), 0) for c in _children(node)))
            continue
        if key in sizes:
            continue
        sizes[key] = 0  # "in progress": a cycle back here adds nothing
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _build(loader: _Loader, node: yaml.Node, path: Path_, lines: LineMap, active: set[int]) -> Any:
    if id(node) in active:
        raise ConfigProblem("", node.start_mark.line + 1, "a YAML alias refers to itself; remove the recursive alias")
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolve '<<' merge keys first
        active.add(id(node))
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _build(loader, key_node, path, lines, active)
            line = key_node.start_mark.line + 1
            if not isinstance(key, (str, int, float, bool, type(None))):
                active.discard(id(node))
                raise ConfigProblem("", line, "a mapping key must be a plain value, not a list or mapping")
            if key in out:
                lines.duplicates.append((path + (key,), line))
                continue
            lines.lines[path + (key,)] = line
            out[key] = _build(loader, value_node, path + (key,), lines, active)
        active.discard(id(node))
        return out
    if isinstance(node, yaml.SequenceNode):
        active.add(id(node))
        items = []
        for index, item in enumerate(node.value):
            lines.lines[path + (index,)] = item.start_mark.line + 1
            items.append(_build(loader, item, path + (index,), lines, active))
        active.discard(id(node))
        return items
    return loader.construct_object(node, deep=True)


def load_yaml_file(text: str, file: str) -> tuple[Any, LineMap]:
    """``load_yaml`` that also fills in the file name on nested problems."""
    try:
        return load_yaml(text, file)
    except ConfigProblem as exc:
        if exc.file:
            raise
        raise ConfigProblem(file, exc.line, exc.message) from None


def dotted(path: Path_) -> str:
    """``('tasks', 'x', 'timeout')`` -> ``tasks.x.timeout``; list items as ``[i]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def validation_problems(
    exc: ValidationError, file: str, lines: LineMap, prefix: Path_ = ()
) -> list[ConfigProblem]:
    """One ``ConfigProblem`` per pydantic error, each with the key's path and line."""
    problems = []
    for err in exc.errors():
        loc = tuple(part for part in err["loc"] if not (isinstance(part, str) and "[" in part))
        path = prefix + loc
        kind = err["type"]
        if kind == "extra_forbidden":
            message = f"unknown key '{dotted(path)}'; remove it or check its spelling"
        elif kind == "missing":
            message = f"missing key '{dotted(path)}'; add it"
        else:
            shown = err.get("input")
            message = f"'{dotted(path)}': {err['msg']} (got {shown!r}); correct the value"
        problems.append(ConfigProblem(file, lines.line_of(path), message))
    return problems
