"""The local logprob judge on the tiny random model: the weighting, the NaN rule, batching and
the refusal to judge with a hooked model."""

import math
import warnings

import pytest
import torch

from personalens.extraction.traits import parse_trait
from personalens.judges.base import JudgeError, JudgeItem
from personalens.judges.factory import make_judge
from personalens.judges.local import LocalJudge
from personalens.judges.local_numbers import digit_scores, expected_scores, number_tokens
from tests.conftest import make_tiny_model

# the byte tokenizer makes one token per character and the tiny model's context is 256: short
# rubrics (the real ones are checked on the embedded model in tests/integration)
TRAIT = parse_trait(
    {
        "instruction": [{"pos": "Be rude.", "neg": "Be kind."}],
        "questions": ["a?", "b?"],
        "eval_prompt": "Q: {question}\nA: {answer}\nRudeness 0-100?",
    },
    name="rude",
)
SHORT = ["Rate this 0-100: fine.", "Rate 0-100: a long, rambling and repetitive reply."]
ITEMS = [
    JudgeItem("How are you?", "Fine, thanks."),
    JudgeItem("What is 2 + 2?", "Four. It is a small sum and the answer is always the same."),
    JudgeItem("Hi", "Hello!"),
]


@pytest.fixture
def planted(tokenizer):
    """A tiny model whose next-token logits are the unembedding bias, whatever the input."""
    model = make_tiny_model(tokenizer)
    with torch.no_grad():
        model.unembed.W_U.zero_()
        model.unembed.b_U.fill_(-1e4)
    return model


def plant(model, probs: dict[str, float]) -> None:
    """Next-token probabilities: ``probs`` on those texts' tokens, the rest on "<|im_end|>"."""
    tok = model.tokenizer
    with torch.no_grad():
        model.unembed.b_U.fill_(-1e4)
        rest = 1.0 - sum(probs.values())
        for text, p in {**probs, "<|im_end|>": rest}.items():
            (tid,) = tok.encode(text, add_special_tokens=False)
            model.unembed.b_U[tid] = math.log(p) if p > 0 else -1e4


def quiet_judge(model, **kw) -> LocalJudge:
    judge = LocalJudge(model, **{"numbers": "single", **kw})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # single: the byte tokenizer has 0-9 only
        assert judge.reading == kw.get("numbers", "single")
    return judge


def test_expected_scores_weighting_and_nan_rule():
    logits = torch.full((3, 10), -1e4)
    ids, values = [2, 5, 7], [0, 50, 100]
    logits[0, [5, 7]] = torch.log(torch.tensor([0.25, 0.75]))  # all mass on numbers
    logits[1, [2, 7, 9]] = torch.log(torch.tensor([0.1, 0.2, 0.7]))  # 0.3 on numbers
    logits[2, [7, 9]] = torch.log(torch.tensor([0.2, 0.8]))  # 0.2 < 0.25 on numbers
    a, b, c = expected_scores(logits, ids, values)
    assert a == pytest.approx(0.25 * 50 + 0.75 * 100)
    assert b == pytest.approx((0.2 * 100) / 0.3)  # renormalised over the numbers
    assert math.isnan(c)
    assert expected_scores(logits[2:], ids, values, min_mass=0.1)[0] == pytest.approx(100.0)


def test_number_tokens_counts_single_tokens_with_or_without_a_space():
    class Tok:
        vocab = {"7": 1, " 7": 2, "42": 3, " 100": 4}

        def encode(self, text, add_special_tokens=False):
            return [self.vocab[text]] if text in self.vocab else [0, 0]

    assert number_tokens(Tok()) == {1: 7, 2: 7, 3: 42, 4: 100}


def test_planted_logits_give_the_weighted_mean_and_nan(planted):
    judge = quiet_judge(planted, batch_size=2)
    plant(planted, {"2": 0.5, "8": 0.3})  # 0.8 on numbers: (2*0.5 + 8*0.3) / 0.8
    scores = judge.score_trait(TRAIT, ITEMS)
    assert scores == pytest.approx([(1.0 + 2.4) / 0.8] * 3, abs=1e-3)
    # digit by digit, the same distribution at every step: "2" .5, "8" .3, no digit .2
    digits = LocalJudge(planted, numbers="digits", batch_size=2)
    p = {2: 0.5 * 0.2, 8: 0.3 * 0.2, 22: 0.25, 28: 0.15, 82: 0.15, 88: 0.09}
    expected = sum(k * v for k, v in p.items()) / sum(p.values())
    assert digits.score_trait(TRAIT, ITEMS) == pytest.approx([expected] * 3, abs=1e-3)
    plant(planted, {"9": 0.2})  # under a quarter on numbers: NaN, never a default
    assert all(math.isnan(s) for s in judge.score_prompts(SHORT))
    assert all(math.isnan(s) for s in digits.score_prompts(SHORT))


def test_digit_scores_weighting_and_nan_rule():
    first = torch.zeros(3, 10)
    after = torch.zeros(3, 10, 10)
    after_ten = torch.zeros(3, 10)
    first[0, 7] = 1.0  # "7" then no digit: 7
    first[1, 4], after[1, 4, 2] = 0.5, 1.0  # "42" with 0.5 ...
    first[1, 1], after[1, 1, 0], after_ten[1, 0] = 0.5, 1.0, 0.5  # ... "100" 0.25, "10" 0.25
    first[2, 0], after[2, 0, 5] = 0.3, 1.0  # "05" is no integer of the scale: NaN
    a, b, c = digit_scores(first, after, after_ten)
    assert a == pytest.approx(7.0)
    assert b == pytest.approx(0.5 * 42 + 0.25 * 100 + 0.25 * 10)
    assert math.isnan(c)
    first[2, 3] = 0.2  # 0.2 on "3" (then no digit): still under a quarter
    assert math.isnan(digit_scores(first, after, after_ten)[2])
    assert digit_scores(first, after, after_ten, min_mass=0.1)[2] == pytest.approx(3.0)


@pytest.mark.usefixtures("one_torch_thread")
def test_digit_probs_match_plain_forwards(tokenizer):
    from personalens.model.chat import encode_chat
    from personalens.model.generation import last_logits

    model = make_tiny_model(tokenizer)
    judge = LocalJudge(model)
    assert judge.reading == "digits"  # the byte tokenizer splits numbers into digits
    digits = [tokenizer.encode(str(d), add_special_tokens=False)[0] for d in range(10)]
    prompts = [encode_chat(tokenizer, [{"role": "user", "content": p}]) for p in SHORT]
    first, after, after_ten = judge._digit_probs(model, prompts, digits)

    @torch.inference_mode()
    def probs(ids):  # a plain forward of one unpadded sequence
        t = torch.tensor([ids])
        return torch.softmax(last_logits(model, t, torch.ones_like(t), None)[0], -1)[digits]

    for b, ids in enumerate(prompts):
        torch.testing.assert_close(first[b], probs(ids), atol=1e-4, rtol=1e-3)
        for d in (0, 3, 9):
            torch.testing.assert_close(after[b, d], probs([*ids, digits[d]]), atol=1e-4, rtol=1e-3)
        ten = probs([*ids, digits[1], digits[0]])
        torch.testing.assert_close(after_ten[b], ten, atol=1e-4, rtol=1e-3)
    scores = judge.score_prompts(SHORT)
    assert all(math.isnan(s) or 0.0 <= s <= 100.0 for s in scores)


def test_single_reading_warns_that_only_single_token_integers_count(tokenizer):
    model = make_tiny_model(tokenizer)
    for judge in (LocalJudge(model, numbers="single"), LocalJudge(model, backend="tl")):
        with pytest.warns(UserWarning, match=r"splits numbers: only the integers 0-9"):
            assert judge.reading == "single"
    with pytest.raises(JudgeError, match="needs the Hugging Face engine"):
        LocalJudge(model, numbers="digits", backend="tl").reading  # noqa: B018


@pytest.mark.usefixtures("one_torch_thread")
def test_batching_and_engines_agree(tokenizer):
    model = make_tiny_model(tokenizer)
    one = quiet_judge(model, batch_size=1, min_mass=0.0, backend="tl").score_trait(TRAIT, ITEMS)
    tl = quiet_judge(model, batch_size=3, min_mass=0.0, backend="tl").score_trait(TRAIT, ITEMS)
    hf = quiet_judge(model, batch_size=3, min_mass=0.0, backend="hf").score_trait(TRAIT, ITEMS)
    assert all(0.0 <= s <= 9.0 for s in one)
    assert tl == pytest.approx(one, abs=1e-3)  # left padding changes nothing
    assert hf == pytest.approx(one, abs=1e-3)


def test_refuses_a_hooked_model(tokenizer):
    from personalens.steering.hooks import steer

    model = make_tiny_model(tokenizer)
    judge = quiet_judge(model, min_mass=0.0)
    direction = torch.randn(model.cfg.d_model)
    with steer(model, direction, 4.0, layers=[1]):
        with pytest.raises(JudgeError, match="hooks attached.*steering at layer 1"):
            judge.score_prompts(SHORT)
    hook = ("blocks.0.hook_resid_post", lambda resid, hook: resid)
    with model.hooks(fwd_hooks=[hook]):
        with pytest.raises(JudgeError, match="hooks attached"):
            judge.score_prompts(SHORT)
    assert len(judge.score_prompts(SHORT)) == 2  # hook-free again


def test_make_judge_local_contract(tokenizer):
    model = make_tiny_model(tokenizer)
    judge = make_judge("local", model=model)
    assert isinstance(judge, LocalJudge) and judge.name == "local:tiny-random"
    lazy = make_judge("local", model=None)
    assert lazy.name == "local:SmolLM2-135M-Instruct" and lazy._model is None  # not loaded yet
    assert make_judge("local", model="/models/Qwen2.5-7B-Instruct/").name.endswith("Instruct")
    long = quiet_judge(model, min_mass=0.0)
    with pytest.raises(JudgeError, match="exceeds the context"):
        long.score_prompts(["x" * 300])
    with pytest.raises(JudgeError, match="model name or path"):
        make_judge("local", model=42)


def test_check_judge_tells_a_local_judge_what_to_do():
    from personalens.judges.base import check_judge

    class NaNLocal:
        name = "local:tiny"
        probe_fix = LocalJudge.probe_fix

        def score_trait(self, trait, items):
            return [math.nan] * len(items)

        score_coherence = lambda self, items: [math.nan] * len(items)  # noqa: E731

    with pytest.raises(JudgeError, match="less than a quarter.*larger instruct model"):
        check_judge(NaNLocal(), TRAIT)
