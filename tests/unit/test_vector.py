from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from types import SimpleNamespace

import jaxtyping
import pytest
import torch

from personalens.conventions import HOOK_TEMPLATE, LAYER_CONVENTION
from personalens.errors import PersonaLensError
from personalens.vectors.pt_format import (
    from_hf_hidden_states_layout,
    to_hf_hidden_states_layout,
)
from personalens.vectors.vector import PersonaVector

N_LAYERS, D_MODEL = 4, 6


def make(trait: str = "evil", seed: int = 0, model: str = "tiny", **kw) -> PersonaVector:
    g = torch.Generator().manual_seed(seed)
    return PersonaVector(
        directions=torch.randn(N_LAYERS, D_MODEL, generator=g), model=model, trait=trait, **kw
    )


@pytest.fixture
def no_hook():
    """Run without the jaxtyping/beartype hook, as in production, to reach personalens' checks."""
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", False)


class Payload:
    """Unpickling this touches a marker file: evidence of code execution."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


# ----------------------------------------------------------------------------- construction


def test_construction_converts_to_float32_cpu_contiguous_copy():
    src = torch.randn(D_MODEL, N_LAYERS, dtype=torch.float64).T  # non-contiguous
    v = PersonaVector(directions=src, model="tiny", trait="evil")
    assert v.directions.dtype == torch.float32
    assert v.directions.device.type == "cpu"
    assert v.directions.is_contiguous()
    assert (v.n_layers, v.d_model, len(v)) == (N_LAYERS, D_MODEL, N_LAYERS)
    src.zero_()  # the vector holds its own copy
    assert v.directions.abs().sum() > 0
    assert v.method == "mean_diff" and v.variant == "response_avg"
    assert v.hook_template == HOOK_TEMPLATE and v.layer_convention == LAYER_CONVENTION


def test_bfloat16_input_is_converted():
    v = PersonaVector(directions=torch.ones(2, 3, dtype=torch.bfloat16), model="m", trait="t")
    assert v.directions.dtype == torch.float32


def test_non_2d_rejected_with_clear_error(no_hook):
    with pytest.raises(PersonaLensError, match=r"\[n_layers, d_model\].*1-D"):
        PersonaVector(directions=torch.ones(D_MODEL), model="m", trait="t")
    with pytest.raises(PersonaLensError, match="3-D"):
        PersonaVector(directions=torch.ones(1, 2, 3), model="m", trait="t")
    with pytest.raises(PersonaLensError, match="must be a torch.Tensor"):
        PersonaVector(directions=[[1.0, 2.0]], model="m", trait="t")  # type: ignore[arg-type]
    with pytest.raises(PersonaLensError, match="n_pos"):
        PersonaVector(directions=torch.ones(1, 2), model="m", trait="t", n_pos=-1)


def test_non_2d_rejected_under_type_checking_hook_too():
    with pytest.raises((PersonaLensError, TypeError)):
        PersonaVector(directions=torch.ones(D_MODEL), model="m", trait="t")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_rejected(bad):
    d = torch.zeros(N_LAYERS, D_MODEL)
    d[1, 2] = bad
    with pytest.raises(PersonaLensError, match="non-finite"):
        PersonaVector(directions=d, model="m", trait="t")
    row = torch.zeros(D_MODEL)
    row[0] = bad
    with pytest.raises(PersonaLensError, match="hf_embedding_row.*non-finite"):
        PersonaVector(
            directions=torch.zeros(N_LAYERS, D_MODEL), model="m", trait="t", hf_embedding_row=row
        )


def test_metadata_must_be_json_serialisable_and_is_normalised():
    with pytest.raises(PersonaLensError, match="JSON-serialisable"):
        make(metadata={"x": object()})
    v = make(metadata={"layers": (1, 2), "nested": {"a": [1.5]}})
    assert v.metadata == {"layers": [1, 2], "nested": {"a": [1.5]}}


def test_frozen_and_unhashable():
    v = make()
    with pytest.raises(AttributeError):
        v.trait = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        hash(v)


def test_equality():
    assert make() == make()
    assert make() != make(seed=1)
    assert make() != make(trait="other")
    assert make() != make(metadata={"k": 1})
    assert make() != make(hf_embedding_row=torch.zeros(D_MODEL))
    assert make() != "evil"
    assert "evil" in repr(make()) and f"d_model={D_MODEL}" in repr(make())


def test_replace_revalidates():
    v = make()
    w = v.replace(trait="kind", n_pos=3)
    assert (w.trait, w.n_pos) == ("kind", 3)
    assert torch.equal(w.directions, v.directions)


# ----------------------------------------------------------------------------- access


def test_getitem_and_negative_index():
    v = make()
    assert torch.equal(v[0], v.directions[0])
    assert torch.equal(v[-1], v.directions[N_LAYERS - 1])
    assert [torch.equal(a, b) for a, b in zip(v, v.directions)] == [True] * N_LAYERS


def test_unknown_layer_error():
    v = make()
    with pytest.raises(ValueError, match=rf"unknown layer {N_LAYERS}: this model has {N_LAYERS}"):
        v[N_LAYERS]
    with pytest.raises(ValueError, match="unknown layer -5"):
        v[-N_LAYERS - 1]


def test_norms_and_unit():
    d = torch.randn(N_LAYERS, D_MODEL)
    d[2] = 0.0
    v = PersonaVector(
        directions=d, model="m", trait="t", hf_embedding_row=torch.full((D_MODEL,), 3.0)
    )
    assert torch.allclose(v.norms(), torch.linalg.vector_norm(d, dim=-1))
    assert v.norms().shape == (N_LAYERS,)
    u0 = v.unit(0)
    assert torch.allclose(torch.linalg.vector_norm(u0), torch.tensor(1.0))
    assert torch.allclose(u0 * v.norms()[0], v[0])
    assert torch.equal(v.unit(2), torch.zeros(D_MODEL))
    u = v.unit()
    assert isinstance(u, PersonaVector)
    expected = torch.tensor([1.0, 1.0, 0.0, 1.0])
    assert torch.allclose(u.norms(), expected)
    assert torch.allclose(torch.linalg.vector_norm(u.hf_embedding_row), torch.tensor(1.0))
    assert (u.trait, u.model) == (v.trait, v.model)


# ----------------------------------------------------------------------------- compatibility


def test_check_compatible_accepts_matching_shapes():
    v = make()
    v.check_compatible(SimpleNamespace(cfg=SimpleNamespace(n_layers=N_LAYERS, d_model=D_MODEL)))
    v.check_compatible(SimpleNamespace(n_layers=N_LAYERS, d_model=D_MODEL))
    v.check_compatible(SimpleNamespace(num_hidden_layers=N_LAYERS, hidden_size=D_MODEL))


def test_check_compatible_wrong_d_model():
    v = make(model="big-model")
    fake = SimpleNamespace(cfg=SimpleNamespace(n_layers=N_LAYERS, d_model=32, model_name="small"))
    with pytest.raises(PersonaLensError) as info:
        v.check_compatible(fake)
    msg = str(info.value)
    assert "d_model" in msg and str(D_MODEL) in msg and "32" in msg
    assert "big-model" in msg and "small" in msg and "Fix" in msg


def test_check_compatible_wrong_n_layers_and_unreadable():
    v = make()
    with pytest.raises(
        PersonaLensError, match=rf"n_layers differs \({N_LAYERS} in the vector vs 9\)"
    ):
        v.check_compatible(SimpleNamespace(n_layers=9, d_model=D_MODEL))
    with pytest.raises(PersonaLensError, match="Cannot read n_layers and d_model"):
        v.check_compatible(object())


def test_check_compatible_with_tiny_hooked_transformer(tiny_model):
    v = PersonaVector(
        directions=torch.zeros(tiny_model.cfg.n_layers, tiny_model.cfg.d_model),
        model="tiny-random",
        trait="t",
    )
    v.check_compatible(tiny_model)
    v.check_compatible(tiny_model.cfg)
    with pytest.raises(PersonaLensError, match="d_model"):
        make().check_compatible(tiny_model)


# ----------------------------------------------------------------------------- algebra


def test_arithmetic_identities():
    a, b = make("evil", 0), make("sycophantic", 1)
    assert torch.equal((2 * a - a).directions, a.directions)
    assert torch.allclose((a + b - b).directions, a.directions, atol=1e-6)
    assert torch.equal((a * 2).directions, (2 * a).directions)
    assert torch.allclose((a / 2).directions, a.directions * 0.5)
    assert torch.equal((-a).directions, -a.directions)
    assert torch.equal((a - b).directions, a.directions - b.directions)


def test_algebra_metadata_and_traits():
    a = make("evil", 0, n_pos=10, n_neg=12, judge="gpt")
    b = make("sycophantic", 1, n_pos=5, n_neg=5, judge="gpt")
    c = make("humorous", 2)
    s = a + b
    assert s.trait == "evil + sycophantic"
    assert (s.method, s.n_pos, s.n_neg, s.judge, s.model) == ("algebra", None, None, "gpt", "tiny")
    assert s.metadata["expression"] == s.trait
    assert s.metadata["operands"] == ["evil", "sycophantic"]
    assert s.metadata["sources"][0]["n_pos"] == 10
    assert (a + c).judge is None
    assert (2 * a - b).trait == "2*evil - sycophantic"
    assert (a - (b + c)).trait == "evil - (sycophantic + humorous)"
    assert (a - (b - c)).trait == "evil - (sycophantic - humorous)"
    assert (2 * (a + b)).trait == "2*(evil + sycophantic)"
    assert (-(a + b)).trait == "-(evil + sycophantic)"
    assert (-a).trait == "-evil"
    assert (a + -b).trait == "evil + (-sycophantic)"
    assert (a - -b).trait == "evil - (-sycophantic)"
    assert (0.5 * a).trait == "0.5*evil"
    assert ((a + b) / 2).trait == "(evil + sycophantic)/2"
    assert (a / -2).trait == "evil/(-2)"
    assert (-2 * a + b).trait == "-2*evil + sycophantic"
    assert (3 * (-2 * a)).trait == "3*(-2*evil)"


def test_per_layer_scaling():
    a = make(hf_embedding_row=torch.ones(D_MODEL))
    w = torch.tensor([0.0, 1.0, 2.0, -1.0])
    scaled = a * w
    assert torch.equal(scaled.directions, a.directions * w[:, None])
    assert torch.equal((w * a).directions, scaled.directions)
    assert scaled.metadata["layer_weights"] == w.tolist()
    assert scaled.hf_embedding_row is None  # no weight for the embedding row
    assert torch.allclose((a / torch.full((N_LAYERS,), 2.0)).directions, a.directions / 2)
    with pytest.raises(PersonaLensError, match=r"\[n_layers\] = \[4\]"):
        a * torch.ones(N_LAYERS + 1)
    with pytest.raises(ZeroDivisionError):
        a / w
    with pytest.raises(ZeroDivisionError):
        a / 0


def test_scalar_types():
    import numpy as np

    a = make()
    for k in (np.float64(2), np.float32(2), np.int64(2), torch.tensor(2.0), 2, 2.0):
        for scaled in (k * a, a * k):
            assert isinstance(scaled, PersonaVector), type(k)
            assert scaled.trait == "2*evil"
            assert torch.equal(scaled.directions, 2 * a.directions)


def test_sum_of_vectors():
    a, b, c = make("a", 0), make("b", 1), make("c", 2)
    total = sum([a, b, c])
    assert isinstance(total, PersonaVector)
    assert torch.allclose(total.directions, a.directions + b.directions + c.directions)
    assert total.trait == "a + b + c"
    assert sum([a]) is a


def test_unsupported_operands():
    a = make()
    with pytest.raises(TypeError):
        a + 1
    with pytest.raises(TypeError):
        a * a
    with pytest.raises(TypeError):
        a * "2"


def test_embedding_row_follows_arithmetic():
    a = make("a", 0, hf_embedding_row=torch.full((D_MODEL,), 1.0))
    b = make("b", 1, hf_embedding_row=torch.full((D_MODEL,), 3.0))
    assert torch.equal((2 * a - b).hf_embedding_row, torch.full((D_MODEL,), -1.0))
    assert torch.equal((-a).hf_embedding_row, torch.full((D_MODEL,), -1.0))
    assert (a + make("c", 2)).hf_embedding_row is None


def test_combining_incompatible_vectors():
    a = make("evil", model="qwen")
    with pytest.raises(PersonaLensError, match=r"'evil' \(from 'qwen'.*'kind' \(from 'llama'"):
        a + make("kind", model="llama")
    other_shape = PersonaVector(directions=torch.zeros(N_LAYERS, 3), model="qwen", trait="kind")
    with pytest.raises(PersonaLensError, match="different shapes"):
        a - other_shape
    with pytest.raises(PersonaLensError, match="hook_template"):
        a + make("kind", model="qwen", hook_template="blocks.{layer}.hook_resid_pre")
    with pytest.raises(PersonaLensError, match="layer_convention"):
        a + make("kind", model="qwen", layer_convention="resid_pre")


# ----------------------------------------------------------------------------- save / load


def full_vector() -> PersonaVector:
    return make(
        "evil",
        method="mean_diff",
        variant="prompt_avg",
        n_pos=7,
        n_neg=9,
        judge="gpt-4.1-mini",
        hf_embedding_row=torch.randn(D_MODEL),
        metadata={"run": "r1", "layer_auc": [0.5, 0.9]},
    )


@pytest.mark.parametrize("suffix", ["", ".safetensors", ".json"])
def test_save_load_round_trip(tmp_path, suffix):
    v = full_vector()
    stem = tmp_path / "runs" / "evil" / "vector"
    json_path = v.save(str(stem) + suffix)
    assert json_path == stem.with_name("vector.json")
    assert stem.with_name("vector.safetensors").is_file()
    for load_path in (stem, str(stem) + ".safetensors", str(stem) + ".json"):
        w = PersonaVector.load(load_path)
        assert w == v
        assert torch.equal(w.hf_embedding_row, v.hf_embedding_row)
        assert all(
            getattr(w, name) == getattr(v, name)
            for name in (
                "model",
                "trait",
                "method",
                "variant",
                "hook_template",
                "layer_convention",
                "n_pos",
                "n_neg",
                "judge",
                "metadata",
            )
        )
    record = json.loads(json_path.read_text())
    assert record["format"] == "personalens.persona_vector" and record["version"] == 1
    assert (record["n_layers"], record["d_model"]) == (N_LAYERS, D_MODEL)


def test_save_load_without_embedding_row_and_algebra(tmp_path):
    v = 2 * make("a") - make("b", 1)
    v.save(tmp_path / "combo")
    assert PersonaVector.load(tmp_path / "combo") == v


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    v = full_vector()
    v.save(tmp_path / "vector")
    (v * 2).save(tmp_path / "vector")  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vector.json", "vector.safetensors"]
    assert PersonaVector.load(tmp_path / "vector") == v * 2

    # a crash while writing the tensors leaves no temp file and no JSON: nothing looks complete
    import safetensors.torch

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        v.save(tmp_path / "vector")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vector.safetensors"]
    with pytest.raises(PersonaLensError, match="did not finish"):
        PersonaVector.load(tmp_path / "vector")


def test_load_missing_file(tmp_path):
    with pytest.raises(PersonaLensError, match="No persona vector.*not found"):
        PersonaVector.load(tmp_path / "nope")
    make().save(tmp_path / "v")
    (tmp_path / "v.safetensors").unlink()
    with pytest.raises(PersonaLensError, match="v.safetensors not found"):
        PersonaVector.load(tmp_path / "v")


def test_load_wrong_format(tmp_path):
    make().save(tmp_path / "v")
    record = json.loads((tmp_path / "v.json").read_text())
    record["format"] = "something.else"
    (tmp_path / "v.json").write_text(json.dumps(record))
    with pytest.raises(PersonaLensError, match="'format' is 'something.else'"):
        PersonaVector.load(tmp_path / "v")
    (tmp_path / "v.json").write_text("{not json")
    with pytest.raises(PersonaLensError, match="as JSON"):
        PersonaVector.load(tmp_path / "v")


def test_load_shape_mismatch(tmp_path):
    make().save(tmp_path / "v")
    record = json.loads((tmp_path / "v.json").read_text())
    record["d_model"] = D_MODEL + 1
    (tmp_path / "v.json").write_text(json.dumps(record))
    with pytest.raises(
        PersonaLensError, match=rf"shape \[{N_LAYERS}, {D_MODEL}\].*\[{N_LAYERS}, {D_MODEL + 1}\]"
    ):
        PersonaVector.load(tmp_path / "v")


def test_load_detects_mismatched_pair(tmp_path):
    make("a").save(tmp_path / "a")
    make("b", 1).save(tmp_path / "b")
    (tmp_path / "b.safetensors").replace(tmp_path / "a.safetensors")
    with pytest.raises(PersonaLensError, match="SHA-256"):
        PersonaVector.load(tmp_path / "a")


def test_save_refuses_pt_path(tmp_path):
    with pytest.raises(PersonaLensError, match="to_persona_vectors_pt"):
        make().save(tmp_path / "v.pt")


# ----------------------------------------------------------------------------- Persona Vectors .pt


def test_hf_layout_helpers():
    d = torch.randn(N_LAYERS, D_MODEL)
    row = torch.randn(D_MODEL)
    hf = to_hf_hidden_states_layout(d, row)
    assert hf.shape == (N_LAYERS + 1, D_MODEL)
    assert torch.equal(hf[0], row)
    for layer in range(N_LAYERS):
        assert torch.equal(hf[layer + 1], d[layer])
    back, row0 = from_hf_hidden_states_layout(hf)
    assert torch.equal(back, d) and torch.equal(row0, row)
    assert torch.equal(to_hf_hidden_states_layout(d)[0], torch.zeros(D_MODEL))


@pytest.mark.filterwarnings("ignore:.*its last row:UserWarning")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_pt_round_trip_is_exact(tmp_path, dtype):
    original = torch.randn(N_LAYERS + 1, D_MODEL).to(dtype)
    assert original[0].abs().sum() > 0  # a non-zero embedding row
    torch.save(original, tmp_path / "evil_response_avg_diff.pt")
    v = PersonaVector.from_persona_vectors_pt(
        tmp_path / "evil_response_avg_diff.pt", model="Qwen2.5-7B-Instruct", trait="evil"
    )
    assert (v.n_layers, v.d_model) == (N_LAYERS, D_MODEL)
    for layer in range(N_LAYERS):
        assert torch.equal(original[layer + 1].float(), v[layer])  # pt row L+1 == layer L
    v.to_persona_vectors_pt(tmp_path / "out.pt")
    again = torch.load(tmp_path / "out.pt", weights_only=True)
    assert again.dtype == dtype and torch.equal(again, original)
    # and through the safetensors pair
    v.save(tmp_path / "evil")
    PersonaVector.load(tmp_path / "evil").to_persona_vectors_pt(tmp_path / "out2.pt")
    assert torch.equal(torch.load(tmp_path / "out2.pt", weights_only=True), original)


def test_pt_export_without_embedding_row_has_zero_row(tmp_path):
    v = make()
    path = v.to_persona_vectors_pt(tmp_path / "sub" / "v.pt")
    out = torch.load(path, weights_only=True)
    assert out.dtype == torch.float32
    assert torch.equal(out[0], torch.zeros(D_MODEL)) and torch.equal(out[1:], v.directions)
    assert [p.name for p in path.parent.iterdir()] == ["v.pt"]


@pytest.mark.filterwarnings("ignore:.*its last row:UserWarning")
def test_pt_dict_with_single_tensor(tmp_path):
    t = torch.randn(N_LAYERS + 1, D_MODEL)
    torch.save({"vector": t}, tmp_path / "d.pt")
    v = PersonaVector.from_persona_vectors_pt(tmp_path / "d.pt", model="m", trait="t")
    assert torch.equal(v.directions, t[1:])
    torch.save({"a": t, "b": t}, tmp_path / "two.pt")
    with pytest.raises(PersonaLensError, match="exactly one tensor"):
        PersonaVector.from_persona_vectors_pt(tmp_path / "two.pt", model="m", trait="t")
    torch.save([t], tmp_path / "list.pt")
    with pytest.raises(PersonaLensError, match="holds a list"):
        PersonaVector.from_persona_vectors_pt(tmp_path / "list.pt", model="m", trait="t")
    torch.save(torch.randn(1, D_MODEL), tmp_path / "short.pt")
    with pytest.raises(PersonaLensError, match="at least 2 rows"):
        PersonaVector.from_persona_vectors_pt(tmp_path / "short.pt", model="m", trait="t")


def test_pt_missing_file(tmp_path):
    with pytest.raises(PersonaLensError, match="not found"):
        PersonaVector.from_persona_vectors_pt(tmp_path / "nope.pt", model="m", trait="t")


@pytest.mark.parametrize("wrap", ["bare", "in_dict"])
def test_pt_with_pickled_object_is_refused_and_never_runs(tmp_path, wrap):
    marker = tmp_path / "code_ran"
    payload = Payload(marker)
    obj = payload if wrap == "bare" else {"vector": torch.zeros(2, 2), "extra": payload}
    path = tmp_path / "evil.pt"
    torch.save(obj, path)
    with pytest.raises(PersonaLensError, match="weights_only=True"):
        PersonaVector.from_persona_vectors_pt(path, model="m", trait="t")
    assert not marker.exists()
    # the payload is live: an unsafe load would have run it
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_pt_plain_pickle_is_refused(tmp_path):
    path = tmp_path / "plain.pt"
    marker = tmp_path / "code_ran"
    path.write_bytes(pickle.dumps(Payload(marker), protocol=2))
    with pytest.raises(PersonaLensError, match="Refused to load"):
        PersonaVector.from_persona_vectors_pt(path, model="m", trait="t")
    assert not marker.exists()
