"""The SAE of one personalens layer: :class:`LayerSAE`, and the checks that an SAE belongs there.

An SAE here is always an SAE of personalens layer ``L`` = ``blocks.L.hook_resid_post``, the
space the persona vector lives in. :func:`as_layer_sae` reads the hook name the SAE records and
refuses any other hook point (attention outputs, MLP outputs, ``hook_z``, transcoders): a
decoder direction of another hook point lives in another space, and its cosine with a
resid_post persona vector means nothing. ``blocks.{L+1}.hook_resid_pre`` is accepted as layer
``L``, because in a TransformerLens model it is the very same tensor.

The SAE objects themselves come from sae-lens (:mod:`personalens.sae.load` loads them); this
module only reads their attributes and never imports sae_lens.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from personalens.conventions import HOOK_TEMPLATE, check_layer, hook_name
from personalens.errors import PersonaLensError
from personalens.vectors.validate import model_shape
from personalens.vectors.vector import PersonaVector

RESID_POST = re.compile(r"^blocks\.(\d+)\.hook_resid_post$")
_RESID_PRE = re.compile(r"^blocks\.(\d+)\.hook_resid_pre$")
LOCAL_FIX = (
    "Fix: pass a local directory holding cfg.json and sae_weights.safetensors (what "
    "SAE.save_model writes), e.g. load_sae('path/to/sae'), or load_sae('embedded', layer=L) "
    "for an SAE shipped with personalens."
)


@dataclass(frozen=True, eq=False)
class LayerSAE:
    """A sae-lens SAE of personalens layer ``layer`` (``blocks.{layer}.hook_resid_post``).

    ``sae`` is the sae-lens module itself (use it directly for anything not wrapped here),
    ``hook`` the hook name it records, ``source`` where it was loaded from.
    """

    sae: Any
    layer: int
    source: str
    hook: str

    @property
    def d_in(self) -> int:
        return int(self.sae.cfg.d_in)

    @property
    def d_sae(self) -> int:
        return int(self.sae.cfg.d_sae)

    @property
    def architecture(self) -> str:
        return str(self.sae.cfg.architecture())

    @property
    def model_name(self) -> str | None:
        name = _metadata(self.sae, "model_name")
        return name if isinstance(name, str) else None

    @property
    def device(self) -> torch.device:
        return self.sae.W_dec.device

    def decoder(self) -> Float[Tensor, "d_sae d_in"]:
        """The decoder rows ``W_dec`` (one per feature) as float32 on the CPU."""
        return self.sae.W_dec.detach().float().cpu()

    def decoder_directions(self) -> Float[Tensor, "d_sae d_in"]:
        """Unit-norm decoder rows (zero rows stay zero), float32 on the CPU."""
        rows = self.decoder()
        norms = rows.norm(dim=-1, keepdim=True)
        return torch.where(norms > 0, rows / norms.clamp(min=1e-12), 0.0)

    @torch.inference_mode()
    def encode(self, x: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_sae"]:
        """Feature activations of residuals ``x`` (float32, on the SAE's device)."""
        if x.shape[-1] != self.d_in:
            raise PersonaLensError(
                f"cannot encode inputs of width {x.shape[-1]} with an SAE of d_in={self.d_in}"
            )
        return self.sae.encode(x.to(self.device)).float()

    def __repr__(self) -> str:
        return (
            f"LayerSAE(layer={self.layer}, hook={self.hook!r}, d_in={self.d_in}, "
            f"d_sae={self.d_sae}, architecture={self.architecture!r}, source={self.source!r})"
        )


def _metadata(sae: Any, key: str) -> Any:
    meta = getattr(sae.cfg, "metadata", None)
    value = None
    if meta is not None:
        value = meta.get(key) if hasattr(meta, "get") else getattr(meta, key, None)
    return value if value is not None else getattr(sae.cfg, key, None)


def _layer_of_hook(hook: str) -> int | None:
    m = RESID_POST.match(hook)
    if m:
        return int(m.group(1))
    m = _RESID_PRE.match(hook)
    if m and int(m.group(1)) >= 1:
        return int(m.group(1)) - 1
    return None


def as_layer_sae(
    sae: Any,
    layer: int | None = None,
    *,
    model: Any = None,
    source: str = "an in-memory SAE",
) -> LayerSAE:
    """Wrap a sae-lens SAE (or check a :class:`LayerSAE`) as an SAE of personalens ``layer``.

    The SAE's recorded hook name must be ``blocks.L.hook_resid_post`` (or the identical
    ``blocks.{L+1}.hook_resid_pre``); ``layer``, when given, must be that ``L``. With ``model``
    (a ``HookedTransformer``, its config, or a :class:`~personalens.PersonaVector`) the SAE's
    ``d_in`` must be the model's ``d_model`` and ``L`` one of its layers.
    """
    if isinstance(sae, LayerSAE):
        if layer is not None:
            _check_requested_layer(sae.source, sae.hook, sae.layer, layer, model)
        _check_against_model(sae, model)
        return sae
    if not (hasattr(sae, "W_dec") and hasattr(sae, "cfg") and hasattr(sae, "encode")):
        raise PersonaLensError(
            f"expected a sae-lens SAE or a personalens LayerSAE, got {type(sae).__name__}. "
            + LOCAL_FIX
        )
    kind = type(sae).__name__
    d_out = getattr(sae.cfg, "d_out", None)
    if "Transcoder" in kind or (d_out is not None and d_out != sae.cfg.d_in):
        raise PersonaLensError(
            f"{source} is a {kind}: its decoder writes to a different hook point than it reads, "
            "so its decoder directions are not directions of the residual stream the persona "
            "vector lives in. Use a residual-stream SAE trained on blocks.L.hook_resid_post."
        )
    hook = _metadata(sae, "hook_name")
    if not isinstance(hook, str) or not hook:
        raise PersonaLensError(
            f"{source} records no hook name (cfg.metadata.hook_name), so personalens cannot "
            "tell which residual stream it was trained on. If you know it was trained on "
            "blocks.L.hook_resid_post, set sae.cfg.metadata.hook_name = "
            "'blocks.L.hook_resid_post' and try again."
        )
    found = _layer_of_hook(hook)
    if found is None:
        if hook == "blocks.0.hook_resid_pre":
            what = "the embedding output, before block 0, which has no personalens layer"
        else:
            what = "not the residual stream after a block"
        raise PersonaLensError(
            f"{source} is an SAE of hook point {hook!r} ({what}). personalens layer L is "
            f"{HOOK_TEMPLATE}, where persona vectors live, and decomposing a resid_post persona "
            "vector against decoder directions of a different hook point is not meaningful. "
            "Fix: use an SAE trained on blocks.L.hook_resid_post (or blocks.{L+1}.hook_resid_pre)."
        )
    if layer is not None:
        _check_requested_layer(source, hook, found, layer, model)
    wrapped = LayerSAE(sae=sae.eval(), layer=found, source=source, hook=hook)
    _check_against_model(wrapped, model)
    return wrapped


def _model_dims(model: Any) -> tuple[int, int, str | None]:
    """``(n_layers, d_model, name)`` of a model, its config, or a PersonaVector."""
    if isinstance(model, PersonaVector):
        return model.n_layers, model.d_model, model.model
    return model_shape(model)


def _check_requested_layer(source: str, hook: str, found: int, layer: int, model: Any) -> None:
    want = layer
    if model is not None and isinstance(layer, int) and layer < 0:
        want = check_layer(layer, _model_dims(model)[0])
    if want != found:
        raise PersonaLensError(
            f"{source} was trained on {hook!r}, i.e. personalens layer {found}, but layer "
            f"{layer} was asked for: its decoder directions live in layer {found}'s residual "
            f"stream. Fix: pass layer={found}, or load an SAE trained on {hook_name(want)}."
        )


def _short_name(name: str) -> str:
    """``"HuggingFaceTB/SmolLM2-135M-Instruct"`` and ``"SmolLM2-135M-Instruct"`` compare equal."""
    return name.rstrip("/").rsplit("/", 1)[-1].lower()


def check_sae_width(source: str, d_in: int, model: Any, recorded: str | None = None) -> None:
    """Refuse an SAE of input width ``d_in`` for ``model`` (a ``HookedTransformer``, its config
    or a PersonaVector) of another ``d_model``: it was trained on another model's residual
    stream. ``recorded`` is the model name the SAE records, for the message."""
    if model is None:
        return
    _, d_model, name = _model_dims(model)
    what = f"model {name!r}" if name else "the model"
    if d_in != d_model:
        raise PersonaLensError(
            f"{source} has d_in={d_in} but {what} has d_model={d_model}: the SAE was "
            f"trained on another model's residual stream. Fix: use an SAE trained on {what}"
            + (f" (this one records model {recorded!r})" if recorded else "")
            + "."
        )


def _check_against_model(sae: LayerSAE, model: Any) -> None:
    if model is None:
        return
    check_sae_width(sae.source, sae.d_in, model, sae.model_name)
    n_layers, _, name = _model_dims(model)
    what = f"model {name!r}" if name else "the model"
    if sae.layer >= n_layers:
        raise PersonaLensError(
            f"{sae.source} is an SAE of layer {sae.layer} ({sae.hook}) but {what} has only "
            f"{n_layers} layers (0..{n_layers - 1}): it belongs to another model."
        )
    if sae.model_name and name and _short_name(sae.model_name) != _short_name(name):
        warnings.warn(
            f"{sae.source} records model {sae.model_name!r} but is used with {name!r} (same "
            "d_model): check that it was trained on this model's residual stream.",
            stacklevel=3,
        )


# ----------------------------------------------------------------------------- SAE collections


def _as_saes(saes: Any, layer: Any, model: Any) -> dict[int, LayerSAE]:
    """``{layer: LayerSAE}`` from one SAE, a list of them, or a ``{layer: sae}`` mapping."""
    if isinstance(saes, Mapping):
        out = {}
        for key, s in saes.items():
            wrapped = as_layer_sae(s, int(key), model=model)
            out[wrapped.layer] = wrapped
    elif isinstance(saes, Sequence) and not isinstance(saes, str):
        out = {}
        for s in saes:
            wrapped = as_layer_sae(s, model=model)
            if wrapped.layer in out:
                raise PersonaLensError(f"two SAEs for layer {wrapped.layer}: give one per layer")
            out[wrapped.layer] = wrapped
    else:
        single = as_layer_sae(saes, layer if isinstance(layer, int) else None, model=model)
        out = {single.layer: single}
    if not out:
        raise PersonaLensError("no SAE given: pass an SAE, a list of SAEs or {layer: sae}")
    if layer is not None:
        wanted = [layer] if isinstance(layer, int) else list(layer)
        missing = [L for L in wanted if L not in out]
        if missing:
            raise PersonaLensError(
                f"no SAE for layer(s) {missing}: the SAEs given are for layers {sorted(out)}"
            )
        out = {L: out[L] for L in wanted}
    return dict(sorted(out.items()))


def _one_sae(sae: Any, layer: int | None, model: Any) -> LayerSAE:
    if isinstance(sae, Mapping):
        if layer is None:
            if len(sae) != 1:
                raise PersonaLensError(
                    f"several SAEs given (layers {sorted(sae)}): pass layer=L to pick one"
                )
            layer = int(next(iter(sae)))
        if layer not in sae:
            raise PersonaLensError(f"no SAE for layer {layer}: SAEs are for {sorted(sae)}")
        sae = sae[layer]
    return as_layer_sae(sae, layer, model=model)
