"""The hooks of a training forward pass: the adapters, and the steering of the finetuning mode.

``"plain"`` trains with the adapters only; ``"preventative"`` also adds ``coeff · v`` at the
steered layers (:func:`personalens.steering.hooks.steer`, ``mode="add"``); ``"caft"`` ablates
the component along ``v̂`` there (``mode="ablate"``; concept-ablation finetuning).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor

from personalens.errors import PersonaLensError
from personalens.steering.hooks import steer
from personalens.studies.finetuning.adapters import Adapters

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from personalens.vectors.vector import PersonaVector

__all__ = ["MODES", "training_hooks"]

MODES = ("plain", "preventative", "caft")


@contextlib.contextmanager
def training_hooks(
    model: HookedTransformer,
    adapters: Adapters,
    *,
    mode: str = "plain",
    vector: PersonaVector | Tensor | None = None,
    layers: Sequence[int] | None = None,
    coeff: float | None = None,
    coeff_scale: str = "raw",
) -> Iterator[None]:
    """The hooks of a training forward pass, for the duration of a ``with`` block.

    The adapters' hooks, plus for ``mode="preventative"`` ``steer(mode="add", coeff=coeff)`` and
    for ``mode="caft"`` ``steer(mode="ablate")`` (``coeff``, default 1, is the fraction of the
    projection removed) at ``layers``, at every non-padding position (a teacher-forced forward
    has no separate reply positions to single out). Everything is removed on exit, also
    after an exception; hooks added by the caller are untouched.
    """
    if mode not in MODES:
        raise PersonaLensError(f"unknown finetuning mode {mode!r}: use one of {MODES}")
    with contextlib.ExitStack() as stack:
        # steering first: a coeff_scale="resid" calibration must see the base model, not the
        # adapters (the hook points differ, so the order does not matter to the forward pass)
        if mode != "plain":
            adds = mode == "preventative"
            scale: dict[str, Any] = {"coeff_scale": coeff_scale} if adds else {}
            stack.enter_context(
                steer(
                    model,
                    vector,
                    coeff,
                    layers=list(layers) if layers is not None else None,
                    positions="all",
                    mode="add" if adds else "ablate",
                    **scale,
                )
            )
        stack.enter_context(model.hooks(fwd_hooks=adapters.hooks()))
        yield
