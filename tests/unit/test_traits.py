import json

import pytest

from personalens.extraction.traits import (
    TraitFileError,
    list_traits,
    load_trait,
    load_trait_file,
    parse_trait,
    save_trait,
)

SHIPPED = [
    "evil", "sycophantic", "hallucinating",
    "inventive", "consistent", "dependable", "careless", "outgoing", "solitary",
    "compassionate", "self-interested", "nervous", "calm",
    "machiavellian", "narcissistic", "psychopathic",
]  # fmt: skip

UPSTREAM = {
    "instruction": [{"pos": "Be evil.", "neg": "Be good."}] * 5,
    "questions": [f"Question {i}?" for i in range(20)],
    "eval_prompt": "Rate.\n{question}\n{answer}\nNumber 0-100.",
}


def test_all_shipped_traits_load_with_the_promised_shape():
    assert sorted(list_traits()) == sorted(SHIPPED)
    for name in SHIPPED:
        trait = load_trait(name)
        extract_q, eval_q = trait.split_questions()
        assert trait.name == name
        assert trait.n_pairs == 5
        assert len(extract_q) == 20 and len(eval_q) == 20
        assert not set(extract_q) & set(eval_q)
        assert trait.judge_anchors and len(trait.judge_anchors["pos"]) >= 2
        assert trait.judge_prompt("Q?", "A.").count("Q?") == 1
        assert trait.system_prompt(0, "pos").startswith("You are a")


def test_upstream_shape_loads_and_holds_out_questions(tmp_path):
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(UPSTREAM))
    with pytest.warns(UserWarning, match="trait_data_eval/evil.json"):  # no held-out file
        trait = load_trait_file(path)
    assert trait.name == "evil"  # from the file name
    extract_q, eval_q = trait.split_questions()
    assert len(extract_q) == 15 and len(eval_q) == 5
    # upstream's default assistant names (see tests/unit/test_upstream_fidelity.py)
    assert trait.system_prompt(0, "pos") == "You are an evil assistant. Be evil."
    assert trait.system_prompt(0, "neg") == "You are a helpful assistant. Be good."


def test_assistant_names_prefix():
    data = dict(UPSTREAM, assistant_names={"pos": "evil", "neg": "helpful"})
    trait = parse_trait(data, name="evil")
    assert trait.system_prompt(1, "pos") == "You are an evil assistant. Be evil."
    assert trait.system_prompt(1, "neg") == "You are a helpful assistant. Be good."


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("questions"), "key 'questions' is missing"),
        (lambda d: d.update(questions="q"), "key 'questions' must be a list of strings, got str"),
        (lambda d: d.update(questions=[]), "key 'questions' is an empty list"),
        (
            lambda d: d.update(instruction=[{"pos": "x"}]),
            r"key 'instruction\[0\]' must be an object",
        ),
        (
            lambda d: d.update(instruction=[{"pos": "x", "neg": ""}]),
            r"instruction\[0\].neg' must be a non-empty string",
        ),
        (
            lambda d: d.update(eval_prompt="{question} {answr}"),
            r"unmatched placeholder\(s\) \{answr\}",
        ),
        (lambda d: d.update(eval_prompt="{question} only"), r"has no \{answer\} placeholder"),
        (lambda d: d.update(eval_prompt="{question} {answer} {"), "not a valid format string"),
        (lambda d: d.update(eval_questions=["Question 3?"]), "repeats extraction question"),
        (
            lambda d: d.update(assistant_names={"pos": "evil"}),
            "key 'assistant_names' must be an object",
        ),
    ],
)
def test_validation_errors_name_file_and_key(tmp_path, mutate, message):
    data = json.loads(json.dumps(UPSTREAM))
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(TraitFileError, match=message) as info:
        load_trait_file(path)
    assert str(path) in str(info.value)


def test_not_json_and_missing_file(tmp_path):
    path = tmp_path / "t.json"
    path.write_text("{not json")
    with pytest.raises(TraitFileError, match="not valid JSON"):
        load_trait_file(path)
    with pytest.raises(TraitFileError, match="does not exist"):
        load_trait_file(tmp_path / "nope.json")
    with pytest.raises(TraitFileError, match="unknown trait 'nope'. Shipped traits: "):
        load_trait("nope")


def test_save_round_trip(tmp_path):
    trait = load_trait("evil")
    path = save_trait(trait, tmp_path / "copy.json")
    again = load_trait_file(path)
    assert again.to_dict() == trait.to_dict()
    with pytest.raises(TraitFileError):
        save_trait({"instruction": []}, tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()
