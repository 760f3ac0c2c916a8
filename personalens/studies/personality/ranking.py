"""Multi-turn ranking: dynamically steered vs unsteered replies, compared pairwise by an LLM judge.

**Scenario files** (JSON; :func:`load_scenarios`; the shipped set is ``"persona_shifts"``)::

    {
      "name": "persona_shifts",
      "description": "...",                          # optional
      "license": "...",                              # optional provenance note
      "traits": ["outgoing", "compassionate", ...],  # optional: the traits targets may name
      "scenarios": [
        {"id": "party-then-bad-news",                # letters, digits, - _ . ; unique
         "description": "What the scenario tests",
         "system": "You are a helpful assistant.",   # optional
         "turns": [
           {"user": "Help me plan a birthday party!", "target": {"outgoing": 1.0}},
           {"user": "...", "assistant": "A scripted reply."},   # context only: not generated/judged
           {"user": "My grandmother just died.", "target": {"compassionate": 1.0, "outgoing": -0.5}}
         ]}
      ]
    }

A turn with ``"assistant"`` is scripted context: both arms see that reply and nothing is
generated or judged for it (it has no ``"target"``). Every other turn is *generated*: it needs a
``"target"`` (``{trait: level in [-1, 1]}``, ``{}`` for no particular persona) and produces one
comparison. Every scenario needs at least one generated turn.

**Running** (:func:`run_ranking`): each scenario is played twice, turn by turn: the *steered* arm
answers with a :class:`~personalens.steering.dynamic.DynamicSteerer` (the turn's target passed as the
steerer's target), the *unsteered* arm with the plain model, same generation settings (greedy by
default). Each arm keeps its own replies as history (scripted turns are shared), so the
comparison covers the conversation each arm actually had.

**Judging** (:func:`judge_pairs`): per generated turn the judge sees both transcripts, A and B,
ending in the replies to compare, and answers ``"A"``, ``"B"`` or ``"tie"`` per criterion
(:data:`CRITERIA`: trait adherence, role consistency, response authenticity, information
fidelity). Which arm is A is decided per comparison by a seeded RNG (``seed`` and the
comparison key hashed, so the order does not depend on which comparisons ran before a resume)
and recorded; verdicts are mapped back to steered/unsteered. A verdict that is not A/B/tie is
NaN and counted, never defaulted.

**Statistics** (:meth:`RankingResult.win_rates`): per criterion the steered win rate
``(wins + ties / 2) / n`` over the ``n`` parseable verdicts, with a Wilson score interval
(:func:`wilson_interval`) on that proportion. Counting a tie as half a win makes the outcome
take values 0, ½, 1 whose variance is at most ``p (1 - p)``, so the binomial Wilson interval is
conservative with ties. :meth:`RankingResult.order_balance` reports how often the steered reply
was A, how often the judge picked A among decisive verdicts, and the steered win rate when shown
as A vs as B: a position-biased judge shows up as a large gap between the two.

``out=DIR`` makes a run resumable: ``config.json`` (scenarios, steerer, generation),
``responses.jsonl`` (one record per finished scenario), ``judge.json`` and ``verdicts.jsonl``
(one record per judged turn); a rerun skips finished work and refuses a directory made with
other settings.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from personalens._data import load_file_or_shipped, shipped_names
from personalens._io import check_run_config
from personalens.errors import PersonaLensError
from personalens.model.chat import Message
from personalens.runs.resume import run_resumable

if TYPE_CHECKING:
    import pandas as pd
    from transformer_lens import HookedTransformer

    from personalens.judges.openai_api import APIConfig, PairwiseVerdict
    from personalens.model.generation import GenerationConfig
    from personalens.steering.dynamic import DynamicSteerer
    from personalens.vectors.vector import PersonaVector

__all__ = [
    "CRITERIA",
    "OpenAIPairwiseJudge",
    "PairwiseJudge",
    "RankingResult",
    "Scenario",
    "ScenarioFileError",
    "ScenarioSet",
    "ScenarioTurn",
    "TurnPair",
    "judge_pairs",
    "list_scenario_sets",
    "load_scenarios",
    "parse_scenarios",
    "run_ranking",
    "steered_is_a",
    "wilson_interval",
]

CRITERIA = (
    "trait_adherence",
    "role_consistency",
    "response_authenticity",
    "information_fidelity",
)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
OUTCOME_SCORE = {"steered": 1.0, "tie": 0.5, "unsteered": 0.0}


class ScenarioFileError(PersonaLensError):
    """A scenario file is malformed (missing key, bad target, duplicate id, ...)."""


# ----------------------------------------------------------------------------- the format


@dataclass(frozen=True)
class ScenarioTurn:
    """A user message and either a target persona (generated turn) or a scripted reply."""

    user: str
    target: dict[str, float] | None = None
    assistant: str | None = None

    @property
    def generated(self) -> bool:
        return self.assistant is None


@dataclass(frozen=True)
class Scenario:
    id: str
    description: str
    turns: tuple[ScenarioTurn, ...]
    system: str | None = None

    @property
    def traits(self) -> set[str]:
        """Every trait a turn's target names."""
        return {t for turn in self.turns if turn.target for t in turn.target}

    def to_dict(self) -> dict[str, Any]:
        turns = []
        for t in self.turns:
            d: dict[str, Any] = {"user": t.user}
            if t.assistant is not None:
                d["assistant"] = t.assistant
            else:
                d["target"] = t.target
            turns.append(d)
        out: dict[str, Any] = {"id": self.id, "description": self.description}
        if self.system is not None:
            out["system"] = self.system
        out["turns"] = turns
        return out


@dataclass(frozen=True)
class ScenarioSet:
    """A validated set of scenarios; build one with :func:`load_scenarios`."""

    name: str
    scenarios: tuple[Scenario, ...]
    description: str = ""
    license: str = ""
    traits: tuple[str, ...] | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.scenarios)

    def __iter__(self):
        return iter(self.scenarios)

    @property
    def n_comparisons(self) -> int:
        return sum(t.generated for s in self.scenarios for t in s.turns)

    def used_traits(self) -> set[str]:
        return set().union(*(s.traits for s in self.scenarios))

    def restrict(self, traits: Sequence[str]) -> ScenarioSet:
        """The scenarios whose targets name only ``traits`` (e.g. the traits you have vectors for)."""
        keep = tuple(s for s in self.scenarios if s.traits <= set(traits))
        if not keep:
            raise PersonaLensError(
                f"no scenario of {self.name!r} uses only the traits {sorted(traits)}; "
                f"its scenarios use {sorted(self.used_traits())}"
            )
        return ScenarioSet(
            self.name, keep, self.description, self.license, self.traits, self.source
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        if self.license:
            out["license"] = self.license
        if self.traits is not None:
            out["traits"] = list(self.traits)
        out["scenarios"] = [s.to_dict() for s in self.scenarios]
        return out

    def sha256(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _text(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ScenarioFileError(f"{where}: '{key}' must be a non-empty string, got {value!r}")
    return value


def _target(value: Any, where: str, traits: tuple[str, ...] | None) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ScenarioFileError(
            f"{where}: 'target' must be an object {{trait: level in [-1, 1]}} ({{}} for no "
            f"particular persona), got {value!r}"
        )
    out = {}
    for trait, level in value.items():
        if not isinstance(trait, str) or not trait.strip():
            raise ScenarioFileError(f"{where}: target trait names must be non-empty strings")
        if traits is not None and trait not in traits:
            raise ScenarioFileError(
                f"{where}: target names trait {trait!r}, which is not in the file's 'traits' "
                f"{list(traits)}"
            )
        if isinstance(level, bool) or not isinstance(level, int | float):
            raise ScenarioFileError(
                f"{where}: target level of {trait!r} is {level!r}, not a number"
            )
        if not math.isfinite(level) or not -1.0 <= level <= 1.0:
            raise ScenarioFileError(
                f"{where}: target level of {trait!r} is {level}; levels are in [-1, 1] "
                "(-1: suppress the trait, +1: express it strongly)"
            )
        out[trait] = float(level)
    return out


def parse_scenarios(data: Any, source: str = "<dict>") -> ScenarioSet:
    """Validate a scenario-file dict; errors name the file, the scenario, the turn and the key."""
    where = f"scenario file {source}"
    if not isinstance(data, dict):
        raise ScenarioFileError(f"{where}: the top level must be a JSON object")
    known = {"name", "description", "license", "traits", "scenarios"}
    extra = sorted(set(data) - known)
    if extra:
        raise ScenarioFileError(f"{where}: unknown key(s) {extra}; allowed: {sorted(known)}")
    name = _text(data.get("name"), where, "name")
    traits = data.get("traits")
    if traits is not None:
        if (
            not isinstance(traits, list)
            or not traits
            or not all(isinstance(t, str) and t.strip() for t in traits)
            or len(set(traits)) != len(traits)
        ):
            raise ScenarioFileError(f"{where}: 'traits' must be a list of distinct trait names")
        traits = tuple(traits)
    for key in ("description", "license"):
        if key in data and not isinstance(data[key], str):
            raise ScenarioFileError(f"{where}: '{key}' must be a string")
    raw = data.get("scenarios")
    if not isinstance(raw, list) or not raw:
        raise ScenarioFileError(f"{where}: 'scenarios' must be a non-empty list")
    scenarios, seen = [], set()
    for i, s in enumerate(raw):
        at = f"{where}, scenario {i}"
        if not isinstance(s, dict):
            raise ScenarioFileError(f"{at}: each scenario must be an object")
        extra = sorted(set(s) - {"id", "description", "system", "turns"})
        if extra:
            raise ScenarioFileError(
                f"{at}: unknown key(s) {extra}; allowed: id, description, system, turns"
            )
        sid = _text(s.get("id"), at, "id")
        if not _ID.match(sid):
            raise ScenarioFileError(
                f"{at}: id {sid!r} may hold only letters, digits, '-', '_' and '.'"
            )
        if sid in seen:
            raise ScenarioFileError(f"{at}: duplicate id {sid!r}; ids must be unique")
        seen.add(sid)
        at = f"{where}, scenario {sid!r}"
        description = _text(s.get("description"), at, "description")
        system = s.get("system")
        if system is not None:
            system = _text(system, at, "system")
        turns_raw = s.get("turns")
        if not isinstance(turns_raw, list) or not turns_raw:
            raise ScenarioFileError(f"{at}: 'turns' must be a non-empty list")
        turns = []
        for j, t in enumerate(turns_raw):
            tat = f"{at}, turn {j}"
            if not isinstance(t, dict):
                raise ScenarioFileError(f"{tat}: each turn must be an object")
            extra = sorted(set(t) - {"user", "target", "assistant"})
            if extra:
                raise ScenarioFileError(
                    f"{tat}: unknown key(s) {extra}; allowed: user, target, assistant"
                )
            user = _text(t.get("user"), tat, "user")
            if "assistant" in t:
                if "target" in t:
                    raise ScenarioFileError(
                        f"{tat}: a scripted turn ('assistant') is context only and takes no "
                        "'target'; drop one of them"
                    )
                turns.append(ScenarioTurn(user, None, _text(t["assistant"], tat, "assistant")))
            else:
                if "target" not in t:
                    raise ScenarioFileError(
                        f"{tat}: a generated turn needs a 'target' ({{}} for no particular "
                        "persona), or give a scripted 'assistant' reply"
                    )
                turns.append(ScenarioTurn(user, _target(t["target"], tat, traits)))
        if not any(t.generated for t in turns):
            raise ScenarioFileError(
                f"{at}: every turn is scripted; at least one turn needs a 'target' to be "
                "generated and compared"
            )
        scenarios.append(Scenario(sid, description, tuple(turns), system))
    return ScenarioSet(
        name=name,
        scenarios=tuple(scenarios),
        description=data.get("description", ""),
        license=data.get("license", ""),
        traits=traits,
        source=source,
    )


def list_scenario_sets() -> list[str]:
    """Names of the scenario sets shipped with personalens."""
    return shipped_names("scenarios")


def load_scenario_file(path: str | Path) -> ScenarioSet:
    """A scenario set from a JSON file, validated."""
    path = Path(path)
    if not path.is_file():
        raise ScenarioFileError(f"scenario file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ScenarioFileError(f"scenario file {path}: not valid JSON ({exc})") from None
    return parse_scenarios(data, source=str(path))


def load_scenarios(path_or_name: str | Path | ScenarioSet = "persona_shifts") -> ScenarioSet:
    """A shipped scenario set by name (``"persona_shifts"``) or a scenario file by path."""
    if isinstance(path_or_name, ScenarioSet):
        return path_or_name
    return load_file_or_shipped(
        "scenarios",
        path_or_name,
        load_scenario_file,
        lambda name, shipped: ScenarioFileError(
            f"unknown scenario set {name!r}. Shipped: {shipped}. Pass the path of a scenario "
            "JSON file instead."
        ),
    )


# ----------------------------------------------------------------------------- pairs and order


@dataclass(frozen=True)
class TurnPair:
    """The steered and unsteered replies to one generated turn, with each arm's history.

    ``history_*`` are the messages before the user message (system, earlier turns, the arm's own
    earlier replies); the transcripts the judge sees are ``history + [user, reply]``.
    """

    scenario: str
    turn: int
    user: str
    target: dict[str, float]
    steered: str
    unsteered: str
    history_steered: list[Message] = field(default_factory=list)
    history_unsteered: list[Message] = field(default_factory=list)
    coefficients: dict[str, float] = field(default_factory=dict)
    rationale: str = ""

    @property
    def key(self) -> str:
        return f"{self.scenario}#{self.turn}"

    def transcript(self, arm: str) -> list[Message]:
        if arm not in ("steered", "unsteered"):
            raise PersonaLensError(f"arm must be 'steered' or 'unsteered', got {arm!r}")
        history = self.history_steered if arm == "steered" else self.history_unsteered
        reply = self.steered if arm == "steered" else self.unsteered
        return [
            *history,
            {"role": "user", "content": self.user},
            {"role": "assistant", "content": reply},
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "turn": self.turn,
            "user": self.user,
            "target": self.target,
            "steered": self.steered,
            "unsteered": self.unsteered,
            "history_steered": self.history_steered,
            "history_unsteered": self.history_unsteered,
            "coefficients": self.coefficients,
            "rationale": self.rationale,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TurnPair:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def steered_is_a(seed: int, key: str) -> bool:
    """Whether the steered reply is shown as A in comparison ``key``: a fair coin from a
    ``random.Random`` seeded with a hash of ``(seed, key)`` (deterministic, order-independent)."""
    digest = hashlib.blake2b(json.dumps([seed, key]).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "little")).random() < 0.5


def _winner(verdict: str | None, steered_a: bool) -> str | None:
    """Map an A/B/tie verdict back to the arm that won (``None`` stays ``None``)."""
    if verdict is None:
        return None
    if verdict == "tie":
        return "tie"
    if verdict not in ("A", "B"):
        raise PersonaLensError(f"a verdict must be 'A', 'B', 'tie' or None, got {verdict!r}")
    return "steered" if (verdict == "A") == steered_a else "unsteered"


# ----------------------------------------------------------------------------- judges


@runtime_checkable
class PairwiseJudge(Protocol):
    """Compares the final assistant replies of two transcripts; ``name`` goes into provenance."""

    name: str

    def compare(
        self,
        transcript_a: list[Message],
        transcript_b: list[Message],
        target: dict[str, float],
    ) -> PairwiseVerdict: ...


class OpenAIPairwiseJudge:
    """:func:`personalens.judges.openai_api.pairwise_compare` behind an OpenAI-compatible API.

    ``config`` defaults to :meth:`~personalens.judges.openai_api.APIConfig.from_env` (``base_url``,
    ``model`` and ``overrides`` as there). ``descriptions`` (trait -> one line) default to the
    shipped trait files' descriptions for the trait names they know.
    """

    def __init__(
        self,
        config: APIConfig | None = None,
        *,
        base_url: str | None = None,
        model: str | None = None,
        criteria: Sequence[str] = CRITERIA,
        descriptions: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> None:
        from personalens.judges.openai_api import PAIRWISE_CRITERIA, APIConfig

        unknown = [c for c in criteria if c not in PAIRWISE_CRITERIA]
        if unknown or not criteria:
            raise PersonaLensError(
                f"unknown criteria {unknown}: choose from {list(PAIRWISE_CRITERIA)}"
            )
        if config is None:
            config = APIConfig.from_env(base_url=base_url, model=model, **overrides)
        self.config = config
        self.criteria = {c: PAIRWISE_CRITERIA[c] for c in criteria}
        self.name = f"openai:{config.model}"
        if descriptions is None:
            from personalens.extraction.traits import list_traits, load_trait

            descriptions = {t: load_trait(t).description for t in list_traits()}
        self.descriptions = dict(descriptions)

    def __repr__(self) -> str:
        return f"OpenAIPairwiseJudge(model={self.config.model!r}, base_url={self.config.url!r})"

    def compare(
        self,
        transcript_a: list[Message],
        transcript_b: list[Message],
        target: dict[str, float],
    ) -> PairwiseVerdict:
        from personalens.judges.openai_api import pairwise_compare

        return pairwise_compare(
            transcript_a,
            transcript_b,
            config=self.config,
            target=target,
            criteria=self.criteria,
            descriptions={t: self.descriptions[t] for t in target if t in self.descriptions},
        )


# ----------------------------------------------------------------------------- statistics


def wilson_interval(
    successes: float | int, n: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Wilson score interval for a proportion ``successes / n`` (NaNs when ``n == 0``).

    ``center = (p + z²/2n) / (1 + z²/n)``, ``half = z · sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n)``
    with ``z`` the two-sided normal quantile of ``confidence``.
    """
    if not 0 < confidence < 1:
        raise PersonaLensError(f"confidence must be in (0, 1), got {confidence}")
    if n < 0 or successes < 0 or successes > n:
        raise PersonaLensError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return math.nan, math.nan
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


# ----------------------------------------------------------------------------- the result


@dataclass(frozen=True)
class RankingResult:
    """Turn pairs and their judgements (``judgements[i]`` belongs to ``pairs[i]``; empty when
    the run was not judged)."""

    pairs: tuple[TurnPair, ...]
    judgements: tuple[dict[str, Any], ...]
    criteria: tuple[str, ...] = CRITERIA
    judge: str | None = None
    seed: int = 0
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.pairs)

    def _require_judged(self) -> None:
        if not self.judgements:
            raise PersonaLensError(
                "this ranking was not judged: pass a judge to run_ranking / judge_pairs"
            )

    def to_frame(self) -> pd.DataFrame:
        """One row per compared turn: replies, order, and per criterion the verdict (A/B/tie,
        None), the winner (steered/unsteered/tie, None) and the steered score (1/0.5/0/NaN)."""
        import pandas as pd

        rows = []
        for i, p in enumerate(self.pairs):
            row: dict[str, Any] = {
                "scenario": p.scenario,
                "turn": p.turn,
                "user": p.user,
                "target": json.dumps(p.target, sort_keys=True),
                "steered": p.steered,
                "unsteered": p.unsteered,
            }
            for t, c in sorted(p.coefficients.items()):
                row[f"coeff_{t}"] = c
            if self.judgements:
                j = self.judgements[i]
                row["steered_is_a"] = j["steered_is_a"]
                for c in self.criteria:
                    winner = j["winners"][c]
                    row[f"verdict_{c}"] = j["verdicts"][c]
                    row[f"winner_{c}"] = winner
                    row[f"score_{c}"] = math.nan if winner is None else OUTCOME_SCORE[winner]
                row["judge_error"] = j.get("error")
                row["judge_rationale"] = j.get("rationale", "")
            rows.append(row)
        return pd.DataFrame(rows)

    def win_rates(self, confidence: float = 0.95) -> pd.DataFrame:
        """Per criterion: wins, ties, losses, NaN count, ``win_rate = (wins + ties/2) / n`` over
        parseable verdicts, and its Wilson interval (see the module doc)."""
        import pandas as pd

        self._require_judged()
        rows = []
        for c in self.criteria:
            winners = [j["winners"][c] for j in self.judgements]
            wins = winners.count("steered")
            ties = winners.count("tie")
            losses = winners.count("unsteered")
            n = wins + ties + losses
            lo, hi = wilson_interval(wins + 0.5 * ties, n, confidence)
            rows.append(
                {
                    "criterion": c,
                    "n": n,
                    "wins": wins,
                    "ties": ties,
                    "losses": losses,
                    "n_nan": len(winners) - n,
                    "win_rate": (wins + 0.5 * ties) / n if n else math.nan,
                    "ci_low": lo,
                    "ci_high": hi,
                    "confidence": confidence,
                }
            )
        return pd.DataFrame(rows)

    def _rate_when(self, criterion: str, steered_a: bool) -> float:
        scores = [
            OUTCOME_SCORE[j["winners"][criterion]]
            for j in self.judgements
            if j["steered_is_a"] == steered_a and j["winners"][criterion] is not None
        ]
        return sum(scores) / len(scores) if scores else math.nan

    def order_balance(self) -> pd.DataFrame:
        """Position-bias report, one row per criterion: how many comparisons showed the steered
        reply as A / as B, the judge's rate of picking A among decisive (A/B) verdicts, and the
        steered win rate when it was A vs when it was B."""
        import pandas as pd

        self._require_judged()
        as_a = [j["steered_is_a"] for j in self.judgements]
        rows = []
        for c in self.criteria:
            verdicts = [j["verdicts"][c] for j in self.judgements]
            decisive = [v for v in verdicts if v in ("A", "B")]

            rows.append(
                {
                    "criterion": c,
                    "n": len(as_a),
                    "n_steered_a": sum(as_a),
                    "n_steered_b": len(as_a) - sum(as_a),
                    "frac_steered_a": sum(as_a) / len(as_a) if as_a else math.nan,
                    "n_decisive": len(decisive),
                    "p_judge_picks_a": (
                        decisive.count("A") / len(decisive) if decisive else math.nan
                    ),
                    "win_rate_steered_as_a": self._rate_when(c, True),
                    "win_rate_steered_as_b": self._rate_when(c, False),
                    "n_nan": verdicts.count(None),
                }
            )
        return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- judging


def _judge_one(pair: TurnPair, judge: PairwiseJudge, seed: int, criteria: Sequence[str]) -> dict:
    a_is_steered = steered_is_a(seed, pair.key)
    first, second = ("steered", "unsteered") if a_is_steered else ("unsteered", "steered")
    verdict = judge.compare(pair.transcript(first), pair.transcript(second), dict(pair.target))
    raw = getattr(verdict, "verdicts", None)
    if not isinstance(raw, Mapping):
        raise PersonaLensError(
            f"judge {getattr(judge, 'name', judge)!r} returned {type(verdict).__name__}; a "
            "pairwise judge returns a PairwiseVerdict (personalens.judges.openai_api)"
        )
    verdicts: dict[str, str | None] = {}
    for c in criteria:
        v = raw.get(c)
        verdicts[c] = v if v in ("A", "B", "tie") else None
    return {
        "key": pair.key,
        "scenario": pair.scenario,
        "turn": pair.turn,
        "steered_is_a": a_is_steered,
        "verdicts": verdicts,
        "winners": {c: _winner(verdicts[c], a_is_steered) for c in criteria},
        "rationale": getattr(verdict, "rationale", "") or "",
        "error": getattr(verdict, "error", None),
    }


def judge_pairs(
    pairs: Sequence[TurnPair],
    judge: PairwiseJudge,
    *,
    seed: int = 0,
    criteria: Sequence[str] = CRITERIA,
    out: str | Path | None = None,
    progress: bool = True,
) -> RankingResult:
    """Judge each pair with a per-comparison random A/B order (:func:`steered_is_a`).

    With ``out`` the judgements go to ``out/verdicts.jsonl`` (and ``out/judge.json`` records the
    judge and seed); a rerun judges only what is missing and refuses another judge or seed.
    """
    if not isinstance(judge, PairwiseJudge):
        raise PersonaLensError(
            "judge must have a name and a compare(transcript_a, transcript_b, target) method, "
            "e.g. OpenAIPairwiseJudge()"
        )
    criteria = tuple(criteria)
    if not criteria:
        raise PersonaLensError("give at least one criterion")
    pairs = list(pairs)
    keys = [p.key for p in pairs]
    if len(set(keys)) != len(keys):
        raise PersonaLensError("two pairs share a scenario and turn; keys must be unique")
    path = None
    if out is not None:
        run = Path(out)
        _check_settings(
            run / "judge.json",
            {"judge": judge.name, "seed": seed, "criteria": list(criteria)},
            "judge",
        )
        path = run / "verdicts.jsonl"
    done = run_resumable(
        pairs,
        lambda p: p.key,
        lambda chunk: [_judge_one(p, judge, seed, criteria) for p in chunk],
        path=path,
        chunk_size=1,
        desc="judging",
        progress=progress,
    )
    return RankingResult(
        pairs=tuple(pairs),
        judgements=tuple(done[k] for k in keys),
        criteria=criteria,
        judge=judge.name,
        seed=seed,
    )


# ----------------------------------------------------------------------------- the run


def _check_settings(path: Path, settings: dict[str, Any], what: str) -> None:
    check_run_config(
        path,
        settings,
        what=f"a ranking run ({what})",
        fix="Resume with the same settings, or use a new out directory.",
    )


def _play(model: HookedTransformer, scenario: Scenario, steerer: DynamicSteerer) -> list[TurnPair]:
    """Both arms of one scenario, turn by turn, each with its own history."""
    from personalens.model.generation import generate

    start: list[Message] = []
    system = scenario.system if scenario.system is not None else steerer.system
    if system is not None:
        start.append({"role": "system", "content": system})
    hist_s, hist_u = [dict(m) for m in start], [dict(m) for m in start]
    pairs = []
    for i, turn in enumerate(scenario.turns):
        user = {"role": "user", "content": turn.user}
        if not turn.generated:
            scripted = {"role": "assistant", "content": turn.assistant}
            hist_s += [user, scripted]
            hist_u += [user, dict(scripted)]
            continue
        result = steerer.respond([*hist_s, user], target=turn.target)
        plain = generate(model, [[*hist_u, user]], steerer.generation).responses[0]
        pairs.append(
            TurnPair(
                scenario=scenario.id,
                turn=i,
                user=turn.user,
                target=dict(turn.target or {}),
                steered=result.reply,
                unsteered=plain,
                history_steered=[dict(m) for m in hist_s],
                history_unsteered=[dict(m) for m in hist_u],
                coefficients=result.coefficients,
                rationale=result.rationale,
            )
        )
        hist_s += [user, {"role": "assistant", "content": result.reply}]
        hist_u += [dict(user), {"role": "assistant", "content": plain}]
    return pairs


def run_ranking(
    model: HookedTransformer,
    scenarios: ScenarioSet | str | Path,
    steerer_or_vectors: DynamicSteerer | Mapping[str, PersonaVector],
    judge: PairwiseJudge | None = None,
    *,
    out: str | Path | None = None,
    seed: int = 0,
    criteria: Sequence[str] = CRITERIA,
    generation: GenerationConfig | None = None,
    progress: bool = True,
    **steerer_kwargs: Any,
) -> RankingResult:
    """Play every scenario steered and unsteered, then judge each generated turn pairwise.

    Args:
        scenarios: a :class:`ScenarioSet`, a shipped set's name or a scenario file.
        steerer_or_vectors: a :class:`~personalens.steering.dynamic.DynamicSteerer`, or
            ``{trait: PersonaVector}`` to build one with ``steerer_kwargs`` (policy
            ``"projection"`` by default). Each turn's target is passed to the steerer.
        judge: a :class:`PairwiseJudge` (e.g. :class:`OpenAIPairwiseJudge`), or ``None`` to
            generate only (the result then has no verdicts; judge later with the same ``out``).
        out: run directory; makes the run resumable (see the module doc).
        seed: the A/B order seed.
        generation: generation settings of both arms (default: the steerer's; greedy).

    Every trait a target names must have a vector (``scenarios.restrict(traits)`` keeps the
    scenarios that use only those).
    """
    from personalens.steering.dynamic import DynamicSteerer

    scenario_set = load_scenarios(scenarios)
    if isinstance(steerer_or_vectors, DynamicSteerer):
        if steerer_kwargs:
            raise PersonaLensError(
                f"steerer options {sorted(steerer_kwargs)} apply only when vectors are given"
            )
        steerer = steerer_or_vectors
        if steerer.model is not model:
            raise PersonaLensError("the steerer was built for another model object")
    else:
        steerer = DynamicSteerer(model, steerer_or_vectors, **steerer_kwargs)
    if generation is not None:
        import copy
        from dataclasses import replace

        steerer = copy.copy(steerer)  # the caller's steerer keeps its own settings
        steerer.generation = replace(generation, progress=False)
    missing = sorted(scenario_set.used_traits() - set(steerer.traits))
    if missing:
        raise PersonaLensError(
            f"the scenarios' targets name trait(s) {missing} with no vector in the steerer "
            f"({list(steerer.traits)}); add their vectors, or run "
            f"scenarios.restrict({list(steerer.traits)}) to keep the scenarios that use only "
            "those traits"
        )
    path = None
    if out is not None:
        run = Path(out)
        run.mkdir(parents=True, exist_ok=True)
        _check_settings(
            run / "config.json",
            {
                "scenarios": scenario_set.name,
                "scenarios_sha256": scenario_set.sha256(),
                "model": getattr(model.cfg, "model_name", None),
                # baselines are left out: they follow from the vectors, model and reference
                # prompts, and are calibrated lazily (a float repr must not block a resume)
                "steerer": {k: v for k, v in steerer.describe().items() if k != "baselines"},
            },
            "generation",
        )
        path = run / "responses.jsonl"
    order = [s.id for s in scenario_set]
    done = run_resumable(
        list(scenario_set),
        lambda s: s.id,
        lambda chunk: [
            {"key": s.id, "pairs": [p.to_dict() for p in _play(model, s, steerer)]} for s in chunk
        ],
        path=path,
        chunk_size=1,
        desc="playing scenarios",
        progress=progress,
    )
    pairs = [TurnPair.from_dict(p) for sid in order for p in done[sid]["pairs"]]
    settings = {"scenarios": scenario_set.name, "steerer": steerer.describe()}
    if judge is None:
        return RankingResult(
            pairs=tuple(pairs), judgements=(), criteria=tuple(criteria), settings=settings
        )
    result = judge_pairs(pairs, judge, seed=seed, criteria=criteria, out=out, progress=progress)
    return RankingResult(
        pairs=result.pairs,
        judgements=result.judgements,
        criteria=result.criteria,
        judge=result.judge,
        seed=seed,
        settings=settings,
    )
