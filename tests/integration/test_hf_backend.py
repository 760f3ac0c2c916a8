"""The Hugging Face backend on the embedded SmolLM2: same logits, same steered tokens, same
activations as TransformerLens (fp32, CPU)."""

import pytest
import torch

from personalens.engines.hf import hf_view
from personalens.model.activations import collect_activations
from personalens.model.chat import tokenize_prompts
from personalens.model.generation import generate
from personalens.steering.hooks import steer

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]

PROMPTS = ["What is the capital of France?", "Write a haiku about rain.", "Hi!"]


@pytest.fixture(scope="module")
def vec(embedded_model):
    g = torch.Generator().manual_seed(0)
    return torch.randn(embedded_model.cfg.n_layers, embedded_model.cfg.d_model, generator=g)


def test_embedded_logits_and_activations_match(embedded_model):
    model = embedded_model
    hf = hf_view(model)
    tl_storage = {p.untyped_storage().data_ptr() for p in model.parameters()}
    assert all(p.untyped_storage().data_ptr() in tl_storage for p in hf.parameters())
    batch = tokenize_prompts(model.tokenizer, PROMPTS)
    pos = (batch.attention_mask.long().cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        tl = model(batch.tokens, attention_mask=batch.attention_mask.long())
        out = hf(
            input_ids=batch.tokens, attention_mask=batch.attention_mask.long(), position_ids=pos
        ).logits
    real = batch.attention_mask
    # fp32 summation-order noise between the two attention/MLP implementations scales with the
    # logits (std ~8, |max| ~38 here): max |diff| was <1e-4 on a Zen 4 and 1.6e-4 on a Xeon, so
    # allow 1e-4 of the logit std; a real mismatch (positions, bias, norm) is >=1e-2.
    atol = 1e-4 * tl[real].std().item()
    torch.testing.assert_close(out[real], tl[real], atol=atol, rtol=1e-5)

    responses = ["Paris is the capital.", "Soft rain on the roof", "Hello! How can I help?"]
    a = collect_activations(model, PROMPTS, responses, progress=False)
    b = collect_activations(model, PROMPTS, responses, progress=False, backend="hf")
    for variant in ("response_avg", "prompt_avg", "last_prompt_token"):
        torch.testing.assert_close(b.variant(variant), a.variant(variant), atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize(
    "spec",
    [
        dict(coeff=8.0, layers=[10, 15], coeff_scale="unit", positions="response"),
        dict(coeff=8.0, layers=[12], coeff_scale="unit", positions="prompt"),
        dict(coeff=-8.0, layers=[12], coeff_scale="unit", positions="all"),
        dict(mode="ablate", layers=[8, 16], positions="all"),
        dict(mode="cap", layers=[12], bound=0.0, positions="all"),
    ],
    ids=["add-response", "add-prompt", "add-all", "ablate", "cap"],
)
def test_embedded_steered_generation_is_identical(embedded_model, vec, spec):
    with steer(embedded_model, vec, **spec):
        tl = generate(embedded_model, PROMPTS, max_new_tokens=16)
        hf = generate(embedded_model, PROMPTS, max_new_tokens=16, backend="hf")
    assert hf.response_tokens == tl.response_tokens
    assert hf.finish_reasons == tl.finish_reasons


def test_embedded_sampling_is_identical(embedded_model, vec):
    kw = dict(max_new_tokens=16, temperature=1.0, top_p=0.95, n=2, seed=5)
    with steer(embedded_model, vec, coeff=4.0, layers=[12], coeff_scale="unit"):
        tl = generate(embedded_model, PROMPTS, **kw)
        hf = generate(embedded_model, PROMPTS, backend="hf", **kw)
    assert hf.response_tokens == tl.response_tokens


COMPILE_CHECK = """
import sys, torch
torch.set_num_threads(1)
sys.path[:0] = ["tests", "tests/unit"]
from conftest import make_tokenizer
from test_hf_backend import PROMPTS, STEERING, _steered, _vec, make_tiny_llama
from personalens.model.generation import generate
real = torch.compile
torch.compile = lambda fn, **kw: real(fn, backend="eager", dynamic=False)
model = make_tiny_llama(make_tokenizer())
vec = _vec(model)
for name in ("none", "add-response-2-layers", "add-all", "ablate", "none"):
    with _steered(model, STEERING[name], vec):
        tl = generate(model, PROMPTS[:3], max_new_tokens=8)
        hf = generate(model, PROMPTS[:3], max_new_tokens=8, backend="hf", compile=True)
    assert hf.response_tokens == tl.response_tokens, name
print("compiled decode ok")
"""


def test_compiled_decode_follows_the_steering():
    """compile=True traced by dynamo (eager backend, CPU): a decode graph compiled under one
    steering set must not be replayed under another (torch skips module-hook guards by
    default). Runs in a subprocess, outside pytest's jaxtyping hook, which dynamo cannot trace."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", COMPILE_CHECK], cwd=root, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "compiled decode ok" in done.stdout
