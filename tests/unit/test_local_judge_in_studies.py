"""``--judge local`` in the studies: an extraction and a steering sweep judged by the local
logprob judge (a second tiny model with planted next-token probabilities), end to end."""

import math
import warnings

import pytest
import torch

from personalens.extraction.config import ExtractionConfig
from personalens.extraction.pipeline import extract
from personalens.extraction.traits import parse_trait
from personalens.judges.local import LocalJudge
from personalens.studies.steering_sweep import steering_sweep
from tests.conftest import make_tiny_model

from .test_extraction_cli import TRAIT

# "3" with probability 0.6, "9" with 0.4: every score is 0.6*3 + 0.4*9 = 5.4
PLANTED = {"3": 0.6, "9": 0.4}
EXPECTED = 5.4
# every pair passes: the planted judge gives every reply the same trait and coherence score
CFG = ExtractionConfig(
    threshold=0.0, coherence_threshold=0.0, max_new_tokens=6, generation_batch_size=4
)


@pytest.fixture(scope="module")
def judge(tokenizer):
    """A local judge on its own tiny model (long enough a context for the coherence rubric),
    whose next token is "3" or "9" whatever it reads."""
    model = make_tiny_model(tokenizer, seed=3, n_ctx=2048)
    with torch.no_grad():
        model.unembed.W_U.zero_()
        model.unembed.b_U.fill_(-1e4)
        for text, p in PLANTED.items():
            (tid,) = tokenizer.encode(text, add_special_tokens=False)
            model.unembed.b_U[tid] = math.log(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the byte tokenizer has the single-token integers 0-9
        return LocalJudge(model, numbers="single")


@pytest.fixture(scope="module")
def extracted(tiny_model, judge, tmp_path_factory):
    """One extraction judged by the local judge (the sweep below steers with its vector)."""
    run = tmp_path_factory.mktemp("local_judge") / "run"
    return extract(tiny_model, parse_trait(TRAIT), judge, CFG, run, progress=False)


def test_an_extraction_judged_by_the_local_judge(tiny_model, judge, extracted):
    result = extracted
    scores = list(result.scores.values())
    assert len(scores) == len(result.records) > 0
    for s in scores:
        assert s["trait"] == pytest.approx(EXPECTED)
        assert s["coherence"] == pytest.approx(EXPECTED)
    assert result.summary["judge"] == judge.name
    assert result.vector.directions.shape[0] == tiny_model.cfg.n_layers


def test_a_steering_sweep_judged_by_the_local_judge(tiny_model, judge, extracted, tmp_path):
    sweep = steering_sweep(
        tiny_model,
        extracted.vector,
        ["How are you?", "Any news?"],
        layers=[1],
        coeffs=[0.0, 2.0],
        trait=parse_trait(TRAIT),
        judge=judge,
        out=tmp_path / "sweep",
        progress=False,
    )
    table = sweep.summary()
    assert len(table) == 2
    assert table["trait"].tolist() == pytest.approx([EXPECTED, EXPECTED])
    assert sweep.settings["judge"] == judge.name
