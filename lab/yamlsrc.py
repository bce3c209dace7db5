"""Load YAML and remember the line of every field, so errors can point at it.

PyYAML silently keeps the last of two equal keys; topology files must not, so
duplicate keys are rejected here with the line of the second one. Hostile
shapes are refused with one line too: python/unknown tags, recursive aliases,
alias bombs (each node is walked once) and nesting too deep for the parser.
"""
from __future__ import annotations

from typing import Any

import yaml

from .errors import TopologyError

Path_ = tuple[str | int, ...]


def dotted(path: Path_) -> str:
    """``("nodes", "r1", "nat", "from", 0)`` -> ``nodes.r1.nat.from[0]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load(text: str, *, source: str) -> tuple[Any, dict[Path_, int]]:
    """Parse ``text``; return the document and a map field path -> 1-based line."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
            if node is None:
                return None, {}
            lines: dict[Path_, int] = {}
            _walk(node, (), lines, source, set(), set())
            return loader.construct_document(node), lines
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f"{mark.line + 1}:{mark.column + 1}" if mark else "?"
            raise TopologyError(f"{source}:{where}: invalid YAML: {exc.problem or exc.context}") from None
        except yaml.YAMLError as exc:
            raise TopologyError(f"{source}: invalid YAML: {exc}") from None
        except RecursionError:
            raise TopologyError(f"{source}: invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()


def _walk(node: yaml.Node, path: Path_, lines: dict[Path_, int], source: str,
          active: set[int], done: set[int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if id(node) in active:
        raise TopologyError(f"{source}:{node.start_mark.line + 1}: {dotted(path) or 'document'}: "
                            "an alias refers to a node that contains it (recursive YAML)")
    if id(node) in done:
        return  # an alias of a node already walked: its lines are known, and walking
        # it again per reference would make an alias bomb exponential
    active.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise TopologyError(f"{source}:{line}: {dotted((*path, key))}: duplicate name {key!r}")
            seen.add(key)
            lines[(*path, key)] = line
            _walk(value_node, (*path, key), lines, source, active, done)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), lines, source, active, done)
    active.discard(id(node))
    done.add(id(node))
