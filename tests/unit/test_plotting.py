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


# ----------------------------------------------------------------------------- layer sweep


def _metrics(layers, auc, dip_at=None):
    ci = [(a - 0.05, min(1.0, a + 0.05)) for a in auc]
    if dip_at is not None:
        ci[dip_at] = (0.21, ci[dip_at][1])  # one interval dips far below the rest
    n = len(layers)
    from personalens.studies.layer_sweep_result import LayerMetrics

    return LayerMetrics(
        layers=tuple(layers), auc=tuple(auc), auc_ci=tuple(ci), separation=(1.0,) * n,
        separation_ci=tuple((0.5, 1.5) for _ in layers), cohens_d=(1.0,) * n,
        var_pos=(1.0,) * n, var_neg=(1.0,) * n, n_pos=37, n_neg=41,
    )  # fmt: skip


def _layer_sweep(dip_at=None, trait="evil"):
    from personalens.studies.layer_sweep_result import LayerSweepResult

    layers = [2, 3, 4, 5, 6]
    return LayerSweepResult(
        trait=trait, model="tiny", split="heldout", evaluated_on="all held-out replies",
        n_boot=123, ci=0.9,
        metrics={"response_avg": _metrics(layers, [0.7, 0.8, 0.9, 0.95, 0.9])},
        neutral={"response_avg": _metrics(layers, [0.6, 0.65, 0.7, 0.8, 0.75], dip_at)},
    )  # fmt: skip


def test_plot_layer_sweep_axes_legend_and_subtitle():
    from personalens.plot import plot_layer_sweep

    fig = plot_layer_sweep(_layer_sweep())
    x = fig.layout.xaxis
    assert list(x.range) == [1.5, 6.5]  # the swept layers 2..6, half a layer of room
    assert list(x.tickvals) == [2, 3, 4, 5, 6] and x.tickmode == "array"
    bands = [t for t in fig.data if t.fill == "toself"]
    assert len(bands) == 2
    assert [b.showlegend for b in bands] == [True, False]  # one legend entry for the CI
    assert bands[0].name == "evil 90% CI"
    assert fig.layout.yaxis.range[0] == 0.4 and fig.layout.yaxis.range[1] >= 1.0
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert [t.line.dash for t in lines] == ["dash", None]  # with system prompt, reply only
    title = fig.layout.title.text
    head = title.split("<br>")[0]
    assert "evil" in head and "tiny" in head and "response_avg" in head
    assert not re.search(r"\([^)]*\(", head)  # no nested parentheses
    assert "evaluated on" not in title
    for needed in ("37 pos", "41 neg", "held-out replies", "90% CI", "123 bootstrap",
                   "system prompt", "reply only"):  # fmt: skip
        assert needed in title, needed
    (chance,) = [s for s in fig.layout.shapes if s.y0 == 0.5]
    assert any("chance" in (a.text or "") and "0.5" in a.text for a in fig.layout.annotations)


def test_plot_layer_sweep_y_axis_survives_a_ci_dip():
    from personalens.plot import plot_layer_sweep

    fig = plot_layer_sweep(_layer_sweep(dip_at=2))
    bottom, top = fig.layout.yaxis.range
    assert 0.0 < bottom <= 0.21 and bottom >= 0.1 and top >= 1.0
    several = plot_layer_sweep([_layer_sweep(), _layer_sweep(trait="calm")])
    shown = [t.name for t in several.data if t.fill == "toself" and t.showlegend]
    assert shown == ["evil 90% CI", "calm 90% CI"]
    assert "37 pos + 41 neg" in several.layout.title.text


# ----------------------------------------------------------------------------- SAE cosines


def _decomposition(d_model=576):
    from personalens.sae.decompose import Decomposition

    rows = []
    for layer, scale in ((3, 0.47), (7, 0.3)):
        for direction, sign in (("aligned", 1), ("anti", -1)):
            for rank in (1, 2):
                rows.append(
                    {"layer": layer, "direction": direction, "rank": rank,
                     "feature": 10 * layer + rank + (5 if sign < 0 else 0),
                     "cosine": sign * scale / rank, "projection": sign * scale / rank,
                     "decoder_norm": 1.0}
                )  # fmt: skip
    settings = {"d_sae": {"3": 2304, "7": 2304}}
    if d_model:
        settings["d_model"] = d_model
    return Decomposition(
        trait="evil", model="tiny", k=2, layers=(3, 7), rows=tuple(rows),
        cosines={3: torch.zeros(2304), 7: torch.zeros(2304)}, settings=settings,
    )  # fmt: skip


def test_random_max_cosine_matches_theory():
    from personalens.plot.sae import random_max_cosine

    assert random_max_cosine(576, 1) == pytest.approx(1.96 / 576**0.5, rel=0.01)
    g = torch.Generator().manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(64, generator=g), dim=0)
    maxima = [
        (torch.nn.functional.normalize(torch.randn(200, 64, generator=g), dim=1) @ v).abs().max()
        for _ in range(400)
    ]
    empirical = torch.quantile(torch.stack(maxima), 0.95).item()
    assert random_max_cosine(64, 200) == pytest.approx(empirical, rel=0.05)


def test_plot_sae_cosines_panels_range_band_and_labels():
    from personalens.plot import plot_sae_cosines
    from personalens.plot.sae import random_max_cosine

    fig = plot_sae_cosines(_decomposition())
    titles = [a.text for a in fig.layout.annotations if a.text.startswith("layer")]
    assert titles == ["layer 3", "layer 7"]
    assert [t.yaxis for t in fig.data] == ["y", "y", "y2", "y2"]  # layer 3 bars, then layer 7
    assert all("layer" not in t.name for t in fig.data if t.showlegend)  # legend: no one layer
    assert [t.showlegend for t in fig.data] == [True, True, False, False]
    for axis in (fig.layout.yaxis, fig.layout.yaxis2):
        assert list(axis.range) == pytest.approx([-0.47 * 1.15, 0.47 * 1.15])
    # the panels do not overlap: the lower one's title sits clear of the upper one's ticks
    top, bottom = fig.layout.yaxis.domain, fig.layout.yaxis2.domain
    plot_px = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b
    assert (top[0] - bottom[1]) * plot_px >= 100
    band = random_max_cosine(576, 2304)
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(rects) == 2 and [r.y1 for r in rects] == pytest.approx([band, band])
    assert [r.y0 for r in rects] == pytest.approx([-band, -band])
    assert [r.showlegend for r in rects] == [True, False] and "random" in rects[0].name
    assert "2,304 random unit directions in 576 dimensions" in fig.layout.title.text
    assert list(fig.data[0].x) == ["f31", "f32"]

    labelled = plot_sae_cosines(_decomposition(), feature_labels={3: {31: " evil\n"}})
    assert list(labelled.data[0].x) == ["f31 evil", "f32"] and list(labelled.data[2].x) == [
        "f71",
        "f72",
    ]
    flat = plot_sae_cosines(_decomposition(), feature_labels={71: "x"})
    assert list(flat.data[2].x) == ["f71 x", "f72"]

    small = plot_sae_cosines(_decomposition(d_model=None))  # no width known: no band
    assert not [s for s in small.layout.shapes if s.type == "rect"]
    assert "d_model=" in small.layout.title.text
    small = plot_sae_cosines(_decomposition(d_model=None), d_model=576)
    assert len([s for s in small.layout.shapes if s.type == "rect"]) == 2
