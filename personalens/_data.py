"""JSON files shipped inside the package (traits, questionnaires, scenario sets)."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TypeVar

try:
    from importlib.resources.abc import Traversable
except ImportError:  # Python 3.10
    from importlib.abc import Traversable

T = TypeVar("T")

# personalens/data/<VECTORS_KIND>/<model name>/<trait>.json: the shipped persona vectors (here,
# free of torch, so the CLI can list them before anything heavy is imported)
VECTORS_KIND = "vectors"


def shipped_file(kind: str, name: str) -> Traversable:
    """``personalens/data/<kind>/<name>.json`` (check ``.is_file()``: it may not exist)."""
    return resources.files("personalens").joinpath("data", kind, f"{name}.json")


def shipped_names(kind: str) -> list[str]:
    """Names of the ``.json`` files shipped in ``personalens/data/<kind>/``, sorted."""
    folder = resources.files("personalens").joinpath("data", kind)
    if not folder.is_dir():
        return []
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_file_or_shipped(
    kind: str,
    path_or_name: str | Path,
    load_file: Callable[[Path], T],
    unknown: Callable[[str, str], Exception],
) -> T:
    """``load_file(path)`` for a path (a ``.json`` name or an existing file), else for the
    shipped ``personalens/data/<kind>/<name>.json``. An unknown name raises
    ``unknown(name, "a, b, ...")`` (the shipped names, or ``"none"``)."""
    candidate = Path(path_or_name)
    if candidate.suffix == ".json" or candidate.is_file():
        return load_file(candidate)
    name = str(path_or_name)
    entry = shipped_file(kind, name)
    if not entry.is_file():
        raise unknown(name, ", ".join(shipped_names(kind)) or "none")
    with resources.as_file(entry) as path:
        return load_file(path)
