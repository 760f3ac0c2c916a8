import pytest
import torch

from personalens.errors import PersonaLensError
from personalens.model.chat import (
    as_conversation,
    build_messages,
    encode_chat,
    format_chat,
    stop_token_ids,
    tokenize_pairs,
    tokenize_prompts,
)


def test_format_uses_the_models_template(tokenizer):
    msgs = build_messages("Hi", system="Be kind.")
    text = format_chat(tokenizer, msgs)
    assert (
        text
        == "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_multi_turn(tokenizer):
    msgs = build_messages(
        "And then?",
        system="S",
        history=[{"role": "user", "content": "A"}, {"role": "assistant", "content": "B"}],
    )
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert format_chat(tokenizer, msgs).count("<|im_start|>") == 5


def test_special_tokens_are_single_ids(tokenizer):
    ids = encode_chat(tokenizer, build_messages("x"))
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")


def test_left_padding_and_masks(tokenizer):
    prompts = ["short", "a much longer question here"]
    responses = ["ok", "yes indeed"]
    batch = tokenize_pairs(tokenizer, prompts, responses, system="sys")
    n, width = batch.tokens.shape
    assert n == 2
    # padding on the left only, and in no mask
    assert bool(batch.attention_mask[:, -1].all())
    assert not bool((batch.prompt_mask & batch.response_mask).any())
    assert torch.equal(batch.attention_mask, batch.prompt_mask | batch.response_mask)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        p_ids = encode_chat(tokenizer, as_conversation(p, "sys"))
        r_ids = tokenizer.encode(r, add_special_tokens=False)
        row = batch.tokens[i][batch.attention_mask[i]].tolist()
        assert row == p_ids + r_ids  # exact seam: prompt then response tokens
        assert batch.tokens[i][batch.response_mask[i]].tolist() == r_ids
        assert int(batch.response_mask[i].sum()) == len(r_ids)
        # the last prompt token sits right before the first response token
        first_resp = int(batch.response_mask[i].float().argmax())
        assert int(batch.last_prompt_index[i]) == first_resp - 1
        # padding only before the row starts
        start = width - len(p_ids) - len(r_ids)
        assert not bool(batch.attention_mask[i, :start].any())


def test_prompts_only(tokenizer):
    batch = tokenize_prompts(tokenizer, ["a", "bbbb"])
    assert not bool(batch.response_mask.any())
    assert torch.equal(batch.last_prompt_index, torch.full((2,), batch.tokens.shape[1] - 1))


def test_token_id_responses_are_kept_verbatim(tokenizer):
    batch = tokenize_pairs(tokenizer, ["q"], [[5, 6, 7]])
    assert batch.tokens[0, -3:].tolist() == [5, 6, 7]


def test_errors(tokenizer):
    with pytest.raises(PersonaLensError, match="2 prompts but 1 responses"):
        tokenize_pairs(tokenizer, ["a", "b"], ["x"])
    with pytest.raises(PersonaLensError, match="malformed"):
        as_conversation([{"role": "robot", "content": "hi"}])
    with pytest.raises(PersonaLensError, match="already has a system message"):
        as_conversation(build_messages("u", system="s"), system="t")
    with pytest.raises(PersonaLensError, match="empty batch"):
        tokenize_prompts(tokenizer, [])


def test_stop_tokens(tokenizer):
    ids = stop_token_ids(tokenizer)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in ids
    assert tokenizer.convert_tokens_to_ids("<|endoftext|>") in ids
