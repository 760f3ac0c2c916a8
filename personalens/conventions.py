"""The one place where personalens states its layer convention.

Layer ``L`` always means the residual stream *after* transformer block ``L``, i.e. the
TransformerLens hook point ``blocks.L.hook_resid_post`` (``L`` in ``0 .. n_layers-1``).

Hugging Face ``output_hidden_states=True`` returns ``n_layers + 1`` tensors: index 0 is the
embedding output (before block 0) and index ``i`` is the output of block ``i - 1``. Hence

    personalens layer L  ==  blocks.L.hook_resid_post  ==  HF hidden_states[L + 1]

(for every layer but the last; HF applies the final norm to its last entry in some
architectures, e.g. Llama's ``hidden_states[-1]`` is *after* ``model.norm``.) Persona Vectors
``.pt`` files are stored with HF indexing, shape ``[n_layers + 1, d_model]``; row ``L + 1`` of
such a file is personalens layer ``L``.

personalens loads models without any weight processing that moves the residual basis
(no centring of writing weights), so a direction found here is the same direction in the HF
model and in llama.cpp.

Every TransformerLens hook that reads or edits layer ``L`` goes through :func:`resid_hook`,
which is ``blocks.L.hook_resid_post`` unless an SAE is spliced in there (sae-lens's
``HookedSAETransformer.add_sae`` replaces that hook point with a wrapper module): then it is the
wrapper's ``hook_sae_output``, the SAE's output, which is what block ``L + 1`` reads. So
steering at a spliced layer edits what flows on, and activations read there are what the
model continues with (with ``use_error_term=True`` that equals the unspliced residual).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from personalens.errors import ArgumentError, LayerError, PersonaLensError

HOOK_TEMPLATE = "blocks.{layer}.hook_resid_post"
LAYER_CONVENTION = "resid_post"
SAE_OUTPUT_HOOK = "hook_sae_output"  # the output hook point of sae-lens's spliced-SAE wrapper
SAE_INPUT_HOOK = "hook_sae_input"  # its input hook point: the residual the spliced SAE encodes


def hook_name(layer: int) -> str:
    """The TransformerLens hook point for personalens layer ``layer``."""
    return HOOK_TEMPLATE.format(layer=layer)


def resid_hook(model: Any, layer: int) -> str:
    """The name of the hook point of ``model`` (a ``mod_dict`` key) at which personalens reads
    and edits layer ``layer``: :func:`hook_name`, or the spliced SAE's ``hook_sae_output``.

    The SAE wrapper is recognised by what it has (an ``hook_sae_output`` hook point, and no
    ``add_hook`` of its own), not by its class, so sae-lens is never imported here. Anything
    else without ``add_hook`` at that name raises :class:`~personalens.errors.PersonaLensError`.
    """
    name = hook_name(layer)
    point = model.mod_dict.get(name)
    if point is None or hasattr(point, "add_hook"):
        return name  # a plain hook point (a missing one fails where it is used)
    inner = f"{name}.{SAE_OUTPUT_HOOK}"
    if hasattr(getattr(point, SAE_OUTPUT_HOOK, None), "add_hook"):
        if inner in model.mod_dict:
            return inner
        raise PersonaLensError(
            f"{name} holds a spliced SAE whose {SAE_OUTPUT_HOOK} is not among the model's hook "
            "points; call model.setup() after changing the model's modules"
        )
    raise PersonaLensError(
        f"{name} is a {type(point).__name__}, not a hook point, and has no {SAE_OUTPUT_HOOK} "
        "hook point either: personalens cannot read or steer layer "
        f"{layer} of this model. Remove what replaced the hook point (for sae-lens SAEs: "
        "model.reset_saes()) or splice it in through HookedSAETransformer.add_sae."
    )


def resid_input_hook(model: Any, layer: int) -> str:
    """Where the residual at ``layer`` is read to be encoded: ``blocks.L.hook_resid_post``, or,
    when an SAE is spliced in there (sae-lens's ``HookedSAETransformer.add_sae``), that SAE's
    input hook (``...hook_resid_post.hook_sae_input``): the residual stream itself, what the
    SAE being described was trained on, whatever the spliced SAE outputs. Found as
    :func:`resid_hook` finds the spliced SAE's output (and refusing
    what it refuses)."""
    name = resid_hook(model, layer)
    if name == hook_name(layer):
        return name
    inner = f"{hook_name(layer)}.{SAE_INPUT_HOOK}"
    if inner not in model.mod_dict:
        raise PersonaLensError(
            f"{hook_name(layer)} holds a spliced SAE without a {SAE_INPUT_HOOK} hook point, so "
            "the residual it encodes cannot be read: remove it (model.reset_saes()) first"
        )
    return inner


def hf_hidden_states_index(layer: int) -> int:
    """Index into HF ``hidden_states`` that holds personalens layer ``layer``."""
    return layer + 1


def layer_from_hf_index(index: int) -> int:
    """personalens layer held by HF ``hidden_states[index]`` (index 0, the embeddings, has none)."""
    if index < 1:
        raise LayerError(
            f"HF hidden_states[{index}] is the embedding output, before any block; it has no "
            "personalens layer. personalens layer L is HF hidden_states[L + 1]."
        )
    return index - 1


def check_layer(layer: int, n_layers: int) -> int:
    """Validate a layer index (negative counts from the end) and return it as non-negative."""
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise TypeError(f"layer must be an int, got {type(layer).__name__} {layer!r}")
    resolved = layer + n_layers if layer < 0 else layer
    if not 0 <= resolved < n_layers:
        raise LayerError(
            f"unknown layer {layer}: this model has {n_layers} layers, numbered 0..{n_layers - 1} "
            f"(layer L is {HOOK_TEMPLATE}); pass a layer in that range."
        )
    return resolved


def select_layers(
    layers: int | Iterable[Any] | str | None, n_layers: int, *, unique: bool = False
) -> tuple[int, ...]:
    """The one layer resolver: a ``layers`` argument as valid layer indices, in the given order.

    ``None`` or ``"all"``: every layer ``0 .. n_layers-1`` (a caller with another default, such
    as steering's "the vector's best layer", resolves ``None`` first); an int or a sequence of
    ints (0-d tensors too), negative counting from the end (:func:`check_layer`). With
    ``unique``, a layer named twice is an error. Another string or an empty sequence raises
    :class:`~personalens.errors.PersonaLensError`, a layer that is not an integer (``1.5``,
    ``True``) :class:`~personalens.errors.ArgumentError`, a layer out of range
    :class:`~personalens.errors.LayerError`.
    """
    if layers is None or (isinstance(layers, str) and layers == "all"):
        return tuple(range(n_layers))
    if isinstance(layers, str):
        raise PersonaLensError(f"layers={layers!r}: give an int, a list of ints, 'all' or None")
    given = layers
    if getattr(layers, "ndim", None) == 0 or not isinstance(layers, Iterable):
        layers = [layers]  # one layer: an int, a 0-d tensor (or a wrong type, refused below)
    items = [L.item() if hasattr(L, "item") else L for L in layers]
    for L in items:
        if isinstance(L, bool) or not isinstance(L, int):
            raise ArgumentError(
                f"layers={given!r}: {L!r} ({type(L).__name__}) is not a layer index. Layers "
                f"are whole numbers 0..{n_layers - 1} (negative counts from the end); pass an "
                "int, a list of ints, 'all' or None"
            )
    out = tuple(check_layer(L, n_layers) for L in items)
    if not out:
        raise PersonaLensError("layers is empty: give at least one layer, or None for all")
    if unique and len(set(out)) != len(out):
        raise PersonaLensError(
            f"layers {list(out)} name a layer twice (negative indices count from the end); "
            "list each layer once"
        )
    return out
