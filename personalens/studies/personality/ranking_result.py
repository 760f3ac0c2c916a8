"""The result of a ranking run: turn pairs, their judgements, win rates and order balance.

**Statistics** (:meth:`RankingResult.win_rates`): per criterion the steered win rate
``(wins + ties / 2) / n`` over the ``n`` parseable verdicts, with a Wilson score interval
(:func:`personalens.stats.wilson_interval`) on that proportion. Counting a tie as half a win
makes the outcome take values 0, ½, 1 whose variance is at most ``p (1 - p)``, so the binomial
Wilson interval is conservative with ties. :meth:`RankingResult.order_balance` reports how often
the steered reply was A, how often the judge picked A among decisive verdicts, and the steered
win rate when shown as A vs as B: a position-biased judge shows up as a large gap between the
two.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from personalens.errors import PersonaLensError
from personalens.results import Result
from personalens.stats import wilson_interval
from personalens.studies.personality.turn_pairs import CRITERIA, OUTCOME_SCORE, TurnPair

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["RankingResult"]


@dataclass(frozen=True)
class RankingResult(Result):
    """Turn pairs and their judgements (``judgements[i]`` belongs to ``pairs[i]``; empty when
    the run was not judged).

    :meth:`to_frame`: one row per compared turn: replies, order, and per criterion the verdict
    (A/B/tie, None), the winner (steered/unsteered/tie, None) and the steered score
    (1/0.5/0/NaN).
    """

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

    def frame_records(self) -> list[dict[str, Any]]:
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
        return rows

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
