"""Style vectors next to persona vectors: their cosines, and steering with a style vector.

* :func:`style_persona_cosines`: the cosine of every style vector with every persona vector
  (default: the shipped persona vectors of the model), per layer, as a :class:`StyleCosines`.
* :func:`style_trait`: a judgeable :class:`~personalens.extraction.traits.Trait` for a style
  (the offline judge scores a reply by its embedding's closeness to the labelled texts of each
  side; an OpenAI-compatible judge gets a 0-100 rubric), so that
* :func:`style_steering_sweep` runs :func:`~personalens.studies.steering_sweep.steering_sweep`
  with a style vector and reports how strongly the replies show the style.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jaxtyping import Float
from torch import Tensor

from personalens.errors import PersonaLensError
from personalens.extraction.style import StyleSet, load_style_set
from personalens.extraction.traits import Trait
from personalens.results import Result
from personalens.steering.calibration import REFERENCE_PROMPTS
from personalens.studies.steering_sweep import SteeringSweepResult, steering_sweep
from personalens.vectors.algebra import cosine_matrix
from personalens.vectors.shipped import list_shipped_vectors, shipped_vector

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from personalens.vectors.vector import PersonaVector

__all__ = ["StyleCosines", "style_persona_cosines", "style_steering_sweep", "style_trait"]

STYLE_RUBRIC = (
    "You are evaluating how strongly a reply is written in a particular style: {style}.\n\n"
    "Question: {{question}}\n\nReply: {{answer}}\n\n"
    "Score from 0 (the reply is clearly written in the opposite style: {opposite}) to 100 (the "
    "reply is strongly written in the style: {style}); 50 is neutral. "
    "Respond with a number between 0 and 100. Don't say anything else, just the number."
)


@dataclass(frozen=True)
class StyleCosines(Result):
    """``values[i, s, p]``: cosine of style vector ``styles[s]`` and persona vector
    ``personas[p]`` at layer ``layers[i]``."""

    values: Float[Tensor, "n_layers n_styles n_personas"]
    layers: list[int]
    styles: list[str]
    personas: list[str]

    def at(self, layer: int) -> Tensor:
        """The ``[n_styles, n_personas]`` cosines at ``layer`` (one of :attr:`layers`)."""
        if layer not in self.layers:
            raise PersonaLensError(f"layer {layer} is not among the compared layers {self.layers}")
        return self.values[self.layers.index(layer)]

    def frame_records(self) -> list[dict[str, Any]]:
        return [
            {"layer": L, "style": s, "persona": p, "cosine": float(self.values[i, a, b])}
            for i, L in enumerate(self.layers)
            for a, s in enumerate(self.styles)
            for b, p in enumerate(self.personas)
        ]


def style_persona_cosines(
    styles: Sequence[PersonaVector],
    personas: Sequence[PersonaVector] | None = None,
    *,
    layers: Sequence[int] | None = None,
) -> StyleCosines:
    """Cosines of ``styles`` with ``personas`` (default: every shipped persona vector of the
    styles' model) at ``layers`` (default all)."""
    styles = list(styles)
    if not styles:
        raise PersonaLensError("no style vectors to compare")
    if personas is None:
        model = styles[0].model
        names = list_shipped_vectors(model)
        if not names:
            raise PersonaLensError(
                f"no persona vectors are shipped for {model!r}: pass personas=[...]"
            )
        personas = [shipped_vector(n, model) for n in names]
    personas = list(personas)
    s_names = [v.trait for v in styles]
    p_names = [v.trait for v in personas]
    cm = cosine_matrix(
        [*styles, *personas],
        layers=layers,
        names=[f"style:{n}" for n in s_names] + [f"persona:{n}" for n in p_names],
    )
    k = len(styles)
    return StyleCosines(values=cm.values[:, :k, k:], layers=cm.layers, styles=s_names,
                        personas=p_names)  # fmt: skip


def style_trait(
    style: StyleSet | str | Path,
    positive: str | None = None,
    negative: str | None = None,
    *,
    questions: Sequence[str] | None = None,
) -> Trait:
    """A trait for judging how strongly replies show ``positive`` (vs ``negative``) of a style
    set: its labelled texts are the offline judge's anchors, ``questions`` (default neutral
    reference prompts) its evaluation questions."""
    s = style if isinstance(style, StyleSet) else load_style_set(style)
    positive = positive or s.labels[0]
    negative = negative or s.labels[1]
    anchors = {}
    for side, label in (("pos", positive), ("neg", negative)):
        anchors[side] = tuple(r[s.text_column] for r in s.records if r[s.label_column] == label)
        if not anchors[side]:
            raise PersonaLensError(f"style set {s.name!r} has no texts labelled {label!r}")
    qs = tuple(questions or REFERENCE_PROMPTS)
    return Trait(
        name=f"{positive}_vs_{negative}",
        instruction=(),
        questions=qs,
        eval_questions=qs,
        eval_prompt=STYLE_RUBRIC.format(style=positive, opposite=negative),
        description=f"{positive} (vs {negative}) style, from the {s.name!r} style set",
        judge_anchors=anchors,
        source=f"style:{s.name}",
    )


def style_steering_sweep(
    model: HookedTransformer,
    vector: PersonaVector,
    style: StyleSet | str | Path,
    *,
    layers: Sequence[int],
    coeffs: Sequence[float],
    prompts: Sequence[Any] | None = None,
    **kwargs: Any,
) -> SteeringSweepResult:
    """:func:`~personalens.studies.steering_sweep.steering_sweep` of a style vector, judged for
    its style (:func:`style_trait` of the vector's ``positive``/``negative`` labels); other
    keyword arguments go to the sweep (``judge``, ``generation``, ``coeff_scale``, ``out``...)."""
    trait = style_trait(
        style, vector.metadata.get("positive"), vector.metadata.get("negative"),
        questions=None if prompts is None else [p for p in prompts if isinstance(p, str)],
    )  # fmt: skip
    return steering_sweep(
        model, vector, list(prompts or trait.eval_questions), layers=layers, coeffs=coeffs,
        trait=trait, **kwargs,
    )  # fmt: skip
