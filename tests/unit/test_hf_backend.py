"""The Hugging Face backend: a weight-sharing HF view that steers exactly like TransformerLens."""

import contextlib
import warnings

import pytest
import torch

from personalens.conventions import hook_name
from personalens.engines.hf import attached_steering, hf_view, unsupported_reasons
from personalens.errors import PersonaLensError
from personalens.model.activations import VARIANTS, collect_activations
from personalens.model.chat import tokenize_prompts
from personalens.model.generation import generate
from personalens.steering.hooks import add_steering, steer

PROMPTS = ["Hello there", "What is two plus two, exactly?", "x", "Tell me a story about a cat."]
RESPONSES = ["Sure, here it is.", "Four.", "y", "Once upon a time a cat sat."]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _from_hf(hf_model, tokenizer, name):
    from personalens.model.load import hf_to_hooked

    return hf_to_hooked(hf_model, tokenizer, model_name=name, device="cpu", dtype=torch.float32)


def make_tiny_llama(tokenizer):
    """Random HF Llama (llama3 rotary scaling, tied embeddings) converted by hf_to_hooked."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        initializer_range=0.15,  # large enough that greedy decoding has clear winners
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 10000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
        },
    )
    config.architectures = ["LlamaForCausalLM"]
    return _from_hf(LlamaForCausalLM(config).eval(), tokenizer, "tiny-llama")


@pytest.fixture(scope="module")
def tiny_llama(tokenizer):
    return make_tiny_llama(tokenizer)


@pytest.fixture(scope="module")
def tiny_qwen2(tokenizer):
    """Random HF Qwen2 with non-zero q/k/v biases and an untied unembedding."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(1)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        initializer_range=0.15,
        use_sliding_window=False,
    )
    config.architectures = ["Qwen2ForCausalLM"]
    hf = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        for layer in hf.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0.0, 0.5)
    return _from_hf(hf, tokenizer, "tiny-qwen2")


@pytest.fixture(scope="module")
def models(tiny_model, tiny_llama, tiny_qwen2):
    return {"tiny_model": tiny_model, "tiny_llama": tiny_llama, "tiny_qwen2": tiny_qwen2}


def _vec(model, scale=3.0, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(model.cfg.n_layers, model.cfg.d_model, generator=g) * scale


def _logits(model, prompts=PROMPTS):
    batch = tokenize_prompts(model.tokenizer, prompts)
    pos = (batch.attention_mask.long().cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        tl = model(batch.tokens, attention_mask=batch.attention_mask.long())
        hf = hf_view(model)(
            input_ids=batch.tokens, attention_mask=batch.attention_mask.long(), position_ids=pos
        ).logits
    return tl, hf, batch.attention_mask


# ----------------------------------------------------------------------------- the view


@pytest.mark.parametrize("name", ["tiny_model", "tiny_llama", "tiny_qwen2"])
def test_hf_logits_equal_tl_logits(models, name):
    tl, hf, real = _logits(models[name])
    torch.testing.assert_close(hf[real], tl[real], atol=1e-4, rtol=1e-4)


def test_weights_are_views_no_extra_memory(tiny_llama, tiny_qwen2):
    for model in (tiny_llama, tiny_qwen2):
        hf = hf_view(model)
        tl_storage = {p.untyped_storage().data_ptr() for p in model.parameters()}
        params = list(hf.parameters())
        assert params and all(p.untyped_storage().data_ptr() in tl_storage for p in params)
        assert not any(p.requires_grad for p in params)
        assert hf_view(model) is hf  # cached
    attn = hf_view(tiny_qwen2).model.layers[0].self_attn
    b_Q = tiny_qwen2.blocks[0].attn.b_Q
    assert attn.q_proj.bias.data_ptr() == b_Q.data_ptr() and bool(b_Q.abs().max() > 0)
    assert hf_view(tiny_llama).model.layers[0].self_attn.q_proj.bias is None


def test_view_rebuilt_when_weights_are_replaced(tokenizer):
    model = make_tiny_llama(tokenizer)
    first = hf_view(model)
    with torch.no_grad():
        model.blocks[1].mlp.W_out.data = model.blocks[1].mlp.W_out.data.clone() * 0.5
    second = hf_view(model)
    assert second is not first
    tl, hf, real = _logits(model)
    torch.testing.assert_close(hf[real], tl[real], atol=1e-4, rtol=1e-4)


def _gpt2ish(tokenizer):
    """A tiny GPT-2-style HookedTransformer: LayerNorm, GELU, no rotary; the HF view cannot map it."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=1,
        d_model=16,
        n_heads=2,
        d_head=8,
        d_mlp=32,
        d_vocab=len(tokenizer),
        n_ctx=256,
        act_fn="gelu",
        normalization_type="LN",
        original_architecture="GPT2LMHeadModel",
        device="cpu",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return HookedTransformer(cfg, tokenizer, default_padding_side="left")


def test_unmappable_architecture_is_refused(tokenizer):
    gpt2ish = _gpt2ish(tokenizer)
    assert unsupported_reasons(gpt2ish)
    for call in (
        lambda: hf_view(gpt2ish),
        lambda: generate(gpt2ish, PROMPTS[:1], max_new_tokens=2, backend="hf"),
        lambda: collect_activations(gpt2ish, PROMPTS[:1], RESPONSES[:1], backend="hf"),
    ):
        with pytest.raises(PersonaLensError, match=r"GPT2LMHeadModel.*backend='tl'"):
            call()


def test_bad_backend_arguments(tiny_llama):
    with pytest.raises(PersonaLensError, match="unknown backend"):
        generate(tiny_llama, PROMPTS[:1], max_new_tokens=2, backend="vllm")
    with pytest.raises(PersonaLensError, match="backend='hf'"):
        generate(tiny_llama, PROMPTS[:1], max_new_tokens=2, compile=True, backend="tl")
    with pytest.raises(PersonaLensError, match="unknown backend"):
        collect_activations(tiny_llama, PROMPTS[:1], RESPONSES[:1], backend="x")


# ----------------------------------------------------------------------------- hooks


def test_hooks_that_are_not_steering_are_refused(tiny_llama):
    vec = _vec(tiny_llama)
    user = [(hook_name(1), lambda resid, hook: resid * 2)]
    with tiny_llama.hooks(fwd_hooks=user):
        with pytest.raises(PersonaLensError, match="not personalens steering"):
            generate(tiny_llama, PROMPTS[:1], max_new_tokens=2, backend="hf")
        with steer(tiny_llama, vec, coeff=1.0, layers=[0]):
            with pytest.raises(PersonaLensError, match="backend='tl'"):
                collect_activations(tiny_llama, PROMPTS[:1], RESPONSES[:1], backend="hf")
    handle = tiny_llama.blocks[0].mlp.register_forward_hook(lambda *a: None)
    try:
        with pytest.raises(PersonaLensError, match="blocks.0.mlp"):
            generate(tiny_llama, PROMPTS[:1], max_new_tokens=2, backend="hf")
    finally:
        handle.remove()
    assert attached_steering(tiny_llama) == []
    with steer(tiny_llama, vec, coeff=1.0, layers=[0, 2]):
        assert [e.layer for e, _ in attached_steering(tiny_llama)] == [0, 2]


def test_the_attached_hooks_are_the_source_of_truth(tiny_llama):
    """Hooks cleared by hand inside a steer block no longer steer, on either backend."""
    plain = generate(tiny_llama, PROMPTS, max_new_tokens=8)
    with steer(tiny_llama, _vec(tiny_llama), coeff=2.0, layers=[1], positions="all"):
        tiny_llama.reset_hooks()
        tl = generate(tiny_llama, PROMPTS, max_new_tokens=8)
        hf = generate(tiny_llama, PROMPTS, max_new_tokens=8, backend="hf")
    assert tl.response_tokens == hf.response_tokens == plain.response_tokens


# ----------------------------------------------------------------------------- generation

STEERING = {
    "none": [],
    "add-response-2-layers": [dict(coeff=2.0, layers=[0, 2], positions="response")],
    "add-prompt": [dict(coeff=2.0, layers=[1], positions="prompt")],
    "add-all": [dict(coeff=-2.0, layers=[1], positions="all")],
    "add-unit": [dict(coeff=4.0, layers=[0], coeff_scale="unit", positions="all")],
    "ablate": [dict(mode="ablate", layers=[0, 1], positions="all")],
    "cap-max": [dict(mode="cap", layers=[1], bound=0.5, positions="all")],
    "cap-min": [dict(mode="cap", layers=[2], bound=2.0, cap_side="min")],
    "add-then-cap-same-layer": [
        dict(coeff=2.0, layers=[1], positions="all"),
        dict(mode="cap", layers=[1], bound=0.0, positions="response"),
    ],
}


@contextlib.contextmanager
def _steered(model, specs, vec):
    with contextlib.ExitStack() as stack:
        for spec in specs:
            stack.enter_context(steer(model, vec, **spec))
        yield


@pytest.mark.parametrize("spec", list(STEERING))
def test_greedy_steered_generation_is_identical(tiny_llama, spec):
    vec = _vec(tiny_llama)
    with _steered(tiny_llama, STEERING[spec], vec):
        tl = generate(tiny_llama, PROMPTS, max_new_tokens=12)
        hf = generate(tiny_llama, PROMPTS, max_new_tokens=12, backend="hf")
    assert hf.response_tokens == tl.response_tokens
    assert hf.finish_reasons == tl.finish_reasons
    if spec == "add-all":  # the steering is not a no-op
        assert (
            tl.response_tokens != generate(tiny_llama, PROMPTS, max_new_tokens=12).response_tokens
        )


@pytest.mark.parametrize("name", ["tiny_model", "tiny_qwen2"])
def test_greedy_and_sampled_generation_other_models(models, name):
    model = models[name]
    with steer(model, _vec(model), coeff=2.0, layers=[0, model.cfg.n_layers - 1]):
        for kw in (dict(), dict(temperature=1.0, top_p=0.9, n=2, seed=3)):
            tl = generate(model, PROMPTS, max_new_tokens=12, batch_size=3, **kw)
            hf = generate(model, PROMPTS, max_new_tokens=12, batch_size=3, backend="hf", **kw)
            assert hf.response_tokens == tl.response_tokens


def test_sampling_with_a_seed_is_identical(tiny_llama):
    kw = dict(max_new_tokens=12, temperature=1.0, top_p=0.9, n=3, seed=7, batch_size=6)
    with steer(tiny_llama, _vec(tiny_llama), coeff=1.5, layers=[1]):
        tl = generate(tiny_llama, PROMPTS, **kw)
        hf = generate(tiny_llama, PROMPTS, backend="hf", **kw)
    assert hf.response_tokens == tl.response_tokens
    assert len({tuple(t) for t in tl.response_tokens}) > 4


def test_add_steering_handle_and_explicit_masks(tiny_llama):
    vec = _vec(tiny_llama)
    with add_steering(tiny_llama, vec, 2.0, layers=[1], positions="all"):
        tl = generate(tiny_llama, PROMPTS, max_new_tokens=10)
        hf = generate(tiny_llama, PROMPTS, max_new_tokens=10, backend="hf")
    assert hf.response_tokens == tl.response_tokens
    # an explicit mask steers one forward of its shape: the prefill of a single prompt
    width = len(tokenize_prompts(tiny_llama.tokenizer, PROMPTS[1:2]).tokens[0])
    mask = torch.zeros((1, width), dtype=torch.bool)
    mask[0, -3:] = True
    with steer(tiny_llama, vec, coeff=3.0, layers=[1], positions=mask):
        tl = generate(tiny_llama, PROMPTS[1:2], max_new_tokens=1)
        hf = generate(tiny_llama, PROMPTS[1:2], max_new_tokens=1, backend="hf")
        assert hf.response_tokens == tl.response_tokens
        for backend in ("tl", "hf"):  # and refuses decode steps, on both backends
            with pytest.raises(PersonaLensError, match="explicit masks"):
                generate(tiny_llama, PROMPTS[1:2], max_new_tokens=3, backend=backend)


def test_compile_path_static_cache_without_compiling(tokenizer, monkeypatch):
    """compile=True's static cache, mask buffer and frozen decode context, run eagerly.

    (Tracing by torch.compile itself is checked in tests/integration/test_hf_backend.py,
    outside the jaxtyping hook, which dynamo cannot trace.)"""
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    model = make_tiny_llama(tokenizer)
    vec = _vec(model)
    for specs in ([], STEERING["add-response-2-layers"], STEERING["add-then-cap-same-layer"]):
        with _steered(model, specs, vec):
            tl = generate(model, PROMPTS, max_new_tokens=8, batch_size=3)
            hf = generate(
                model, PROMPTS, max_new_tokens=8, batch_size=3, backend="hf", compile=True
            )
        assert hf.response_tokens == tl.response_tokens, specs
    with steer(model, vec, coeff=1.0, layers=[1], positions=torch.ones((1, 5), dtype=torch.bool)):
        with pytest.raises(PersonaLensError, match="compile=True"):
            generate(model, PROMPTS[:1], max_new_tokens=2, backend="hf", compile=True)


# ----------------------------------------------------------------------------- activations


@pytest.mark.parametrize("name", ["tiny_model", "tiny_llama", "tiny_qwen2"])
def test_activations_equal_tl(models, name):
    model = models[name]
    kw = dict(batch_size=3, progress=False)
    runs = [({}, None), ({"layers": [0]}, None)]
    runs.append(({}, dict(coeff=2.0, layers=[0], positions="all")))
    runs.append(({}, dict(mode="ablate", layers=[1], positions="response")))
    for extra, spec in runs:
        with _steered(model, [spec] if spec else [], _vec(model)):
            tl = collect_activations(model, PROMPTS, RESPONSES, **kw, **extra)
            hf = collect_activations(model, PROMPTS, RESPONSES, **kw, **extra, backend="hf")
        assert hf.layers == tl.layers
        for variant in ("response_avg", "prompt_avg", "last_prompt_token"):
            torch.testing.assert_close(
                hf.variant(variant), tl.variant(variant), atol=1e-4, rtol=1e-4
            )


def test_screening_and_extraction_activations_on_the_hf_backend(tiny_llama):
    from personalens.extraction.config import ExtractionConfig
    from personalens.extraction.run_activations import collect_run_activations
    from personalens.model.generation import GenerationConfig
    from personalens.studies.screening import screen
    from personalens.vectors.vector import PersonaVector

    vec = PersonaVector(directions=_vec(tiny_llama), model="tiny-llama", trait="test")
    rows = [
        {"id": f"s{i}", "prompt": p, "answer": r}
        for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES))
    ]
    kw = dict(layer=1, generation=GenerationConfig(max_new_tokens=6), batch_size=3, progress=False)
    tl = screen(tiny_llama, vec, rows, **kw)
    hf = screen(tiny_llama, vec, rows, backend="hf", **kw)
    assert hf.ids == tl.ids
    for field in ("proj_dataset", "proj_model", "delta_p"):
        torch.testing.assert_close(getattr(hf, field), getattr(tl, field), atol=1e-4, rtol=1e-4)
    records = [
        {"key": f"k{i}", "question": p, "system": "Be nice.", "response_tokens": [40 + i, 50, 60]}
        for i, p in enumerate(PROMPTS)
    ]
    cfg = ExtractionConfig(activation_batch_size=3)
    a = collect_run_activations(tiny_llama, records, cfg, progress=False)
    b = collect_run_activations(tiny_llama, records, cfg, progress=False, backend="hf")
    for key in a:
        torch.testing.assert_close(b[key].response_avg, a[key].response_avg, atol=1e-4, rtol=1e-4)
    with pytest.raises(PersonaLensError, match="unknown backend"):
        screen(tiny_llama, vec, rows, backend="fast", **kw)


# ----------------------------------------------------------------------------- backend="auto"


class _SplicedFeature(torch.nn.Module):
    """Stands in for an SAE or adapter spliced into a hook point (not a TransformerLens module)."""

    def forward(self, x):
        return x * 0.5


def _assert_auto_runs_on(model, engine):
    """backend="auto" gives exactly what ``engine`` gives: tokens and activations."""
    auto = generate(model, PROMPTS, max_new_tokens=8, backend="auto")
    assert (
        auto.response_tokens
        == generate(model, PROMPTS, max_new_tokens=8, backend=engine).response_tokens
    )
    a = collect_activations(model, PROMPTS, RESPONSES, backend="auto")
    b = collect_activations(model, PROMPTS, RESPONSES, backend=engine)
    assert all(torch.equal(a.variant(v), b.variant(v)) for v in VARIANTS)


def test_auto_takes_hf_exactly_when_it_is_exact(tiny_llama):
    from personalens.engines.hf import auto_backend_blockers, resolve_backend

    vec = _vec(tiny_llama)
    assert auto_backend_blockers(tiny_llama) == []
    assert resolve_backend(tiny_llama, "auto") == "hf"
    assert resolve_backend(tiny_llama, "tl") == "tl"
    with steer(tiny_llama, vec, coeff=2.0, layers=[1], positions="all"):
        assert resolve_backend(tiny_llama, "auto") == "hf"  # personalens steering maps exactly
        _assert_auto_runs_on(tiny_llama, "hf")
    user = [(hook_name(1), lambda resid, hook: resid * 2)]
    with tiny_llama.hooks(fwd_hooks=user):  # a user's own hook: only TransformerLens runs it
        assert resolve_backend(tiny_llama, "auto") == "tl"
        assert "not personalens steering" in auto_backend_blockers(tiny_llama)[0]
        _assert_auto_runs_on(tiny_llama, "tl")
        with pytest.raises(PersonaLensError, match="'auto' chose 'tl'.*not personalens steering"):
            generate(tiny_llama, PROMPTS[:1], max_new_tokens=2, backend="auto", compile=True)


def test_auto_falls_back_to_tl_for_spliced_modules_and_unmapped_models(tokenizer):
    from personalens.engines.hf import auto_backend_blockers, resolve_backend

    model = make_tiny_llama(tokenizer)
    original = model.blocks[1].hook_resid_post
    model.blocks[1].hook_resid_post = _SplicedFeature()  # how sae-lens splices an SAE in
    try:
        (why,) = auto_backend_blockers(model)
        assert "did not build" in why and "_SplicedFeature" in why
        assert resolve_backend(model, "auto") == "tl"
        _assert_auto_runs_on(model, "tl")  # the splice is honoured
    finally:
        model.blocks[1].hook_resid_post = original
    assert resolve_backend(model, "auto") == "hf"

    gpt2ish = _gpt2ish(tokenizer)
    assert resolve_backend(gpt2ish, "auto") == "tl"
    assert auto_backend_blockers(gpt2ish)[0].startswith("lacks ")
    _assert_auto_runs_on(gpt2ish, "tl")
