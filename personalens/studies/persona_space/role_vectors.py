"""Role vectors and the Assistant Axis, as the Assistant Axis code computes them.

* A **role vector** is the mean response activation (``response_avg``: the mean over the
  reply's tokens of ``blocks.L.hook_resid_post``) at every layer of the role's replies the judge
  scored 3 (fully in role). A role with no score-3 reply falls back to its replies scoring at
  least ``fallback`` (2 by default: an AI showing some of the role); the rule each role used is
  recorded (``"score=3"``, ``"score>=2"``). A role with neither is left out (recorded too).
  Upstream instead drops a role with fewer than ``min_count`` (50) score-3 replies; at the
  small sizes personalens runs by default a fallback keeps the persona space populated.
* The **default vector** is the mean of every default reply (no judge filter, as upstream).
* The **axis** is ``default - mean(role vectors)``, one direction per layer, pointing from
  role-play toward the default assistant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from personalens.errors import PersonaLensError

Stack = Float[Tensor, "n n_layers d_model"]


@dataclass(frozen=True)
class RoleVectors:
    """``vectors[i]`` (``[n_layers, d_model]``) is role ``names[i]``, the mean of
    ``n_replies[i]`` replies chosen by ``rules[i]``; ``dropped`` maps each role left out to why."""

    names: tuple[str, ...]
    vectors: Stack
    n_replies: tuple[int, ...]
    rules: tuple[str, ...]
    dropped: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)


def score_rule(score: float, min_score: int) -> bool:
    return isinstance(score, float | int) and not math.isnan(score) and score >= min_score


def role_vectors(
    acts: Mapping[str, Tensor],
    keys_by_role: Mapping[str, Sequence[str]],
    scores: Mapping[str, float],
    *,
    min_score: int = 3,
    fallback: int | None = 2,
) -> RoleVectors:
    """A :class:`RoleVectors` from per-reply activations ``acts[key]`` (``[n_layers,
    d_model]``), each role's reply keys and the judge's 0-3 ``scores`` (see the module doc)."""
    names, vectors, counts, rules, dropped = [], [], [], [], {}
    for role, keys in keys_by_role.items():
        have = [k for k in keys if k in acts]
        chosen, rule = _chosen(have, scores, min_score, fallback)
        if not chosen:
            dropped[role] = (
                f"no reply scored {min_score}"
                + (f" or >= {fallback}" if fallback is not None else "")
                + f" ({len(have)} replies with activations)"
            )
            continue
        names.append(role)
        vectors.append(torch.stack([acts[k] for k in chosen]).mean(0))
        counts.append(len(chosen))
        rules.append(rule)
    if not names:
        raise PersonaLensError(
            f"no role has a reply scored {min_score} (or the fallback {fallback}), so there is "
            f"no role vector and no persona space. Reasons: {dropped}. Fix: more questions or "
            "prompts per role (--max-questions), longer replies (--max-new-tokens), a stronger "
            "judge or model."
        )
    return RoleVectors(tuple(names), torch.stack(vectors), tuple(counts), tuple(rules), dropped)


def _chosen(
    keys: Sequence[str], scores: Mapping[str, float], min_score: int, fallback: int | None
) -> tuple[list[str], str]:
    best = [k for k in keys if score_rule(scores.get(k, math.nan), min_score)]
    if best or fallback is None:
        return best, f"score={min_score}" if min_score == 3 else f"score>={min_score}"
    return [k for k in keys if score_rule(scores.get(k, math.nan), fallback)], f"score>={fallback}"


def mean_vector(acts: Mapping[str, Tensor], keys: Sequence[str]) -> Float[Tensor, "n_layers d"]:
    """The mean of ``acts[k]`` over ``keys`` that have activations (the default vector)."""
    have = [acts[k] for k in keys if k in acts]
    if not have:
        raise PersonaLensError(
            "the default role has no reply with activations (every reply empty?); the axis "
            "needs the default's mean. Fix: raise --max-new-tokens or check the model."
        )
    return torch.stack(have).mean(0)


def compute_axis(default: Float[Tensor, "n_layers d"], roles: Stack) -> Float[Tensor, "n_layers d"]:
    """``default - mean(roles)`` at every layer (upstream's ``compute_axis``)."""
    if roles.ndim != 3 or default.shape != roles.shape[1:]:
        raise PersonaLensError(
            f"the default vector {list(default.shape)} and the role vectors {list(roles.shape)} "
            "do not match: expected [n_layers, d_model] and [n_roles, n_layers, d_model]"
        )
    return default - roles.mean(0)
