"""Field checks for the JSON data files (traits, questionnaires, scenario sets).

One style for all of them: :func:`load_json_file` reads a file ("does not exist" / "not UTF-8
text" / "not valid JSON"), and a :class:`Fields` bound to the file's error class and its place
(``"trait file x.json"``, ``"scenario file s.json, scenario 'one', turn 2"``) checks the
values. Every error reads ``"<where>: key '<key>' <problem>"`` (or ``"<where>: <problem>"`` for
the object itself), so it names the file and the key. :func:`file_head` writes the keys the
questionnaire and scenario files start with.
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MISSING: Any = object()  # the value of a key that is absent (see Fields.string_list)


def load_json_file(path: str | Path, error: type[Exception], label: str) -> Any:
    """The JSON value in ``path``; ``error`` naming ``label`` and the file when the file is
    missing, is not UTF-8 text or is not valid JSON."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{label} {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{label} {path}: not UTF-8 text ({exc})") from None
    except json.JSONDecodeError as exc:
        raise error(f"{label} {path}: not valid JSON ({exc})") from None


def file_head(name: str, description: str, license: str) -> dict[str, Any]:
    """The keys a data file's JSON starts with: ``name``, then ``description`` and ``license``
    when they are set."""
    out: dict[str, Any] = {"name": name}
    if description:
        out["description"] = description
    if license:
        out["license"] = license
    return out


def template_fields(text: str) -> list[str]:
    """The ``{placeholder}`` names of a ``str.format`` template (ValueError if malformed)."""
    return [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]


def braces(names: Sequence[str]) -> str:
    """``"{a}, {b}"``: placeholder names as written in a template."""
    return ", ".join("{" + n + "}" for n in names)


@dataclass(frozen=True)
class Fields:
    """Checks the values of one JSON object of a data file; errors are ``error`` instances."""

    error: type[Exception]
    where: str

    def at(self, where: str) -> Fields:
        """The same checks for a nested object, e.g. ``"scenario file s.json, scenario 'a'"``."""
        return Fields(self.error, where)

    def fail(self, key: str | None, problem: str) -> Exception:
        """The error ``"<where>: key '<key>' <problem>"`` (``"<where>: <problem>"`` without key)."""
        if key is None:
            return self.error(f"{self.where}: {problem}")
        return self.error(f"{self.where}: key '{key}' {problem}")

    # ------------------------------------------------------------------------- keys

    def mapping(self, value: Any, key: str | None = None, shape: str = "") -> dict:
        """``value`` when it is a JSON object (the file's top level without ``key``); ``shape``
        describes the one expected."""
        if not isinstance(value, dict):
            must = "must hold a JSON object" if key is None else "must be an object"
            raise self.fail(key, f"{must}{shape}, got {type(value).__name__}")
        return value

    def require(self, data: Mapping, keys: Sequence[str], key: str | None = None) -> None:
        """Every one of ``keys`` is in ``data``: the first missing one is named (or, for the
        nested object ``key``, all missing ones)."""
        missing = [k for k in keys if k not in data]
        if not missing:
            return
        needed = f"(required keys: {', '.join(keys)})"
        if key is None:
            raise self.fail(missing[0], f"is missing {needed}")
        raise self.fail(key, f"is missing {missing} {needed}")

    def known(self, data: Mapping, allowed: Collection[str], key: str | None = None) -> None:
        """No key of ``data`` outside ``allowed`` (``key``: the nested object's name)."""
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            found = "unknown key(s)" if key is None else "has unknown key(s)"
            raise self.fail(key, f"{found} {unknown}; allowed: {', '.join(allowed)}")

    # ------------------------------------------------------------------------- values

    def text(self, value: Any, key: str, hint: str = "") -> str:
        """A non-empty (not only whitespace) string."""
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"must be a non-empty string{hint}, got {value!r}")
        return value

    def optional_text(self, data: Mapping, key: str, default: str = "") -> str:
        """A string (empty allowed), ``default`` when ``key`` is absent."""
        value = data.get(key, default)
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {type(value).__name__}")
        return value

    def flag(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {value!r}")
        return value

    def number(
        self, value: Any, key: str, lo: float | int, hi: float | int, hint: str = ""
    ) -> float:
        """A finite number in ``[lo, hi]`` (booleans are not numbers)."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"is {value!r}, not a number")
        if not math.isfinite(value) or not lo <= value <= hi:
            raise self.fail(key, f"is {value}, outside [{lo:g}, {hi:g}]{hint}")
        return float(value)

    def nonempty_list(self, value: Any, key: str, of: str = "") -> list:
        """A non-empty JSON array; ``of`` says of what (``" of item objects"``)."""
        if not isinstance(value, list) or not value:
            raise self.fail(key, f"must be a non-empty list{of}")
        return value

    def string_list(
        self, value: Any, key: str, *, required: bool = True, distinct: bool = False
    ) -> tuple[str, ...]:
        """A non-empty list of non-empty strings (``()`` for an optional key that is
        :data:`MISSING`); ``distinct``: no string twice."""
        if value is MISSING:
            if required:
                raise self.fail(key, "is missing; it must be a non-empty list of strings")
            return ()
        if not isinstance(value, list):
            raise self.fail(key, f"must be a list of strings, got {type(value).__name__}")
        if not value:
            raise self.fail(key, "is an empty list; give at least one string")
        for i, item in enumerate(value):
            self.text(item, f"{key}[{i}]")
        if distinct and len(set(value)) != len(value):
            raise self.fail(key, f"has duplicates: {value}")
        return tuple(value)

    def template(
        self,
        value: Any,
        key: str,
        allowed: Sequence[str],
        required: Sequence[str],
        *,
        stray: str = "unknown",
        stray_hint: str | None = None,
        missing_hint: str = "it is required",
    ) -> str:
        """A ``str.format`` template using only ``allowed`` placeholders and every ``required``
        one. A stray placeholder is called ``stray`` ("unknown", "unmatched"), followed by
        ``stray_hint`` (default: the allowed ones); a missing one by ``missing_hint``."""
        text = self.text(value, key)
        try:
            fields = template_fields(text)
        except ValueError as exc:
            raise self.fail(
                key, f"is not a valid format string ({exc}); write literal braces as {{{{ }}}}"
            ) from None
        found = sorted({f for f in fields if f not in allowed})
        if found:
            if stray_hint is None:
                stray_hint = f"allowed: {braces(allowed)} (literal braces: {{{{ }}}})"
            raise self.fail(key, f"has {stray} placeholder(s) {braces(found)}; {stray_hint}")
        for needed in required:
            if needed not in fields:
                raise self.fail(key, f"has no {{{needed}}} placeholder; {missing_hint}")
        return text
