"""Sparse autoencoders for persona vectors: loading and checking SAEs (this module), decomposing a
vector into SAE features (:mod:`personalens.sae.decompose`), top-activating contexts
(:mod:`personalens.sae.contexts`) and causal feature steering (:mod:`personalens.sae.causal`).
All are exported from ``personalens``.

This is the only personalens module that imports `sae_lens <https://github.com/decoderesearch/SAELens>`_,
and it does so inside functions, so ``import personalens.sae.load`` stays cheap; the other three work
on the :class:`LayerSAE` handle it returns.

::

    sae = load_sae("embedded", layer=20, model=model)          # shipped with personalens
    sae = load_sae("path/to/sae_dir", model=model)            # any SAE.save_model folder
    dec = decompose(vector, sae, k=20, activations="runs/evil")
    dec.to_frame()                                             # layer, rank, feature, cosine, ...
    ctx = feature_contexts(model, sae, None, dec.features(), "runs/evil")   # top tokens
    test = feature_steering_test(model, sae, dec.features(n=5), coeffs=[0, 0.25, 0.5], trait="evil")

**Layers.** An SAE here is always an SAE of personalens layer ``L`` = ``blocks.L.hook_resid_post``,
the space the persona vector lives in. :func:`load_sae` reads the hook name the SAE records and
refuses any other hook point (attention outputs, MLP outputs, ``hook_z``, transcoders): a
decoder direction of another hook point lives in another space, and its cosine with a
resid_post persona vector means nothing. ``blocks.{L+1}.hook_resid_pre`` is accepted as layer
``L``, because in a TransformerLens model it is the very same tensor.

**Cosines.** For layer ``L``, :func:`decompose` takes the persona vector's direction ``v_L``
and the SAE's decoder rows ``W_dec[f]`` normalised to unit length and ranks features by the
signed cosine ``cos(v_L, W_dec[f])``: the ``k`` most aligned (largest) and the ``k`` most
anti-aligned (most negative). ``projection = cos * |v_L|`` is the component of the vector along
the feature in residual units.

**Attributions** (activation space, optional; from the extraction run's activations). Two
numbers per feature, both differences "pos minus neg" of SAE feature activations:

* ``attribution = encode(mean_pos) - encode(mean_neg)``: the activation difference when the
  mean pos and mean neg residuals at the layer are encoded through the SAE. For the run the
  vector came from, ``mean_pos - mean_neg`` *is* the persona vector, so this is the issue's
  "projection of the pos-neg mean activation difference encoded through the SAE".
* ``attribution_samples = mean_i encode(pos_i) - mean_j encode(neg_j)``: the mean over samples
  of each sample's encoding. The SAE is nonlinear (a threshold per feature), so the two differ:
  a feature that fires strongly on a few pos samples survives in the per-sample mean but can
  fall under the threshold once the samples are averaged first. We report both;
  ``attribution_samples`` is the more faithful "how much more does this feature fire on pos
  samples", ``attribution`` the one that matches the mean-difference vector. Only available
  when per-sample activations are given (a run directory or :class:`ActivationSet` s).

Both use the run's stored per-sample summaries (by default the response average, the
vector's variant), i.e. each sample's residual averaged over its response tokens. An SAE is
trained on single-token residuals, so these encodings are of averaged inputs; to see what a
feature does on single tokens use :func:`feature_contexts`.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from personalens.conventions import HOOK_TEMPLATE, check_layer, hook_name
from personalens.errors import PersonaLensError

if TYPE_CHECKING:
    pass

SAE_DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "sae"
SAE_CFG_FILE = "cfg.json"
SAE_WEIGHTS_FILE = "sae_weights.safetensors"

_RESID_POST = re.compile(r"^blocks\.(\d+)\.hook_resid_post$")
_RESID_PRE = re.compile(r"^blocks\.(\d+)\.hook_resid_pre$")
_LOCAL_FIX = (
    "Fix: pass a local directory holding cfg.json and sae_weights.safetensors (what "
    "SAE.save_model writes), e.g. load_sae('path/to/sae'), or load_sae('embedded', layer=L) "
    "for an SAE shipped with personalens."
)


# ----------------------------------------------------------------------------- the SAE handle


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
    m = _RESID_POST.match(hook)
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
            + _LOCAL_FIX
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
    from personalens.vectors.vector import PersonaVector, model_shape

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


def _check_against_model(sae: LayerSAE, model: Any) -> None:
    if model is None:
        return
    n_layers, d_model, name = _model_dims(model)
    what = f"model {name!r}" if name else "the model"
    if sae.d_in != d_model:
        raise PersonaLensError(
            f"{sae.source} has d_in={sae.d_in} but {what} has d_model={d_model}: the SAE was "
            f"trained on another model's residual stream. Fix: use an SAE trained on {what}"
            + (f" (this one records model {sae.model_name!r})" if sae.model_name else "")
            + "."
        )
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


# ----------------------------------------------------------------------------- loading


def _safe_name(name: str) -> str:
    """A model name as a folder name (anything but letters, digits, ``.``, ``_``, ``-`` -> ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def shipped_sae_dir(model_name: str | None = None) -> Path:
    """``personalens/data/sae/<model-name>``: where SAEs shipped for a model live (may not exist)."""
    from personalens.model.load import EMBEDDED_MODEL_NAME

    return SAE_DATA_DIR / _safe_name(model_name or EMBEDDED_MODEL_NAME)


def _layer_dirs(folder: Path) -> dict[int, Path]:
    """``{layer: dir}`` of the ``blocks.L.hook_resid_post`` SAE folders inside ``folder``."""
    out = {}
    if folder.is_dir():
        for d in folder.iterdir():
            m = _RESID_POST.match(d.name)
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
        raise PersonaLensError(f"No SAE at {path}: no such file or directory. " + _LOCAL_FIX)
    if not path.is_dir():
        raise PersonaLensError(
            f"{path} is a file; an SAE is a directory with {SAE_CFG_FILE} and "
            f"{SAE_WEIGHTS_FILE}. " + _LOCAL_FIX
        )
    if not (path / SAE_CFG_FILE).is_file():
        layers = _layer_dirs(path)
        if not layers:
            raise PersonaLensError(
                f"{path} holds no SAE: no {SAE_CFG_FILE}, and no blocks.L.hook_resid_post "
                "sub-folders with one. " + _LOCAL_FIX
            )
        if layer is None or _resolve_layer(layer, model) not in layers:
            raise PersonaLensError(
                f"{path} holds SAEs for layers {list(layers)}; "
                + ("pass layer=L to pick one." if layer is None else f"none for layer {layer}.")
            )
        path = layers[_resolve_layer(layer, model)]
    return as_layer_sae(_from_disk(path, device, dtype), layer, model=model, source=str(path))


def _resolve_layer(layer: int, model: Any) -> int:
    if model is not None and layer < 0:
        return check_layer(layer, _model_dims(model)[0])
    return layer


def _load_embedded(layer: int | None, model: Any, device: str, dtype: str | None) -> LayerSAE:
    from personalens.model.load import EMBEDDED_MODEL_NAME

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
        _from_disk(layers[resolved], device, dtype),
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


def _from_disk(path: Path, device: str, dtype: str | None) -> Any:
    SAE = _sae_class()

    if not (path / SAE_WEIGHTS_FILE).is_file():
        raise PersonaLensError(
            f"{path} has {SAE_CFG_FILE} but no {SAE_WEIGHTS_FILE}: the save is incomplete. "
            "Save the SAE again (sae.save_model(dir))."
        )
    try:
        return SAE.load_from_disk(path, device=device, dtype=dtype)
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise PersonaLensError(
            f"Could not load the SAE in {path} with sae-lens SAE.load_from_disk "
            f"({type(exc).__name__}: {exc}). Check that it was written by SAE.save_model."
        ) from exc


def _from_release(release: str, sae_id: str, device: str, dtype: str | None) -> Any:
    from personalens.model.load import hub_offline, is_network_error

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
