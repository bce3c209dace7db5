"""QA: hostile manifest files are refused by parse_manifest with a clear reason,
instead of failing later with "Circular reference detected" or a RecursionError."""
from __future__ import annotations

import pytest

from edgectl.server.manifests import ManifestError, parse_manifest

HEAD = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"


def laughs(levels: int) -> str:
    lines, prev = [], None
    for c in "abcdefghij"[:levels]:
        items = ", ".join([f"*{prev}"] * 9) if prev else ", ".join(['"lol"'] * 9)
        lines.append(f"  {c}: &{c} [{items}]")
        prev = c
    return HEAD + "extra:\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize("text, fragment", [
    (HEAD + "x: " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
    (HEAD + "x: " + "[" * 200 + "]" * 200 + "\n", "nested more than 128 levels"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, labels: &a {x: *a}}\n", "refers to itself"),
    (HEAD + "extra: &a [*a]\n", "refers to itself"),
    (laughs(8), "expands to more than"),
])
def test_hostile_manifests(text: str, fragment: str) -> None:
    with pytest.raises(ManifestError, match=fragment) as info:
        parse_manifest(text.encode(), name="m.yaml")
    assert str(info.value).startswith("m.yaml: ")


def test_ordinary_anchors_still_parse() -> None:
    objs = parse_manifest(b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, labels: &l {a: b}, annotations: *l}\n",
                          name="m.yaml")
    assert objs[0]["metadata"]["annotations"] == {"a": "b"}
