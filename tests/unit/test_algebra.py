from __future__ import annotations

import pytest
import torch

from personalens.errors import PersonaLensError
from personalens.vectors.algebra import (
    CosineMatrix,
    cosine_by_layer,
    cosine_matrix,
    gram_schmidt,
    normalize,
    project_out,
)
from personalens.vectors.vector import PersonaVector

N_LAYERS, D_MODEL = 4, 6


def make(trait: str = "evil", seed: int = 0, model: str = "tiny", **kw) -> PersonaVector:
    g = torch.Generator().manual_seed(seed)
    return PersonaVector(
        directions=torch.randn(N_LAYERS, D_MODEL, generator=g), model=model, trait=trait, **kw
    )


def from_rows(rows: torch.Tensor, trait: str, **kw) -> PersonaVector:
    return PersonaVector(directions=rows, model="tiny", trait=trait, **kw)


def dots(a: PersonaVector, b: PersonaVector) -> torch.Tensor:
    return (a.directions.double() * b.directions.double()).sum(-1)


def rank(rows: list[torch.Tensor]) -> int:
    return int(torch.linalg.matrix_rank(torch.stack(rows).double(), rtol=1e-5))


# ----------------------------------------------------------------------------- normalize


def test_normalize_gives_unit_rows_and_keeps_zero_rows_zero():
    d = make().directions.clone()
    d[2] = 0.0
    v = from_rows(d, "evil")
    n = normalize(v)
    assert n == v.unit()
    norms = n.norms()
    assert torch.allclose(norms[[0, 1, 3]], torch.ones(3), atol=1e-6)
    assert norms[2] == 0 and torch.isfinite(n.directions).all()
    assert (n.trait, n.method) == (v.trait, v.method)


def test_normalize_some_layers_only():
    v = make()
    n = normalize(v, layers=[0, -1])
    assert torch.allclose(n.norms()[[0, 3]], torch.ones(2), atol=1e-6)
    assert torch.equal(n.directions[1:3], v.directions[1:3])
    assert n.metadata["normalised_layers"] == [0, 3]
    with pytest.raises(ValueError, match="unknown layer"):
        normalize(v, layers=[N_LAYERS])
    with pytest.raises(PersonaLensError, match="twice"):
        normalize(v, layers=[1, 1 - N_LAYERS])


# ----------------------------------------------------------------------------- project_out


def test_project_out_is_orthogonal_to_every_other_at_every_layer_and_idempotent():
    v, a, b = make("evil", 0), make("sycophancy", 1), make("humor", 2)
    # make the others far from orthogonal, so that projecting out one at a time would be wrong
    b = from_rows(b.directions + 3 * a.directions, "humor")
    p = project_out(v, [a, b])
    for other in (a, b):
        assert torch.allclose(dots(p, other), torch.zeros(N_LAYERS, dtype=torch.float64), atol=1e-5)
    again = project_out(p, [a, b])
    assert torch.allclose(again.directions, p.directions, atol=1e-5)
    # sequential one-at-a-time projection leaves a component along a: not a projection on the span
    naive = v.directions - (dots(v, a) / dots(a, a)).float()[:, None] * a.directions
    naive = (
        naive
        - ((naive.double() * b.directions.double()).sum(-1) / dots(b, b)).float()[:, None]
        * b.directions
    )
    assert (naive.double() * a.directions.double()).sum(-1).abs().max() > 1e-2


def test_project_out_matches_least_squares_per_layer():
    v, a, b = make("evil", 0), make("sycophancy", 1), make("humor", 2)
    p = project_out(v, [a, b])
    for layer in range(N_LAYERS):
        basis = torch.stack([a[layer], b[layer]], dim=1).double()  # [d, 2]
        coef = torch.linalg.lstsq(basis, v[layer].double()[:, None]).solution
        expected = v[layer].double() - (basis @ coef)[:, 0]
        assert torch.allclose(p[layer].double(), expected, atol=1e-5)


def test_project_out_provenance():
    v, a = make("evil", 0, judge="gpt"), make("sycophancy", 1, judge="gpt")
    p = project_out(v, a)
    assert p.method == "project_out"
    assert p.trait == "project_out(evil, [sycophancy])"
    assert p.metadata["op"] == "project_out"
    assert p.metadata["others"] == ["sycophancy"]
    assert [s["trait"] for s in p.metadata["sources"]] == ["evil", "sycophancy"]
    assert (p.model, p.judge) == ("tiny", "gpt")


def test_project_out_handles_dependent_and_zero_others():
    v, a, b = make("evil", 0), make("sycophancy", 1), make("humor", 2)
    dependent = from_rows(2 * a.directions - b.directions, "mix")
    zero = from_rows(torch.zeros(N_LAYERS, D_MODEL), "nothing")
    p = project_out(v, [a, b, dependent, zero])
    expected = project_out(v, [a, b])
    assert torch.isfinite(p.directions).all()
    assert torch.allclose(p.directions, expected.directions, atol=1e-5)
    # projecting out only a zero vector changes nothing
    assert torch.allclose(project_out(v, zero).directions, v.directions)


def test_project_out_is_per_layer_not_on_the_flattened_tensor():
    # at layer 0, v is parallel to a; at layer 1, v is orthogonal to a
    a = from_rows(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), "a")
    v = from_rows(torch.tensor([[2.0, 0.0], [0.0, 3.0]]), "v")
    p = project_out(v, a)
    assert torch.allclose(p.directions, torch.tensor([[0.0, 0.0], [0.0, 3.0]]))


def test_project_out_also_treats_the_embedding_row_when_all_have_one():
    row_v, row_a = torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0])
    a = from_rows(torch.tensor([[1.0, 0.0]]), "a", hf_embedding_row=row_a)
    v = from_rows(torch.tensor([[1.0, 2.0]]), "v", hf_embedding_row=row_v)
    p = project_out(v, a)
    assert torch.allclose(p.hf_embedding_row, torch.tensor([0.0, 1.0]))
    assert project_out(v, a.replace(hf_embedding_row=None)).hf_embedding_row is None


def test_project_out_needs_others():
    with pytest.raises(PersonaLensError, match="at least one"):
        project_out(make(), [])


# ----------------------------------------------------------------------------- gram_schmidt


def test_gram_schmidt_orthogonal_span_preserving_first_unchanged():
    vs = [make("evil", 0), make("sycophancy", 1), make("humor", 2)]
    # nearly parallel inputs are the hard case for classical Gram-Schmidt
    vs[2] = from_rows(vs[0].directions + 1e-3 * vs[2].directions, "humor")
    out = gram_schmidt(vs)
    assert len(out) == 3
    assert out[0] is vs[0]
    for i in range(3):
        for j in range(i):
            cos = cosine_by_layer(out[i], out[j])
            assert cos.abs().max() < 1e-4, (i, j, cos)
    for layer in range(N_LAYERS):
        for j in range(1, 4):
            inputs = [v[layer] for v in vs[:j]]
            outputs = [u[layer] for u in out[:j]]
            assert rank(inputs) == rank(outputs) == rank(inputs + outputs) == j
    # output 1 is vs[1] minus its projection on vs[0]
    assert torch.allclose(out[1].directions, project_out(vs[1], vs[0]).directions, atol=1e-6)
    assert out[1].method == "gram_schmidt"
    assert out[1].trait == "gram_schmidt(sycophancy, after=[evil])"
    assert out[2].metadata["after"] == ["evil", "sycophancy"]


def test_gram_schmidt_keeps_norms_unless_normalize():
    vs = [make("evil", 0), make("sycophancy", 1)]
    out = gram_schmidt(vs)
    # the residual is shorter than the input
    assert (out[1].norms() < vs[1].norms()).all()
    unit = gram_schmidt(vs, normalize=True)
    for u in unit:
        assert torch.allclose(u.norms(), torch.ones(N_LAYERS), atol=1e-6)
    assert torch.allclose(unit[1].directions, out[1].unit().directions)
    assert cosine_by_layer(unit[0], unit[1]).abs().max() < 1e-5


def test_gram_schmidt_degenerate_rows_become_zero_without_nan():
    a, b = make("a", 0), make("b", 1)
    d = (a.directions + b.directions).clone()  # in the span of a and b ...
    d[1] = make("c", 2).directions[1]  # ... except at layer 1
    zero_rows = b.directions.clone()
    zero_rows[3] = 0.0
    vs = [a, from_rows(zero_rows, "b"), from_rows(d, "c"), a]
    for normalize_rows in (False, True):
        out = gram_schmidt(vs, normalize=normalize_rows)
        for u in out:
            assert torch.isfinite(u.directions).all()
        # a repeated vector is redundant everywhere
        assert torch.equal(out[3].directions, torch.zeros(N_LAYERS, D_MODEL))
        # c is new only at layer 1 and at layer 3 (where b is zero, so the span lacks b)
        norms = out[2].norms()
        assert norms[0] == 0 and norms[2] == 0
        assert norms[1] > 0 and norms[3] > 0
        assert out[1].norms()[3] == 0


# ----------------------------------------------------------------------------- cosines


def test_cosine_matrix_diagonal_symmetric_and_per_layer():
    vs = [make("evil", 0), make("sycophancy", 1), make("humor", 2)]
    cm = cosine_matrix(vs)
    assert isinstance(cm, CosineMatrix)
    assert cm.values.shape == (N_LAYERS, 3, 3) and cm.values.dtype == torch.float32
    assert cm.layers == list(range(N_LAYERS))
    assert cm.names == ["evil", "sycophancy", "humor"]
    assert torch.allclose(cm.values.diagonal(dim1=-2, dim2=-1), torch.ones(N_LAYERS, 3))
    assert torch.equal(cm.values, cm.values.mT)
    for layer in range(N_LAYERS):
        for i, a in enumerate(vs):
            for j, b in enumerate(vs):
                direct = torch.nn.functional.cosine_similarity(a[layer], b[layer], dim=0)
                assert torch.allclose(cm.at(layer)[i, j], direct, atol=1e-6)
    assert torch.allclose(cm.values[:, 0, 1], cosine_by_layer(vs[0], vs[1]))


def test_cosine_matrix_differs_from_the_flattened_cosine():
    # layer 0: parallel with a small norm; layer 1: orthogonal with a large norm
    a = from_rows(torch.tensor([[0.1, 0.0], [10.0, 0.0]]), "a")
    b = from_rows(torch.tensor([[0.1, 0.0], [0.0, 10.0]]), "b")
    cm = cosine_matrix([a, b])
    assert torch.allclose(cm.values[:, 0, 1], torch.tensor([1.0, 0.0]))
    flat = torch.nn.functional.cosine_similarity(a.directions.flatten(), b.directions.flatten(), 0)
    assert flat.item() == pytest.approx(1e-4, abs=1e-6)  # dominated by the big layer
    assert not torch.allclose(cm.values[:, 0, 1].mean(), flat, atol=0.1)


def test_cosine_matrix_layers_names_and_frame():
    vs = [make("evil", 0), make("evil", 1), make("humor", 2)]
    cm = cosine_matrix(vs, layers=[-1, 1])
    assert cm.layers == [N_LAYERS - 1, 1]
    assert cm.names == ["evil", "evil #2", "humor"]  # repeated traits made distinct
    full = cosine_matrix(vs)
    assert torch.equal(cm.at(1), full.at(1)) and torch.equal(cm.at(3), full.at(3))
    with pytest.raises(ValueError, match="holds layers"):
        cm.at(0)
    df = cm.to_frame()
    assert list(df.columns) == ["layer", "a", "b", "cosine"]
    assert len(df) == 2 * 3 * 3
    row = df[(df.layer == 1) & (df.a == "evil") & (df.b == "humor")]
    assert row.cosine.item() == pytest.approx(full.at(1)[0, 2].item())
    named = cosine_matrix(vs, names=["x", "y", "z"])
    assert named.names == ["x", "y", "z"]
    with pytest.raises(PersonaLensError, match="distinct"):
        cosine_matrix(vs, names=["x", "x", "z"])
    with pytest.raises(PersonaLensError, match="2 entries"):
        cosine_matrix(vs, names=["x", "y"])


def test_mean_abs_offdiag():
    e = torch.eye(3)
    a = from_rows(torch.stack([e[0], e[0]]), "a")
    b = from_rows(torch.stack([e[1], -e[0]]), "b")
    c = from_rows(torch.stack([e[2], e[1]]), "c")
    cm = cosine_matrix([a, b, c])
    # layer 0: orthonormal; layer 1: |cos(a, b)| = 1, others 0 -> 2 of 6 off-diagonal entries
    assert torch.allclose(cm.mean_abs_offdiag(), torch.tensor([0.0, 1.0 / 3.0]))
    with pytest.raises(PersonaLensError, match="at least 2"):
        cosine_matrix([a]).mean_abs_offdiag()


def test_zero_rows_give_zero_cosines_not_nan():
    d = make("a", 0).directions.clone()
    d[2] = 0.0
    a, b = from_rows(d, "a"), make("b", 1)
    cm = cosine_matrix([a, b])
    assert torch.isfinite(cm.values).all()
    assert torch.equal(cm.at(2), torch.tensor([[0.0, 0.0], [0.0, 1.0]]))
    cos = cosine_by_layer(a, b)
    assert torch.isfinite(cos).all() and cos[2] == 0


@pytest.mark.parametrize(
    ("other", "message"),
    [
        (
            PersonaVector(directions=torch.ones(N_LAYERS, D_MODEL + 1), model="tiny", trait="x"),
            "different shapes",
        ),
        (
            PersonaVector(directions=torch.ones(N_LAYERS + 1, D_MODEL), model="tiny", trait="x"),
            "different shapes",
        ),
        (make("x", model="other-model"), "different models"),
    ],
)
def test_mismatched_vectors_raise(other, message):
    v = make()
    calls = [
        lambda: cosine_matrix([v, make("y", 1), other]),
        lambda: cosine_by_layer(v, other),
        lambda: project_out(v, [other]),
        lambda: gram_schmidt([v, other]),
    ]
    for call in calls:
        with pytest.raises(PersonaLensError, match=message) as info:
            call()
        assert "'x'" in str(info.value) and "not in the same space" in str(info.value)
    with pytest.raises(PersonaLensError, match=r"vectors\[2\]"):
        cosine_matrix([v, make("y", 1), other])


def test_empty_inputs_raise():
    with pytest.raises(PersonaLensError, match="at least one"):
        cosine_matrix([])
    with pytest.raises(PersonaLensError, match="at least one"):
        gram_schmidt([])
