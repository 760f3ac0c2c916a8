"""Layer sweep: planted directions, exact agreement with an extraction run, round trips, figure, CLI."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from personalens.errors import PersonaLensError
from personalens.extraction.config import ExtractionConfig
from personalens.extraction.heldout import heldout_layer_auc, heldout_sets
from personalens.extraction.pipeline import extract
from personalens.extraction.responses import filter_pairs
from personalens.extraction.run_activations import (
    activation_records,
    collect_neutral_activations,
    collect_run_activations,
)
from personalens.extraction.traits import parse_trait
from personalens.model.activations import VARIANTS, ActivationSet, collect_activations
from personalens.plot import plot_layer_separation, plot_layer_sweep
from personalens.stats import cohens_d, roc_auc
from personalens.studies.layer_sweep import layer_sweep
from personalens.studies.layer_sweep_metrics import (
    project,
    sweep_from_activations,
    sweep_from_projections,
)
from personalens.studies.layer_sweep_result import LayerSweepResult
from personalens.vectors.vector import PersonaVector

N_LAYERS, D_MODEL, PLANTED = 6, 16, 3

TRAIT = {
    "name": "sweeptrait",
    "instruction": [{"pos": "Be loud.", "neg": "Be quiet."}],
    "questions": ["How are you?", "What is up?", "Any news?"],
    "eval_questions": ["Hello?", "Why?"],
    "eval_prompt": "Q: {question}\nA: {answer}\nScore 0-100.",
}


class StubJudge:
    """Deterministic pseudo-scores from the answer text."""

    name = "stub"

    def score_trait(self, trait, items):
        return [float(sum(map(ord, it.answer)) % 101) for it in items]

    def score_coherence(self, items):
        return [100.0 for _ in items]


# ----------------------------------------------------------------------------- synthetic data


def planted(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """pos/neg activations [n, N_LAYERS, D_MODEL]: pure noise except along ``u`` at PLANTED."""
    g = torch.Generator().manual_seed(seed)
    u = torch.nn.functional.normalize(
        torch.randn(D_MODEL, generator=torch.Generator().manual_seed(99)), dim=0
    )
    pos = torch.randn(n, N_LAYERS, D_MODEL, generator=g)
    neg = torch.randn(n, N_LAYERS, D_MODEL, generator=g)
    pos[:, PLANTED] += 6.0 * u
    neg[:, PLANTED] -= 6.0 * u
    return pos, neg, u


def train_directions() -> torch.Tensor:
    """Mean-difference directions from an independent training sample (no overfitting)."""
    pos, neg, _ = planted(200, seed=1)
    return pos.mean(0) - neg.mean(0)


def test_planted_direction_is_found_with_sensible_cis():
    directions = train_directions()
    pos, neg, _ = planted(150, seed=2)
    r = sweep_from_activations(pos, neg, directions, trait="planted", model="synthetic", n_boot=400)
    m = r["response_avg"]
    assert m.layers == tuple(range(N_LAYERS)) and (m.n_pos, m.n_neg) == (150, 150)
    assert m.auc[PLANTED] == 1.0
    assert m.auc_ci[PLANTED] == (1.0, 1.0)
    others = [a for L, a in enumerate(m.auc) if L != PLANTED]
    assert all(abs(a - 0.5) < 0.2 for a in others), others
    assert r.best_layer() == PLANTED and r.best()["layer"] == PLANTED
    assert m.cohens_d[PLANTED] > 5 and m.separation[PLANTED] > 10
    for L in range(N_LAYERS):
        lo, hi = m.auc_ci[L]
        assert lo <= m.auc[L] <= hi
        slo, shi = m.separation_ci[L]
        assert slo <= m.separation[L] <= shi

    # the metrics are exactly the scalar definitions applied to the projections
    p, q = project(pos, directions), project(neg, directions)
    for L in range(N_LAYERS):
        assert m.auc[L] == roc_auc(p[:, L], q[:, L])
        assert math.isclose(m.cohens_d[L], cohens_d(p[:, L], q[:, L]), rel_tol=1e-9)
        pl, ql = p[:, L].double(), q[:, L].double()
        assert math.isclose(m.separation[L], (pl.mean() - ql.mean()).item(), rel_tol=1e-9)
        assert math.isclose(m.var_pos[L], pl.var().item(), rel_tol=1e-9)
        assert math.isclose(m.var_neg[L], ql.var().item(), rel_tol=1e-9)
        unit = directions[L] / directions[L].norm()
        assert torch.allclose(p[:, L], pos[:, L] @ unit, atol=1e-5)


def test_cis_narrow_with_more_samples():
    directions = train_directions()

    def mean_width(n):
        pos, neg, _ = planted(n, seed=3)
        m = sweep_from_activations(pos, neg, directions, n_boot=300)["response_avg"]
        return np.mean([hi - lo for L, (lo, hi) in enumerate(m.auc_ci) if L != PLANTED])

    small, large = mean_width(30), mean_width(400)
    assert large < 0.5 * small, (small, large)


def test_bootstrap_matches_a_naive_loop_with_ties():
    """Stratified resampling: each resample redraws pos and neg separately; ties count half."""
    g = torch.Generator().manual_seed(5)
    pos = torch.randint(0, 4, (23, 3), generator=g).double()  # many ties
    neg = torch.randint(-1, 3, (19, 3), generator=g).double()
    n_boot, seed = 60, 11
    m = sweep_from_projections(pos, neg, n_boot=n_boot, ci=0.9, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    ip = torch.randint(0, 23, (n_boot, 23), generator=gen)
    iq = torch.randint(0, 19, (n_boot, 19), generator=gen)
    boot = np.array(
        [[roc_auc(pos[ip[b], L], neg[iq[b], L]) for L in range(3)] for b in range(n_boot)]
    )
    seps = np.array([(pos[ip[b]].mean(0) - neg[iq[b]].mean(0)).numpy() for b in range(n_boot)])
    np.testing.assert_allclose(
        np.array(m.auc_ci), np.percentile(boot, [5, 95], axis=0).T, atol=1e-12
    )
    np.testing.assert_allclose(
        np.array(m.separation_ci), np.percentile(seps, [5, 95], axis=0).T, atol=1e-12
    )
    assert m.auc == tuple(roc_auc(pos[:, L], neg[:, L]) for L in range(3))
    # the same seed gives the same intervals; n_boot=0 gives none
    assert sweep_from_projections(pos, neg, n_boot=n_boot, ci=0.9, seed=seed) == m
    none = sweep_from_projections(pos, neg, n_boot=0)
    assert none.auc_ci is None and none.separation_ci is None and none.auc == m.auc


def test_best_layer_ties_go_to_larger_cohens_d_then_lower_layer():
    pos = torch.tensor([[1.0, 10.0, 1.0], [2.0, 11.0, 2.0], [3.0, 12.0, 3.0]])
    neg = torch.tensor([[-1.0, 0.0, -1.0], [-2.0, 0.5, -2.0], [-3.0, 1.0, -3.0]])
    m = sweep_from_projections(pos, neg, n_boot=0)
    assert m.auc == (1.0, 1.0, 1.0)
    assert m.best_layer() == 1  # largest Cohen's d
    same = sweep_from_projections(pos[:, [0, 2]], neg[:, [0, 2]], layers=[4, 7], n_boot=0)
    assert same.best_layer() == 4  # identical columns: the lower layer


def test_bad_inputs_are_clear_errors():
    pos, neg = torch.randn(5, 2), torch.randn(4, 2)
    with pytest.raises(PersonaLensError, match="both classes"):
        sweep_from_projections(pos, neg[:0])
    with pytest.raises(PersonaLensError, match="ci must be"):
        sweep_from_projections(pos, neg, ci=95)
    with pytest.raises(PersonaLensError, match="non-finite"):
        sweep_from_projections(pos, torch.full((4, 2), math.nan))
    with pytest.raises((PersonaLensError, TypeError), match="do not match|n_layers"):
        sweep_from_activations(torch.randn(5, 2, 8), torch.randn(4, 2, 8), torch.randn(3, 8))


# ----------------------------------------------------------------------------- a tiny real run


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory):
    """Two finished runs: with enough judge-kept held-out pairs for the kept AUC beside the
    headline (on all held-out replies), and with too few (the kept AUC is null, with why)."""
    base = dict(threshold=0.0, n_per_question=2, max_new_tokens=6, generation_batch_size=8,
                activation_batch_size=5)  # fmt: skip
    out = {}
    for name, extra in (("kept", {}), ("fallback", {"min_heldout_per_class": 100})):
        cfg = ExtractionConfig(**base, **extra)
        run_dir = tmp_path_factory.mktemp("sweep") / name
        result = extract(
            tiny_model, parse_trait(TRAIT), StubJudge(), cfg, run_dir=run_dir, progress=False
        )
        out[name] = (run_dir, result, cfg)
    return out


@pytest.mark.parametrize("which", ["kept", "fallback"])
def test_agrees_exactly_with_the_run(runs, which):
    run_dir, result, cfg = runs[which]
    summary = json.loads((run_dir / "summary.json").read_text())
    sweep = layer_sweep(run_dir, n_boot=100)
    assert sweep.variants == VARIANTS
    assert sweep.trait == "sweeptrait" and sweep.model == "tiny-random"
    assert sweep.evaluated_on == summary["heldout_auc_on"]
    assert sweep.metadata["run_best_layer"] == summary["best_layer"]
    assert sweep.metadata["run_best_layer_neutral"] == summary["best_layer_neutral"]
    assert sweep.evaluated_on == "all held-out replies" and sweep.note == ""
    # the headline is always on all held-out replies; the kept subset only beside it
    n_eval = sum(1 for r in result.records if r["split"] == "eval" and r["response_tokens"])
    assert summary["n_heldout_pos"] + summary["n_heldout_neg"] == n_eval
    assert (summary["layer_auc_kept"] is None) == (which == "fallback")
    if which == "fallback":
        assert "min_heldout_per_class=100" in summary["layer_auc_kept_note"]
    else:
        assert summary["layer_auc_kept_note"] is None and len(summary["layer_auc_kept"]) == 3
        assert min(summary["n_heldout_kept_pos"], summary["n_heldout_kept_neg"]) >= 3
    # rebuild the held-out sets with extraction's own functions and compare unrounded
    filt = filter_pairs(result.records, result.scores, cfg)
    acts = collect_run_activations(
        None, activation_records(result.records, filt), cfg, run_dir, progress=False
    )
    neutral = collect_neutral_activations(None, result.records, filt, cfg, run_dir, False)
    held = heldout_sets(result.records, filt, acts, cfg, neutral=neutral)
    clean_pos, clean_neg = held.sides(neutral=True)
    for v in VARIANTS:
        m = sweep[v]
        assert m.layers == (0, 1, 2)
        assert (m.n_pos, m.n_neg) == (summary["n_heldout_pos"], summary["n_heldout_neg"])
        assert list(m.auc) == heldout_layer_auc(result.vectors[v], held.pos, held.neg, v)
        assert [round(a, 4) for a in m.auc] == summary["layer_auc_by_variant"][v]
        for a, (lo, hi) in zip(m.auc, m.auc_ci):
            assert 0.0 <= lo <= a <= hi <= 1.0
        c = sweep.neutral_metrics(v)
        assert (c.n_pos, c.n_neg) == (m.n_pos, m.n_neg)
        assert list(c.auc) == heldout_layer_auc(result.vectors[v], clean_pos, clean_neg, v)
        assert [round(a, 4) for a in c.auc] == summary["layer_auc_neutral_by_variant"][v]
    assert [round(a, 4) for a in sweep["response_avg"].auc] == summary["layer_auc"]
    # with the summary's bootstrap (1000 resamples, seed 0) the sweep's CIs are the summary's
    full = layer_sweep(run_dir, variants=["response_avg"])
    rounded = [[round(lo, 4), round(hi, 4)] for lo, hi in full["response_avg"].auc_ci]
    assert rounded == summary["layer_auc_ci"]
    clean_ci = full.neutral_metrics("response_avg").auc_ci
    assert [[round(lo, 4), round(hi, 4)] for lo, hi in clean_ci] == summary["layer_auc_neutral_ci"]
    # the vectors default to the clean curve's best layer
    assert result.vector.metadata["best_layer"] == summary["best_layer_neutral"]
    assert result.vector.metadata["best_layer_contaminated"] == summary["best_layer"]

    # the in-sample split uses the kept extraction pairs the vector was built from
    swept = layer_sweep(run_dir, variants=["response_avg"], n_boot=0, split="extract")
    assert swept.variants == ("response_avg",) and swept.split == "extract"
    assert (swept["response_avg"].n_pos, swept["response_avg"].n_neg) == (
        summary["n_pos"],
        summary["n_neg"],
    )


def test_extraction_result_source(runs, tiny_model):
    run_dir, result, cfg = runs["kept"]
    from_dir = layer_sweep(run_dir, n_boot=50)
    assert result.run_dir == run_dir
    assert layer_sweep(result, n_boot=50).to_dict() == from_dir.to_dict()
    detached = replace(result, run_dir=None)
    with pytest.raises(PersonaLensError, match="pass model="):
        layer_sweep(detached)
    again = layer_sweep(detached, model=tiny_model, batch_size=cfg.activation_batch_size, n_boot=50)
    for v in VARIANTS:
        assert again[v].auc == from_dir[v].auc


def test_model_and_data_source(runs, tiny_model):
    _, result, _ = runs["kept"]
    vec = result.vectors["response_avg"]
    pos = [
        ("How are you?", "I AM GREAT!"),
        ("Any news?", "YES, BIG NEWS!"),
        ("Hi?", "HELLO THERE!"),
    ]
    neg = [("How are you?", "fine."), ("Any news?", "none."), ("Hi?", "hello.")]
    r = layer_sweep(tiny_model, vec, {"pos": pos, "neg": neg}, n_boot=50)
    assert r.variants == ("response_avg",) and r.trait == "sweeptrait"
    pa = collect_activations(tiny_model, [p for p, _ in pos], [a for _, a in pos])
    na = collect_activations(tiny_model, [p for p, _ in neg], [a for _, a in neg])
    ref = sweep_from_activations(pa.response_avg, na.response_avg, vec, n_boot=50)
    assert r["response_avg"] == ref["response_avg"]
    # the same data as prompts/responses lists, as collected ActivationSets (no model), and
    # one vector per variant
    lists = {
        side: {"prompts": [p for p, _ in d], "responses": [a for _, a in d]}
        for side, d in (("pos", pos), ("neg", neg))
    }
    assert layer_sweep(tiny_model, vec, lists, n_boot=50)["response_avg"] == ref["response_avg"]
    sets = layer_sweep(None, dict(result.vectors), {"pos": pa, "neg": na}, n_boot=50)
    assert sets.variants == VARIANTS and sets["response_avg"] == ref["response_avg"]
    # a subset of layers is projected onto those layers' directions
    sub = ActivationSet(*(getattr(pa, v)[:, [1, 2]] for v in VARIANTS), layers=(1, 2))
    subn = ActivationSet(*(getattr(na, v)[:, [1, 2]] for v in VARIANTS), layers=(1, 2))
    part = layer_sweep(None, vec, {"pos": sub, "neg": subn}, n_boot=0)["response_avg"]
    assert part.layers == (1, 2) and part.auc == ref["response_avg"].auc[1:]
    with pytest.raises(PersonaLensError, match="give the persona vector"):
        layer_sweep(tiny_model, vec)
    with pytest.raises(PersonaLensError, match="'neg'"):
        layer_sweep(tiny_model, vec, {"pos": pos})


def test_frame_and_json_round_trip(runs, tmp_path):
    run_dir, _, _ = runs["kept"]
    r = layer_sweep(run_dir, n_boot=50)
    df = r.to_frame()
    assert len(df) == len(VARIANTS) * 3
    assert list(df.variant.unique()) == list(VARIANTS)
    for col in ("layer", "auc", "auc_low", "auc_high", "separation", "separation_low",
                "separation_high", "cohens_d", "var_pos", "var_neg", "n_pos", "n_neg", "best"):  # fmt: skip
        assert col in df.columns
    assert df[df.best].groupby("variant").size().to_dict() == {v: 1 for v in VARIANTS}
    path = r.save(tmp_path / "sweep.json")

    def no_nan(text):
        raise AssertionError(f"non-JSON constant {text}")

    json.loads(path.read_text(), parse_constant=no_nan)
    loaded = LayerSweepResult.load(path)
    assert loaded.to_dict() == r.to_dict()
    assert loaded.to_frame().equals(df)
    assert loaded.best_layer("prompt_avg") == r.best_layer("prompt_avg")

    # NaN (undefined Cohen's d with one sample per class) is stored as null and read back
    one = sweep_from_projections(torch.ones(1, 2), torch.zeros(1, 2), n_boot=5)
    res = LayerSweepResult(trait="t", model="m", metrics={"response_avg": one})
    data = json.loads(res.save(tmp_path / "one.json").read_text())
    assert data["variants"]["response_avg"]["cohens_d"] == [None, None]
    back = LayerSweepResult.load(tmp_path / "one.json")
    assert all(math.isnan(d) for d in back["response_avg"].cohens_d)
    with pytest.raises(PersonaLensError, match="not in this sweep"):
        res.best_layer("prompt_avg")


# ----------------------------------------------------------------------------- errors


def test_run_directory_errors(runs, tmp_path):
    with pytest.raises(PersonaLensError, match="no such run directory"):
        layer_sweep(tmp_path / "nope")
    with pytest.raises(PersonaLensError, match="not an extraction run directory"):
        layer_sweep(tmp_path)
    run_dir, _, _ = runs["kept"]
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    (broken / "summary.json").unlink()
    with pytest.raises(PersonaLensError, match="unfinished extraction run"):
        layer_sweep(broken)
    shutil.copy(run_dir / "summary.json", broken / "summary.json")
    next((broken / "activations").iterdir()).unlink()
    with pytest.raises(PersonaLensError, match="activation shard .* is missing"):
        layer_sweep(broken)
    with pytest.raises(PersonaLensError, match="do not pass vector or data"):
        layer_sweep(run_dir, data={"pos": [], "neg": []})
    with pytest.raises(PersonaLensError, match="unknown variant"):
        layer_sweep(run_dir, variants=["mean"])
    with pytest.raises(PersonaLensError, match="split must be"):
        layer_sweep(run_dir, split="eval")


# ----------------------------------------------------------------------------- figures


def _synthetic(trait: str, seed: int, n_boot: int = 100) -> LayerSweepResult:
    pos, neg, _ = planted(40, seed=seed)
    return sweep_from_activations(
        pos, neg, train_directions(), trait=trait, model="m", n_boot=n_boot
    )


def test_plot_layer_sweep_traces():
    r = _synthetic("evil", 7)
    fig = plot_layer_sweep(r)
    assert isinstance(fig, go.Figure)
    band, line, best = fig.data
    assert band.fill == "toself" and band.name == "evil 95% CI"
    assert list(band.x) == list(range(N_LAYERS)) + list(range(N_LAYERS))[::-1]
    m = r["response_avg"]
    assert list(band.y) == [hi for _, hi in m.auc_ci] + [lo for lo, _ in m.auc_ci][::-1]
    assert line.name == "evil" and list(line.y) == list(m.auc)
    assert "AUC" in line.hovertemplate and "Cohen's d" in line.hovertemplate
    assert "customdata[0]" in line.hovertemplate  # the CI
    assert best.marker.symbol == "star" and list(best.x) == [PLANTED] and list(best.y) == [1.0]
    (chance,) = [s for s in fig.layout.shapes if s.y0 == 0.5]
    assert chance.line.dash == "dash"
    assert any(f"L{PLANTED}" in a.text for a in fig.layout.annotations)
    # the axis starts at 0.4 or just under the lowest CI end, never at 0 because of one dip
    lowest = min(lo for lo, _ in m.auc_ci)
    assert 0.0 < fig.layout.yaxis.range[0] <= min(0.4, lowest) and fig.layout.yaxis.range[1] >= 1.0

    several = plot_layer_sweep([r, _synthetic("sycophantic", 8)])
    assert len(several.data) == 6
    assert [t.name for t in several.data if t.mode == "lines+markers"] == ["evil", "sycophantic"]
    assert len({t.line.color for t in several.data if t.mode == "lines+markers"}) == 2
    labelled = plot_layer_sweep({"A": r, "B": r})
    assert [t.name for t in labelled.data if t.mode == "lines+markers"] == ["A", "B"]
    no_ci = plot_layer_sweep(_synthetic("calm", 9, n_boot=0))
    assert len(no_ci.data) == 2 and no_ci.data[1].marker.symbol == "star"
    with pytest.raises(PersonaLensError, match="not in this sweep"):
        plot_layer_sweep(r, "prompt_avg")

    sep = plot_layer_separation(r)
    assert [t.name for t in sep.data] == ["95% CI", "separation", "Cohen's d"]


# ----------------------------------------------------------------------------- CLI and exports


def test_cli_sweep_writes_json_and_html(runs, tmp_path, capsys):
    from personalens.cli.main import main

    run_dir, _, _ = runs["kept"]
    assert main(["layer-sweep", "--run", str(run_dir), "--n-boot", "50"]) == 0
    out = capsys.readouterr().out
    saved = LayerSweepResult.load(run_dir / "layer_sweep.json")
    for v in VARIANTS:
        best = saved.best(v)
        assert f"best layer {best['layer']:>3}  AUC {best['auc']:.3f} [" in out
    assert saved.n_boot == 50
    html = (run_dir / "layer_sweep.html").read_text()
    assert "<html>" in html[:100] and "plotly" in html and len(html) > 1_000_000

    other = runs["fallback"][0]
    dest = tmp_path / "figs"
    rc = main(["layer-sweep", "--run", str(run_dir), "--run", str(other), "--variants", "response_avg",
               "--n-boot", "20", "--out", str(dest)])  # fmt: skip
    assert rc == 0
    assert (dest / "layer_sweep_kept.json").is_file() and (
        dest / "layer_sweep_fallback.json"
    ).is_file()
    assert (dest / "layer_sweep.html").is_file()
    out = capsys.readouterr().out
    assert "sweeptrait (kept)" in out and "sweeptrait (fallback)" in out


def test_cli_sweep_errors_on_a_non_run_directory(tmp_path, capsys):
    from personalens.cli.main import main

    assert main(["layer-sweep", "--run", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("personalens: error: ") and "not an extraction run directory" in err
    assert "Traceback" not in err
    assert not (tmp_path / "layer_sweep.json").exists()


def test_public_exports():
    import personalens

    assert "layer_sweep" in personalens.__all__
    assert personalens.layer_sweep is layer_sweep
    assert personalens.studies.LayerSweepResult is LayerSweepResult
    assert personalens.plot.plot_layer_sweep is plot_layer_sweep
    assert isinstance(PersonaVector, type)


# ----------------------------------------------------------------------------- both readings


def test_a_run_sweep_draws_both_curves(runs):
    run_dir, _, _ = runs["kept"]
    r = layer_sweep(run_dir, n_boot=50)
    fig = plot_layer_sweep(r)
    band_c, line_c, band_n, line_n, best = fig.data
    assert line_c.name == "sweeptrait: with the system prompt in context (confounded)"
    assert line_c.line.dash == "dash" and band_c.fill == "toself"
    assert line_n.name == "sweeptrait: reply only, no system prompt" and line_n.line.dash is None
    assert list(line_n.y) == list(r.neutral_metrics("response_avg").auc)
    assert list(best.x) == [r.best_layer(neutral=True)] and band_n.fill == "toself"
    df = r.to_frame()
    assert {"auc_neutral", "auc_neutral_low", "auc_neutral_high", "best_neutral"} <= set(df)
    assert r.best(neutral=True)["layer"] == r.best_layer("response_avg", neutral=True)


def test_a_run_made_before_the_neutral_reading(runs, tiny_model, tmp_path):
    """No activations_neutral/: the confounded curve alone with a note, or computed with a
    model (and cached in the run), never a crash."""
    run_dir, _, _ = runs["kept"]
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    shutil.rmtree(old / "activations_neutral")
    r = layer_sweep(old, n_boot=20)
    assert r.neutral is None and "no activations read without the system prompt" in r.note
    with pytest.raises(PersonaLensError, match="no metrics without the system prompt"):
        r.best_layer(neutral=True)
    fig = plot_layer_sweep(r)
    band, line, best = fig.data
    assert line.name.endswith("(confounded)") and line.line.dash == "dash"
    assert "no activations read without the system prompt" in fig.layout.title.text
    assert LayerSweepResult.from_dict(r.to_dict()).to_dict() == r.to_dict()
    computed = layer_sweep(old, n_boot=20, model=tiny_model)
    reference = layer_sweep(run_dir, n_boot=20)
    assert computed.note == "" and computed.neutral is not None
    for v in VARIANTS:
        assert computed.neutral_metrics(v).auc == reference.neutral_metrics(v).auc
    assert sorted(p.name for p in (old / "activations_neutral").iterdir()) == sorted(
        p.name for p in (run_dir / "activations_neutral").iterdir()
    )
