import pytest
import torch

from personalens.model.chat import encode_chat, tokenize_prompts
from personalens.model.generation import GenerationConfig, generate

PROMPTS = ["Hello there", "What is two plus two, exactly?", "x", "Tell me a story about a cat."]


def _naive_greedy(model, prompt, max_new_tokens, stops):
    """Reference: no KV cache, no batching, full recompute each step."""
    ids = encode_chat(model.tokenizer, [{"role": "user", "content": prompt}])
    out = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(torch.tensor([ids + out]))
            nxt = int(logits[0, -1].argmax())
            if nxt in stops:
                break
            out.append(nxt)
    return out


def test_batched_equals_one_at_a_time_and_no_cache(tiny_model):
    res = generate(tiny_model, PROMPTS, max_new_tokens=12, batch_size=4)
    stops = set(res.config.stop_token_ids or []) or {
        tiny_model.tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")
    }
    for i, p in enumerate(PROMPTS):
        single = generate(tiny_model, [p], max_new_tokens=12, batch_size=1)
        assert single.response_tokens[0] == res.response_tokens[i]
        assert res.response_tokens[i] == _naive_greedy(tiny_model, p, 12, stops)


def test_shapes_and_order(tiny_model):
    res = generate(tiny_model, PROMPTS[:2], max_new_tokens=5, n=3, temperature=1.0, batch_size=4)
    assert len(res) == 6
    assert res.prompt_index == [0, 0, 0, 1, 1, 1]
    assert res.sample_index == [0, 1, 2, 0, 1, 2]
    assert all(len(t) <= 5 for t in res.response_tokens)
    assert set(res.finish_reasons) <= {"stop", "length"}
    frame = res.to_frame()
    assert list(frame["prompt_index"]) == res.prompt_index
    assert len(frame) == 6


def test_sampling_is_seeded_per_sample(tiny_model):
    kw = dict(max_new_tokens=8, n=3, temperature=1.0, top_p=0.9)
    a = generate(tiny_model, PROMPTS, batch_size=5, **kw)
    b = generate(tiny_model, list(reversed(PROMPTS)), batch_size=2, **kw)
    assert a.response_tokens == [
        t
        for p in range(len(PROMPTS))
        for t in b.response_tokens[(len(PROMPTS) - 1 - p) * 3 : (len(PROMPTS) - p) * 3]
    ]
    c = generate(tiny_model, PROMPTS, batch_size=5, seed=1, **{k: v for k, v in kw.items()})
    assert c.response_tokens != a.response_tokens
    # different sample indices of one prompt differ (with overwhelming probability)
    assert len({tuple(t) for t in a.response_tokens[:3]}) > 1


def test_stop_on_end_of_turn(tiny_model):
    res = generate(tiny_model, PROMPTS, max_new_tokens=20)
    im_end = tiny_model.tokenizer.convert_tokens_to_ids("<|im_end|>")
    forced = generate(
        tiny_model, PROMPTS, max_new_tokens=20, stop_token_ids=(res.response_tokens[0][0],)
    )
    assert forced.response_tokens[0] == [] and forced.finish_reasons[0] == "stop"
    for toks, why in zip(res.response_tokens, res.finish_reasons):
        assert im_end not in toks
        assert why == "stop" or len(toks) == 20


def test_hooks_apply_during_generation(tiny_model):
    """Hooks on the residual stream act on prefill and on every decode step."""
    seen = []

    def record(resid, hook):
        seen.append(resid.shape[1])
        return resid

    with tiny_model.hooks(fwd_hooks=[("blocks.1.hook_resid_post", record)]):
        res = generate(tiny_model, ["hi"], max_new_tokens=4, stop_token_ids=(-1,))
    prompt_len = len(res.prompt_tokens[0])
    assert seen == [prompt_len, 1, 1, 1]
    assert len(tiny_model.hook_dict["blocks.1.hook_resid_post"].fwd_hooks) == 0

    def push(resid, hook):
        return resid + 50.0 * torch.ones_like(resid)

    base = generate(tiny_model, PROMPTS, max_new_tokens=6)
    with tiny_model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", push)]):
        pushed = generate(tiny_model, PROMPTS, max_new_tokens=6)
    assert pushed.response_tokens != base.response_tokens


def test_padding_is_masked(tiny_model):
    """A short prompt's logits are the same alone and left-padded next to a long one."""
    tok = tiny_model.tokenizer
    batch = tokenize_prompts(tok, ["a", "a much longer prompt than the first one"])
    alone = tokenize_prompts(tok, ["a"])
    with torch.no_grad():
        padded = tiny_model(batch.tokens, attention_mask=batch.attention_mask.long())[0, -1]
        single = tiny_model(alone.tokens)[0, -1]
    torch.testing.assert_close(padded, single, rtol=1e-4, atol=1e-4)


def test_config_validation():
    with pytest.raises(ValueError, match="temperature"):
        GenerationConfig(temperature=-1.0)
    with pytest.raises(ValueError, match="top_p"):
        GenerationConfig(top_p=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationConfig(max_new_tokens=0)


def test_generate_samples_matches_generate(tiny_model):
    from personalens.model.chat import as_conversation
    from personalens.model.generation import generate_samples

    kw = dict(max_new_tokens=6, temperature=1.0)
    full = generate(tiny_model, PROMPTS[:2], n=3, **kw)
    convs = [as_conversation(PROMPTS[1]), as_conversation(PROMPTS[0]), as_conversation(PROMPTS[1])]
    some = generate_samples(tiny_model, convs, [2, 1, 0], GenerationConfig(**kw))
    assert some.response_tokens == [
        full.response_tokens[5],
        full.response_tokens[1],
        full.response_tokens[3],
    ]
