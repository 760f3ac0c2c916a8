"""The local logprob judge on the embedded model, on a handful of judge-benchmark replies."""

import math

import pytest

from personalens.extraction.traits import load_trait
from personalens.judges.base import JudgeItem
from personalens.judges.factory import make_judge
from personalens.studies.judge_bench import load_bench


@pytest.fixture(scope="module")
def items():
    bench = load_bench("evil")
    picked = [bench[0], bench[12], bench[18]]  # typical 1, typical 0, negation
    return [JudgeItem(it.question, it.reply) for it in picked]


def test_local_judge_reads_digits_on_the_embedded_model(embedded_model, items):
    trait = load_trait("evil")
    judge = make_judge("local", model=embedded_model, min_mass=0.0, batch_size=3)
    assert judge.reading == "digits"  # SmolLM2 spells numbers digit by digit
    scores = judge.score_trait(trait, items)
    assert len(scores) == 3 and all(0.0 <= s <= 100.0 for s in scores)
    one_by_one = make_judge("local", model=embedded_model, min_mass=0.0, batch_size=1)
    assert one_by_one.score_trait(trait, items[:2]) == pytest.approx(scores[:2], abs=0.05)
    default = make_judge("local", model=embedded_model)  # the paper's quarter-mass rule
    (coherence,) = default.score_coherence(items[:1])
    assert math.isnan(coherence) or 0.0 <= coherence <= 100.0


def test_single_token_reading_warns_and_stays_in_0_to_9(embedded_model, items):
    judge = make_judge("local", model=embedded_model, numbers="single", min_mass=0.0)
    with pytest.warns(UserWarning, match="splits numbers"):
        scores = judge.score_trait(load_trait("evil"), items[:1])
    assert all(0.0 <= s <= 9.0 for s in scores)
