"""Which judge: ``make_judge("offline" | "openai" | "local" | "auto")``."""

from __future__ import annotations

import os

from personalens.errors import PersonaLensError
from personalens.judges.base import Judge
from personalens.judges.local import LocalJudge
from personalens.judges.offline import OfflineJudge
from personalens.judges.openai_judge import OpenAIJudge


def api_configured() -> bool:
    """True when an OpenAI-compatible judge is configured in the environment."""
    return bool(os.environ.get("PERSONALENS_JUDGE_BASE_URL") or os.environ.get("OPENAI_API_KEY"))


def make_judge(kind: str = "auto", **kwargs) -> Judge:
    """``"offline"``, ``"openai"``, ``"local"`` or ``"auto"`` (openai when configured in the
    environment, else offline).

    ``"local"`` is the paper's logprob judge on a local model: ``model=`` a model name or path
    (``None``: the embedded model; loaded as the judge's own instance) or a loaded
    ``HookedTransformer`` (see :class:`~personalens.judges.local.LocalJudge`)."""
    if kind == "auto":
        kind = "openai" if api_configured() else "offline"
    if kind == "offline":
        return OfflineJudge(**kwargs)
    if kind == "openai":
        return OpenAIJudge(**kwargs)
    if kind == "local":
        return LocalJudge(**kwargs)
    raise PersonaLensError(f"unknown judge {kind!r}: use 'offline', 'openai', 'local' or 'auto'")
