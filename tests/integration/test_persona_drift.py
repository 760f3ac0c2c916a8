"""Drift, capping and a style vector on the embedded model (short)."""

import math

from personalens.extraction.style import style_vector
from personalens.model.generation import GenerationConfig
from personalens.steering.capping import CappingConfig
from personalens.studies.persona_drift import load_drift_scenarios, persona_drift
from personalens.studies.style_comparison import style_persona_cosines
from personalens.vectors.shipped import shipped_vector

DEFAULT = ["I'd be happy to help with that.", "Sure! Here is a short explanation.", "Of course."]


def test_capped_drift_run_on_the_embedded_model(embedded_model, tmp_path):
    axis = -shipped_vector("evil", embedded_model)  # any axis: the plumbing is what is tested
    scenarios = load_drift_scenarios(["meta_reflection"], max_conversations=1, max_turns=2)
    config = CappingConfig.parse("layers_10:12-p0.25").calibrate(embedded_model, axis, DEFAULT)
    result = persona_drift(
        embedded_model,
        axis,
        scenarios,
        layer=11,
        capping=config,
        generation=GenerationConfig(max_new_tokens=12),
        capability=False,
        out=tmp_path / "drift",
        progress=False,
    )
    frame = result.to_frame()
    assert len(frame) == 4 and frame["reply"].str.len().gt(0).all()
    capped = frame[frame["capped"]]
    assert (capped["projection"] >= config.floors[11] - 1e-3).all()
    assert all(math.isfinite(p) for p in frame["projection"])


def test_sentiment_style_vector_on_the_embedded_model(embedded_model):
    v = style_vector(embedded_model, "sentiment")
    assert v.n_pos == 30 and v.n_neg == 30 and v.trait == "positive_vs_negative"
    cos = style_persona_cosines([v])
    assert cos.values.shape[1] == 1 and cos.values.abs().max() <= 1.0001
