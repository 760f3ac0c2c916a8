"""The embedded SmolLM2-135M-Instruct: shape, HF basis, logits, generation, CLI."""

import json
import subprocess
import sys

import torch

from personalens import generate
from personalens.conventions import hook_name
from personalens.model import build_messages, tokenize_prompts

SYSTEM = "You are a helpful assistant."
QUESTIONS = [
    "What is the capital of France?",
    "Give me one tip for sleeping better.",
    "Name a primary colour.",
]


def test_shape(embedded_model):
    cfg = embedded_model.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_key_value_heads) == (30, 576, 9, 3)
    assert cfg.original_architecture == "LlamaForCausalLM"


def test_resid_post_equals_hf_hidden_states(embedded_model, embedded_hf):
    hf, _ = embedded_hf
    batch = tokenize_prompts(embedded_model.tokenizer, QUESTIONS, system=SYSTEM)
    last_block_out = {}
    handle = hf.model.layers[-1].register_forward_hook(
        lambda mod, args, out: last_block_out.__setitem__(
            "h", out[0] if isinstance(out, tuple) else out
        )
    )
    try:
        with torch.no_grad():
            ref = hf(
                batch.tokens, attention_mask=batch.attention_mask.long(), output_hidden_states=True
            )
            logits, cache = embedded_model.run_with_cache(
                batch.tokens,
                attention_mask=batch.attention_mask.long(),
                names_filter=lambda n: n.endswith("hook_resid_post"),
            )
    finally:
        handle.remove()
    mask = batch.attention_mask
    worst = 0.0
    for layer in range(30):
        ours = cache[hook_name(layer)][mask]
        theirs = (ref.hidden_states[layer + 1] if layer < 29 else last_block_out["h"])[mask]
        # residual norms reach ~25,000 at the first token: compare relative to each row's norm
        rel = ((ours - theirs).norm(dim=-1) / theirs.norm(dim=-1)).max().item()
        worst = max(worst, rel)
    assert worst < 1e-4, worst
    logp = logits.log_softmax(-1)[mask]
    ref_logp = ref.logits.log_softmax(-1)[mask]
    assert (logp - ref_logp).abs().max().item() < 1e-3


def test_first_position_is_a_massive_activation(embedded_model):
    """Documented quirk: the first token's residual norm dwarfs the rest (exclude it from means)."""
    batch = tokenize_prompts(embedded_model.tokenizer, QUESTIONS[:1], system=SYSTEM)
    with torch.no_grad():
        _, cache = embedded_model.run_with_cache(batch.tokens, names_filter=hook_name(15))
    norms = cache[hook_name(15)][0].norm(dim=-1)
    assert norms[0] > 20 * norms[1:].median()


def test_batched_generation_equals_one_at_a_time(embedded_model):
    batched = generate(embedded_model, QUESTIONS, system=SYSTEM, max_new_tokens=24)
    for i, q in enumerate(QUESTIONS):
        single = generate(embedded_model, [q], system=SYSTEM, max_new_tokens=24)
        assert single.response_tokens[0] == batched.response_tokens[i]
    assert all(r.strip() for r in batched.responses)
    assert (
        "paris" in batched.responses[0].lower()
    )  # a sanity check on a trivial fact, not exact text


def test_multi_turn_generation(embedded_model):
    history = [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Nice to meet you, Ada!"},
    ]
    res = generate(
        embedded_model,
        [build_messages("What is my name?", system=SYSTEM, history=history)],
        max_new_tokens=16,
    )
    assert len(res.responses[0]) > 0


def test_cli_info_prints_embedded_shape():
    out = subprocess.run(
        [sys.executable, "-m", "personalens", "info"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["n_layers"] == 30 and info["d_model"] == 576
    assert info["model"] == "SmolLM2-135M-Instruct"


def test_cli_chat_pipe():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "personalens",
            "chat",
            "--max-new-tokens",
            "12",
            "--format",
            "jsonl",
        ],
        input="What is the capital of France?\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout.strip().splitlines()[-1])
    assert reply["assistant"].strip()
