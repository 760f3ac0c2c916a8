"""JSON files shipped inside the package (traits, questionnaires, scenario sets)."""

from __future__ import annotations

from importlib import resources

try:
    from importlib.resources.abc import Traversable
except ImportError:  # Python 3.10
    from importlib.abc import Traversable


def shipped_file(kind: str, name: str) -> Traversable:
    """``personalens/data/<kind>/<name>.json`` (check ``.is_file()``: it may not exist)."""
    return resources.files("personalens").joinpath("data", kind, f"{name}.json")


def shipped_names(kind: str) -> list[str]:
    """Names of the ``.json`` files shipped in ``personalens/data/<kind>/``, sorted."""
    folder = resources.files("personalens").joinpath("data", kind)
    if not folder.is_dir():
        return []
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))
