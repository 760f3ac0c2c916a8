"""The one base of personalens result values: JSON-safe ``to_dict``, ``to_frame``, ``save``.

Every compute function returns a frozen dataclass that subclasses :class:`Result`. The base
gives each the same three things, so they are written once:

- ``to_dict()``: the dataclass fields as JSON-safe values (:func:`json_safe`: NaN and infinity
  become ``null``, paths strings, tensors and arrays nested lists, numpy/torch scalars Python numbers, tuples
  lists, mapping keys strings). A result overrides it only where its saved shape differs.
- ``to_frame()``: a ``pandas.DataFrame`` with one row per record of :meth:`frame_records`, which
  a result overrides (default: the field named by ``_frame_field``).
- ``save(path)``: ``to_dict()`` written as JSON, atomically.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from personalens._io import atomic_write_json

if TYPE_CHECKING:
    import pandas as pd


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON types: NaN/inf -> None, tensors/arrays -> lists, scalars -> Python."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: json_safe(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "tolist"):  # torch tensors, numpy arrays and numpy/torch scalars
        return json_safe(value.tolist())
    if hasattr(value, "item"):
        return json_safe(value.item())
    return value


class Result:
    """Mixin base of the result dataclasses (see the module doc)."""

    _frame_field: ClassVar[str | None] = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: json_safe(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def frame_records(self) -> list[dict[str, Any]]:
        """The rows of :meth:`to_frame`, one dict per row."""
        if self._frame_field is None:
            raise NotImplementedError(f"{type(self).__name__} has no table form")
        return list(getattr(self, self._frame_field))

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame.from_records(self.frame_records())

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as JSON (atomic)."""
        return atomic_write_json(Path(path), self.to_dict())
