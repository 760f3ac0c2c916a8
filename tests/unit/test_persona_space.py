"""The persona space (Assistant Axis) pipeline: role files, role vectors, axis, PCA, the upstream
.pt axis files, and the resumable run on the tiny random model with the offline judge."""

from __future__ import annotations

import json
import math

import pytest
import torch

from personalens.errors import PersonaLensError
from personalens.extraction import responses as responses_module
from personalens.judges.offline import OfflineJudge
from personalens.studies.persona_space import (
    OfflineAdherence,
    compute_axis,
    layer_pca,
    list_roles,
    load_axis_pt,
    load_questions,
    load_roles,
    persona_space,
    role_vectors,
    save_axis_pt,
)
from personalens.studies.persona_space.adherence import adherence_from_top_logprobs
from personalens.vectors.vector import PersonaVector

TINY = {
    "max_roles": 3,
    "max_questions": 1,
    "n_prompts": 1,
    "max_new_tokens": 6,
    "fallback_score": 1,
}


@pytest.fixture(scope="module")
def offline_judge():
    return OfflineJudge()  # one MiniLM for the module


# ----------------------------------------------------------------------------- role files


def test_shipped_roles_span_the_range_in_the_trait_file_shape():
    names = list_roles()
    assert len(names) >= 60 and "default" not in names
    default, roles = load_roles()
    assert default.instructions[0] == "" and default.eval_prompt is None
    assert {"editor", "oracle", "jester", "ghost", "hermit", "dragon", "storm"} <= set(names)
    assert {r.category for r in roles} >= {"helper", "creative", "historical", "fantastical"}
    for r in roles:
        assert len(r.instructions) == 5 and all(p.strip() for p in r.instructions)
        prompt = r.judge_prompt("Q?", "A!")
        assert "Q?" in prompt and "A!" in prompt and "0 to 3" in prompt
    assert len(load_questions()) >= 40


def test_max_roles_spreads_over_categories():
    _, roles = load_roles(max_roles=6)
    assert len(roles) == 6 and len({r.category for r in roles}) == 6


def test_upstream_shaped_role_folder_loads_unchanged(tmp_path):
    rubric = "Role: pirate.\n[QUESTION START]\n{question}\n[QUESTION END]\n{answer}\nScore 0-3."
    pirate = {
        "instruction": [{"pos": "You are a pirate."}, {"pos": "Act as a pirate."}],
        "questions": ["Where is the treasure?"],
        "eval_prompt": rubric,
    }
    default = {"instruction": [{"pos": ""}, {"pos": "You are {model_name}."}]}
    (tmp_path / "pirate.json").write_text(json.dumps(pirate))
    (tmp_path / "default.json").write_text(json.dumps(default))
    questions = tmp_path / "extraction_questions.jsonl"
    questions.write_text('{"question": "Who are you?", "id": 0}\n{"question": "Why?", "id": 1}\n')
    d, roles = load_roles(tmp_path)
    assert [r.name for r in roles] == ["pirate"] and d.source.endswith("default.json")
    assert d.system_prompt(1, "SmolLM2") == "You are SmolLM2." and d.system_prompt(0) == ""
    assert "Ahoy" in roles[0].judge_prompt("Q", "Ahoy")
    assert load_questions(questions) == ["Who are you?", "Why?"]
    (tmp_path / "bad.json").write_text(json.dumps({**pirate, "eval_prompt": "no slots"}))
    with pytest.raises(PersonaLensError, match="question"):
        load_roles(tmp_path)


# ----------------------------------------------------------------------------- vectors, axis, PCA


def test_role_vectors_equal_a_manual_mean_with_the_fallback_recorded():
    g = torch.Generator().manual_seed(0)
    acts = {f"k{i}": torch.randn(3, 8, generator=g) for i in range(9)}
    keys = {"a": ["k0", "k1", "k2"], "b": ["k3", "k4", "k5"], "c": ["k6", "k7", "k8"]}
    scores = {
        "k0": 3.0,
        "k1": 3.0,
        "k2": 1.0,
        "k3": 2.0,
        "k4": 2.0,
        "k5": 1.0,
        "k6": 1.0,
        "k7": math.nan,
    }
    rv = role_vectors(acts, keys, scores)
    assert rv.names == ("a", "b") and rv.n_replies == (2, 2)
    assert rv.rules == ("score=3", "score>=2") and "c" in rv.dropped
    torch.testing.assert_close(rv.vectors[0], (acts["k0"] + acts["k1"]) / 2)
    torch.testing.assert_close(rv.vectors[1], (acts["k3"] + acts["k4"]) / 2)
    assert role_vectors(acts, keys, scores, fallback=None).names == ("a",)
    torch.testing.assert_close(
        compute_axis(acts["k0"], rv.vectors), acts["k0"] - rv.vectors.mean(0)
    )


def _planted(n_roles=12, d=16, seed=0):
    """Roles spread mostly along ``u`` (all on its negative side), the default far on its
    positive side: PC1 and the axis are both ``u``."""
    g = torch.Generator().manual_seed(seed)
    u = torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0)
    base = torch.randn(d, generator=g)
    coef = -1 - 4 * torch.rand(n_roles, generator=g)
    roles = base + coef[:, None] * u + 0.05 * torch.randn(n_roles, d, generator=g)
    default = base + 6 * u
    return u, roles, default


def test_the_axis_of_planted_data_is_recovered():
    u, roles, default = _planted()
    axis = compute_axis(default[None], roles[:, None])[0]
    assert torch.nn.functional.cosine_similarity(axis, u, dim=0) > 0.99


def test_pca_of_planted_structure_recovers_pc1_oriented_toward_the_default():
    u, roles, default = _planted()
    axis = default - roles.mean(0)
    p = layer_pca(roles, default, axis, layer=5)
    assert abs(float(p.components[0] @ u)) > 0.99
    assert p.explained_variance_ratio[0] > 0.95 and p.pc1_axis_cosine > 0.99
    assert float(p.default_coords[0]) > 0 and p.default_pc1_rank == 1
    assert p.role_coords.shape == (len(roles), 3) and p.layer == 5
    flipped = layer_pca(roles, roles.mean(0) - 6 * u, -axis)  # a default at the other end
    assert flipped.pc1_axis_cosine > 0.99 and float(flipped.components[0] @ u) < -0.99
    inside = roles.mean(0) + 0.01 * u  # a default amid the roles sits amid them on PC1
    assert 1 < layer_pca(roles, inside, inside - roles.mean(0)).default_pc1_rank <= len(roles)
    unit = axis / axis.norm()
    torch.testing.assert_close(p.role_projection, roles @ unit)


# ----------------------------------------------------------------------------- upstream .pt files


def test_upstream_axis_pt_shapes_round_trip(tmp_path, tiny_model):
    n, d = tiny_model.cfg.n_layers, tiny_model.cfg.d_model
    axis = torch.randn(n, d)
    path = save_axis_pt(tmp_path / "axis.pt", axis, role_mean=torch.zeros(n, d), n_roles=7)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"axis", "role_mean", "n_roles"} and raw["axis"].shape == (n, d)
    vec = load_axis_pt(path, tiny_model)
    assert vec.n_layers == n and vec.trait == "assistant_axis" and vec.model == "tiny-random"
    torch.testing.assert_close(vec.directions, axis)
    assert vec.metadata["assistant_axis_pt"]["n_roles"] == 7
    bare = save_axis_pt(tmp_path / "bare.pt", vec, bare=True)  # the released files' shape
    assert torch.equal(torch.load(bare, weights_only=True), axis)
    assert torch.equal(load_axis_pt(bare).directions, axis)


def test_axis_pt_layer_convention_is_checked(tmp_path, tiny_model):
    n, d = tiny_model.cfg.n_layers, tiny_model.cfg.d_model
    hf = torch.randn(n + 1, d)  # Persona Vectors layout: row 0 = embeddings
    torch.save(hf, tmp_path / "hf.pt")
    with pytest.raises(PersonaLensError, match="hf_hidden_states"):
        load_axis_pt(tmp_path / "hf.pt", tiny_model)
    vec = load_axis_pt(tmp_path / "hf.pt", tiny_model, layout="hf_hidden_states")
    torch.testing.assert_close(vec.directions[0], hf[1])  # layer 0 = hidden_states[1]
    torch.save(torch.randn(n, d + 1), tmp_path / "wide.pt")
    with pytest.raises(PersonaLensError, match="d_model"):
        load_axis_pt(tmp_path / "wide.pt", tiny_model)


def test_adherence_from_top_logprobs():
    assert adherence_from_top_logprobs({"3": -0.1, "2": -2.5, " 1": -4.0}) == 3.0
    assert adherence_from_top_logprobs({"1": -0.2, "3": -1.9}) == 1.0
    assert math.isnan(adherence_from_top_logprobs({"The": -0.01, "3": -6.0}))
    assert math.isnan(adherence_from_top_logprobs(None))


def test_offline_adherence_reads_ai_self_talk_and_refusals(offline_judge):
    default, (dragon,) = load_roles(["dragon"])
    scorer = OfflineAdherence(offline_judge.embedder, default)
    from personalens.judges.base import JudgeItem

    items = [
        JudgeItem("Who are you?", "As an AI language model, I'm sorry, but I can't do that."),
        JudgeItem("Who are you?", "I am an ancient dragon; my hoard of gold is vast."),
        JudgeItem("Who are you?", ""),
    ]
    s = scorer.score_adherence(dragon, items)
    assert s[0] == 0.0 and s[1] == 3.0 and math.isnan(s[2])


# ----------------------------------------------------------------------------- the pipeline


def test_pipeline_end_to_end_and_resume(tmp_path, tiny_model, offline_judge, monkeypatch):
    real = responses_module.generate_samples
    generated = []

    def failing(model, conversations, *args, **kwargs):
        if len(generated) >= 4:
            raise KeyboardInterrupt  # interrupted after two chunks
        generated.extend(conversations)
        return real(model, conversations, *args, **kwargs)

    kw = dict(TINY, judge=offline_judge, progress=False, batch_size=2)
    monkeypatch.setattr(responses_module, "generate_samples", failing)
    with pytest.raises(KeyboardInterrupt):
        persona_space(tiny_model, out=tmp_path, **kw)
    assert len((tmp_path / "responses.jsonl").read_text().splitlines()) == 4
    assert not (tmp_path / "summary.json").exists()

    generated.clear()
    monkeypatch.setattr(responses_module, "generate_samples", _counting(real, generated))
    res = persona_space(tiny_model, out=tmp_path, **kw)
    n_replies = 5 + 3  # the default's 5 prompts + 1 prompt per role, x 1 question
    assert len(generated) == n_replies - 4  # finished chunks are not redone
    s = json.loads((tmp_path / "summary.json").read_text())
    n = tiny_model.cfg.n_layers
    for key in ("pc1_axis_cosine", "pc1_explained_variance", "default_pc1_rank"):
        assert len(s[key]) == n
    assert s["n_replies"] == n_replies and s["n_roles"] + len(s["roles_dropped"]) == 3
    assert all(0 <= c <= 1 + 1e-6 for c in s["pc1_axis_cosine"])
    axis = PersonaVector.load(tmp_path / "axis")
    assert axis == res.axis and axis.directions.shape == (n, tiny_model.cfg.d_model)
    assert torch.equal(load_axis_pt(tmp_path / "axis.pt", tiny_model).directions, axis.directions)
    frame = res.to_frame()
    assert len(frame) == n * (s["n_roles"] + 1) and frame["is_default"].sum() == n

    generated.clear()  # a finished run: nothing is generated again, the same axis comes back
    again = persona_space(tiny_model, out=tmp_path, **kw)
    assert generated == [] and again.axis == res.axis
    with pytest.raises(PersonaLensError, match="config"):
        persona_space(tiny_model, out=tmp_path, **{**kw, "max_new_tokens": 7})


def _counting(real, seen):
    def wrapped(model, conversations, *args, **kwargs):
        seen.extend(conversations)
        return real(model, conversations, *args, **kwargs)

    return wrapped


def test_figures_and_cli_parser(tmp_path, tiny_model, offline_judge):
    from personalens.cli.main import build_parser
    from personalens.plot.persona_space import (
        plot_persona_layers,
        plot_persona_space,
        plot_persona_variance,
    )

    res = persona_space(tiny_model, judge=offline_judge, progress=False, **TINY)
    assert res.run_dir is None and len(res.pca) == tiny_model.cfg.n_layers
    assert len(plot_persona_space(res).data) == 2
    assert (
        plot_persona_variance(res, layer=0).data[0].y[0] == res.pca[0].explained_variance_ratio[0]
    )
    assert len(plot_persona_layers(res).data) == 3
    parser = build_parser()
    args = parser.parse_args(["persona-space", "--out", str(tmp_path), "--max-roles", "5"])
    assert args.max_roles == 5 and args.max_questions == 3 and args.judge == "auto"


@pytest.mark.usefixtures("openai_env")
def test_openai_adherence_asks_the_role_rubric(fake, tmp_path):
    from personalens.judges.base import JudgeError, JudgeItem
    from personalens.judges.openai_judge import OpenAIJudge
    from personalens.studies.persona_space.adherence import adherence_judge, check_adherence_judge
    from tests.unit.fake_openai import config

    _, (dragon,) = load_roles(["dragon"])
    with OpenAIJudge(config(fake.url, tmp_path)) as judge:
        scorer = adherence_judge(judge)
        got = scorer.score_adherence(
            dragon, [JudgeItem("Q", "EXPECT=3"), JudgeItem("Q", "EXPECT=1"), JudgeItem("Q", "x")]
        )
        assert got[:2] == [3.0, 1.0] and math.isnan(got[2])  # "50" is no 0-3 score
        assert any("**dragon**" in b["messages"][-1]["content"] for b in fake.bodies)
        with pytest.raises(JudgeError, match="not a score 0-3"):
            check_adherence_judge(scorer, dragon)
