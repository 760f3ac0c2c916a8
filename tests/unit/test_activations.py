import pytest
import torch

from personalens.conventions import hook_name
from personalens.errors import PersonaLensError
from personalens.model.activations import VARIANTS, collect_activations
from personalens.model.chat import tokenize_pairs

PROMPTS = ["hi", "a longer question about many things", "q3"]
RESPONSES = ["hello there friend", "no", "a fairly long answer with words"]


def _reference(model, prompts, responses):
    """Naive: one full cache per sample, then means."""
    out = {v: [] for v in VARIANTS}
    for p, r in zip(prompts, responses):
        batch = tokenize_pairs(model.tokenizer, [p], [r])
        with torch.no_grad():
            _, cache = model.run_with_cache(batch.tokens)
        resid = torch.stack(
            [cache[hook_name(L)][0] for L in range(model.cfg.n_layers)]
        )  # [L, pos, d]
        pm, rm = batch.prompt_mask[0].clone(), batch.response_mask[0]
        pm[0] = False  # first token excluded
        out["response_avg"].append(resid[:, rm].mean(1))
        out["prompt_avg"].append(resid[:, pm].mean(1))
        out["last_prompt_token"].append(resid[:, int(batch.last_prompt_index[0])])
    return {v: torch.stack(x) for v, x in out.items()}


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_matches_naive_full_cache(tiny_model, batch_size):
    acts = collect_activations(tiny_model, PROMPTS, RESPONSES, batch_size=batch_size)
    ref = _reference(tiny_model, PROMPTS, RESPONSES)
    assert len(acts) == 3
    for v in VARIANTS:
        assert acts.variant(v).shape == (3, tiny_model.cfg.n_layers, tiny_model.cfg.d_model)
        torch.testing.assert_close(acts.variant(v), ref[v], rtol=1e-4, atol=1e-4)


def test_layer_subset_and_hooks_cleaned(tiny_model):
    acts = collect_activations(tiny_model, PROMPTS, RESPONSES, layers=[-1, 0])
    full = collect_activations(tiny_model, PROMPTS, RESPONSES)
    assert acts.layers == (2, 0)
    torch.testing.assert_close(acts.response_avg[:, 0], full.response_avg[:, 2])
    assert all(len(hp.fwd_hooks) == 0 for hp in tiny_model.hook_dict.values())


def test_errors(tiny_model):
    with pytest.raises(PersonaLensError, match="2 prompts but 1 responses"):
        collect_activations(tiny_model, ["a", "b"], ["x"])
    with pytest.raises(PersonaLensError, match="empty response"):
        collect_activations(tiny_model, ["a"], [""])
    with pytest.raises(ValueError, match="unknown layer 7"):
        collect_activations(tiny_model, ["a"], ["x"], layers=[7])
