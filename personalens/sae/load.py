"""Loading SAEs of a persona vector's layers: shipped with personalens, from a local folder, or
a sae-lens pretrained release. :func:`load_sae` returns a checked
:class:`~personalens.sae.layer_sae.LayerSAE`.

This is the only personalens module that imports `sae_lens <https://github.com/decoderesearch/SAELens>`_,
and it does so inside :func:`_sae_class`, so ``import personalens.sae.load`` stays cheap; the rest
of :mod:`personalens.sae` works on the :class:`LayerSAE` handle:

::

    sae = load_sae("embedded", layer=20, model=model)          # shipped with personalens
    sae = load_sae("path/to/sae_dir", model=model)            # any SAE.save_model folder
    dec = decompose(vector, sae, k=20, activations="runs/evil")
    dec.to_frame()                                             # layer, rank, feature, cosine, ...
    ctx = feature_contexts(model, sae, None, dec.features(), "runs/evil")   # top tokens
    test = feature_steering_test(model, sae, dec.features(n=5), coeffs=[0, 0.25, 0.5], trait="evil")

**Shipped SAEs.** ``load_sae("embedded", layer=L)`` loads
``personalens/data/sae/<model-name>/blocks.L.hook_resid_post/`` (``cfg.json`` +
``sae_weights.safetensors``, as ``SAE.save_model`` writes), trained by the recipe in ``sae/``
of the repository; ``shipped_sae_layers()`` lists the layers that have one.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from personalens.conventions import check_layer
from personalens.errors import PersonaLensError
from personalens.model.embedded import EMBEDDED_MODEL_NAME
from personalens.model.load import hub_offline, is_network_error
from personalens.sae.layer_sae import (
    LOCAL_FIX,
    RESID_POST,
    LayerSAE,
    _model_dims,
    as_layer_sae,
    check_sae_width,
)

SAE_DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "sae"
SAE_CFG_FILE = "cfg.json"
SAE_WEIGHTS_FILE = "sae_weights.safetensors"


# ----------------------------------------------------------------------------- loading


def _safe_name(name: str) -> str:
    """A model name as a folder name (anything but letters, digits, ``.``, ``_``, ``-`` -> ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def shipped_sae_dir(model_name: str | None = None) -> Path:
    """``personalens/data/sae/<model-name>``: where SAEs shipped for a model live (may not exist)."""
    return SAE_DATA_DIR / _safe_name(model_name or EMBEDDED_MODEL_NAME)


def _layer_dirs(folder: Path) -> dict[int, Path]:
    """``{layer: dir}`` of the ``blocks.L.hook_resid_post`` SAE folders inside ``folder``."""
    out = {}
    if folder.is_dir():
        for d in folder.iterdir():
            m = RESID_POST.match(d.name)
            if m and d.is_dir() and (d / SAE_CFG_FILE).is_file():
                out[int(m.group(1))] = d
    return dict(sorted(out.items()))


def shipped_sae_layers(model_name: str | None = None) -> list[int]:
    """Layers that have an SAE shipped with personalens for ``model_name`` (default: embedded)."""
    return list(_layer_dirs(shipped_sae_dir(model_name)))


def load_sae(
    source: str | os.PathLike[str] | tuple[str, str] | None = None,
    *,
    layer: int | None = None,
    model: Any = None,
    device: str | None = None,
    dtype: str | None = None,
    release: str | None = None,
    sae_id: str | None = None,
) -> LayerSAE:
    """Load an SAE of personalens layer ``layer`` and check it against ``model``.

    Args:
        source: one of

            * a local directory written by ``SAE.save_model`` (``cfg.json`` +
              ``sae_weights.safetensors``), loaded with ``SAE.load_from_disk``; or a folder of
              such directories named ``blocks.L.hook_resid_post`` (then ``layer`` picks one);
            * ``"embedded"``: the SAE shipped with personalens for ``layer`` of the model
              (``model.cfg.model_name``; without a model, the embedded SmolLM2-135M-Instruct);
            * a sae-lens pretrained ``(release, sae_id)`` pair, or pass ``release=`` and
              ``sae_id=`` (downloads from the Hugging Face hub: needs the network or a cached
              copy; a clear error otherwise).
        layer: the personalens layer; checked against the hook the SAE was trained on
            (default: that hook's layer).
        model: a ``HookedTransformer`` (or its config, or a PersonaVector) to check ``d_in``
            and the layer against.
        device: where to put the SAE (default: the model's device, else ``"cpu"``).
        dtype: the SAE's dtype (default: the one it was saved with).

    Returns a :class:`LayerSAE` (``.sae`` is the sae-lens module, ``.layer`` the layer).
    """
    if device is None:
        device = str(getattr(getattr(model, "cfg", None), "device", None) or "cpu")
    if isinstance(source, tuple):
        if len(source) != 2 or release is not None or sae_id is not None:
            raise PersonaLensError(
                "give a sae-lens pretrained SAE as load_sae((release, sae_id)) or "
                "load_sae(release=..., sae_id=...), not both"
            )
        release, sae_id = source
        source = None
    if release is not None or sae_id is not None:
        if source is not None:
            raise PersonaLensError("give either a source or release=/sae_id=, not both")
        if not release or not sae_id:
            raise PersonaLensError("a sae-lens pretrained SAE needs both release= and sae_id=")
        sae = _from_release(str(release), str(sae_id), device, dtype)
        return as_layer_sae(sae, layer, model=model, source=f"sae-lens {release}/{sae_id}")
    if source is None:
        raise PersonaLensError(
            "load_sae needs a source: a local SAE directory, 'embedded', or (release, sae_id)"
        )
    if str(source) == "embedded":
        return _load_embedded(layer, model, device, dtype)
    path = Path(source)
    if not path.exists():
        raise PersonaLensError(f"No SAE at {path}: no such file or directory. " + LOCAL_FIX)
    if not path.is_dir():
        raise PersonaLensError(
            f"{path} is a file; an SAE is a directory with {SAE_CFG_FILE} and "
            f"{SAE_WEIGHTS_FILE}. " + LOCAL_FIX
        )
    if not (path / SAE_CFG_FILE).is_file():
        layers = _layer_dirs(path)
        if not layers:
            raise PersonaLensError(
                f"{path} holds no SAE: no {SAE_CFG_FILE}, and no blocks.L.hook_resid_post "
                "sub-folders with one. " + LOCAL_FIX
            )
        if layer is None or _resolve_layer(layer, model) not in layers:
            raise PersonaLensError(
                f"{path} holds SAEs for layers {list(layers)}; "
                + ("pass layer=L to pick one." if layer is None else f"none for layer {layer}.")
            )
        path = layers[_resolve_layer(layer, model)]
    sae = _from_disk(path, device, dtype, model)
    return as_layer_sae(sae, layer, model=model, source=str(path))


def _resolve_layer(layer: int, model: Any) -> int:
    if model is not None and layer < 0:
        return check_layer(layer, _model_dims(model)[0])
    return layer


def _load_embedded(layer: int | None, model: Any, device: str, dtype: str | None) -> LayerSAE:
    name = EMBEDDED_MODEL_NAME
    if model is not None:
        name = _model_dims(model)[2] or EMBEDDED_MODEL_NAME
    folder = shipped_sae_dir(name)
    layers = _layer_dirs(folder)
    have = (
        f"SAEs shipped for {name}: layers {list(layers)}"
        if layers
        else f"no SAE is shipped for {name} (looked in {folder})"
    )
    if layer is None:
        raise PersonaLensError(
            f"load_sae('embedded') needs layer=L: {have}. Train one with the recipe in the "
            "repository's sae/ folder, or pass a local SAE directory."
        )
    resolved = _resolve_layer(layer, model)
    if resolved not in layers:
        raise PersonaLensError(
            f"no SAE shipped for layer {layer} of {name}: {have}. Fix: "
            + ("use one of those layers, " if layers else "")
            + "train one for this layer with the recipe in the repository's sae/ folder, or "
            "pass a local SAE directory (a folder with cfg.json and sae_weights.safetensors)."
        )
    return as_layer_sae(
        _from_disk(layers[resolved], device, dtype, model),
        resolved,
        model=model,
        source=f"embedded:{layers[resolved]}",
    )


def _sae_class() -> Any:
    """``sae_lens.SAE``, imported on first use (quietly: sae-lens imports deprecated TL names)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from sae_lens import SAE
    return SAE


def _check_cfg(path: Path, model: Any) -> None:
    """Read ``cfg.json`` and refuse an SAE whose ``d_in`` is not the model's ``d_model``, before
    any weight is loaded."""
    cfg_file = path / SAE_CFG_FILE
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise PersonaLensError(
            f"Could not read the SAE config {cfg_file} ({type(exc).__name__}: {exc}). Save the "
            "SAE again (sae.save_model(dir))."
        ) from None
    if not isinstance(cfg, dict):
        raise PersonaLensError(
            f"{cfg_file} holds {type(cfg).__name__}, not the JSON object SAE.save_model writes. "
            "Save the SAE again (sae.save_model(dir))."
        )
    d_in = cfg.get("d_in")
    if isinstance(d_in, int) and not isinstance(d_in, bool):
        meta = cfg.get("metadata")
        recorded = meta.get("model_name") if isinstance(meta, dict) else None
        check_sae_width(str(path), d_in, model, recorded if isinstance(recorded, str) else None)


def _from_disk(path: Path, device: str, dtype: str | None, model: Any = None) -> Any:
    if not (path / SAE_WEIGHTS_FILE).is_file():
        raise PersonaLensError(
            f"{path} has {SAE_CFG_FILE} but no {SAE_WEIGHTS_FILE}: the save is incomplete. "
            "Save the SAE again (sae.save_model(dir))."
        )
    _check_cfg(path, model)
    SAE = _sae_class()
    try:
        return SAE.load_from_disk(path, device=device, dtype=dtype)
    except SafetensorError as exc:
        raise PersonaLensError(
            f"The SAE weights file {path / SAE_WEIGHTS_FILE} is damaged or cut short "
            f"({exc}): it was not completely written or copied. Save the SAE again "
            "(sae.save_model(dir)) or copy the file again."
        ) from None
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        # RuntimeError: weights of another shape than cfg.json says (torch's load_state_dict)
        raise PersonaLensError(
            f"Could not load the SAE in {path} with sae-lens SAE.load_from_disk "
            f"({type(exc).__name__}: {exc}). Check that it was written by SAE.save_model "
            f"and that {SAE_CFG_FILE} belongs to {SAE_WEIGHTS_FILE}."
        ) from exc


def _from_release(release: str, sae_id: str, device: str, dtype: str | None) -> Any:
    SAE = _sae_class()
    try:
        return SAE.from_pretrained(release, sae_id, device=device, dtype=dtype or "float32")
    except Exception as exc:
        if is_network_error(exc) or hub_offline():
            why = (
                "Hugging Face offline mode is on (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE) and it is "
                "not in the local cache"
                if hub_offline()
                else f"the Hugging Face hub is unreachable ({type(exc).__name__})"
            )
            raise PersonaLensError(
                f"Cannot load the sae-lens SAE {release!r} / {sae_id!r}: {why}. Fix: download "
                "it once with network access, or pass a local directory holding cfg.json and "
                "sae_weights.safetensors (what SAE.save_model writes), e.g. "
                "load_sae('path/to/sae'), or load_sae('embedded', layer=L) for an SAE shipped "
                "with personalens."
            ) from exc
        if isinstance(exc, ValueError):
            raise PersonaLensError(f"sae-lens cannot load {release!r} / {sae_id!r}: {exc}") from exc
        raise
