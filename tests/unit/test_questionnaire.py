"""Questionnaires: file format, scoring arithmetic, NaN handling, steering, CLI."""

import copy
import json
import math
import re

import numpy as np
import pytest
import torch

import personalens as pl
from personalens.cli.main import main
from personalens.studies.personality import likelihood as qlik
from personalens.studies.personality import likert as qlikert
from personalens.studies.personality import questionnaire as qmod
from personalens.studies.personality import questionnaire_file as qfile
from personalens.studies.personality.likert import (
    answer_distribution,
    answer_token_ids,
    expected_scores,
    parse_answer,
)
from personalens.studies.personality.questionnaire import score_questionnaire
from personalens.studies.personality.questionnaire_file import (
    LikertScale,
    QuestionnaireFileError,
    list_questionnaires,
    load_questionnaire,
    parse_questionnaire,
)
from personalens.vectors.vector import PersonaVector

BIG_FIVE = ["openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism"]

# short enough for the tiny models' contexts (byte-level tokenizer: one token per character)
SMALL = {
    "name": "small",
    "dimensions": ["warmth", "calm"],
    "scale": {"values": [1, 2, 3, 4, 5], "labels": ["no", "-", "?", "+", "yes"]},
    "prompt_template": "{item} {min}-{max}?",
    "items": [
        {"id": "w1", "text": "I am kind.", "dimension": "warmth", "reverse": False},
        {"id": "w2", "text": "I am cold.", "dimension": "warmth", "reverse": True},
        {"id": "w3", "text": "I help.", "dimension": "warmth", "reverse": False},
        {"id": "c1", "text": "I am calm.", "dimension": "calm", "reverse": False},
        {"id": "c2", "text": "I panic.", "dimension": "calm", "reverse": True},
    ],
}


def small(**changes):
    data = copy.deepcopy(SMALL)
    data.update(changes)
    return data


# ----------------------------------------------------------------------------- the shipped file


def test_shipped_big_five_validates_with_balanced_keying():
    assert "big_five" in list_questionnaires()
    q = load_questionnaire("big_five")
    assert list(q.dimensions) == BIG_FIVE
    assert q.scale.values == (1, 2, 3, 4, 5)
    assert q.scale.answers == ("1", "2", "3", "4", "5")
    for dim in BIG_FIVE:
        items = q.items_for(dim)
        assert len(items) >= 8
        n_rev = sum(it.reverse for it in items)
        assert n_rev * 2 == len(items), (dim, n_rev, len(items))
        assert all(
            re.search(r"\b(I|me|my)\b", it.text, re.IGNORECASE) for it in items
        )  # first person
    assert "not a validated" in q.license.lower() or "not a validated" in q.description.lower()
    assert "BFI" in q.license
    prompt = q.prompt(q.items[0])
    assert q.items[0].text in prompt and "5 = strongly agree" in prompt and "1 to 5" in prompt
    # round trip through to_dict
    assert parse_questionnaire(q.to_dict()).items == q.items


def test_load_by_path_and_unknown_name(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(SMALL))
    q = load_questionnaire(path)
    assert q.name == "small" and len(q) == 5 and q.source == str(path)
    assert load_questionnaire(q) is q
    with pytest.raises(QuestionnaireFileError, match="unknown questionnaire 'nope'.*big_five"):
        load_questionnaire("nope")
    with pytest.raises(QuestionnaireFileError, match="does not exist"):
        load_questionnaire(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(QuestionnaireFileError, match="not valid JSON"):
        load_questionnaire(bad)


def _item(i, **kw):
    return {**copy.deepcopy(SMALL["items"][i]), **kw}


@pytest.mark.parametrize(
    "data, message",
    [
        ([1, 2], "must hold a JSON object"),
        ({k: v for k, v in SMALL.items() if k != "items"}, "key 'items' is missing"),
        ({k: v for k, v in SMALL.items() if k != "scale"}, "key 'scale' is missing"),
        (small(version=2), r"unknown key\(s\) \['version'\]"),
        (small(name=" "), "key 'name' must be a non-empty string"),
        (small(dimensions=[]), "key 'dimensions' must be a non-empty list"),
        (small(dimensions=["warmth", "Calm"]), "'Calm' is not a valid name"),
        (small(dimensions=["warmth", "calm", "warmth"]), "lists .*warmth.* more than once"),
        (small(dimensions=["warmth", "calm", "grit"]), r"\['grit'\] have no items"),
        (small(items=[*SMALL["items"], _item(0, dimension="warmt", id="x", text="New.")]), "'warmt' is not a declared dimension"),
        (small(items=[*SMALL["items"], _item(1, text="Other.")]), "'w2' duplicates the id of items\\[1\\]"),
        (small(items=[*SMALL["items"], _item(0, id="w9")]), "repeats the text of item 'w1'"),
        (small(items=[_item(0, reverse="yes"), *SMALL["items"][1:]]), "reverse' must be true or false"),
        (small(items=[{"id": "a", "text": "x", "dimension": "calm"}]), r"is missing \['reverse'\]"),
        (small(items=[_item(0, reversed=True), *SMALL["items"][1:]]), r"unknown key\(s\) \['reversed'\]"),
        (small(items=[]), "key 'items' must be a non-empty list"),
        (small(items=["I am kind."]), "items\\[0\\]' must be an object"),
        (small(scale={"values": [1, 2, 3], "labels": ["a", "b"]}), "scale.labels' must be a list of 3"),
        (small(scale={"values": [1, 3, 2], "labels": list("abc")}), "strictly increasing"),
        (small(scale={"values": [1, 2, 5], "labels": list("abc")}), "not symmetric"),
        (small(scale={"values": [1], "labels": ["a"]}), "at least 2 integers"),
        (small(scale={"values": [1.0, 2.0], "labels": list("ab")}), "at least 2 integers"),
        (small(scale={"values": [1, 2], "labels": ["a", ""]}), r"scale.labels\[1\]' must be a non-empty"),
        (small(scale={"values": [1, 2], "labels": list("ab"), "answers": ["x", "x"]}), "has duplicates"),
        (small(scale={"values": [1, 2], "labels": list("ab"), "answers": [" 1", "2"]}), "surrounding whitespace"),
        (small(scale={"values": [1, 2], "labels": list("ab"), "points": 2}), "unknown key"),
        (small(prompt_template="Rate yourself {min}-{max}."), r"no \{item\} placeholder"),
        (small(prompt_template="{item} {statement}"), r"unknown placeholder\(s\) \{statement\}"),
        (small(prompt_template="{item"), "not a valid format string"),
        (small(judge_prompt="Rate {item}."), r"no \{answer\} placeholder"),
        (small(license=3), "key 'license' must be a string"),
    ],
)  # fmt: skip
def test_loader_errors_name_the_problem(data, message):
    with pytest.raises(QuestionnaireFileError, match=message) as info:
        parse_questionnaire(data, source="q.json")
    assert isinstance(info.value, pl.PersonaLensError)
    if isinstance(data, dict):
        assert "q.json" in str(info.value)


def test_default_answers_and_optional_keys():
    q = parse_questionnaire(small(description="d", license="ours", judge_prompt="{item}|{answer}"))
    assert q.scale.answers == ("1", "2", "3", "4", "5")
    assert q.description == "d" and q.license == "ours" and q.judge_prompt == "{item}|{answer}"
    assert q.prompt("I am kind.") == "I am kind. 1-5?"
    assert q.scale.render().splitlines()[0] == "1 = no"
    with pytest.raises(pl.PersonaLensError, match="no dimension 'grit'"):
        q.items_for("grit")


# ----------------------------------------------------------------------------- arithmetic


def test_reverse_keying():
    scale = LikertScale((1, 2, 3, 4, 5), tuple("abcde"), tuple("12345"))
    assert scale.reverse(1) == 5 and scale.reverse(5) == 1 and scale.reverse(3) == 3
    assert scale.reverse(2.25) == pytest.approx(3.75)
    assert math.isnan(scale.reverse(math.nan))
    seven = LikertScale((-3, -2, -1, 0, 1, 2, 3), tuple("abcdefg"), tuple("abcdefg"))
    assert seven.reverse(-3) == 3 and seven.reverse(0.5) == -0.5


def _fake_logits(vocab: int, token_probs: dict[int, float], zero=()) -> torch.Tensor:
    """Log-probabilities: the given tokens get their probability, tokens in ``zero`` none, and
    the others share what is left."""
    rest = 1.0 - sum(token_probs.values())
    others = vocab - len(token_probs) - len(set(zero) - set(token_probs))
    p = torch.full((vocab,), rest / others, dtype=torch.float64)
    for t in zero:
        p[t] = 0.0
    for t, v in token_probs.items():
        p[t] = v
    return p.log().float()


def test_answer_distribution_and_expected_score():
    ids = [[10], [11], [12, 20], [13], [14]]  # point 3 has two tokens ("3" and " 3")
    answers = [10, 11, 12, 13, 14, 20]
    logits = torch.stack(
        [
            _fake_logits(30, {13: 0.6, 14: 0.2}, answers),  # mass 0.8 -> p4 0.75, p5 0.25
            _fake_logits(30, {12: 0.1, 20: 0.1, 10: 0.2}, answers),  # 3 via two tokens; 1
            _fake_logits(30, {}),  # uniform: mass 6/30
        ]
    )
    probs, mass = answer_distribution(logits, ids)
    assert mass[0].item() == pytest.approx(0.8, abs=1e-6)
    assert probs[0].tolist() == pytest.approx([0, 0, 0, 0.75, 0.25], abs=1e-6)
    assert mass[1].item() == pytest.approx(0.4, abs=1e-6)
    assert probs[1].tolist() == pytest.approx([0.5, 0, 0.5, 0, 0], abs=1e-6)
    assert mass[2].item() == pytest.approx(6 / 30, abs=1e-6)
    scores = expected_scores(probs, [1, 2, 3, 4, 5])
    assert scores.tolist() == pytest.approx([4.25, 2.0, (1 + 2 + 3 + 3 + 4 + 5) / 6], abs=1e-6)
    # underflow to zero mass gives NaN, not a number
    dead = torch.full((1, 30), -1e4)
    dead[0, 0] = 0.0
    probs, mass = answer_distribution(dead, ids)
    assert mass.item() == 0.0 and math.isnan(expected_scores(probs, [1, 2, 3, 4, 5]).item())


def test_logprob_scoring_on_a_controlled_distribution(tiny_model, monkeypatch):
    """Fake next-token logits per item; check raw/keyed scores, mass and dimension stats."""
    q = parse_questionnaire(SMALL)
    tok = tiny_model.tokenizer
    digit = {v: tok.encode(str(v), add_special_tokens=False)[0] for v in range(1, 6)}
    vocab = tiny_model.cfg.d_vocab
    wanted = {  # item text -> token probabilities
        "I am kind.": {digit[4]: 0.6, digit[5]: 0.2},  # 4.25, mass .8
        "I am cold.": {digit[1]: 0.9},  # raw 1 -> keyed 5, mass .9
        "I help.": {digit[2]: 0.05, digit[3]: 0.05},  # 2.5, mass .1 (low)
        "I am calm.": {digit[5]: 1.0 - 1e-9},  # 5
        "I panic.": {digit[2]: 0.3, digit[4]: 0.3},  # raw 3 -> keyed 3
    }

    def fake(model, batch):
        rows = []
        for row in batch.tokens:
            text = tok.decode(row[row != tok.pad_token_id].tolist())
            hit = [t for t in wanted if t in text]
            assert len(hit) == 1, text
            rows.append(_fake_logits(vocab, wanted[hit[0]], zero=digit.values()))
        return torch.stack(rows)

    monkeypatch.setattr(qlikert, "_next_token_logits", fake)
    res = score_questionnaire(tiny_model, q, batch_size=2)
    df = res.to_frame().set_index("id")
    assert df.loc["w1", "raw_score"] == pytest.approx(4.25, abs=1e-5)
    assert df.loc["w1", "scale_mass"] == pytest.approx(0.8, abs=1e-5)
    assert df.loc["w1", ["p_1", "p_2", "p_3", "p_4", "p_5"]].tolist() == pytest.approx(
        [0, 0, 0, 0.75, 0.25], abs=1e-5
    )
    assert df.loc["w2", "raw_score"] == pytest.approx(1.0, abs=1e-5)
    assert df.loc["w2", "score"] == pytest.approx(5.0, abs=1e-5)  # reverse keyed
    assert df.loc["w3", "score"] == pytest.approx(2.5, abs=1e-5)
    assert df.loc["c2", "raw_score"] == pytest.approx(3.0, abs=1e-5)
    assert df.loc["c2", "score"] == pytest.approx(3.0, abs=1e-5)
    assert (df["status"] == "ok").all()

    dims = res.dimensions().set_index("dimension")
    warm = np.array([4.25, 5.0, 2.5])
    assert dims.loc["warmth", "mean"] == pytest.approx(warm.mean(), abs=1e-5)
    assert dims.loc["warmth", "std"] == pytest.approx(warm.std(ddof=1), abs=1e-5)
    assert dims.loc["warmth", "sem"] == pytest.approx(warm.std(ddof=1) / np.sqrt(3), abs=1e-5)
    assert dims.loc["warmth", "scale_mass"] == pytest.approx((0.8 + 0.9 + 0.1) / 3, abs=1e-5)
    assert dims.loc["warmth", "min_scale_mass"] == pytest.approx(0.1, abs=1e-5)
    assert dims.loc["warmth", "n_low_mass"] == 1 and dims.loc["calm", "n_low_mass"] == 0
    assert dims.loc["calm", "mean"] == pytest.approx(4.0, abs=1e-5)
    assert dims.loc["warmth", "mean_forward"] == pytest.approx((4.25 + 2.5) / 2, abs=1e-5)
    assert dims.loc["warmth", "mean_reverse"] == pytest.approx(5.0, abs=1e-5)
    assert res.summary() == pytest.approx({"warmth": warm.mean(), "calm": 4.0}, abs=1e-5)

    # min_mass: the low-mass item becomes NaN and is counted, not defaulted
    strict = score_questionnaire(tiny_model, q, min_mass=0.5)
    sdf = strict.to_frame().set_index("id")
    assert math.isnan(sdf.loc["w3", "score"]) and sdf.loc["w3", "status"] == "low_mass"
    sdims = strict.dimensions().set_index("dimension")
    assert sdims.loc["warmth", "n_nan"] == 1 and sdims.loc["warmth", "n_scored"] == 2
    assert sdims.loc["warmth", "mean"] == pytest.approx((4.25 + 5.0) / 2, abs=1e-5)
    d = strict.to_dict()
    json.dumps(d, allow_nan=False)  # NaN -> None, valid JSON
    assert d["items"][2]["score"] is None and d["dimensions"]["warmth"]["n_nan"] == 1


# ----------------------------------------------------------------------------- answer tokens


class _Tok:
    def __init__(self, table):
        self.table = table

    def encode(self, text, add_special_tokens=False):
        return self.table[text]


def test_answer_token_ids_with_and_without_space(tokenizer):
    scale = parse_questionnaire(SMALL).scale
    ids = answer_token_ids(tokenizer, scale)  # byte-level: "1" one token, " 1" two
    assert [len(x) for x in ids] == [1] * 5
    assert [tokenizer.decode(x) for x in ids] == list("12345")
    two = LikertScale((1, 2), ("a", "b"), ("1", "2"))
    table = {"1": [5], " 1": [7], "2": [6], " 2": [1, 6]}
    assert answer_token_ids(_Tok(table), two) == [[5, 7], [6]]
    with pytest.raises(pl.PersonaLensError, match="'2' is not a single token.*method='generate'"):
        answer_token_ids(_Tok({"1": [5], " 1": [5], "2": [6, 7], " 2": [1, 6]}), two)
    with pytest.raises(pl.PersonaLensError, match="share token 5"):
        answer_token_ids(_Tok({"1": [5], " 1": [9], "2": [8], " 2": [5]}), two)


def test_multi_token_answers_fail_before_any_forward(tiny_model):
    q = parse_questionnaire(
        small(scale={"values": [1, 2], "labels": ["no", "yes"], "answers": ["no", "yes"]})
    )
    with pytest.raises(pl.PersonaLensError, match="not a single token"):
        score_questionnaire(tiny_model, q)


# ----------------------------------------------------------------------------- parsing / NaN


@pytest.mark.parametrize(
    "text, value",
    [
        ("4", 4), (" 4\n", 4), ("4.", 4), ("4. I agree", 4), ("**4** - agree", 4),
        ('"2"', 2), ("(5)", 5), ("Rating: 2", 2), ("answer: 3", 3), ("Score = 1", 1),
        ("4/5", 4), ("5 = strongly agree", 5),
        ("I would say 4", None), ("10", None), ("3.5", None), ("4th", None), ("six", None),
        ("", None), ("four", None), ("Sure! 3", None), ("0", None), ("6", None),
    ],
)  # fmt: skip
def test_parse_answer_is_strict(text, value):
    scale = parse_questionnaire(SMALL).scale
    got = parse_answer(text, scale)
    if value is None:
        assert math.isnan(got)
    else:
        assert got == value


def test_parse_answer_with_word_answers():
    scale = LikertScale((1, 2, 3), ("no", "maybe", "yes"), ("no", "maybe", "yes"))
    assert parse_answer("Yes, definitely", scale) == 3
    assert parse_answer("maybe.", scale) == 2
    assert math.isnan(parse_answer("nothing", scale))  # "no" must not match a longer word


def test_generate_method_counts_unparseable_replies_as_nan(tiny_model, monkeypatch):
    replies = {"I am kind.": "4", "I am cold.": "Hmm, hard to say.", "I help.": "5 - yes"}
    replies |= {"I am calm.": "I think 4", "I panic.": "2"}

    def fake(model, prompts, system, batch_size, max_new_tokens):
        return [next(r for t, r in replies.items() if t in p) for p in prompts]

    monkeypatch.setattr(qmod, "_generate_replies", fake)
    res = score_questionnaire(tiny_model, parse_questionnaire(SMALL), method="generate")
    df = res.to_frame().set_index("id")
    assert df.loc["w1", "score"] == 4 and df.loc["w3", "score"] == 5
    assert df.loc["c2", "raw_score"] == 2 and df.loc["c2", "score"] == 4  # reverse keyed
    for i in ("w2", "c1"):
        assert math.isnan(df.loc[i, "raw_score"]) and math.isnan(df.loc[i, "score"])
        assert df.loc[i, "status"] == "unparsed"
    assert df.loc["w2", "response"] == "Hmm, hard to say."
    dims = res.dimensions().set_index("dimension")
    assert dims.loc["warmth", "n_nan"] == 1 and dims.loc["calm", "n_nan"] == 1
    assert dims.loc["warmth", "mean"] == 4.5  # (4 + 5) / 2: the NaN is left out, not a 3
    assert dims.loc["calm", "mean"] == 4.0 and math.isnan(dims.loc["calm", "std"])
    assert math.isnan(res.mean_scale_mass)
    all_bad = {t: "no idea" for t in replies}
    monkeypatch.setattr(
        qmod, "_generate_replies", lambda m, ps, *a: [all_bad[next(t for t in all_bad if t in p)] for p in ps]
    )  # fmt: skip
    res = score_questionnaire(tiny_model, parse_questionnaire(SMALL), method="generate")
    assert all(math.isnan(v) for v in res.summary().values())
    assert res.to_dict()["scores"] == {"warmth": None, "calm": None}


def test_generate_method_runs_on_the_tiny_model(tiny_model):
    res = score_questionnaire(
        tiny_model, parse_questionnaire(SMALL), method="generate", max_new_tokens=4
    )
    df = res.to_frame()
    assert len(df) == 5 and df["response"].map(lambda r: isinstance(r, str)).all()
    dims = res.dimensions()
    assert (dims["n_nan"] + dims["n_scored"] == dims["n_items"]).all()
    assert set(df["status"]) <= {"ok", "unparsed"}


class _FakeJudge:
    name = "fake-judge"

    def __init__(self, ratings):
        self.ratings = ratings
        self.prompts = []

    def score_prompts(self, prompts):
        self.prompts.extend(prompts)
        return [self.ratings[i] for i in range(len(prompts))]


def test_judge_method_maps_ratings_onto_the_scale(tiny_model, monkeypatch):
    monkeypatch.setattr(
        qmod, "_generate_replies", lambda m, ps, *a: [f"reply {i}" for i in range(len(ps))]
    )
    judge = _FakeJudge([100.0, 0.0, math.nan, 50.0, 25.0])
    res = score_questionnaire(tiny_model, parse_questionnaire(SMALL), method="judge", judge=judge)
    df = res.to_frame().set_index("id")
    assert df["raw_score"].tolist()[:2] == [5.0, 1.0]
    assert df.loc["w2", "score"] == 5.0  # reverse keyed
    assert math.isnan(df.loc["w3", "score"]) and df.loc["w3", "status"] == "judge_nan"
    assert df.loc["c1", "score"] == 3.0 and df.loc["c2", "raw_score"] == 2.0
    assert df.loc["c2", "score"] == 4.0
    assert res.dimensions().set_index("dimension").loc["warmth", "n_nan"] == 1
    assert "I am kind." in judge.prompts[0] and "reply 0" in judge.prompts[0]
    assert res.settings["judge"] == "fake-judge"
    with pytest.raises(pl.PersonaLensError, match="cannot rate questionnaire answers"):
        score_questionnaire(tiny_model, parse_questionnaire(SMALL), method="judge", judge=object())


def test_bad_arguments(tiny_model):
    q = parse_questionnaire(SMALL)
    with pytest.raises(pl.PersonaLensError, match="unknown method"):
        score_questionnaire(tiny_model, q, method="vibes")
    with pytest.raises(pl.PersonaLensError, match="batch_size"):
        score_questionnaire(tiny_model, q, batch_size=0)
    with pytest.raises(pl.PersonaLensError, match="steering=.* is not usable"):
        score_questionnaire(tiny_model, q, steering=3)
    with pytest.raises(pl.PersonaLensError, match="context of 256"):
        score_questionnaire(
            tiny_model, parse_questionnaire(small(prompt_template="{item}" + "x" * 300))
        )


# ----------------------------------------------------------------------------- real forward


def test_scoring_on_the_tiny_model_is_batch_invariant(tiny_model):
    q = parse_questionnaire(SMALL)
    a = score_questionnaire(tiny_model, q, batch_size=5).to_frame()
    b = score_questionnaire(tiny_model, q, batch_size=1).to_frame()
    assert np.allclose(a["score"], b["score"], atol=1e-4)
    assert np.allclose(a["scale_mass"], b["scale_mass"], rtol=1e-3)
    assert ((a["scale_mass"] > 0) & (a["scale_mass"] < 1)).all()
    assert a["score"].between(1, 5).all()
    rev = a["reverse"]
    assert np.allclose(a.loc[rev, "score"], 6 - a.loc[rev, "raw_score"])


def test_steering_coeff_zero_is_identical_and_nonzero_moves_scores(tiny_model):
    q = parse_questionnaire(SMALL)
    base = score_questionnaire(tiny_model, q, batch_size=3)
    g = torch.Generator().manual_seed(1)
    vec = PersonaVector(
        directions=torch.randn(3, 32, generator=g), model="tiny-random", trait="warm"
    )
    with pl.steer(tiny_model, vec, coeff=0.0, layers=[1]):
        zero = score_questionnaire(tiny_model, q, batch_size=3)
    assert zero.to_frame()["score"].tolist() == base.to_frame()["score"].tolist()
    assert zero.to_frame()["scale_mass"].tolist() == base.to_frame()["scale_mass"].tolist()

    def make():
        return pl.steer(tiny_model, vec, coeff=8.0, layers=[1])

    steered = score_questionnaire(tiny_model, q, steering=make, batch_size=3)
    assert steered.settings["steering"]["coeff"] == [8.0]
    assert not np.allclose(steered.to_frame()["score"], base.to_frame()["score"], atol=1e-3)
    # a batch of several rows (left padded) steers each row's last prompt token
    one = score_questionnaire(tiny_model, q, steering=make, batch_size=1)
    assert np.allclose(one.to_frame()["score"], steered.to_frame()["score"], atol=1e-4)
    # a context manager and a resolved plan give the same
    with pl.steer(tiny_model, vec, coeff=8.0, layers=[1]) as plan:
        pass
    via_plan = score_questionnaire(tiny_model, q, steering=plan, batch_size=3)
    via_ctx = score_questionnaire(tiny_model, q, steering=make(), batch_size=3)
    for other in (via_plan, via_ctx):
        assert np.allclose(other.to_frame()["score"], steered.to_frame()["score"], atol=1e-6)
    # hooks are gone afterwards
    after = score_questionnaire(tiny_model, q, batch_size=3)
    assert after.to_frame()["score"].tolist() == base.to_frame()["score"].tolist()
    assert not any(h.fwd_hooks for h in tiny_model.hook_dict.values())


# ----------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("questionnaire")
    data = small(
        dimensions=BIG_FIVE,
        prompt_template="{item} 1-5?",
        items=[
            {"id": f"{d[0]}{k}", "text": f"I {d[:4]} {k}.", "dimension": d, "reverse": k == 2}
            for d in BIG_FIVE
            for k in (1, 2)
        ],
    )
    qfile = folder / "q.json"
    qfile.write_text(json.dumps(data))
    vec = PersonaVector(directions=torch.randn(3, 48) * 4, model="my-llama-finetune", trait="x")
    return qfile, vec.save(folder / "vec")


def _cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_prints_one_json_object(capsys, tiny_hf_dir, cli_files):
    qfile, vec = cli_files
    code, out, err = _cli(
        capsys, "questionnaire", "--model", str(tiny_hf_dir), "--file", str(qfile)
    )
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1
    obj = json.loads(out)
    assert set(obj) == {*BIG_FIVE, "_stats", "_meta"}
    assert all(1 <= obj[d] <= 5 for d in BIG_FIVE)
    assert obj["_stats"]["openness"]["n_items"] == 2
    assert obj["_meta"]["method"] == "logprob" and obj["_meta"]["steering"] is None
    assert 0 < obj["_meta"]["mean_scale_mass"] < 1
    code, out0, err = _cli(
        capsys, "questionnaire", "--model", str(tiny_hf_dir), "--file", str(qfile),
        "--vector", str(vec), "--layer", "1", "--coeff", "0",
    )  # fmt: skip
    assert code == 0, err
    zero = json.loads(out0)
    assert [zero[d] for d in BIG_FIVE] == [obj[d] for d in BIG_FIVE]
    assert zero["_meta"]["steering"]["layers"] == [1]
    code, _, err = _cli(
        capsys, "questionnaire", "--model", str(tiny_hf_dir), "--file", str(qfile),
        "--vector", str(vec), "--layer", "1",
    )  # fmt: skip
    assert code == 2 and "--coeff" in err
    code, _, err = _cli(capsys, "questionnaire", "--name", "nope", "--model", str(tiny_hf_dir))
    assert code == 2 and "unknown questionnaire 'nope'" in err


# ----------------------------------------------------------------------------- likelihood


def _manual_logprobs(model, prompt, statement, system=None, mask=None, steer_kw=None):
    """Per-token log-probs of ``statement`` as the reply: one plain forward, no cache/padding."""
    from personalens.model.chat import as_conversation, encode_chat, encode_response

    p = encode_chat(model.tokenizer, as_conversation(prompt, system))
    s = encode_response(model.tokenizer, statement)
    tokens = torch.tensor([p + s])
    ctx = pl.steer(model, positions=mask, **steer_kw) if steer_kw else _null()
    with torch.no_grad(), ctx:
        logp = model(tokens)[0].float().log_softmax(-1)
    return torch.stack([logp[len(p) - 1 + j, s[j]] for j in range(len(s))])


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


def test_likelihood_item_logprob_equals_a_manual_forward(tiny_model):
    q = parse_questionnaire(small(self_description_prompt="Who are you?"))
    assert q.self_description_prompt == "Who are you?"
    assert parse_questionnaire(q.to_dict()).self_description_prompt == "Who are you?"
    res = score_questionnaire(tiny_model, q, method="likelihood", batch_size=2)
    df = res.to_frame().set_index("id")
    for it in q.items:
        lp = _manual_logprobs(tiny_model, "Who are you?", it.text)
        assert df.loc[it.id, "logprob"] == pytest.approx(float(lp.mean()), abs=1e-4)
        assert df.loc[it.id, "sum_logprob"] == pytest.approx(float(lp.sum()), abs=1e-3)
        assert df.loc[it.id, "n_tokens"] == len(lp)
        assert df.loc[it.id, "score"] == df.loc[it.id, "logprob"]  # not reverse keyed
    assert res.settings["self_description_prompt"] == "Who are you?"
    assert res.units == "nats/token" and res.settings["units"] == "nats/token"
    # the default prompt, an explicit argument, and a system prompt
    default = score_questionnaire(tiny_model, parse_questionnaire(SMALL), method="likelihood")
    assert default.settings["self_description_prompt"] == qfile.SELF_DESCRIPTION_PROMPT
    arg = score_questionnaire(
        tiny_model, q, method="likelihood", self_description_prompt="Hi?", system="Be brief."
    )
    lp = _manual_logprobs(tiny_model, "Hi?", "I am kind.", system="Be brief.")
    assert arg.to_frame().loc[0, "logprob"] == pytest.approx(float(lp.mean()), abs=1e-4)


def test_likelihood_is_batch_invariant(tiny_model):
    q = parse_questionnaire(SMALL)  # statements of 7 to 10 tokens: padded in a batch
    runs = [
        score_questionnaire(tiny_model, q, method="likelihood", batch_size=b).to_frame()
        for b in (1, 2, 5)
    ]
    for other in runs[1:]:
        assert np.allclose(other["logprob"], runs[0]["logprob"], atol=1e-5)


def test_likelihood_contrast_arithmetic_on_planted_logprobs(tiny_model, monkeypatch):
    planted = {  # statement -> per-token log-probs
        "I am kind.": [-1.0, -3.0],  # mean -2
        "I am cold.": [-4.0],  # reverse, -4
        "I help.": [-1.0, -1.0, -1.0, -1.0],  # -1
        "I am calm.": [-0.5, -1.5],  # -1
        "I panic.": [-2.0, -3.0, -4.0],  # reverse, -3
    }
    seen = {}

    def fake(model, prompt_ids, statement_ids, batch_size):
        texts = [model.tokenizer.decode(ids) for ids in statement_ids]
        seen["texts"] = texts
        return [torch.tensor(planted[t]) for t in texts]

    monkeypatch.setattr(qlik, "_statement_logprobs", fake)
    res = score_questionnaire(tiny_model, parse_questionnaire(SMALL), method="likelihood")
    assert seen["texts"] == list(planted)
    df = res.to_frame().set_index("id")
    assert df["logprob"].tolist() == [-2.0, -4.0, -1.0, -1.0, -3.0]
    assert df["n_tokens"].tolist() == [2, 1, 4, 2, 3]
    assert df.loc["w2", "raw_score"] == df.loc["w2", "score"] == -4.0
    dims = res.dimensions().set_index("dimension")
    assert dims.loc["warmth", "mean_forward"] == pytest.approx(-1.5)
    assert dims.loc["warmth", "mean_reverse"] == pytest.approx(-4.0)
    assert dims.loc["warmth", "contrast"] == pytest.approx(2.5)
    assert dims.loc["calm", "contrast"] == pytest.approx(2.0)
    assert math.isnan(dims.loc["warmth", "sem"])  # one reverse item: no variance
    assert dims.loc["warmth", "n_forward"] == 2 and dims.loc["warmth", "n_reverse"] == 1
    assert (dims["units"] == "nats/token").all()
    assert res.summary() == pytest.approx({"warmth": 2.5, "calm": 2.0})
    d = res.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["units"] == "nats/token" and d["scores"]["warmth"] == pytest.approx(2.5)
    assert math.isnan(res.mean_scale_mass)


def test_likelihood_contrast_sem(tiny_model, monkeypatch):
    items = [
        {"id": f"i{k}", "text": f"I am {k}.", "dimension": "warmth", "reverse": k >= 3}
        for k in range(6)
    ]
    q = parse_questionnaire(small(dimensions=["warmth"], items=items))
    values = {f"I am {k}.": v for k, v in enumerate([-1.0, -2.0, -4.0, -3.0, -5.0, -6.0])}
    monkeypatch.setattr(
        qlik,
        "_statement_logprobs",
        lambda m, p, ids, b: [torch.tensor([values[m.tokenizer.decode(i)]]) for i in ids],
    )
    dims = score_questionnaire(tiny_model, q, method="likelihood").dimensions().iloc[0]
    f, r = np.array([-1.0, -2.0, -4.0]), np.array([-3.0, -5.0, -6.0])
    assert dims["contrast"] == pytest.approx(f.mean() - r.mean())
    want = math.sqrt(f.var(ddof=1) / 3 + r.var(ddof=1) / 3)
    assert dims["sem"] == pytest.approx(want)


def test_likelihood_steering_zero_equals_unsteered_and_positions(tiny_model):
    q = parse_questionnaire(SMALL)
    base = score_questionnaire(tiny_model, q, method="likelihood", batch_size=3)
    g = torch.Generator().manual_seed(3)
    vec = PersonaVector(directions=torch.randn(3, 32, generator=g), model="tiny-random", trait="w")
    with pl.steer(tiny_model, vec, coeff=0.0, layers=[1], positions="all"):
        zero = score_questionnaire(tiny_model, q, method="likelihood", batch_size=3)
    assert zero.to_frame()["logprob"].tolist() == base.to_frame()["logprob"].tolist()
    with pl.steer(tiny_model, vec, coeff=0.0, layers=[1]) as plan0:
        pass
    via_plan0 = score_questionnaire(tiny_model, q, method="likelihood", steering=plan0)
    assert np.allclose(via_plan0.to_frame()["logprob"], base.to_frame()["logprob"], atol=1e-6)

    kw = {"vector": vec, "coeff": 6.0, "layers": [1]}
    tok = tiny_model.tokenizer
    from personalens.model.chat import tokenize_pairs

    for positions in ("response", "prompt", "all"):
        with pl.steer(tiny_model, positions=positions, **kw) as plan:
            outer = score_questionnaire(tiny_model, q, method="likelihood", batch_size=2)
        inner = score_questionnaire(tiny_model, q, method="likelihood", steering=plan)
        lp_outer, lp_inner = outer.to_frame()["logprob"], inner.to_frame()["logprob"]
        assert np.allclose(lp_outer, lp_inner, atol=1e-5)
        assert not np.allclose(lp_outer, base.to_frame()["logprob"], atol=1e-3)
        assert inner.settings["steering"]["positions"] == positions
        # equals one teacher-forced forward steered at the matching mask (10 and 7 tokens)
        for k, it in [(0, q.items[0]), (2, q.items[2])]:
            batch = tokenize_pairs(tok, [qfile.SELF_DESCRIPTION_PROMPT], [it.text])
            mask = {
                "response": pl.steering.response_positions(batch),
                "prompt": batch.prompt_mask,
                "all": batch.attention_mask,
            }[positions]
            manual = _manual_logprobs(
                tiny_model, qfile.SELF_DESCRIPTION_PROMPT, it.text, mask=mask, steer_kw=kw
            )
            assert lp_outer[k] == pytest.approx(float(manual.mean()), abs=1e-4), (positions, k)
    assert not any(h.fwd_hooks for h in tiny_model.hook_dict.values())


def test_likelihood_bad_input(tiny_model):
    one_sided = small(
        items=[it for it in SMALL["items"] if not (it["dimension"] == "calm" and it["reverse"])]
    )
    with pytest.raises(pl.PersonaLensError, match="'calm'.*no reverse-keyed item"):
        score_questionnaire(tiny_model, parse_questionnaire(one_sided), method="likelihood")
    q = parse_questionnaire(SMALL)
    with pytest.raises(pl.PersonaLensError, match="self_description_prompt must be"):
        score_questionnaire(tiny_model, q, method="likelihood", self_description_prompt=" ")
    with pytest.raises(QuestionnaireFileError, match="self_description_prompt"):
        parse_questionnaire(small(self_description_prompt=""))
    vec = PersonaVector(directions=torch.ones(3, 32), model="tiny-random", trait="w")
    mask = torch.ones((1, 4), dtype=torch.bool)
    with pl.steer(tiny_model, vec, coeff=1.0, layers=[1], positions=mask) as plan:
        pass
    with pytest.raises(pl.PersonaLensError, match="named positions"):
        score_questionnaire(tiny_model, q, method="likelihood", steering=plan)
    with pytest.raises(pl.PersonaLensError, match="context of 256"):
        score_questionnaire(tiny_model, q, method="likelihood", self_description_prompt="x" * 300)


def test_cli_likelihood(capsys, tiny_hf_dir, cli_files):
    qfile, _ = cli_files
    code, out, err = _cli(
        capsys, "questionnaire", "--model", str(tiny_hf_dir), "--file", str(qfile),
        "--method", "likelihood",
    )  # fmt: skip
    assert code == 0, err
    obj = json.loads(out)
    assert obj["_meta"]["method"] == "likelihood" and obj["_meta"]["units"] == "nats/token"
    assert all(isinstance(obj[d], float) for d in BIG_FIVE)
    assert obj["_stats"]["openness"]["n_forward"] == 1
    assert obj["_stats"]["openness"]["contrast"] == obj["openness"]
