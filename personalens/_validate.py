"""Field checks for the JSON data files (traits, questionnaires, scenario sets), and the checks
of numeric arguments (counts, finite numbers, steering values) that the API and the CLI share.

One style for all of them: :func:`load_json_file` reads a file ("does not exist" / "not UTF-8
text" / "not valid JSON"), and a :class:`Fields` bound to the file's error class and its place
(``"trait file x.json"``, ``"scenario file s.json, scenario 'one', turn 2"``) checks the
values. Every error reads ``"<where>: key '<key>' <problem>"`` (or ``"<where>: <problem>"`` for
the object itself), so it names the file and the key. :func:`file_head` writes the keys the
questionnaire and scenario files start with.

:func:`check_count`, :func:`check_number`, :func:`check_steering_value` and
:func:`check_pairs` raise :class:`~personalens.errors.ArgumentError` naming the argument as it
was given (``max_new_tokens=0`` for a keyword, ``--max-new-tokens 0`` for a CLI flag), its value
and the fix. This module imports no torch, so the CLI checks its flags before the model loads.
"""

from __future__ import annotations

import json
import math
import numbers
import string
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personalens.errors import ArgumentError

MISSING: Any = object()  # the value of a key that is absent (see Fields.string_list)

# The largest steering coefficient or cap bound accepted, in magnitude (see check_steering_value).
MAX_STEERING_VALUE = 1e6


def load_json_file(path: str | Path, error: type[Exception], label: str) -> Any:
    """The JSON value in ``path``; ``error`` naming ``label`` and the file when the file is
    missing, is not UTF-8 text or is not valid JSON."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{label} {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{label} {path}: not UTF-8 text ({exc}); save it as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise error(f"{label} {path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise error(
            f"{label} {path}: its JSON is nested too deeply to read (arrays or objects inside "
            "each other thousands of levels deep); a data file needs only a few levels"
        ) from None


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


# ----------------------------------------------------------------------------- arguments


def shown(name: str, value: Any) -> str:
    """An argument as it was given: ``--flag VALUE`` for a CLI flag, else ``name=VALUE``."""
    if not name.startswith("--"):
        return f"{name}={value!r}"
    if isinstance(value, list | tuple):
        return " ".join([name, *map(str, value)])
    return f"{name} {value}"


def check_count(name: str, value: Any, *, minimum: int = 1, what: str = "") -> int:
    """``value`` when it is a whole number (not a bool) ``>= minimum``; ``what`` says what it
    counts, for the message."""
    about = f" ({what})" if what else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentError(
            f"{shown(name, value)}: must be a whole number >= {minimum}{about}, got "
            f"{type(value).__name__}; pass an integer such as {max(minimum, 1)}"
        )
    if value < minimum:
        raise ArgumentError(
            f"{shown(name, value)}: must be >= {minimum}{about}; pass {minimum} or more"
        )
    return int(value)


def _interval(lo: float | int | None, hi: float | int | None, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return ""


def check_number(
    name: str,
    value: Any,
    *,
    lo: float | int | None = None,
    hi: float | int | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    what: str = "",
) -> float:
    """``value`` as a float when it is a finite real number (not a bool) in the interval from
    ``lo`` to ``hi`` (either may be ``None``; ``*_open`` excludes that end)."""
    about = f" ({what})" if what else ""
    want = _interval(lo, hi, lo_open, hi_open)
    range_ = f" {want}" if want else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentError(
            f"{shown(name, value)}: must be a number{range_}{about}, got {type(value).__name__}"
        )
    number = float(value)
    if not math.isfinite(number):
        raise ArgumentError(
            f"{shown(name, value)}: must be a finite number{range_}{about}; NaN and infinity "
            "have no meaning here, pass an ordinary number"
        )
    too_low = lo is not None and (number <= lo if lo_open else number < lo)
    too_high = hi is not None and (number >= hi if hi_open else number > hi)
    if too_low or too_high:
        raise ArgumentError(f"{shown(name, value)}: must be {want}{about}; pass a value {want}")
    return number


def check_steering_value(name: str, value: Any) -> float:
    """A steering coefficient or cap bound: a finite number of magnitude at most
    :data:`MAX_STEERING_VALUE`."""
    number = check_number(name, value, what="a steering coefficient or cap bound")
    if abs(number) > MAX_STEERING_VALUE:
        raise ArgumentError(
            f"{shown(name, value)}: steering values must be within ±{MAX_STEERING_VALUE:g}. "
            "Residual-stream norms are in the ones to thousands, so a larger value swamps the "
            "model's own activations (and overflows float16, whose largest number is 65504, to "
            "inf/NaN): the replies would be empty or garbage. Pass a smaller value, e.g. 4 "
            "(with --coeff-scale resid/coeff_scale='resid', e.g. 0.1)"
        )
    return number


def check_pairs(name: str, pairs: Any) -> tuple[int, ...] | None:
    """Instruction-pair indices: ``None`` (all pairs), or a non-empty list of distinct whole
    numbers >= 0."""
    if pairs is None:
        return None
    if isinstance(pairs, str | bytes) or not isinstance(pairs, Sequence):
        raise ArgumentError(
            f"{shown(name, pairs)}: give a list of instruction-pair indices (0, 1, ...), or "
            "None for all pairs"
        )
    if not pairs:
        raise ArgumentError(
            f"{shown(name, pairs)}: no instruction pair selected; give at least one index, or "
            "None for all pairs"
        )
    for p in pairs:
        if isinstance(p, bool) or not isinstance(p, numbers.Integral) or p < 0:
            raise ArgumentError(
                f"{shown(name, list(pairs))}: {p!r} is not an instruction-pair index; pairs are "
                "numbered 0, 1, ... in the trait file's 'instruction' list"
            )
    out = tuple(int(p) for p in pairs)
    twice = sorted({p for p in out if out.count(p) > 1})
    if twice:
        raise ArgumentError(
            f"{shown(name, list(pairs))}: pair(s) {twice} listed more than once, which would "
            "generate and count their replies twice; list each pair once"
        )
    return out
