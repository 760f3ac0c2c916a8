"""Package faces whose names are imported on first use (``import personalens.model`` stays cheap
and cannot re-enter a half-loaded module through its face)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_face(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose public ``exports`` map each name to
    the submodule (relative to ``package``) that defines it. A resolved name is cached on the
    package. Only for packages where no exported name is also a submodule's name: once that
    submodule is imported, Python binds the module to the name and laziness would return it."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
