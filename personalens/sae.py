"""SAE decomposition of persona vectors: which sparse-autoencoder features make up a trait.

This is the only personalens module that imports `sae_lens <https://github.com/decoderesearch/SAELens>`_,
and it does so inside functions, so ``import personalens.sae`` stays cheap.

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

import html
import json
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from .conventions import HOOK_TEMPLATE, check_layer, hook_name
from .errors import PersonaLensError

if TYPE_CHECKING:
    import pandas as pd
    from transformer_lens import HookedTransformer

    from .generation import GenerationConfig
    from .judge import Judge
    from .traits import Trait
    from .vector import PersonaVector

SAE_DATA_DIR = Path(__file__).resolve().parent / "data" / "sae"
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
    from .vector import PersonaVector, _model_shape

    if isinstance(model, PersonaVector):
        return model.n_layers, model.d_model, model.model
    return _model_shape(model)


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
    from .models import EMBEDDED_MODEL_NAME

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
    from .models import EMBEDDED_MODEL_NAME

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
    from .models import _hub_offline, _is_network_error

    SAE = _sae_class()
    try:
        return SAE.from_pretrained(release, sae_id, device=device, dtype=dtype or "float32")
    except Exception as exc:
        if _is_network_error(exc) or _hub_offline():
            why = (
                "Hugging Face offline mode is on (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE) and it is "
                "not in the local cache"
                if _hub_offline()
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


# ----------------------------------------------------------------------------- decomposition


@dataclass(frozen=True, eq=False)
class Decomposition:
    """The top features of a persona vector at one or more layers (see the module docstring).

    ``rows`` holds one record per (layer, direction, rank); ``cosines[L]`` the cosine of every
    feature (``[d_sae]``), and, when activations were given, ``attributions[L]`` and
    ``sample_attributions[L]`` every feature's attribution.
    """

    trait: str
    model: str
    k: int
    layers: tuple[int, ...]
    rows: tuple[dict[str, Any], ...]
    cosines: dict[int, Tensor] = field(repr=False)
    attributions: dict[int, Tensor] | None = field(default=None, repr=False)
    sample_attributions: dict[int, Tensor] | None = field(default=None, repr=False)
    saes: dict[int, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """One row per feature: layer, direction (aligned/anti), rank, feature, cosine,
        projection (cosine x |v_L|), decoder_norm, and with activations attribution,
        attribution_samples, pos_act and neg_act (encode(mean_pos), encode(mean_neg))."""
        import pandas as pd

        return pd.DataFrame.from_records(list(self.rows))

    def features(
        self, layer: int | None = None, *, direction: str = "both", n: int | None = None
    ) -> list[int]:
        """Feature ids at ``layer`` (default: the only or first layer), best first.

        ``direction``: ``"aligned"``, ``"anti"`` or ``"both"`` (aligned then anti); ``n`` keeps
        the first ``n`` of each direction.
        """
        if direction not in ("aligned", "anti", "both"):
            raise PersonaLensError(
                f"direction must be 'aligned', 'anti' or 'both', got {direction!r}"
            )
        layer = self.layers[0] if layer is None else layer
        if layer not in self.layers:
            raise PersonaLensError(f"layer {layer} is not decomposed (layers {list(self.layers)})")
        out: list[int] = []
        for d in ("aligned", "anti"):
            if direction in (d, "both"):
                rows = [r for r in self.rows if r["layer"] == layer and r["direction"] == d]
                out += [r["feature"] for r in rows[: n if n is not None else len(rows)]]
        return list(dict.fromkeys(out))

    def to_dict(self) -> dict[str, Any]:
        return {
            "trait": self.trait,
            "model": self.model,
            "k": self.k,
            "layers": list(self.layers),
            "saes": {str(L): s for L, s in self.saes.items()},
            "settings": self.settings,
            "rows": [{k: _json_num(v) for k, v in r.items()} for r in self.rows],
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as JSON (atomic)."""
        from ._io import atomic_write_json

        return atomic_write_json(Path(path), self.to_dict())

    def __repr__(self) -> str:
        return (
            f"Decomposition(trait={self.trait!r}, model={self.model!r}, layers={list(self.layers)}, "
            f"k={self.k}, attributions={self.attributions is not None})"
        )


def _json_num(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def decompose(
    vector: PersonaVector | Tensor,
    saes: Any,
    layer: int | Sequence[int] | None = None,
    k: int = 20,
    *,
    k_anti: int | None = None,
    activations: Any = None,
    pos_mean: Tensor | Mapping[int, Tensor] | None = None,
    neg_mean: Tensor | Mapping[int, Tensor] | None = None,
    model: Any = None,
    rank_by: str = "cosine",
) -> Decomposition:
    """Top-k SAE features of a persona vector by signed decoder cosine, per layer.

    Args:
        vector: a :class:`~personalens.PersonaVector` (``[n_layers, d_model]``), a
            ``[n_layers, d_model]`` tensor, or one ``[d_model]`` direction (one SAE only).
        saes: a :class:`LayerSAE` or sae-lens SAE, a list of them, or ``{layer: sae}``.
        layer: with one SAE, its layer (checked); with several, the layers to use.
        k: how many of the most aligned features to keep per layer; ``k_anti`` (default
            ``k``) how many of the most anti-aligned.
        activations: pos/neg activations for the attribution columns: an extraction run
            directory (its kept extraction pairs, i.e. the samples the vector is the mean
            difference of), an :class:`~personalens.extraction.ExtractionResult`, a
            ``(pos, neg)`` pair or ``{"pos": ..., "neg": ...}`` of
            :class:`~personalens.ActivationSet` s.
        pos_mean, neg_mean: instead of ``activations``, the mean pos and neg residuals:
            ``[n_layers, d_model]`` tensors or ``{layer: [d_model]}`` (gives ``attribution``
            but not ``attribution_samples``).
        model: optional ``HookedTransformer`` to check the SAEs and the vector against (also
            needed for an ExtractionResult without a run directory).
        rank_by: ``"cosine"`` (default), ``"attribution"`` or ``"attribution_samples"``:
            which score picks and orders the top features.
    """
    from .vector import PersonaVector

    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise PersonaLensError(f"k must be a positive int, got {k!r}")
    k_anti = k if k_anti is None else k_anti
    if isinstance(k_anti, bool) or not isinstance(k_anti, int) or k_anti < 0:
        raise PersonaLensError(f"k_anti must be a non-negative int, got {k_anti!r}")
    if rank_by not in ("cosine", "attribution", "attribution_samples"):
        raise PersonaLensError(
            f"rank_by must be 'cosine', 'attribution' or 'attribution_samples', got {rank_by!r}"
        )
    if isinstance(vector, PersonaVector):
        if model is not None:
            vector.check_compatible(model)
        ref: Any = model if model is not None else vector
        table = _as_saes(saes, layer, ref)
        directions = {L: vector.directions[L] for L in table}
        trait, model_name, variant = vector.trait, vector.model, vector.variant
    elif isinstance(vector, Tensor):
        if vector.ndim == 1:
            table = _as_saes(saes, layer, model)
            if len(table) != 1:
                raise PersonaLensError(
                    "a single [d_model] direction can be decomposed with one SAE only; pass a "
                    "[n_layers, d_model] tensor or a PersonaVector for several layers"
                )
            directions = {L: vector for L in table}
        elif vector.ndim == 2:
            table = _as_saes(saes, layer, model)
            bad = [L for L in table if L >= vector.shape[0]]
            if bad:
                raise PersonaLensError(
                    f"the vector has {vector.shape[0]} layers but SAEs are for layer(s) {bad}"
                )
            directions = {L: vector[L] for L in table}
        else:
            raise PersonaLensError(
                f"vector must be [d_model] or [n_layers, d_model], got shape {list(vector.shape)}"
            )
        trait, variant = "vector", "response_avg"
        model_name = (_model_dims(model)[2] or "") if model is not None else ""
    else:
        raise PersonaLensError(
            f"vector must be a PersonaVector or a tensor, got {type(vector).__name__}"
        )
    for L, s in table.items():
        d = directions[L]
        if d.shape[-1] != s.d_in:
            raise PersonaLensError(
                f"the vector has d_model={d.shape[-1]} but {s.source} has d_in={s.d_in}: the "
                "SAE was trained on another model's residual stream"
            )
        if not bool(torch.isfinite(d).all()) or float(d.norm()) == 0.0:
            raise PersonaLensError(f"the vector is zero or not finite at layer {L}")

    means, samples, act_info = _attribution_inputs(
        activations, pos_mean, neg_mean, list(table), variant, model
    )
    if rank_by == "attribution" and means is None:
        raise PersonaLensError("rank_by='attribution' needs activations= or pos_mean/neg_mean")
    if rank_by == "attribution_samples" and samples is None:
        raise PersonaLensError(
            "rank_by='attribution_samples' needs per-sample activations (a run directory or "
            "ActivationSets)"
        )

    rows: list[dict[str, Any]] = []
    cosines: dict[int, Tensor] = {}
    attributions: dict[int, Tensor] | None = {} if means is not None else None
    sample_attr: dict[int, Tensor] | None = {} if samples is not None else None
    pos_acts: dict[int, Tensor] = {}
    neg_acts: dict[int, Tensor] = {}
    for L, s in table.items():
        dec = s.decoder()
        dec_norm = dec.norm(dim=-1)
        unit_dec = torch.where(dec_norm[:, None] > 0, dec / dec_norm.clamp(min=1e-12)[:, None], 0.0)
        v = directions[L].detach().float().cpu()
        cos = unit_dec @ (v / v.norm())
        cosines[L] = cos
        if means is not None and attributions is not None:
            p, n = means[L]
            enc = s.encode(torch.stack([p, n]).float()).cpu()
            pos_acts[L], neg_acts[L] = enc[0], enc[1]
            attributions[L] = enc[0] - enc[1]
        if samples is not None and sample_attr is not None:
            ps, ns = samples[L]
            sample_attr[L] = _mean_encoding(s, ps) - _mean_encoding(s, ns)
        score = {
            "cosine": cos,
            "attribution": attributions[L] if attributions is not None else None,
            "attribution_samples": sample_attr[L] if sample_attr is not None else None,
        }[rank_by]
        assert score is not None
        for direction, count in (("aligned", k), ("anti", k_anti)):
            count = min(count, s.d_sae)
            if count == 0:
                continue
            top = torch.topk(score if direction == "aligned" else -score, count)
            for rank, f in enumerate(top.indices.tolist(), start=1):
                row: dict[str, Any] = {
                    "layer": L,
                    "direction": direction,
                    "rank": rank,
                    "feature": int(f),
                    "cosine": float(cos[f]),
                    "projection": float(cos[f] * v.norm()),
                    "decoder_norm": float(dec_norm[f]),
                }
                if attributions is not None:
                    row["attribution"] = float(attributions[L][f])
                if sample_attr is not None:
                    row["attribution_samples"] = float(sample_attr[L][f])
                if attributions is not None:
                    row["pos_act"] = float(pos_acts[L][f])
                    row["neg_act"] = float(neg_acts[L][f])
                rows.append(row)
    settings = {
        "k": k,
        "k_anti": k_anti,
        "rank_by": rank_by,
        "variant": variant,
        "vector_norms": {str(L): float(directions[L].float().norm()) for L in table},
        "d_sae": {str(L): s.d_sae for L, s in table.items()},
        **act_info,
    }
    return Decomposition(
        trait=trait,
        model=model_name,
        k=k,
        layers=tuple(table),
        rows=tuple(rows),
        cosines=cosines,
        attributions=attributions,
        sample_attributions=sample_attr,
        saes={L: s.source for L, s in table.items()},
        settings=settings,
    )


def _mean_encoding(sae: LayerSAE, x: Float[Tensor, "n d_in"], chunk: int = 256) -> Tensor:
    total = torch.zeros(sae.d_sae)
    for i in range(0, x.shape[0], chunk):
        total += sae.encode(x[i : i + chunk].float()).sum(0).cpu()
    return total / max(x.shape[0], 1)


def _attribution_inputs(
    activations: Any,
    pos_mean: Any,
    neg_mean: Any,
    layers: list[int],
    variant: str,
    model: Any,
) -> tuple[dict[int, tuple[Tensor, Tensor]] | None, dict[int, tuple[Tensor, Tensor]] | None, dict]:
    """(means per layer, samples per layer or None, description) for the attributions."""
    from .activations import VARIANTS, ActivationSet

    if activations is None and pos_mean is None and neg_mean is None:
        return None, None, {"activations": None}
    if activations is not None and (pos_mean is not None or neg_mean is not None):
        raise PersonaLensError("give either activations= or pos_mean=/neg_mean=, not both")
    if activations is None:
        if pos_mean is None or neg_mean is None:
            raise PersonaLensError("give both pos_mean= and neg_mean=")
        means = {
            L: (_mean_at(pos_mean, L, "pos_mean"), _mean_at(neg_mean, L, "neg_mean"))
            for L in layers
        }
        return means, None, {"activations": "given pos/neg means"}
    variant = variant if variant in VARIANTS else "response_avg"
    pos, neg, where = _activation_sets(activations, model)
    if not isinstance(pos, ActivationSet) or not isinstance(neg, ActivationSet):
        raise PersonaLensError("pos and neg activations must be ActivationSets")
    samples = {}
    for L in layers:
        for side, acts in (("pos", pos), ("neg", neg)):
            if L not in acts.layers:
                raise PersonaLensError(
                    f"the {side} activations ({where}) have no layer {L} (they hold layers "
                    f"{list(acts.layers)[:3]}...{list(acts.layers)[-1:]})"
                )
        samples[L] = (
            pos.variant(variant)[:, pos.layers.index(L)],
            neg.variant(variant)[:, neg.layers.index(L)],
        )
    means = {L: (p.mean(0), n.mean(0)) for L, (p, n) in samples.items()}
    info = {
        "activations": where,
        "activation_variant": variant,
        "n_pos": len(pos),
        "n_neg": len(neg),
    }
    return means, samples, info


def _mean_at(value: Any, layer: int, name: str) -> Tensor:
    if isinstance(value, Mapping):
        if layer not in value:
            raise PersonaLensError(f"{name} has no entry for layer {layer}")
        t = torch.as_tensor(value[layer])
    else:
        t = torch.as_tensor(value)
        if t.ndim == 2:
            if layer >= t.shape[0]:
                raise PersonaLensError(f"{name} has {t.shape[0]} layers; no layer {layer}")
            t = t[layer]
    if t.ndim != 1:
        raise PersonaLensError(
            f"{name} must be [n_layers, d_model], [d_model] or {{layer: [d_model]}}, got shape "
            f"{list(t.shape)}"
        )
    return t.detach().float().cpu()


def _activation_sets(activations: Any, model: Any) -> tuple[Any, Any, str]:
    """(pos, neg, description) from a run directory, an ExtractionResult, or a pair."""
    from .extraction import ExtractionResult

    if isinstance(activations, str | os.PathLike):
        from .layerwise import _RunData

        run = _RunData.from_dir(Path(activations))
        return (*_run_sides(run), f"kept extraction pairs of {activations}")
    if isinstance(activations, ExtractionResult):
        from .layerwise import _RunData

        run = _RunData.from_result(activations, model, batch_size=16, progress=False)
        return (*_run_sides(run), f"kept extraction pairs of {run.where}")
    if isinstance(activations, Mapping):
        if "pos" not in activations or "neg" not in activations:
            raise PersonaLensError("activations as a mapping needs 'pos' and 'neg' entries")
        return activations["pos"], activations["neg"], "given ActivationSets"
    if isinstance(activations, tuple | list) and len(activations) == 2:
        return activations[0], activations[1], "given ActivationSets"
    raise PersonaLensError(
        "activations must be an extraction run directory, an ExtractionResult, a (pos, neg) "
        f"pair or {{'pos': ..., 'neg': ...}} of ActivationSets; got {type(activations).__name__}"
    )


def _run_sides(run: Any) -> tuple[Any, Any]:
    from .extraction import activation_records, filter_pairs, gather_side

    filt = filter_pairs(run.records, run.scores, run.config)
    keys = filt.keys("extract")
    acts = run.acts_for(activation_records(run.records, filt))
    pos = gather_side(acts, run.records, keys, "pos")
    neg = gather_side(acts, run.records, keys, "neg")
    if pos is None or neg is None:
        raise PersonaLensError(f"{run.where}: no kept extraction pairs with activations")
    return pos, neg


# ----------------------------------------------------------------------------- contexts


@dataclass(frozen=True)
class _Sequence:
    ids: list[int]
    score_from: int  # positions >= this are candidates (earlier ones are context only)
    source: str
    offset: int = 0  # position of ids[0] in the text it was cut from


@dataclass(frozen=True, eq=False)
class FeatureContexts:
    """The top-activating tokens of some features over a corpus, with their context.

    ``examples`` holds one dict per (feature, rank): ``activation``, the ``token``,
    ``left``/``right`` context text, ``source`` (which text, with ``@start`` for a piece of a
    long text, or which run sample) and ``position`` (the token's index in the tokenised text,
    or in the prompt + reply sequence of a run sample),
    plus the window's ``tokens`` and their ``acts`` (this feature's activation on each, NaN
    where not encoded) for highlighting. ``frequency[f]`` is the fraction of scored tokens on
    which feature ``f`` is active (> 0). Only positive activations are listed, so a feature
    that fires on fewer than ``n`` tokens has fewer rows.
    """

    layer: int
    features: tuple[int, ...]
    examples: tuple[dict[str, Any], ...]
    frequency: dict[int, float]
    n_tokens: int
    n_sequences: int
    window: tuple[int, int]
    source: str = ""

    def to_frame(self) -> pd.DataFrame:
        """feature, rank, activation, token, left, right, source, position, frequency."""
        import pandas as pd

        cols = ["feature", "rank", "activation", "token", "left", "right", "source", "position"]
        df = pd.DataFrame.from_records(
            [{c: e[c] for c in cols} for e in self.examples], columns=cols
        )
        df["frequency"] = [self.frequency[f] for f in df["feature"]]
        return df

    def to_html(self, *, max_examples: int | None = None) -> str:
        """Each feature's examples as token strips, coloured by that feature's activation
        (relative to its top activation; hover a token for its value). HTML-escaped."""
        parts = [
            '<div style="font-family: sans-serif">',
            f'<div style="color:#555">{html.escape(_context_heading(self))}</div>',
        ]
        for f in self.features:
            ex = [e for e in self.examples if e["feature"] == f]
            if max_examples is not None:
                ex = ex[:max_examples]
            top = max((e["activation"] for e in ex), default=0.0)
            parts.append(
                f'<div style="margin-top:0.8em"><b>feature {f}</b> '
                f'<span style="color:#777">max {top:.3g}, active on '
                f"{100 * self.frequency.get(f, 0.0):.2f}% of tokens</span></div>"
            )
            if not ex:
                parts.append('<div style="color:#a00">never active on this corpus</div>')
                continue
            parts.append('<table style="border-collapse:collapse; font-size:90%">')
            for e in ex:
                spans = []
                for j, (tok, a) in enumerate(zip(e["tokens"], e["acts"])):
                    alpha = 0.0 if not (a == a and top > 0) else max(0.0, min(1.0, a / top))
                    style = f"background-color: rgba(220,50,47,{alpha:.2f})"
                    if j == e["center"]:
                        style += "; outline: 1px solid #000; font-weight: bold"
                    text = html.escape(tok).replace("\n", "↵")
                    value = "not encoded" if a != a else f"{a:.3g}"
                    title = html.escape(f"{tok!r}: {value}")
                    spans.append(f'<span style="{style}" title="{title}">{text}</span>')
                parts.append(
                    "<tr>"
                    f'<td style="padding:2px 8px; text-align:right; color:#555">{e["activation"]:.3g}</td>'
                    '<td style="padding:2px 8px; font-family:monospace; white-space:pre">'
                    + "".join(spans)
                    + "</td>"
                    f'<td style="padding:2px 8px; color:#999">{html.escape(str(e["source"]))}</td>'
                    "</tr>"
                )
            parts.append("</table>")
        parts.append("</div>")
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        return self.to_html()


def _context_heading(ctx: FeatureContexts) -> str:
    return (
        f"Top-activating tokens at layer {ctx.layer} ({hook_name(ctx.layer)}) over "
        f"{ctx.n_sequences} sequences / {ctx.n_tokens} scored tokens"
        + (f" of {ctx.source}" if ctx.source else "")
        + "; boxed: the token itself, red: the feature's activation."
    )


def _corpus_sequences(
    model: HookedTransformer, corpus: Any, max_length: int
) -> tuple[list[_Sequence], str]:
    from .extraction import ExtractionResult

    tok = model.tokenizer
    if tok is None:
        raise PersonaLensError("the model has no tokenizer; load it with personalens.load_model")
    max_length = min(max_length, int(model.cfg.n_ctx))
    if isinstance(corpus, ExtractionResult):
        return _record_sequences(tok, corpus.records, "ExtractionResult"), "an ExtractionResult"
    if isinstance(corpus, str | os.PathLike):
        path = Path(corpus)
        if not path.exists():
            raise PersonaLensError(
                f"corpus {str(corpus)[:80]!r} is not an existing file or directory; to pass "
                "texts, give a list of strings"
            )
        items: list[Any] = [path]
    elif isinstance(corpus, Sequence):
        items = list(corpus)
    else:
        raise PersonaLensError(
            "corpus must be a list of strings, a text file, an extraction run directory, an "
            f"ExtractionResult, or a list mixing texts and paths; got {type(corpus).__name__}"
        )
    if not items:
        raise PersonaLensError("the corpus is empty: give at least one text")
    seqs: list[_Sequence] = []
    described = []
    n_texts = 0
    for i, item in enumerate(items):
        if isinstance(item, os.PathLike):
            path = Path(item)
            if path.is_dir():
                seqs += _run_sequences(tok, path)
                described.append(f"run {path}")
            elif path.is_file():
                text = path.read_text(encoding="utf-8", errors="replace")
                seqs += _text_sequences(model, text, max_length, str(path.name))
                described.append(str(path))
            else:
                raise PersonaLensError(f"corpus entry {path} does not exist")
        elif isinstance(item, str):
            seqs += _text_sequences(model, item, max_length, f"text {i}")
            n_texts += 1
        else:
            raise PersonaLensError(
                f"corpus entry {i} is a {type(item).__name__}; use strings (texts) or paths"
            )
    if n_texts:
        described.append(f"{n_texts} texts")
    if not seqs:
        raise PersonaLensError("the corpus has no tokens to score")
    too_long = [q.source for q in seqs if len(q.ids) > model.cfg.n_ctx]
    if too_long:
        raise PersonaLensError(
            f"{len(too_long)} run sample(s) (first {too_long[0]!r}) are longer than the model's "
            f"context ({model.cfg.n_ctx} tokens)"
        )
    return seqs, ", ".join(described)


def _text_sequences(model: Any, text: str, max_length: int, source: str) -> list[_Sequence]:
    tok = model.tokenizer
    ids = list(tok.encode(text, add_special_tokens=False))
    if model.cfg.default_prepend_bos and tok.bos_token_id is not None:
        ids = [int(tok.bos_token_id)] + ids
    if len(ids) < 2:
        return []
    # chunks overlap by one token: a chunk's first position is never scored (attention sink),
    # and it is the previous chunk's last scored token, so no token is lost
    out, start, step = [], 0, max(2, max_length) - 1
    while start < len(ids) - 1:
        chunk = ids[start : start + step + 1]
        suffix = f" @{start}" if start or len(ids) > step + 1 else ""
        out.append(_Sequence(chunk, 1, source + suffix, offset=start))
        start += step
    return out


def _run_sequences(tok: Any, run: Path) -> list[_Sequence]:
    from ._io import read_jsonl

    path = run / "responses.jsonl"
    if not path.is_file():
        raise PersonaLensError(
            f"{run} is not an extraction run directory (no responses.jsonl): give the --out "
            "directory of `personalens extract`, a text file, or texts"
        )
    return _record_sequences(tok, read_jsonl(path), str(run))


def _record_sequences(
    tok: Any, records: Sequence[Mapping[str, Any]], where: str
) -> list[_Sequence]:
    from .chat import as_conversation, encode_chat

    seqs = []
    for r in records:
        if not all(k in r for k in ("question", "response_tokens")):
            raise PersonaLensError(f"{where}: records need 'question' and 'response_tokens'")
        if not r["response_tokens"]:
            continue
        p_ids = encode_chat(tok, as_conversation(r["question"], r.get("system")))
        seqs.append(
            _Sequence(
                p_ids + [int(t) for t in r["response_tokens"]], len(p_ids), str(r.get("key", ""))
            )
        )
    return seqs


def feature_contexts(
    model: HookedTransformer,
    sae: Any,
    layer: int | None,
    features: Sequence[int] | Tensor | Decomposition,
    corpus: Any,
    *,
    n: int = 10,
    window: int | tuple[int, int] = (12, 4),
    batch_size: int = 16,
    max_length: int = 256,
    progress: bool = True,
) -> FeatureContexts:
    """The ``n`` tokens of ``corpus`` on which each feature is most active, with context.

    Args:
        sae: a :class:`LayerSAE`, a sae-lens SAE, or ``{layer: sae}`` (then ``layer`` picks).
        layer: the SAE's layer (checked), or None to use it.
        features: feature ids, or a :class:`Decomposition` (its features at this layer).
        corpus: a list of strings (texts), a text file, an extraction run directory (its
            responses: only reply tokens are candidates, the prompt is context), an
            ExtractionResult, or a list mixing texts (``str``) and files/run directories
            (``pathlib.Path``). Texts are cut into ``max_length``-token pieces (at most the
            model's context) that overlap by one token; the first token of every sequence is
            never a candidate (an attention sink with a huge residual norm).
        window: context tokens shown ``(left, right)`` of the token (an int: left only, 4 right).

    One batched forward per ``batch_size`` sequences up to ``layer`` (``stop_at_layer``); the
    residuals are encoded on the fly and only the running top ``n`` per feature are kept, so
    memory does not grow with the corpus.
    """
    s = _one_sae(sae, layer, model)
    layer = s.layer
    if isinstance(features, Decomposition):
        feats = features.features(layer)
    else:
        feats = [int(f) for f in features]
    if not feats:
        raise PersonaLensError("no features given")
    if len(set(feats)) != len(feats):
        raise PersonaLensError(f"features {feats} name a feature twice")
    bad = [f for f in feats if not 0 <= f < s.d_sae]
    if bad:
        raise PersonaLensError(f"feature id(s) {bad} out of range: the SAE has {s.d_sae} features")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise PersonaLensError(f"n must be a positive int, got {n!r}")
    left, right = (window, 4) if isinstance(window, int) else (int(window[0]), int(window[1]))
    if left < 0 or right < 0:
        raise PersonaLensError(f"window sizes must be >= 0, got {(left, right)}")
    seqs, where = _corpus_sequences(model, corpus, max_length)
    top = _top_activations(model, s, feats, seqs, n, left, right, batch_size, progress)
    best_val, best_seq, best_pos, win_ids, win_acts, win_real, n_active, n_scored = top
    tok = model.tokenizer
    examples = []
    for j, f in enumerate(feats):
        rank = 0
        for r in range(best_val.shape[0]):
            a = float(best_val[r, j])
            if not a > 0:
                continue
            rank += 1
            ids = win_ids[r, j].tolist()
            real = win_real[r, j].tolist()
            acts = win_acts[r, j].tolist()
            keep = [i for i in range(len(ids)) if real[i]]
            center = keep.index(left)
            ids_k = [ids[i] for i in keep]
            examples.append(
                {
                    "feature": f,
                    "rank": rank,
                    "activation": a,
                    "token": tok.decode([ids[left]]),
                    "left": tok.decode(ids_k[:center]),
                    "right": tok.decode(ids_k[center + 1 :]),
                    "source": seqs[int(best_seq[r, j])].source,
                    "position": int(best_pos[r, j]),
                    "tokens": [tok.decode([i]) for i in ids_k],
                    "acts": [acts[i] for i in keep],
                    "center": center,
                }
            )
    total = max(n_scored, 1)
    return FeatureContexts(
        layer=layer,
        features=tuple(feats),
        examples=tuple(examples),
        frequency={f: float(n_active[j]) / total for j, f in enumerate(feats)},
        n_tokens=n_scored,
        n_sequences=len(seqs),
        window=(left, right),
        source=where,
    )


@torch.inference_mode()
def _top_activations(
    model: Any,
    sae: LayerSAE,
    feats: list[int],
    seqs: list[_Sequence],
    n: int,
    left: int,
    right: int,
    batch_size: int,
    progress: bool,
) -> tuple:
    from .chat import batch_from_ids, pad_id

    device = model.cfg.device
    F, W = len(feats), left + right + 1
    feat_idx = torch.tensor(feats, device=sae.device)
    best_val = torch.full((0, F), -math.inf)
    best_seq = torch.zeros((0, F), dtype=torch.long)
    best_pos = torch.zeros((0, F), dtype=torch.long)
    win_ids = torch.zeros((0, F, W), dtype=torch.long)
    win_acts = torch.zeros((0, F, W))
    win_real = torch.zeros((0, F, W), dtype=torch.bool)
    n_active = torch.zeros(F, dtype=torch.long)
    n_scored = 0
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i].ids))
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    bar = None
    if progress and len(chunks) > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(seqs), desc="feature contexts", unit="seq")
    hook = hook_name(sae.layer)
    pad = pad_id(model.tokenizer)
    offsets = torch.arange(-left, right + 1)
    try:
        for chunk in chunks:
            prompt = [seqs[i].ids[: seqs[i].score_from] for i in chunk]
            rest = [seqs[i].ids[seqs[i].score_from :] for i in chunk]
            batch = batch_from_ids(prompt, rest, pad, device)
            b, p = batch.tokens.shape
            store: dict[str, Tensor] = {}

            def grab(resid: Tensor, hook: Any, store: dict = store) -> None:
                store["resid"] = resid.detach()

            with model.hooks(fwd_hooks=[(hook, grab)]):
                model(
                    batch.tokens,
                    attention_mask=batch.attention_mask.long(),
                    stop_at_layer=sae.layer + 1,
                )
            real = batch.attention_mask.cpu()
            first = real.long().argmax(dim=1)
            encoded = real.clone()
            encoded[torch.arange(b), first] = False  # the first token: an attention sink
            acts = torch.full((b, p, F), math.nan)
            rows = store["resid"][encoded.to(store["resid"].device)]
            vals = []
            for i in range(0, rows.shape[0], 2048):
                vals.append(sae.encode(rows[i : i + 2048]).index_select(-1, feat_idx).cpu())
            acts[encoded] = torch.cat(vals) if vals else torch.zeros((0, F))
            scored = batch.response_mask.cpu() & encoded
            n_scored += int(scored.sum())
            n_active += (acts[scored] > 0).sum(0)
            cand = torch.where(scored[..., None], acts.nan_to_num(nan=-math.inf), -math.inf)
            m = min(n, b * p)
            vals_top, idx = cand.reshape(b * p, F).topk(m, dim=0)  # [m, F]
            bi, pi = idx // p, idx % p
            wpos = pi[..., None] + offsets  # [m, F, W]
            inside = (wpos >= 0) & (wpos < p)
            wpos_c = wpos.clamp(0, p - 1)
            bi_w = bi[..., None].expand_as(wpos_c)
            fi_w = torch.arange(F)[None, :, None].expand_as(wpos_c)
            tokens = batch.tokens.cpu()
            ids_w = torch.where(inside, tokens[bi_w, wpos_c], pad)
            real_w = inside & real[bi_w, wpos_c]
            acts_w = torch.where(real_w, acts[bi_w, wpos_c, fi_w], math.nan)
            seq_global = torch.tensor(chunk)[bi]
            # merge with the running best and keep the top n per feature
            best_val = torch.cat([best_val, vals_top])
            best_seq = torch.cat([best_seq, seq_global])
            # position in the source text: minus the left padding, plus the piece's offset
            shift = torch.tensor([seqs[i].offset - (p - len(seqs[i].ids)) for i in chunk])
            best_pos = torch.cat([best_pos, pi + shift[bi]])
            win_ids = torch.cat([win_ids, ids_w])
            win_acts = torch.cat([win_acts, acts_w])
            win_real = torch.cat([win_real, real_w])
            keep = min(n, best_val.shape[0])
            best_val, sel = best_val.topk(keep, dim=0)
            best_seq = best_seq.gather(0, sel)
            best_pos = best_pos.gather(0, sel)
            sel_w = sel[..., None].expand(-1, -1, W)
            win_ids = win_ids.gather(0, sel_w)
            win_acts = win_acts.gather(0, sel_w)
            win_real = win_real.gather(0, sel_w)
            if bar:
                bar.update(len(chunk))
    finally:
        if bar:
            bar.close()
    return best_val, best_seq, best_pos, win_ids, win_acts, win_real, n_active, n_scored


# ----------------------------------------------------------------------------- causal test


def feature_vector(
    sae: Any, feature: int, model: Any, *, layer: int | None = None
) -> PersonaVector:
    """A PersonaVector that is feature ``feature``'s decoder row at the SAE's layer, 0 elsewhere.

    Steer with it like any persona vector, e.g.
    ``steer(model, feature_vector(sae, f, model), coeff=0.5, layers=[sae.layer], coeff_scale="resid")``.
    """
    from .vector import PersonaVector

    s = _one_sae(sae, layer, model)
    if isinstance(feature, bool) or not isinstance(feature, int) or not 0 <= feature < s.d_sae:
        raise PersonaLensError(f"feature must be an int in 0..{s.d_sae - 1}, got {feature!r}")
    n_layers, d_model, name = _model_dims(model)
    directions = torch.zeros(n_layers, d_model)
    directions[s.layer] = s.sae.W_dec[feature].detach().float().cpu()
    return PersonaVector(
        directions=directions,
        model=name or s.model_name or "",
        trait=f"feature {feature} (layer {s.layer})",
        method="sae_decoder",
        variant="sae_decoder",
        metadata={"sae": s.source, "feature": feature, "layer": s.layer, "hook": s.hook},
    )


@dataclass(frozen=True, eq=False)
class FeatureSteeringResult:
    """Judged replies under steering with each feature's decoder direction (and the baseline).

    ``records`` holds every reply (``label``, ``feature``, ``coeff``, ``prompt_index``,
    ``sample_index``, ``question``, ``response``, ``trait``, ``coherence``); coefficient 0 is
    the unsteered model, generated once and listed under every feature.
    """

    trait: str
    layer: int
    features: tuple[int, ...]
    coeffs: tuple[float, ...]
    coeff_scale: str
    records: tuple[dict[str, Any], ...] = field(repr=False)
    settings: dict[str, Any] = field(default_factory=dict)

    def replies(self) -> pd.DataFrame:
        """One row per reply."""
        import pandas as pd

        return pd.DataFrame.from_records(list(self.records))

    def to_frame(
        self, decomposition: Decomposition | None = None, *, coherence_threshold: float | int = 50.0
    ) -> pd.DataFrame:
        """Per (feature, coeff): mean trait (± s.e.m.), coherence, share coherent, and
        ``trait_change``/``coherence_change`` against coefficient 0. With a ``decomposition``
        of the same layer, its cosine and attribution columns are added per feature."""
        df = self.replies()
        df["coherent"] = df["coherence"] >= coherence_threshold
        g = df.groupby(["label", "feature", "coeff"], sort=False)
        out = g.agg(
            trait=("trait", "mean"),
            trait_sem=("trait", "sem"),
            coherence=("coherence", "mean"),
            frac_coherent=("coherent", "mean"),
            n=("trait", "size"),
            n_scored=("trait", "count"),
        ).reset_index()
        base = out[out.coeff == 0.0].iloc[0]
        out["trait_change"] = out["trait"] - float(base["trait"])
        out["coherence_change"] = out["coherence"] - float(base["coherence"])
        out.insert(0, "layer", self.layer)
        out["coeff_scale"] = self.coeff_scale
        if decomposition is not None:
            d = decomposition.to_frame()
            d = d[d.layer == self.layer].drop_duplicates("feature")
            cols = [
                c
                for c in ("feature", "cosine", "attribution", "attribution_samples")
                if c in d.columns
            ]
            out = out.merge(d[cols], on="feature", how="left")
        return out

    def to_dict(self) -> dict[str, Any]:
        table = self.to_frame().to_dict(orient="records")
        return {
            "trait": self.trait,
            "layer": self.layer,
            "features": list(self.features),
            "coeffs": list(self.coeffs),
            "coeff_scale": self.coeff_scale,
            "settings": self.settings,
            "summary": [
                {k: _json_num(v.item() if hasattr(v, "item") else v) for k, v in r.items()}
                for r in table
            ],
        }


def feature_steering_test(
    model: HookedTransformer,
    sae: Any,
    features: Sequence[int] | Tensor | Decomposition,
    layer: int | None = None,
    coeffs: Sequence[float | int] = (0.0, 0.25, 0.5, 1.0),
    trait: Trait | str | None = None,
    judge: Judge | str = "auto",
    prompts: Sequence[Any] | None = None,
    *,
    generation: GenerationConfig | None = None,
    coeff_scale: str = "resid",
    positions: str = "response",
    system: str | None = None,
    vector: PersonaVector | None = None,
    reference: Sequence[Any] | None = None,
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> FeatureSteeringResult:
    """Causal test: steer along each feature's decoder direction and judge the trait.

    For each feature ``f`` and nonzero coefficient ``c`` the model answers ``prompts``
    (default: the trait's held-out evaluation questions) with ``c`` times the feature's decoder
    direction added at ``blocks.{layer}.hook_resid_post`` (through
    :func:`personalens.steering_sweep`, so through :func:`personalens.steer`), and the judge
    scores trait and coherence. Coefficient 0 (the unsteered model) is generated and judged
    once and reported under every feature; changes are against it.

    Coefficient scale (``coeff_scale``, as in :func:`personalens.steer`):

    * ``"resid"`` (default): ``c`` times the *unit* decoder direction times the mean residual
      norm at the layer (over neutral reference prompts, first token excluded): ``c = 0.25``
      adds a quarter of a typical residual's length along the feature, the same at every layer
      and for every feature, whatever its decoder norm.
    * ``"unit"``: ``c`` is a length in residual units along the unit decoder direction.
    * ``"raw"``: ``c`` times the decoder row as trained (``c`` = a feature activation of ``c``).

    Args:
        features: feature ids, or a :class:`Decomposition` (all its features at this layer,
            aligned and anti: each costs one generation per nonzero coefficient, so pass
            ``dec.features(L, n=5)`` to test fewer).
        trait: the trait to judge (name or Trait); default ``vector.trait`` if a vector is given.
        judge: a Judge or ``"auto"``/``"offline"``/``"openai"``.
        vector: optional persona vector, steered the same way (its unit direction at the layer
            under "resid"/"unit") as a reference row labelled ``"persona vector"``.
        out: a directory that makes the test resumable (one steering_sweep run per feature
            under ``feature_<f>/``, the baseline under ``baseline/``).
    """
    from .judge import make_judge
    from .sweep import _resolve_trait, steering_sweep
    from .vector import PersonaVector

    s = _one_sae(sae, layer, model)
    layer = s.layer
    feats = (
        features.features(layer)
        if isinstance(features, Decomposition)
        else [int(f) for f in features]
    )
    if not feats:
        raise PersonaLensError("no features given")
    if len(set(feats)) != len(feats):
        raise PersonaLensError(f"features {feats} name a feature twice")
    coeff_list = sorted({float(c) for c in coeffs} | {0.0})
    nonzero = [c for c in coeff_list if c != 0.0]
    if not nonzero:
        raise PersonaLensError("give at least one nonzero coefficient")
    if coeff_scale not in ("raw", "unit", "resid"):
        raise PersonaLensError(f"coeff_scale must be 'raw', 'unit' or 'resid', got {coeff_scale!r}")
    if trait is None and vector is None:
        raise PersonaLensError("give trait= (a trait name or Trait) to judge")
    vectors: list[tuple[str, int, PersonaVector]] = [
        (f"feature {f}", f, feature_vector(s, f, model)) for f in feats
    ]
    if vector is not None:
        if not isinstance(vector, PersonaVector):
            raise PersonaLensError("vector= must be a PersonaVector")
        vector.check_compatible(model)
        vectors.append(("persona vector", -1, vector))
    trait_obj = _resolve_trait(trait, vector if vector is not None else vectors[0][2])
    judge_obj = make_judge(judge) if isinstance(judge, str) else judge
    run = Path(out) if out is not None else None
    common = {
        "trait": trait_obj,
        "judge": judge_obj,
        "system": system,
        "generation": generation,
        "positions": positions,
        "coeff_scale": coeff_scale,
        "reference": reference,
        "progress": progress,
    }
    n_layers, d_model, name = _model_dims(model)
    neutral = PersonaVector(
        directions=torch.zeros(n_layers, d_model), model=name or "", trait="unsteered baseline"
    )
    base = steering_sweep(
        model,
        neutral,
        prompts,
        layers=[layer],
        coeffs=[0.0],
        out=run / "baseline" if run else None,
        **common,
    )
    base_rows = base.records
    records: list[dict[str, Any]] = []
    for label, f, vec in vectors:
        res = steering_sweep(
            model,
            vec,
            prompts,
            layers=[layer],
            coeffs=nonzero,
            out=(run / ("persona_vector" if f < 0 else f"feature_{f}")) if run else None,
            **common,
        )
        for r in list(base_rows) + list(res.records):
            records.append(
                {
                    "label": label,
                    "feature": f,
                    "coeff": float(r["coeff"]),
                    "prompt_index": r["prompt_index"],
                    "sample_index": r["sample_index"],
                    "question": r["question"],
                    "response": r["response"],
                    "trait": r["trait"],
                    "coherence": r["coherence"],
                }
            )
    settings = {
        "sae": s.source,
        "hook": s.hook,
        "positions": positions,
        "system": system,
        "judge": judge_obj.name,
        "n_prompts": base.settings.get("n_prompts"),
        "generation": base.settings.get("generation"),
        "vector": None if vector is None else {"trait": vector.trait, "model": vector.model},
    }
    return FeatureSteeringResult(
        trait=trait_obj.name,
        layer=layer,
        features=tuple(feats),
        coeffs=tuple(coeff_list),
        coeff_scale=coeff_scale,
        records=tuple(records),
        settings=settings,
    )
