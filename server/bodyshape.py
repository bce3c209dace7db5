"""Bounds on the shape of a decoded request body, checked before any handler runs.

Everything after decoding (validation, field checks, patches, storage encoding)
walks objects recursively, so a body nested a few thousand levels deep would end
in ``RecursionError`` and a 500. YAML adds aliases: ``a: &a [*a]`` decodes to a
list that contains itself, and a few hundred bytes of nested aliases expand to
millions of nodes. No Kubernetes object nests anywhere near ``MAX_DEPTH`` (a pod
is about 12 levels deep), and a body without aliases has at most one node per
byte, so both limits only ever reject hostile input.
"""
from __future__ import annotations

import math
from typing import Any

MAX_DEPTH = 128
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


class BodyShapeError(ValueError):
    """The decoded body is too deep, recursive or expands far beyond its size."""


def check_shape(doc: Any, *, body_size: int, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`BodyShapeError` unless ``doc`` is a plain tree of bounded
    depth with no more nodes than the body had bytes (iterative: no recursion)."""
    budget = body_size + 16
    # (container, depth, ids of the containers on the path to it)
    stack: list[tuple[Any, int, frozenset[int]]] = [(doc, 1, frozenset())]
    nodes = 0
    while stack:
        obj, depth, path = stack.pop()
        nodes += 1
        if nodes > budget:
            raise BodyShapeError(f"the body expands to more than {budget} values (YAML aliases?)")
        if isinstance(obj, dict):
            children: Any = obj.values()
        elif isinstance(obj, list):
            children = obj
        else:
            if isinstance(obj, int) and not isinstance(obj, bool) and not INT64_MIN <= obj <= INT64_MAX:
                # Every integer field upstream is int64 or narrower; Python's would
                # overflow later, in SQLite or a timer, as a 500.
                raise BodyShapeError(f"the number {obj} does not fit in a 64-bit integer")
            if isinstance(obj, float) and not math.isfinite(obj):
                # Python's json reads NaN/Infinity/1e400; stored, they make every later
                # read invalid JSON for kubectl (Go's decoder refuses them too).
                raise BodyShapeError(f"{obj} is not a valid JSON number")
            continue
        if id(obj) in path:
            raise BodyShapeError("the body refers to itself (a recursive YAML alias)")
        if depth > max_depth:
            raise BodyShapeError(f"the body is nested more than {max_depth} levels deep")
        inner = path | {id(obj)}
        stack.extend((child, depth + 1, inner) for child in children)
