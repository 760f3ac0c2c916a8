"""Style vectors (personalens.extraction.style) on the tiny random model."""

import datasets
import pytest
import torch

from personalens.errors import PersonaLensError
from personalens.extraction.style import list_style_sets, load_style_set, style_vector
from personalens.model.chat import tokenize_pairs

ROWS = [
    {"text": "Lovely day!", "label": "pos"},
    {"text": "Great work, thanks.", "label": "pos"},
    {"text": "Awful day.", "label": "neg"},
    {"text": "Terrible, really bad work.", "label": "neg"},
    {"text": "Meh.", "label": "other"},
]


def _manual_mean(model, prompts, texts):
    batch = tokenize_pairs(model.tokenizer, prompts, texts)
    with torch.no_grad():
        _, cache = model.run_with_cache(batch.tokens, attention_mask=batch.attention_mask.long())
    m = batch.response_mask.float()[..., None]
    return torch.stack(
        [
            ((cache[f"blocks.{L}.hook_resid_post"] * m).sum(1) / m.sum(1)).mean(0)
            for L in range(model.cfg.n_layers)
        ]
    )


def test_style_vector_is_the_mean_difference_per_layer(tiny_model):
    v = style_vector(tiny_model, ROWS, positive="pos", negative="neg", prompt="Say it.")
    pos = _manual_mean(tiny_model, ["Say it."] * 2, [r["text"] for r in ROWS[:2]])
    neg = _manual_mean(tiny_model, ["Say it."] * 2, [r["text"] for r in ROWS[2:4]])
    torch.testing.assert_close(v.directions, pos - neg, rtol=1e-4, atol=1e-4)
    assert (v.n_pos, v.n_neg, v.method, v.variant) == (2, 2, "mean_diff", "response_avg")
    assert v.trait == "pos_vs_neg" and v.metadata["source"] == "style"
    assert v.model == tiny_model.cfg.model_name


def test_dataset_and_prompt_column_inputs(tiny_model):
    ds = datasets.Dataset.from_list(ROWS)
    a = style_vector(tiny_model, ds, positive="pos", negative="neg", prompt="Say it.")
    b = style_vector(tiny_model, ROWS, positive="pos", negative="neg", prompt="Say it.")
    assert torch.equal(a.directions, b.directions)
    # the model's own replies grouped by a label: each row has its own prompt
    own = [dict(r, prompt=f"Q{i}") for i, r in enumerate(ROWS[:4])]
    c = style_vector(tiny_model, own, positive="pos", negative="neg")
    pos = _manual_mean(tiny_model, ["Q0", "Q1"], [r["text"] for r in ROWS[:2]])
    neg = _manual_mean(tiny_model, ["Q2", "Q3"], [r["text"] for r in ROWS[2:4]])
    torch.testing.assert_close(c.directions, pos - neg, rtol=1e-4, atol=1e-4)
    with pytest.raises(PersonaLensError, match="name the two"):
        style_vector(tiny_model, ROWS)
    with pytest.raises(PersonaLensError, match="label 'nope'"):
        style_vector(tiny_model, ROWS, positive="pos", negative="nope")


def test_shipped_style_sets():
    assert {"sentiment", "formality"} <= set(list_style_sets())
    for name, labels in (
        ("sentiment", ("positive", "negative")),
        ("formality", ("formal", "casual")),
    ):
        s = load_style_set(name)
        assert s.labels == labels
        for label in labels:
            texts = [r["text"] for r in s.records if r["label"] == label]
            assert len(texts) >= 30 and len(set(texts)) == len(texts)


def test_style_persona_cosines_and_style_trait(tiny_model):
    from personalens.studies.style_comparison import style_persona_cosines, style_trait
    from personalens.vectors.algebra import cosine_by_layer
    from personalens.vectors.vector import PersonaVector

    v = style_vector(tiny_model, ROWS, positive="pos", negative="neg")
    g = torch.Generator().manual_seed(2)
    personas = [
        PersonaVector(directions=torch.randn(3, 32, generator=g), model=v.model, trait=f"p{i}")
        for i in range(2)
    ]
    cos = style_persona_cosines([v], personas)
    assert cos.values.shape == (3, 1, 2) and cos.personas == ["p0", "p1"]
    torch.testing.assert_close(cos.values[:, 0, 1], cosine_by_layer(v, personas[1]))
    assert len(cos.to_frame()) == 6
    from personalens.plot.drift import plot_style_persona_cosines

    fig = plot_style_persona_cosines(cos)
    assert list(fig.data[0].y) == [v.trait] and list(fig.data[0].x) == ["p0", "p1"]
    trait = style_trait("sentiment")
    assert trait.name == "positive_vs_negative" and len(trait.judge_anchors["pos"]) == 30
    assert "{question}" in trait.eval_prompt and trait.judge_prompt("q", "a")
