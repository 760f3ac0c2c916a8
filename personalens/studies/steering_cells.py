"""How sure is each cell of a steering sweep: how many replies it holds, a confidence interval
of the mean trait score per (layer, coefficient), and whether it can be told apart from the
unsteered cell.

:func:`topped_up` gives a sweep over the trait's own held-out questions enough samples per
question that every cell holds ``MIN_REPLIES`` replies; :func:`summarize_judged` tabulates
judged replies per cell.

:func:`cell_intervals` gives each cell a percentile bootstrap interval of its mean trait score
(:func:`personalens.stats.bootstrap_counts`, :func:`personalens.stats.percentile_intervals`).
Replies to the same question are not independent (several samples of one question share its
topic), so a resample draws *questions* with replacement and keeps all of a drawn question's
replies; with one reply per question that is the plain bootstrap over replies. A cell with
fewer than two scored replies, or only one question and one reply, has no interval (NaN).

:func:`flag_overlaps` marks the steered cells whose interval overlaps the unsteered cell's
(coefficient 0): their difference from the unsteered model is not shown at this n.
:func:`overlap_note` says so in one paragraph, for a warning (:func:`warn_at_caller`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from personalens.errors import PersonaLensError
from personalens.model.generation import GenerationConfig
from personalens.stats import bootstrap_counts, percentile_intervals

if TYPE_CHECKING:
    import pandas as pd

N_BOOT, CI_LEVEL, SEED = 2000, 0.95, 0
# with the trait's held-out questions, every cell holds at least this many replies (more
# samples per question when the questions are fewer), sampled at this temperature when the
# generation is greedy (several greedy samples of one question are copies)
MIN_REPLIES = 20
TOPUP_TEMPERATURE = 1.0


def topped_up(
    gen: GenerationConfig, n_questions: int, min_replies: int, prompts: Sequence[Any] | None
) -> GenerationConfig:
    """``gen`` with enough samples per question that a cell holds ``min_replies`` replies
    (only for the trait's own questions, ``prompts`` None), sampled when ``gen`` is greedy."""
    if isinstance(min_replies, bool) or not isinstance(min_replies, int) or min_replies < 0:
        raise PersonaLensError(f"min_replies must be an int >= 0, got {min_replies!r}")
    if prompts is not None:
        return gen
    samples = max(gen.n, math.ceil(min_replies / n_questions))
    if samples == gen.n:
        return gen
    temperature = gen.temperature if gen.temperature > 0 else TOPUP_TEMPERATURE
    return replace(gen, n=samples, temperature=temperature)


def summarize_judged(
    df: pd.DataFrame,
    by: Sequence[str],
    *,
    coherence_threshold: float | int = 50.0,
    sort: bool = True,
) -> pd.DataFrame:
    """Judged replies (``trait`` and ``coherence`` columns) per group of ``by``: mean trait
    score and its standard error, mean coherence, the fraction of coherent replies (coherence
    >= ``coherence_threshold``), ``n`` replies and ``n_scored`` with a trait score."""
    df = df.assign(coherent=df["coherence"] >= coherence_threshold)
    g = df.groupby(list(by), sort=sort)
    out = g.agg(
        trait=("trait", "mean"),
        trait_sem=("trait", "sem"),
        coherence=("coherence", "mean"),
        frac_coherent=("coherent", "mean"),
        n=("trait", "size"),
        n_scored=("trait", "count"),
    )
    return out.reset_index()


def mean_interval(
    scores: Sequence[float | int],  # a judge may give whole numbers
    groups: Sequence[Any],
    *,
    n_boot: int = N_BOOT,
    ci: float = CI_LEVEL,
    seed: int = SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``scores`` (NaNs dropped), resampling the
    ``groups`` (one label per score: its question) with all their scores; ``(nan, nan)`` with
    fewer than two scores. One group only: the scores themselves are resampled."""
    kept = [(g, float(s)) for g, s in zip(groups, scores) if not math.isnan(float(s))]
    if len(kept) < 2:
        return (math.nan, math.nan)
    labels = list(dict.fromkeys(g for g, _ in kept))
    if len(labels) < 2:  # one question: its replies are the only units there are
        labels = list(range(len(kept)))
        kept = [(i, s) for i, (_, s) in enumerate(kept)]
    index = {g: i for i, g in enumerate(labels)}
    sums = torch.zeros(len(labels), dtype=torch.float64)
    counts = torch.zeros(len(labels), dtype=torch.float64)
    for g, s in kept:
        sums[index[g]] += s
        counts[index[g]] += 1
    draws = bootstrap_counts(len(labels), n_boot, torch.Generator().manual_seed(seed))
    means = (draws @ sums) / (draws @ counts)
    ((lo, hi),) = percentile_intervals(means[:, None], ci)
    return (lo, hi)


def cell_intervals(
    df: pd.DataFrame,
    by: Sequence[str] = ("layer", "coeff"),
    *,
    n_boot: int = N_BOOT,
    ci: float = CI_LEVEL,
    seed: int = SEED,
) -> pd.DataFrame:
    """One row per group of ``by`` in ``df`` (judged replies: ``trait`` and ``prompt_index``
    columns) with ``ci_low`` and ``ci_high``: the :func:`mean_interval` of its trait scores,
    resampling its questions (``prompt_index``)."""
    import pandas as pd

    rows = []
    for key, group in df.groupby(list(by), sort=True):
        lo, hi = mean_interval(
            group["trait"].tolist(),
            group["prompt_index"].tolist(),
            n_boot=n_boot,
            ci=ci,
            seed=seed,
        )
        keys = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, keys)), "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows, columns=[*by, "ci_low", "ci_high"])


def flag_overlaps(table: pd.DataFrame) -> list[bool | None]:
    """Per row of a sweep's summary (``coeff``, ``ci_low``, ``ci_high``): does the steered
    cell's interval overlap the unsteered cell's (coefficient 0)? ``False`` for the unsteered
    cell itself; ``None`` everywhere when the sweep has no unsteered cell. A cell without an
    interval (fewer than two scored replies, on either side) counts as overlapping: nothing
    tells it apart."""
    base = table[table["coeff"] == 0.0]
    if base.empty:
        return [None] * len(table)
    b_lo, b_hi = float(base["ci_low"].iloc[0]), float(base["ci_high"].iloc[0])
    flags: list[bool | None] = []
    for coeff, lo, hi in zip(table["coeff"], table["ci_low"], table["ci_high"]):
        if coeff == 0.0:
            flags.append(False)
        elif any(math.isnan(float(x)) for x in (lo, hi, b_lo, b_hi)):
            flags.append(True)
        else:
            flags.append(bool(lo <= b_hi and b_lo <= hi))
    return flags


def overlap_note(table: pd.DataFrame, ci: float = CI_LEVEL) -> str | None:
    """One paragraph on the steered cells whose interval overlaps the unsteered cell's;
    ``None`` when every steered cell stands apart, or when the sweep has no unsteered cell
    (coefficient 0) to compare with (``overlaps_baseline`` is None there)."""
    steered = table[table["coeff"] != 0.0]
    if steered.empty or table["overlaps_baseline"].isna().all():
        return None
    n = sorted({int(x) for x in table["n"]})
    n_text = f"n = {n[0]}" if len(n) == 1 else f"n = {n[0]}..{n[-1]}"
    over = steered[steered["overlaps_baseline"].astype(bool)]
    if over.empty:
        return None
    cells = ", ".join(f"L{int(r.layer)}/c{float(r.coeff):g}" for r in over.itertuples())
    return (
        f"steering sweep: {len(over)} of {len(steered)} steered cells have a {ci:.0%} CI of "
        f"the trait score that overlaps the unsteered cell's ({cells}; {n_text} replies per "
        "cell): at this n they are not shown to differ from the unsteered model (column "
        "overlaps_baseline). More replies per cell narrow the CIs: more questions, or "
        "more samples per question (min_replies=, generation n)."
    )
