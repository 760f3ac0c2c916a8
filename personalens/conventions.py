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
"""

from __future__ import annotations

from personalens.errors import LayerError

HOOK_TEMPLATE = "blocks.{layer}.hook_resid_post"
LAYER_CONVENTION = "resid_post"


def hook_name(layer: int) -> str:
    """The TransformerLens hook point for personalens layer ``layer``."""
    return HOOK_TEMPLATE.format(layer=layer)


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
