"""A layer sweep from a vector in one call: the curves its extraction recorded in its metadata,
drawn with their CIs and n where recorded, with no model and no generation."""

from __future__ import annotations

import json

import pytest

import personalens as pl
from personalens.errors import PersonaLensError
from personalens.plot import plot_layer_sweep
from personalens.studies.layer_sweep import layer_sweep
from personalens.studies.layer_sweep_result import LayerSweepResult
from personalens.vectors.vector import PersonaVector

# the finished extraction runs of the layer-sweep tests (a module-scoped fixture)
from tests.unit.test_layer_sweep import runs  # noqa: F401

# what an extraction run's summary.json holds and a vector can record (see the report of the
# change to personalens.extraction.heldout.HeldoutReport.vector_metadata)
RECORDED = (
    "layer_auc", "layer_auc_ci", "layer_auc_neutral", "layer_auc_neutral_ci", "n_heldout_pos",
    "n_heldout_neg", "heldout_bootstrap", "heldout_auc_on",
)  # fmt: skip


def test_a_shipped_vector_draws_its_recorded_sweep_in_one_call():
    v = pl.shipped_vector("evil")
    recorded = v.metadata["layer_auc"]
    sweep = pl.layer_sweep(v)  # no model, no generation
    assert sweep.trait == "evil" and sweep.layers == tuple(range(v.n_layers))
    assert list(sweep["response_avg"].auc) == recorded
    assert sweep.best_layer() == v.metadata["best_layer"] == 28
    assert sweep == LayerSweepResult.from_vector(v)
    assert "no CIs, no n" in sweep.note  # the shipped evil vector records the curve only
    fig = plot_layer_sweep(v)
    line, best = fig.data  # no CI recorded: no band
    assert list(line.y) == recorded and list(line.x) == list(range(30))
    assert list(best.x) == [28]
    assert "n not recorded" in fig.layout.title.text
    assert "Cohen's d" not in line.hovertemplate  # not recorded, not shown as nan
    again = LayerSweepResult.from_dict(json.loads(json.dumps(sweep.to_dict())))
    assert again.to_dict() == sweep.to_dict() and again["response_avg"].n_pos is None


def test_a_vector_without_a_recorded_sweep_is_a_clear_error():
    bare = pl.shipped_vector("compassionate")  # shipped without layer_auc
    assert "layer_auc" not in bare.metadata
    for call in (pl.layer_sweep, LayerSweepResult.from_vector, plot_layer_sweep):
        with pytest.raises(PersonaLensError, match=r"records no layer sweep.*layer_sweep\('RUN"):
            call(bare)
    v = pl.shipped_vector("evil")
    with pytest.raises(PersonaLensError, match="its own variant"):
        pl.layer_sweep(v, variants=["prompt_avg"])
    short = v.replace(metadata={**v.metadata, "layer_auc": [0.5, 0.6]})
    with pytest.raises(PersonaLensError, match="2 values for its 30 layers"):
        pl.layer_sweep(short)


@pytest.mark.parametrize("nested", [False, True])
def test_recorded_cis_and_n_are_the_runs_and_are_drawn(runs, nested):  # noqa: F811
    """A vector that records what its run's summary.json holds (top level, or under
    ``shipped_from`` as a shipped copy would) gives the run's own sweep: same AUCs, CIs, n."""
    run_dir, result, _ = runs["kept"]
    summary = json.loads((run_dir / "summary.json").read_text())
    extra = {k: summary[k] for k in RECORDED}
    vec = PersonaVector.load(run_dir / "vector")
    if nested:  # a shipped copy (tools/ship_vectors.py) keeps them under shipped_from
        plain = {k: v for k, v in vec.metadata.items() if k not in RECORDED}
        vec = vec.replace(metadata={**plain, "shipped_from": extra})
    else:  # the vector as extraction saved it records them itself
        assert {k: vec.metadata[k] for k in RECORDED} == extra
    recorded = pl.layer_sweep(vec)
    fresh = layer_sweep(run_dir, variants=["response_avg"])  # the summary's 1000 resamples
    for got, want in (
        (recorded["response_avg"], fresh["response_avg"]),
        (recorded.neutral_metrics(), fresh.neutral_metrics()),
    ):
        assert got.auc == pytest.approx(want.auc, abs=1e-4)
        flat = [x for c in got.auc_ci for x in c]
        assert flat == pytest.approx([x for c in want.auc_ci for x in c], abs=1e-4)
        assert (got.n_pos, got.n_neg) == (want.n_pos, want.n_neg)
    assert recorded.note == "" and recorded.n_boot == 1000
    assert recorded.best_layer(neutral=True) == fresh.best_layer(neutral=True)
    fig = plot_layer_sweep(vec)
    band_c, line_c, band_n, line_n, best = fig.data  # both readings, each with its CI band
    assert band_c.fill == band_n.fill == "toself"
    assert list(line_n.y) == list(recorded.neutral_metrics().auc)
    n_pos, n_neg = summary["n_heldout_pos"], summary["n_heldout_neg"]
    title = fig.layout.title.text
    assert f"n = {n_pos} pos + {n_neg} neg" in title and "95% CI, 1000 bootstrap" in title
