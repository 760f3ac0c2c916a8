"""The Hugging Face view of a HookedTransformer: an HF Llama whose parameters are its weights.

Part of the ``backend="hf"`` fast path; see :mod:`personalens.engines.hf` for the design. This
module builds and caches the view; :mod:`personalens.engines.hf` runs it with steering.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from transformers import LlamaConfig, LlamaForCausalLM

from personalens.errors import PersonaLensError
from personalens.model.layout import fast_weight_layout

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")
_VIEW_ATTR = "_personalens_hf_view"


# ----------------------------------------------------------------------------- mapping


def _nonzero(t: Tensor | None) -> bool:
    return t is not None and bool(t.detach().abs().max() > 0)


def _qkv(attn: nn.Module) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(W_Q, W_K, W_V, b_Q, b_K, b_V) as stored (un-repeated K/V for grouped-query attention)."""
    if hasattr(attn, "_W_K"):
        return attn.W_Q, attn._W_K, attn._W_V, attn.b_Q, attn._b_K, attn._b_V
    return attn.W_Q, attn.W_K, attn.W_V, attn.b_Q, attn.b_K, attn.b_V


def unsupported_reasons(model: HookedTransformer) -> list[str]:
    """Why ``model`` cannot run on the HF backend (empty when it can)."""
    cfg = model.cfg

    def get(name: str, default: Any = None) -> Any:
        return getattr(cfg, name, default)

    arch = get("original_architecture")
    checks = [
        (arch is None or arch in SUPPORTED_ARCHITECTURES, f"one of {SUPPORTED_ARCHITECTURES}"),
        (get("normalization_type") == "RMS" and get("final_rms"), "RMSNorm"),
        (
            get("positional_embedding_type") == "rotary"
            and get("rotary_dim") == get("d_head")
            and not get("rotary_adjacent_pairs")
            and not get("use_dynamic_ntk_rope"),
            "rotary embeddings over whole heads in NeoX halves with a fixed table",
        ),
        (
            get("gated_mlp") and get("act_fn") == "silu" and not get("num_experts"),
            "a gated SiLU MLP",
        ),
        (
            get("attention_dir") == "causal"
            and not get("use_local_attn")
            and get("window_size") is None
            and all(t == "global" for t in (get("attn_types") or ())),
            "global causal attention",
        ),
        (
            get("use_attn_scale", True)
            and not (
                get("use_qk_norm")
                or get("clip_qkv")
                or get("use_logn_attn")
                or get("use_attention_sinks")
                or get("scale_attn_by_inverse_layer_idx")
            )
            and (get("attn_scores_soft_cap") or -1) <= 0
            and (get("output_logits_soft_cap") or -1) <= 0,
            "plain scaled attention (no qk-norm, clipping, soft-capping or sinks)",
        ),
        (
            not (
                get("parallel_attn_mlp")
                or get("post_embedding_ln")
                or get("use_normalization_before_and_after")
                or get("attn_only")
            ),
            "sequential pre-norm blocks",
        ),
        (
            not (
                get("use_split_qkv_input")
                or get("use_attn_in")
                or get("load_in_4bit")
                or get("ungroup_grouped_query_attention")
            )
            and get("n_devices", 1) == 1,
            "plain weights on one device",
        ),
        (get("d_vocab_out") == get("d_vocab"), "an unembedding over the input vocabulary"),
    ]
    reasons = [need for ok, need in checks if not ok]
    if not reasons and any(_nonzero(b.mlp.b_in) or _nonzero(b.mlp.b_out) for b in model.blocks):
        reasons.append("an MLP without biases")
    return reasons


def _require_supported(model: HookedTransformer) -> None:
    reasons = unsupported_reasons(model)
    if reasons:
        arch = getattr(model.cfg, "original_architecture", None) or "this architecture"
        raise PersonaLensError(
            f"the Hugging Face backend cannot run {arch} ({model.cfg.model_name}): it maps only "
            f"Llama-style decoders, and this model lacks {'; '.join(reasons)}. "
            "Use backend='tl' (TransformerLens)."
        )


def _shared(view: Tensor, source: Tensor) -> nn.Parameter:
    """``view`` as a frozen parameter, checked to be a contiguous view of ``source``'s storage."""
    if (
        view.untyped_storage().data_ptr() != source.untyped_storage().data_ptr()
        or not view.is_contiguous()
    ):
        raise PersonaLensError(
            f"internal error: a weight of shape {tuple(source.shape)} is not stored in the "
            "Hugging Face layout, so the HF view would need a copy"
        )
    return nn.Parameter(view, requires_grad=False)


def _rows(w: Tensor) -> nn.Parameter:
    """A TL ``[heads, d_model, d_head]`` weight as an HF ``[(heads d_head), d_model]`` weight."""
    w = w.detach()
    return _shared(w.permute(0, 2, 1).reshape(-1, w.shape[1]), w)


def _flat(b: Tensor) -> nn.Parameter:
    b = b.detach()
    return _shared(b.reshape(-1), b)


def _t(w: Tensor) -> nn.Parameter:
    w = w.detach()
    return _shared(w.T, w)


class _TLRotary(nn.Module):
    """HF rotary embedding that reads TransformerLens's own cos/sin table at given positions."""

    def __init__(self, attn: nn.Module, n_ctx: int, device: torch.device | str) -> None:
        super().__init__()
        cfg = attn.cfg
        sin, cos = attn.calculate_sin_cos_rotary(
            cfg.rotary_dim, n_ctx, base=attn._rotary_base(), dtype=cfg.dtype
        )
        known = attn.rotary_cos.shape[0]
        if not (
            torch.equal(cos[:known].to(attn.rotary_cos.device), attn.rotary_cos)
            and torch.equal(sin[:known].to(attn.rotary_sin.device), attn.rotary_sin)
        ):
            raise PersonaLensError(
                "internal error: the model's rotary table differs from TransformerLens's formula"
            )
        self.register_buffer("cos", cos.to(device), persistent=False)
        self.register_buffer("sin", sin.to(device), persistent=False)

    def forward(self, x: Tensor, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        return self.cos[position_ids].to(x.dtype), self.sin[position_ids].to(x.dtype)


@torch.no_grad()
def _build(model: HookedTransformer) -> nn.Module:
    cfg = model.cfg
    biases = [_qkv(b.attn)[3:] + (b.attn.b_O,) for b in model.blocks]
    attention_bias = any(_nonzero(t) for group in biases for t in group)
    config = LlamaConfig(
        vocab_size=cfg.d_vocab,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_key_value_heads or cfg.n_heads,
        head_dim=cfg.d_head,
        hidden_act="silu",
        max_position_embeddings=cfg.n_ctx,
        rms_norm_eps=float(cfg.eps),
        attention_bias=attention_bias,
        mlp_bias=False,
        tie_word_embeddings=False,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
    )
    config._attn_implementation = "sdpa"
    with torch.device("meta"):
        hf = LlamaForCausalLM(config)
    inner = hf.model
    inner.embed_tokens.weight = _shared(model.embed.W_E.detach(), model.embed.W_E)
    for block, layer in zip(model.blocks, inner.layers):
        attn, mlp, sa = block.attn, block.mlp, layer.self_attn
        W_Q, W_K, W_V, b_Q, b_K, b_V = _qkv(attn)
        sa.q_proj.weight, sa.k_proj.weight, sa.v_proj.weight = _rows(W_Q), _rows(W_K), _rows(W_V)
        W_O = attn.W_O.detach()  # [heads, d_head, d_model]
        sa.o_proj.weight = _shared(W_O.permute(2, 0, 1).reshape(W_O.shape[2], -1), W_O)
        if attention_bias:
            sa.q_proj.bias, sa.k_proj.bias, sa.v_proj.bias = _flat(b_Q), _flat(b_K), _flat(b_V)
            sa.o_proj.bias = _flat(attn.b_O)
        sa.scaling = 1.0 / float(attn.attn_scale)
        layer.mlp.gate_proj.weight = _t(mlp.W_gate)
        layer.mlp.up_proj.weight = _t(mlp.W_in)
        layer.mlp.down_proj.weight = _t(mlp.W_out)
        layer.input_layernorm.weight = _flat(block.ln1.w)
        layer.post_attention_layernorm.weight = _flat(block.ln2.w)
    inner.norm.weight = _flat(model.ln_final.w)
    inner.rotary_emb = _TLRotary(model.blocks[0].attn, cfg.n_ctx, model.embed.W_E.device)
    if _nonzero(model.unembed.b_U):
        hf.lm_head = nn.Linear(cfg.d_model, cfg.d_vocab, bias=True, device="meta")
        hf.lm_head.bias = _flat(model.unembed.b_U)
    hf.lm_head.weight = _t(model.unembed.W_U)
    left = [n for n, t in [*hf.named_parameters(), *hf.named_buffers()] if t.is_meta]
    if left:
        raise PersonaLensError(f"internal error: HF view left unmapped tensors {left[:5]}")
    hf.eval()
    return hf


@dataclass
class _View:
    key: tuple
    hf: Any
    step: Any = None  # compile=True: the compiled decode step
    static: dict = field(default_factory=dict)  # compile=True: (cache, mask) per shape


def _storage_key(model: HookedTransformer) -> tuple:
    return tuple(
        (p.untyped_storage().data_ptr(), p.storage_offset(), tuple(p.stride()), p.dtype)
        for p in model.parameters()
    )


def _view(model: HookedTransformer) -> _View:
    cached = model.__dict__.get(_VIEW_ATTR)
    if cached is not None and cached.key == _storage_key(model):
        return cached
    _require_supported(model)
    # Built outside inference mode: a first call often comes from an inference_mode function,
    # and the re-laid-out weights (and the view's buffers) must stay usable for training.
    with torch.inference_mode(False), torch.no_grad():
        # a no-op for models from load_model; hand-built models get the layout (values unchanged)
        fast_weight_layout(model)
        view = _View(_storage_key(model), _build(model))
    model.__dict__[_VIEW_ATTR] = view  # a plain attribute: not a submodule, not in state_dict
    return view


def hf_view(model: HookedTransformer) -> nn.Module:
    """A ``transformers`` causal LM whose parameters are views of ``model``'s (no copies).

    Its logits equal ``model``'s within floating-point tolerance (same weights, same rotary
    table, same attention scale); pass ``position_ids`` counting real tokens for left-padded
    batches, as TransformerLens does. Cached on ``model`` (attribute ``_personalens_hf_view``)
    and rebuilt when a parameter's storage changes. Raises :class:`PersonaLensError` for
    architectures it cannot map (see :mod:`personalens.engines.hf`); use ``backend="tl"`` for
    those. Hooks on ``model`` do not apply to direct calls of the view; personalens's
    ``backend="hf"`` paths translate its steering.

    The view holds the weights it shares: after moving or recasting ``model`` (``.to(...)``,
    ``.half()``), the old weights stay alive until the next ``backend="hf"`` call rebuilds the
    view or :func:`drop_hf_view` drops it.
    """
    return _view(model).hf


def drop_hf_view(model: HookedTransformer) -> None:
    """Forget ``model``'s cached HF view (and the weights, caches and compiled steps it holds)."""
    model.__dict__.pop(_VIEW_ATTR, None)
