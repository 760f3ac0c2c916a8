"""Opening a run directory: create it and bind it to one configuration."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from personalens._io import check_run_config


def open_run_dir(
    out: str | os.PathLike[str] | None,
    config: dict[str, Any],
    *,
    what: str,
    fix: str,
    config_file: str = "config.json",
) -> Path | None:
    """``out`` as a created directory whose ``config_file`` holds ``config``; ``None`` without
    ``out``. A directory holding another configuration raises (:func:`check_run_config`, with
    ``what`` and ``fix`` in the message)."""
    if out is None:
        return None
    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    check_run_config(run / config_file, config, what=what, fix=fix)
    return run
