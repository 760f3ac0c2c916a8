"""Opening a run directory: check the path, create it and bind it to one configuration.

The lock that keeps to one writer per directory is :func:`personalens.runs.lock.run_lock`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from personalens._io import check_run_config
from personalens.errors import RunDirError


def make_run_dir(out: str | os.PathLike[str]) -> Path:
    """``out`` as an existing directory (created with its parents when missing).

    :class:`RunDirError` when ``out`` is a file or cannot be created; nothing is written then.
    """
    run = Path(out)
    if run.exists() and not run.is_dir():
        raise RunDirError(
            f"--out {run} is a file, not a directory: a run directory holds the run's logs and "
            "results. Fix: pass a directory path (a new one starts a run, an existing run "
            "directory resumes it)."
        )
    try:
        run.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(
            f"cannot create the run directory {run}: {exc.strerror or exc}. Fix: pass an --out "
            "path you can write to."
        ) from None
    return run


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
    run = make_run_dir(out)
    check_run_config(run / config_file, config, what=what, fix=fix)
    return run
