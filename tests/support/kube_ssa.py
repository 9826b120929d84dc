"""Server-side apply as the API server does it, for the emulator: fieldsV1 paths, named-item
list merges, ownership sets (see tests/support/kube.py)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

MISSING = object()


def _keyed(name: str) -> str:
    return "k:" + json.dumps({"name": name}, separators=(",", ":"))


def leaves(value: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Leaf paths of an applied body in fieldsV1 spelling (`f:x`, `k:{"name":...}`)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, (*path, f"f:{key}"))
    elif (
        isinstance(value, list)
        and value
        and all(isinstance(i, dict) and "name" in i for i in value)
    ):
        for item in value:
            rest = {k: v for k, v in item.items() if k != "name"}
            if rest:
                yield from leaves(rest, (*path, _keyed(item["name"])))
            else:
                yield (*path, _keyed(item["name"])), item
    else:
        yield path, value


def owned_paths(fields: dict[str, Any], path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """The leaf paths of a fieldsV1 set (the `.` and `f:name` marks of list items skipped)."""
    found: set[tuple[str, ...]] = set()
    for key, sub in fields.items():
        if key == "." or (key == "f:name" and path and path[-1].startswith("k:")):
            continue
        if sub:
            found |= owned_paths(sub, (*path, key))
        else:
            found.add((*path, key))
    return found


def fields_of(paths: set[tuple[str, ...]]) -> dict[str, Any]:
    """A fieldsV1 set for leaf paths (list items marked with `.` and `f:name`)."""
    root: dict[str, Any] = {}
    for path in paths:
        node = root
        for key in path:
            node = node.setdefault(key, {})
            if key.startswith("k:"):
                node.setdefault(".", {})
                node.setdefault("f:name", {})
    return root


def value_at(obj: Any, path: tuple[str, ...]) -> Any:
    """The value at a fieldsV1 path in an object, or MISSING."""
    for key in path:
        if key.startswith("f:") and isinstance(obj, dict) and key[2:] in obj:
            obj = obj[key[2:]]
        elif key.startswith("k:") and isinstance(obj, list):
            name = json.loads(key[2:])["name"]
            obj = next((i for i in obj if isinstance(i, dict) and i.get("name") == name), MISSING)
            if obj is MISSING:
                return MISSING
        else:
            return MISSING
    return obj


def ssa_merge(into: Any, changes: Any) -> Any:
    """Merge an applied body into an object: dicts by key, named-item lists by name."""
    if isinstance(into, dict) and isinstance(changes, dict):
        merged = copy.deepcopy(into)
        for key, value in changes.items():
            merged[key] = ssa_merge(into.get(key), value)
        return merged
    if isinstance(into, list) and isinstance(changes, list):
        if all(isinstance(i, dict) and "name" in i for i in into + changes):
            merged_list = copy.deepcopy(into)
            for item in changes:
                index = next(
                    (n for n, old in enumerate(merged_list) if old["name"] == item["name"]), None
                )
                if index is None:
                    merged_list.append(copy.deepcopy(item))
                else:
                    merged_list[index] = ssa_merge(merged_list[index], item)
            return merged_list
    return copy.deepcopy(changes)
