"""Self-report questionnaires (Likert items) answered by the model, scored without a judge.

The file format, :class:`~personalens.studies.personality.questionnaire_file.Questionnaire` and
its loaders are in :mod:`personalens.studies.personality.questionnaire_file`, the result in
:mod:`personalens.studies.personality.questionnaire_result`.

**Scoring** (:func:`score_questionnaire`), four methods:

* ``"logprob"`` (default, no judge): each item is rendered with ``prompt_template`` into a chat
  prompt (the tokenizer's template, generation prompt appended; batched with left padding) and
  one forward pass gives the next-token distribution at the last prompt token, where the reply
  starts. The probability of each scale point is the sum over its *answer tokens*: the
  single-token encodings of the answer string with and without a leading space (``"1"`` and
  ``" 1"``; GPT-2-style BPE tokenizers such as SmolLM2's split digits, so there only ``"1"`` is
  one token, while others also have ``"Ġ1"``). The distribution is renormalised over the scale
  points and the item's score is its expectation. ``scale_mass`` (the probability the scale
  tokens got before renormalising) is reported per item and per dimension: low mass (below
  :data:`~personalens.studies.personality.questionnaire_result.LOW_MASS`) means the model did
  not answer on the scale and the expectation says little. ``min_mass`` turns such items into
  NaN.
* ``"generate"``: a greedy reply per item (:func:`personalens.generate`), parsed by
  :func:`~personalens.studies.personality.likert.parse_answer`, a strict regex: the reply must
  *start* with one of the scale's answers. Anything else is NaN and counted, never a default
  value.
* ``"judge"``: a reply per item, then an LLM judge (an OpenAI-compatible one,
  :class:`personalens.judges.openai_judge.OpenAIJudge`) rates its agreement with the statement
  0-100, mapped linearly onto the scale; NaN when the judge does not answer with a number.
* ``"likelihood"`` (no judge, **not on the Likert scale**): *self-description likelihood*.
  Each item's statement is teacher-forced as the model's reply to one user prompt,
  ``self_description_prompt`` (default
  :data:`~personalens.studies.personality.questionnaire_file.SELF_DESCRIPTION_PROMPT`, "Describe
  your personality in one sentence."; chat template applied), and the item's ``logprob`` is the mean
  per-token log-probability of the statement's tokens (the end-of-turn token is not scored), in
  nats/token. A dimension's score is the **contrast** ``mean(logprob of forward-keyed items) -
  mean(logprob of reverse-keyed items)``: how much more readily the model describes itself with
  the trait's statements than with their opposites (the statements' own lengths and wording
  cancel in a steered-minus-unsteered difference; compare contrasts of one model under
  different steering, not across questionnaires). Every dimension needs forward- and
  reverse-keyed items. This method exists because on small models the ``"logprob"`` Likert
  answer does not read the item: on SmolLM2-135M every item gets nearly the same answer
  distribution, so steering moves forward- and reverse-keyed items together and the keyed
  dimension means stay at ~3.0 for any coefficient, while the likelihood contrast of the
  steered dimension moves with the coefficient.

Reverse keying is applied after scoring (Likert methods). Per dimension: the mean of the keyed
item scores, the standard deviation across items, the standard error of the mean, and the NaN
count.

Scoring uses the model's normal forward pass, so it runs under steering::

    with pl.steer(model, vector, coeff=4.0, layers=[12], positions="response"):
        result = pl.studies.score_questionnaire(model, "big_five")

With ``positions="response"``, a forward pass without a KV cache is steered at each row's last
real token: the last prompt token, whose output is the answer distribution (``steer``'s default
``"all"`` steers the whole questionnaire prompt as well). The
``steering`` argument does the same for you (and records the plan in the result).

For ``"likelihood"`` the statement is scored the way generation would produce it: one forward
over the prompt (a prefill, batch 1, its KV cache shared by all items), then one forward over
the statement tokens with that cache. So steering means what it means in
:func:`personalens.generate`: ``positions="response"`` steers the positions whose outputs
predict statement tokens (the last prompt token and every statement token but the last, which
is not run: :func:`personalens.response_positions` of the prompt + statement batch),
``"prompt"`` only the prompt, ``"all"`` both; an explicit boolean mask is refused. This holds
for ``steering=`` and for an enclosing ``with pl.steer(...)`` alike. The Likert scorers live in
:mod:`personalens.studies.personality.likert`, the likelihood scorer in
:mod:`personalens.studies.personality.likelihood`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from personalens.errors import PersonaLensError
from personalens.judges.factory import make_judge
from personalens.model.generation import GenerationConfig, generate
from personalens.steering.hooks import apply_plan
from personalens.steering.plan import SteeringPlan
from personalens.studies.personality.likelihood import (
    check_likelihood,
    is_mask_plan,
    score_likelihood,
)
from personalens.studies.personality.likert import (
    answer_token_ids,
    judged_records,
    parsed_records,
    score_logprob,
)
from personalens.studies.personality.questionnaire_file import Questionnaire, load_questionnaire
from personalens.studies.personality.questionnaire_result import (
    LIKELIHOOD_UNITS,
    QuestionnaireResult,
)

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

METHODS = ("logprob", "generate", "judge", "likelihood")


@contextlib.contextmanager
def _steering_context(model: HookedTransformer, steering: Any) -> Iterator[dict | None]:
    """Enter ``steering`` (None, a SteeringPlan, a context manager, or a callable making one)."""
    if steering is None:
        yield None
        return
    if isinstance(steering, SteeringPlan):
        with apply_plan(model, steering) as plan:
            yield dict(plan.description)
        return
    ctx = steering
    if not hasattr(ctx, "__enter__") and callable(ctx):
        ctx = ctx()
    if not (hasattr(ctx, "__enter__") and hasattr(ctx, "__exit__")):
        raise PersonaLensError(
            f"steering={steering!r} is not usable: pass None, a SteeringPlan "
            "(personalens.steering.hooks.plan_steering), a context manager such as "
            "pl.steer(model, v, coeff=4, layers=[12]), or a function returning one"
        )
    with ctx as entered:
        if isinstance(entered, SteeringPlan):
            yield dict(entered.description)
        else:
            yield {"context": type(ctx).__name__}


def _generate_replies(
    model: HookedTransformer,
    prompts: list[str],
    system: str | None,
    batch_size: int,
    max_new_tokens: int,
) -> list[str]:
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, temperature=0.0, batch_size=batch_size, progress=False
    )
    return generate(model, prompts, config, system=system).responses


def _resolve_judge(judge: Any) -> Any:
    if judge is None:
        judge = "auto"
    if isinstance(judge, str):
        judge = make_judge(judge)
    if not callable(getattr(judge, "score_prompts", None)):
        raise PersonaLensError(
            f"judge {getattr(judge, 'name', judge)!r} cannot rate questionnaire answers: it needs "
            "score_prompts(prompts) -> 0-100 scores, as the OpenAI-compatible judge has "
            "(make_judge('openai', base_url=..., model=...)); the offline judge only scores "
            "trait files. Without an LLM judge use method='logprob' or method='generate'"
        )
    return judge


def _check_request(
    model: HookedTransformer,
    q: Questionnaire,
    method: str,
    batch_size: int,
    min_mass: float,
    judge: Any,
    steering: Any,
    self_description_prompt: str | None,
) -> tuple[Any, str]:
    """Refuse bad arguments before any forward pass: ``(the judge or None, the likelihood
    prompt)``."""
    if method not in METHODS:
        raise PersonaLensError(f"unknown method {method!r}: use one of {METHODS}")
    if batch_size < 1:
        raise PersonaLensError(f"batch_size must be >= 1, got {batch_size}")
    if not 0.0 <= min_mass <= 1.0:
        raise PersonaLensError(f"min_mass must be in [0, 1], got {min_mass}")
    if model.tokenizer is None:
        raise PersonaLensError("the model has no tokenizer; load it with personalens.load_model")
    judge_obj = _resolve_judge(judge) if method == "judge" else None
    if method == "logprob":
        answer_token_ids(model.tokenizer, q.scale)  # fail before any forward pass
    self_prompt = q.self_description_prompt
    if method == "likelihood":
        check_likelihood(q)
        if self_description_prompt is not None:
            if not isinstance(self_description_prompt, str) or not self_description_prompt.strip():
                raise PersonaLensError(
                    f"self_description_prompt must be a non-empty string, got "
                    f"{self_description_prompt!r}"
                )
            self_prompt = self_description_prompt
        if is_mask_plan(steering):
            raise PersonaLensError(
                "method='likelihood' steers by named positions ('response', 'prompt', 'all'): "
                "the statement is scored as a prefill plus a continuation, so a [batch, pos] "
                "positions mask has no single forward to apply to"
            )
    return judge_obj, self_prompt


def _item_records(
    q: Questionnaire, scored: list[dict[str, Any]], method: str
) -> list[dict[str, Any]]:
    """One record per item: the item, its raw and keyed score, and the scorer's fields."""
    records = []
    for it, rec in zip(q.items, scored):
        raw = rec.pop("raw_score")
        keyed = it.reverse and method != "likelihood"  # likelihood: keyed by the contrast
        records.append(
            {
                "id": it.id,
                "dimension": it.dimension,
                "reverse": it.reverse,
                "text": it.text,
                "raw_score": raw,
                "score": q.scale.reverse(raw) if keyed else raw,
                **rec,
            }
        )
    return records


def _settings(
    model: HookedTransformer,
    q: Questionnaire,
    method: str,
    system: str | None,
    steering_desc: dict | None,
    *,
    min_mass: float,
    batch_size: int,
    max_new_tokens: int,
    judge: Any,
    self_prompt: str,
) -> dict[str, Any]:
    """The run's provenance: model, method, units, steering, and the method's own settings."""
    settings: dict[str, Any] = {
        "model": model.cfg.model_name,
        "method": method,
        "units": LIKELIHOOD_UNITS
        if method == "likelihood"
        else f"likert {q.scale.min}-{q.scale.max}",
        "system": system,
        "steering": steering_desc,
        "n_items": len(q.items),
        "scale": q.scale.to_dict(),
        "source": q.source,
    }
    if method == "logprob":
        settings["answer_tokens"] = {
            a: [model.tokenizer.convert_ids_to_tokens(i) for i in ids]
            for a, ids in zip(q.scale.answers, answer_token_ids(model.tokenizer, q.scale))
        }
        settings["min_mass"] = min_mass
        settings["batch_size"] = batch_size
    elif method == "likelihood":
        settings["self_description_prompt"] = self_prompt
        settings["batch_size"] = batch_size
    else:
        settings["max_new_tokens"] = max_new_tokens
        if judge is not None:
            settings["judge"] = getattr(judge, "name", type(judge).__name__)
    return settings


def score_questionnaire(
    model: HookedTransformer,
    questionnaire: Questionnaire | str | Path = "big_five",
    *,
    steering: Any = None,
    system: str | None = None,
    method: str = "logprob",
    batch_size: int = 16,
    min_mass: float = 0.0,
    max_new_tokens: int = 32,
    judge: Any = None,
    self_description_prompt: str | None = None,
) -> QuestionnaireResult:
    """Have the model answer every item and score it (see the module docstring).

    Args:
        questionnaire: a :class:`Questionnaire`, a shipped name, or a file path.
        steering: ``None``; a :class:`~personalens.steering.hooks.SteeringPlan`; a context manager
            such as ``pl.steer(model, v, coeff=4.0, layers=[12])``; or a function returning
            one. It is entered around all forward passes. (Steering you entered yourself with
            ``with pl.steer(...):`` applies too, but is not recorded in the result.)
        system: system prompt for every item (default: none, i.e. the chat template's own).
        method: ``"logprob"`` (next-token distribution over the scale's answer tokens, no
            judge), ``"generate"`` (greedy reply parsed by
            :func:`~personalens.studies.personality.likert.parse_answer`), ``"judge"`` (greedy
            reply rated 0-100 by an LLM judge, mapped onto the scale) or
            ``"likelihood"`` (mean log-probability of each statement as the model's reply to
            ``self_description_prompt``; dimension score = forward - reverse contrast in
            nats/token, not on the scale; see the module docstring for what is steered).
        batch_size: items per forward pass / generation batch.
        min_mass: logprob only: items whose scale tokens got less probability are NaN.
        max_new_tokens: reply length for ``"generate"`` and ``"judge"``.
        judge: for ``"judge"``: an object with ``score_prompts`` (an
            :class:`~personalens.judges.openai_judge.OpenAIJudge`) or ``"openai"``/``"auto"``.
        self_description_prompt: for ``"likelihood"``: the user message the statements answer
            (default: the questionnaire's ``self_description_prompt``, else
            :data:`~personalens.studies.personality.questionnaire_file.SELF_DESCRIPTION_PROMPT`).
    """
    q = load_questionnaire(questionnaire)
    judge_obj, self_prompt = _check_request(
        model, q, method, batch_size, min_mass, judge, steering, self_description_prompt
    )
    prompts = [q.prompt(it) for it in q.items]

    with _steering_context(model, steering) as steering_desc:
        if method == "logprob":
            scored = score_logprob(model, q, prompts, system, batch_size, min_mass)
        elif method == "likelihood":
            scored = score_likelihood(model, q, self_prompt, system, batch_size)
        else:
            replies = _generate_replies(model, prompts, system, batch_size, max_new_tokens)
    if method == "generate":
        scored = parsed_records(replies, q.scale)
    elif method == "judge":
        scored = judged_records(q, replies, judge_obj)
    settings = _settings(
        model,
        q,
        method,
        system,
        steering_desc,
        min_mass=min_mass,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        judge=judge_obj,
        self_prompt=self_prompt,
    )
    return QuestionnaireResult(
        questionnaire=q.name,
        method=method,
        dimension_names=q.dimensions,
        scale_values=q.scale.values,
        records=_item_records(q, scored, method),
        settings=settings,
    )


__all__ = ["METHODS", "score_questionnaire"]
