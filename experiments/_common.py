"""Shared by the experiment scripts (run as ``python experiments/NAME.py``, so importable)."""

from __future__ import annotations

from pathlib import Path

from personalens._io import check_run_config
from personalens.errors import PersonaLensError


def check_config(path: Path, config: dict, what: str = "a run") -> None:
    """Write the resolved config next to the outputs; refuse to resume with other settings."""
    try:
        check_run_config(
            path, config, what=what, fix="Use the same settings or another --out directory."
        )
    except PersonaLensError as exc:
        raise SystemExit(str(exc)) from None
