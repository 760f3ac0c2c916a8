"""Shared fixtures: a tiny random Llama-shaped model with a real chat template, no files needed."""

from __future__ import annotations

import warnings

import pytest
import torch

from tests.byte_tokenizer import CHAT_TEMPLATE, SPECIALS, byte_tokenizer  # noqa: F401


def make_tokenizer():
    """A byte-level tokenizer (256 byte tokens + 3 specials) with a ChatML template."""
    return byte_tokenizer("personalens-tok-")


def make_tiny_model(tokenizer=None, seed: int = 0, n_layers: int = 3, n_ctx: int = 256):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    tokenizer = tokenizer or make_tokenizer()
    cfg = HookedTransformerConfig(
        n_layers=n_layers,
        d_model=32,
        n_heads=4,
        d_head=8,
        n_key_value_heads=2,
        d_mlp=64,
        d_vocab=len(tokenizer),
        n_ctx=n_ctx,
        act_fn="silu",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=8,
        gated_mlp=True,
        final_rms=True,
        default_prepend_bos=False,
        seed=seed,
        device="cpu",
        model_name="tiny-random",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(cfg, tokenizer, default_padding_side="left")
    with torch.no_grad():  # make the random model's greedy outputs less degenerate
        for p in model.parameters():
            if p.ndim >= 2:
                p.mul_(3.0)
    model.eval()
    return model


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (restored after; use with ``pytest.mark.usefixtures``): on
    a busy 2-core machine two OpenMP threads made the HF backend's forwards ~25x slower, with the
    same results."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    return make_tiny_model(tokenizer)


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory, tokenizer):
    """A tiny random HF Llama saved with save_pretrained, in a folder whose name contains 'llama'."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("models") / "my-llama-finetune"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
