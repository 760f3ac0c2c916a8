"""Loading a finetuned model back from its run directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from personalens.errors import PersonaLensError
from personalens.model.load import load_model
from personalens.studies.finetuning.adapters import Adapters, AdapterSpec, _merged_copy
from personalens.studies.finetuning.checkpoints import (
    FORMAT,
    _latest_checkpoint,
    _load_tensors,
    _read_final,
)

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

__all__ = ["load_finetuned"]


def load_finetuned(
    base: HookedTransformer | str | os.PathLike[str] | None,
    run_dir: str | os.PathLike[str],
    *,
    checkpoint: str | None = None,
) -> HookedTransformer:
    """The finetuned model of ``run_dir``: the base model with the trained adapters merged in.

    ``base`` is the loaded base model (it is copied, not changed) or anything
    :func:`personalens.load_model` accepts (``None``: the embedded model). The base must be the
    model the run was trained from (name, layers and width are checked). A run that has not
    finished raises; ``checkpoint="latest"`` merges its last checkpoint instead.
    """
    run = Path(run_dir)
    config_path = run / "config.json"
    if not config_path.is_file():
        raise PersonaLensError(
            f"{run} is not a finetuning run directory (no config.json); give the out= directory "
            "of personalens.studies.finetuning.train"
        )
    config = json.loads(config_path.read_text())
    if config.get("format") != FORMAT:
        raise PersonaLensError(f"{config_path} is not a personalens finetuning config")
    spec = AdapterSpec.from_dict(config["adapters"])
    done = _read_final(run)
    if done is not None:
        tensors = done[1]
    else:
        latest = _latest_checkpoint(run)
        if checkpoint != "latest" or latest is None:
            where = f" (last checkpoint: step {latest[1]['step']})" if latest else ""
            raise PersonaLensError(
                f"{run} holds no finished finetune{where}: rerun personalens.studies.finetuning.train with the "
                "same arguments to finish it, or pass checkpoint='latest' to load the last "
                "checkpoint"
            )
        ckpt, state = latest
        tensors = _load_tensors(ckpt / "adapters.safetensors", state["adapters_sha256"])
    owned = not hasattr(base, "cfg")
    if owned:
        base = load_model(base)
    want = config["model"]
    got = {"name": base.cfg.model_name, "n_layers": base.cfg.n_layers, "d_model": base.cfg.d_model}
    if got != want:
        raise PersonaLensError(
            f"{run} was finetuned from {want} but the base model is {got}: load the model the "
            "run was trained from"
        )
    adapters = Adapters(spec, {k: v.to(base.cfg.device) for k, v in tensors.items()})
    if owned:
        adapters.merge_into(base)
        return base
    return _merged_copy(base, adapters)
