from __future__ import annotations

import re

import plotly.graph_objects as go
import pytest
import torch

from personalens.plot import plot_cosine_by_layer, plot_cosine_matrix, save_html
from personalens.vectors.algebra import cosine_matrix
from personalens.vectors.vector import PersonaVector

N_LAYERS, D_MODEL = 5, 8
TRAITS = ["openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism"]


def make(trait: str, seed: int) -> PersonaVector:
    g = torch.Generator().manual_seed(seed)
    return PersonaVector(
        directions=torch.randn(N_LAYERS, D_MODEL, generator=g), model="tiny", trait=trait
    )


@pytest.fixture
def cm():
    return cosine_matrix([make(t, i) for i, t in enumerate(TRAITS)])


def test_plot_cosine_matrix_heatmap_and_slider(cm):
    fig = plot_cosine_matrix(cm)
    assert isinstance(fig, go.Figure)
    (heat,) = fig.data
    assert isinstance(heat, go.Heatmap)
    assert (heat.zmin, heat.zmax) == (-1.0, 1.0)
    assert heat.texttemplate  # values are annotated on the cells
    assert list(heat.x) == TRAITS and list(heat.y) == TRAITS
    middle = N_LAYERS // 2
    assert torch.allclose(torch.tensor(heat.z), cm.at(middle))
    (slider,) = fig.layout.sliders
    assert slider.active == middle
    assert [s.label for s in slider.steps] == [str(layer) for layer in range(N_LAYERS)]
    for layer, step in enumerate(slider.steps):
        (z,) = step.args[0]["z"]
        assert torch.allclose(torch.tensor(z), cm.at(layer))
        assert f"layer {layer}" in step.args[1]["title"]["text"]
    assert f"layer {middle}" in fig.layout.title.text


def test_plot_cosine_matrix_chosen_layer_and_subset_of_layers():
    vs = [make(t, i) for i, t in enumerate(TRAITS[:3])]
    cm = cosine_matrix(vs, layers=[1, 3, 4])
    fig = plot_cosine_matrix(cm, layer=4)
    assert fig.layout.sliders[0].active == 2
    assert len(fig.layout.sliders[0].steps) == 3
    assert torch.allclose(torch.tensor(fig.data[0].z), cm.at(4))
    assert plot_cosine_matrix(cm).layout.sliders[0].active == 1  # middle of [1, 3, 4]
    with pytest.raises(ValueError, match="holds layers"):
        plot_cosine_matrix(cm, layer=0)


def test_plot_cosine_by_layer_one_trace_per_pair(cm):
    fig = plot_cosine_by_layer(cm)
    k = len(TRAITS)
    assert len(fig.data) == k * (k - 1) // 2
    assert all(isinstance(t, go.Scatter) for t in fig.data)
    first = fig.data[0]
    assert first.name == f"{TRAITS[0]} · {TRAITS[1]}"
    assert list(first.x) == cm.layers
    assert torch.allclose(torch.tensor(first.y), cm.values[:, 0, 1])
    assert len({t.name for t in fig.data}) == len(fig.data)


def test_save_html_is_self_contained(cm, tmp_path):
    fig = plot_cosine_matrix(cm)
    path = save_html(fig, tmp_path / "sub" / "ocean.html")
    assert path == tmp_path / "sub" / "ocean.html" and path.is_file()
    html = path.read_text(encoding="utf-8")
    assert "<html" in html
    assert re.search(r"plotly\.js v\d", html)  # the library itself is embedded
    assert len(html) > 1_000_000
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, flags=re.IGNORECASE)
    assert [p.name for p in path.parent.iterdir()] == ["ocean.html"]  # no temp file left behind
    save_html(plot_cosine_by_layer(cm), path)  # overwrites atomically
    assert "Cosine similarity by layer" in path.read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- Big Five control


def _sweep():
    from personalens.studies.personality.scalar_sweep import ScalarSweepResult

    dims = ("extraversion", "agreeableness")
    records = []
    for c in (-0.1, 0.0, 0.1):
        for dim, slope in zip(dims, (2.0, 0.5)):
            records.append(
                {"trait": "outgoing", "coeff": c, "dimension": dim, "score": 1 + slope * c,
                 "sem": 0.3, "delta": slope * c, "delta_sem": 0.01, "is_target": dim == dims[0]}
            )  # fmt: skip
    return ScalarSweepResult(
        trait="outgoing", target="extraversion", sign=1, coeffs=(-0.1, 0.0, 0.1),
        dimensions=dims, method="likelihood", units="nats/token", records=tuple(records),
        settings={"layers": [15], "coeff_scale": "resid"},
    )  # fmt: skip


def test_plot_scalar_sweep_fits_and_highlights_the_target():
    from personalens.plot import plot_scalar_sweep

    fig = plot_scalar_sweep(_sweep())
    assert isinstance(fig, go.Figure)
    points = [t for t in fig.data if t.mode == "markers"]
    lines = [t for t in fig.data if t.mode == "lines"]
    assert len(points) == 2 and len(lines) == 2
    assert "extraversion (target): slope +2, R² 1.00" in points[0].name
    assert list(points[0].y) == pytest.approx([-0.2, 0.0, 0.2])
    assert list(lines[0].y) == pytest.approx([-0.2, 0.0, 0.2])
    assert lines[0].line.width > lines[1].line.width
    assert "layer 15" in fig.layout.title.text and "nats/token" in fig.layout.yaxis.title.text
    score = plot_scalar_sweep(_sweep(), value="score")
    assert list(score.data[0].y) == pytest.approx([0.8, 1.0, 1.2])
    with pytest.raises(ValueError, match="value"):
        plot_scalar_sweep(_sweep(), value="slope")


def test_plot_additive_test_predicted_vs_observed():
    from personalens.plot import plot_additive_test
    from personalens.studies.personality.additive_test import AdditiveTestResult

    dims = ("extraversion", "agreeableness")
    obs = {
        "a": {"extraversion": 0.2, "agreeableness": 0.1},
        "b": {"extraversion": 0.1, "agreeableness": 0.3},
        "a+b": {"extraversion": 0.25, "agreeableness": 0.35},
        "a-b": {"extraversion": 0.05, "agreeableness": -0.15},
    }
    pred = {
        "a+b": {"extraversion": 0.3, "agreeableness": 0.4},
        "a-b": {"extraversion": 0.1, "agreeableness": -0.2},
    }
    sem = {k: {d: 0.01 for d in dims} for k in obs}
    res = AdditiveTestResult(
        a="outgoing", b="compassionate", coeff=0.1, dimensions=dims, method="likelihood",
        units="nats/token", observed=obs, sem=sem, predicted=pred,
        settings={"coeff_scale": "resid"},
    )  # fmt: skip
    fig = plot_additive_test(res)
    sums = [t for t in fig.data if t.name == "outgoing + compassionate"]
    assert len(sums) == 1 and list(sums[0].x) == pytest.approx([0.3, 0.4])
    assert list(sums[0].y) == pytest.approx([0.25, 0.35]) and list(sums[0].text) == list(dims)
    identity = [t for t in fig.data if t.name == "observed = predicted"][0]
    assert list(identity.x) == list(identity.y)
    assert len(plot_additive_test([res, res]).data) == 5
    with pytest.raises(ValueError, match="at least one"):
        plot_additive_test([])
