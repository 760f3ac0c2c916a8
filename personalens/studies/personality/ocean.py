"""Big Five (OCEAN) control: the ten shipped pole traits, and where the steering algebra lives.

The experiments of PERSONA (scalar multiplication, addition and subtraction of trait vectors),
measured with a questionnaire instead of a judge:

* :func:`~personalens.studies.personality.scalar_sweep.scalar_sweep` -- steer along one vector
  at several coefficients and score the Big Five questionnaire each time;
  :meth:`~personalens.studies.personality.scalar_sweep.ScalarSweepResult.fit` fits score vs
  coefficient per dimension (ordinary least squares: slope, intercept, R²).
* :func:`~personalens.studies.personality.additive_test.additive_test` -- steer along ``a``,
  ``b``, ``a + b`` and ``a - b`` at one coefficient and compare the observed score changes of
  the sums with the predicted ``Δ(a) ± Δ(b)``.
* orthogonality of the pole vectors: :func:`personalens.vectors.algebra.cosine_matrix` (per layer).

The default score is ``method="likelihood"`` of :func:`personalens.score_questionnaire`:
per dimension, the mean log-probability (nats/token) of the forward-keyed self-descriptions
minus that of the reverse-keyed ones. The Likert ``"logprob"`` method does not read the items
at 135M parameters (every item gets the same answer distribution), so it cannot show a
dimension-specific change there; see :mod:`personalens.studies.personality.questionnaire`.
Scoring under steering and the paired standard errors are in
:mod:`personalens.studies.personality.steered_scores`.

The ten pole vectors of the embedded model ship with the package:
:func:`personalens.vectors.shipped.shipped_vector`.
"""

from __future__ import annotations

from personalens.errors import PersonaLensError

__all__ = ["BIG_FIVE_DIMENSIONS", "BIG_FIVE_POLES", "pole"]

BIG_FIVE_DIMENSIONS = (
    "openness",
    "conscientiousness",
    "extraversion",
    "agreeableness",
    "neuroticism",
)

# The ten shipped pole traits: trait -> (Big Five dimension, +1 high pole / -1 low pole). The trait
# files say this only in prose ("This is the high pole of Big Five extraversion."); a unit test
# checks that this table agrees with them and with the big_five questionnaire's dimensions.
BIG_FIVE_POLES: dict[str, tuple[str, int]] = {
    "inventive": ("openness", 1),
    "consistent": ("openness", -1),
    "dependable": ("conscientiousness", 1),
    "careless": ("conscientiousness", -1),
    "outgoing": ("extraversion", 1),
    "solitary": ("extraversion", -1),
    "compassionate": ("agreeableness", 1),
    "self-interested": ("agreeableness", -1),
    "nervous": ("neuroticism", 1),
    "calm": ("neuroticism", -1),
}


def pole(trait: str) -> tuple[str, int]:
    """``(dimension, sign)`` of a Big Five pole trait, e.g. ``pole("solitary")`` is
    ``("extraversion", -1)``."""
    if trait not in BIG_FIVE_POLES:
        raise PersonaLensError(
            f"{trait!r} is not a Big Five pole trait; the poles are {list(BIG_FIVE_POLES)}"
        )
    return BIG_FIVE_POLES[trait]
