"""Finetuning shift: how far finetuning moved a model's activations along a persona vector.

For evaluation prompts ``x_i`` and, per layer ``L`` (``blocks.L.hook_resid_post``), the unit
persona direction ``v̂_L``:

* **last-prompt-token shift** (the Persona Vectors paper's measure) =
  ``mean_i <h_L^ft(x_i)[last prompt token] - h_L^base(x_i)[last prompt token], v̂_L>``: where
  each model stands just before it answers;
* **response-average shift** = ``mean_i <mean_t h_L^ft(x_i, y_i)[t] - mean_t h_L^base(x_i, y_i)[t],
  v̂_L>`` over the response tokens ``t`` of a response ``y_i``. By default ``y_i`` is the
  *finetuned* model's greedy reply to ``x_i`` (``responses="generate"``), and **both models read
  exactly the same token sequence** (teacher-forced; the generated token ids, never
  re-tokenised), so the difference is the change of the model and not of the text. Pass
  ``responses=[...]`` to average over other replies (e.g. the finetuning data), or ``None`` for
  the last-prompt-token shift only.

Averages exclude padding; both models run the same batches, so a model compared with itself (or
with an exact copy) has a shift of exactly 0. Optionally a judge scores the greedy replies of
both models for the trait: ``trait_change`` = mean score of the finetuned model minus that of the
base model on the same prompts.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from personalens.conventions import select_layers
from personalens.engines.hf import resolve_backend
from personalens.errors import PersonaLensError
from personalens.extraction.traits import Trait, load_trait
from personalens.judges.base import Judge, judge_records
from personalens.judges.factory import make_judge
from personalens.model.activations import summarize_batch
from personalens.model.chat import Message, as_conversation, encode_chat, encode_response
from personalens.model.generation import GenerationConfig, generate
from personalens.results import Result, json_safe
from personalens.stats import nan_mean

if TYPE_CHECKING:
    import pandas as pd
    from transformer_lens import HookedTransformer

    from personalens.vectors.vector import PersonaVector

__all__ = ["DEFAULT_GENERATION", "FinetuningShift", "finetuning_shift"]

FORMAT = "personalens.finetuning_shift"
VERSION = 1
VARIANTS = ("response_avg", "last_prompt_token")
DEFAULT_GENERATION = GenerationConfig(max_new_tokens=64, temperature=0.0)
Table = Float[Tensor, "n n_sel"]
_SCORES = ("trait_base", "trait_finetuned", "coherence_base", "coherence_finetuned")


def _nansem(x: Tensor) -> float:
    x = x[~x.isnan()]
    return (x.std() / math.sqrt(len(x))).item() if len(x) > 1 else math.nan


def _mean(values: Sequence[float] | None) -> float:
    if values is None:
        return math.nan
    return nan_mean(torch.tensor(values, dtype=torch.float64))


@dataclass(frozen=True)
class FinetuningShift(Result):
    """Per-prompt projected activation differences (finetuned − base) at ``layers``.

    ``shift_<variant>[i, j]`` is prompt ``i`` at layer ``layers[j]``; ``base_<variant>`` the base
    model's own projection there (for scale). ``shift_response_avg`` is NaN for prompts without
    response tokens (an empty reply, or ``responses=None``). ``responses`` are the replies both
    models read (None: none); ``finetuned_generations`` / ``base_generations`` each model's
    greedy replies where they were generated (or given), and ``trait_base`` /
    ``trait_finetuned`` their judged trait scores (None: not judged).
    """

    layers: tuple[int, ...]
    shift_response_avg: Table
    shift_last_prompt_token: Table
    base_response_avg: Table
    base_last_prompt_token: Table
    prompts: list[Any] = field(repr=False)
    responses: list[str] | None = field(default=None, repr=False)
    finetuned_generations: list[str] | None = field(default=None, repr=False)
    base_generations: list[str] | None = field(default=None, repr=False)
    trait_base: list[float] | None = field(default=None, repr=False)
    trait_finetuned: list[float] | None = field(default=None, repr=False)
    coherence_base: list[float] | None = field(default=None, repr=False)
    coherence_finetuned: list[float] | None = field(default=None, repr=False)
    name: str = "finetuned"
    trait: str = ""
    best_layer: int | None = None
    settings: dict[str, Any] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.prompts)

    def _column(self, layer: int | None) -> int:
        if layer is None:
            layer = self.best_layer
            if layer is None:
                raise PersonaLensError("give layer=L: the vector recorded no best_layer")
        if layer not in self.layers:
            raise PersonaLensError(f"layer {layer} was not measured (layers: {list(self.layers)})")
        return self.layers.index(layer)

    def shift(self, layer: int | None = None, variant: str = "response_avg") -> float:
        """Mean shift over prompts at ``layer`` (default: the vector's best layer)."""
        if variant not in VARIANTS:
            raise PersonaLensError(f"unknown variant {variant!r}: use one of {VARIANTS}")
        return nan_mean(getattr(self, f"shift_{variant}")[:, self._column(layer)])

    @property
    def trait_change(self) -> float:
        """Mean judged trait score of the finetuned model minus the base model's (NaN: not
        judged)."""
        return _mean(self.trait_finetuned) - _mean(self.trait_base)

    def to_frame(self) -> pd.DataFrame:
        """One row per layer: mean shift (and s.e.m. over prompts) of both variants, and the base
        model's mean projection."""
        import pandas as pd

        rows = []
        for j, L in enumerate(self.layers):
            row: dict[str, Any] = {"layer": L}
            for v in VARIANTS:
                col = getattr(self, f"shift_{v}")[:, j]
                row[f"shift_{v}"] = nan_mean(col)
                row[f"sem_{v}"] = _nansem(col)
            for v in VARIANTS:
                row[f"base_{v}"] = nan_mean(getattr(self, f"base_{v}")[:, j])
            row["n_response_avg"] = int((~self.shift_response_avg[:, j].isnan()).sum())
            rows.append(row)
        return pd.DataFrame(rows)

    def summary(self, layer: int | None = None) -> dict[str, Any]:
        """Shift at ``layer`` (default: best layer, else none), trait and coherence scores."""
        out: dict[str, Any] = {"name": self.name, "trait": self.trait, "n": len(self)}
        if layer is not None or self.best_layer is not None:
            L = self.layers[self._column(layer)]
            out["layer"] = L
            for v in VARIANTS:
                out[f"shift_{v}"] = self.shift(L, v)
        out.update(
            trait_base=_mean(self.trait_base),
            trait_finetuned=_mean(self.trait_finetuned),
            trait_change=self.trait_change,
            coherence_base=_mean(self.coherence_base),
            coherence_finetuned=_mean(self.coherence_finetuned),
            n_empty_responses=sum(1 for r in self.responses or [] if not r),
        )
        return out

    # ------------------------------------------------------------------ save / load

    def to_dict(self) -> dict[str, Any]:
        """Format and version first, then the fields (NaN as ``None``); :meth:`load` reads it."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "trait": self.trait,
            "best_layer": self.best_layer,
            "layers": list(self.layers),
            **{
                f"{kind}_{v}": json_safe(getattr(self, f"{kind}_{v}"))
                for kind in ("shift", "base")
                for v in VARIANTS
            },
            "prompts": self.prompts,
            "responses": self.responses,
            "finetuned_generations": self.finetuned_generations,
            "base_generations": self.base_generations,
            **{k: json_safe(getattr(self, k)) for k in _SCORES},
            "settings": self.settings,
        }

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FinetuningShift:
        d = json.loads(Path(path).read_text())
        if d.get("format") != FORMAT:
            raise PersonaLensError(f"{path} is not a saved FinetuningShift")

        def table(rows: list) -> Tensor:
            data = [[math.nan if x is None else x for x in row] for row in rows]
            return torch.tensor(data, dtype=torch.float64).reshape(len(rows), len(d["layers"]))

        def scores(xs: list | None) -> list[float] | None:
            return None if xs is None else [math.nan if x is None else float(x) for x in xs]

        return cls(
            layers=tuple(d["layers"]),
            **{f"{k}_{v}": table(d[f"{k}_{v}"]) for k in ("shift", "base") for v in VARIANTS},
            prompts=d["prompts"],
            responses=d["responses"],
            finetuned_generations=d["finetuned_generations"],
            base_generations=d["base_generations"],
            **{k: scores(d[k]) for k in _SCORES},
            name=d["name"],
            trait=d["trait"],
            best_layer=d["best_layer"],
            settings=d["settings"],
        )


def finetuning_shift(
    base_model: HookedTransformer,
    finetuned_model: HookedTransformer,
    vector: PersonaVector,
    prompts: Sequence[str | Sequence[Message]],
    *,
    layers: int | Sequence[int] | str | None = "all",
    responses: str | Sequence[str | Sequence[int]] | None = "generate",
    system: str | None = None,
    generation: GenerationConfig | None = None,
    judge: Judge | str | None = None,
    trait: Trait | str | None = None,
    base_responses: Sequence[str] | None = None,
    batch_size: int = 16,
    name: str = "finetuned",
) -> FinetuningShift:
    """Activation shift of ``finetuned_model`` relative to ``base_model`` along ``vector``.

    Args:
        prompts: evaluation prompts (user strings, with ``system`` prepended when given, or
            conversations).
        layers: ``"all"`` (default), an int or a list: personalens layers to measure.
        responses: ``"generate"`` (the finetuned model's greedy replies, ``generation``
            settings), a list of replies (text or token ids; both models read the same tokens),
            or ``None`` (last-prompt-token shift only).
        generation: how replies are generated (default greedy, 64 new tokens).
        judge, trait: with a judge (a :class:`~personalens.judges.base.Judge`, ``"offline"`` or
            ``"openai"``) and the trait (a :class:`~personalens.extraction.traits.Trait` or its name), the
            greedy replies of both models are scored for the trait and for coherence.
        base_responses: the base model's replies, when already generated with the same
            settings (saves regenerating them for every finetuned model).
        name: a label for tables and plots.
    """
    vector.check_compatible(base_model)
    vector.check_compatible(finetuned_model)
    for attr in ("n_layers", "d_model", "d_vocab"):
        if getattr(base_model.cfg, attr) != getattr(finetuned_model.cfg, attr):
            raise PersonaLensError(
                f"the base and finetuned models differ in {attr}: compare a model with a "
                "finetune of itself"
            )
    if not prompts:
        raise PersonaLensError("no prompts given: nothing to measure")
    if batch_size < 1:
        raise PersonaLensError(f"batch_size must be >= 1, got {batch_size}")
    tok = base_model.tokenizer
    if tok is None:
        raise PersonaLensError("the model has no tokenizer; load it with personalens.load_model")
    sel = select_layers(layers, base_model.cfg.n_layers)
    units = torch.stack([vector.unit(L) for L in sel]).double()  # [n_sel, d_model]
    zero = [L for L, u in zip(sel, units) if float(u.norm()) == 0.0]
    if zero:
        raise PersonaLensError(f"the vector is zero at layer(s) {zero}: nothing to project onto")
    convs = [as_conversation(p, system) for p in prompts]
    gen = replace(generation or DEFAULT_GENERATION, batch_size=batch_size, n=1, progress=False)

    # the replies both models read, and the finetuned model's greedy replies for judging
    r_ids, shown, ft_text = _replies(finetuned_model, convs, responses, gen, tok)
    judged: dict[str, list[float]] | None = None
    base_text: list[str] | None = None
    if judge is not None:
        judged, ft_text, base_text = _judge_both(
            base_model, finetuned_model, convs, gen, judge, trait, ft_text, base_responses
        )
    elif base_responses is not None:
        base_text = list(base_responses)

    shift, base = _projected_shift(
        base_model, finetuned_model, convs, r_ids, sel, units, batch_size
    )
    trait_name = trait.name if isinstance(trait, Trait) else (trait or vector.trait)
    best = vector.metadata.get("best_layer")
    return FinetuningShift(
        layers=sel,
        shift_response_avg=shift["response_avg"],
        shift_last_prompt_token=shift["last_prompt_token"],
        base_response_avg=base["response_avg"],
        base_last_prompt_token=base["last_prompt_token"],
        prompts=[p if isinstance(p, str) else [dict(m) for m in p] for p in prompts],
        responses=shown,
        finetuned_generations=ft_text,
        base_generations=base_text,
        **{k: judged[k] if judged else None for k in _SCORES},
        name=name,
        trait=trait_name,
        best_layer=int(best) if best is not None and int(best) in sel else None,
        settings={
            "responses": responses if isinstance(responses, str) or responses is None else "given",
            "system": system,
            "generation": {k: v for k, v in asdict(gen).items() if k != "progress"},
            "judge": None if judge is None else getattr(judge, "name", judge),
            "vector": {"trait": vector.trait, "model": vector.model},
            "model": base_model.cfg.model_name,
        },
    )


def _replies(
    finetuned_model: HookedTransformer,
    convs: list[list[Message]],
    responses: str | Sequence[str | Sequence[int]] | None,
    gen: GenerationConfig,
    tok: Any,
) -> tuple[list[list[int]], list[str] | None, list[str] | None]:
    """The reply token ids both models read, the replies as text (None: none), and the
    finetuned model's greedy replies when they were generated here (``tok``: the base
    model's tokenizer)."""
    if isinstance(responses, str):
        if responses != "generate":
            raise PersonaLensError(
                f"responses={responses!r}: use 'generate', a list of replies, or None"
            )
        res = generate(finetuned_model, convs, gen)
        ft_text = list(res.responses)
        return [list(t) for t in res.response_tokens], ft_text, ft_text
    if responses is None:
        return [[] for _ in convs], None, None
    if len(responses) != len(convs):
        raise PersonaLensError(
            f"{len(convs)} prompts but {len(responses)} responses: pass one per prompt"
        )
    r_ids = [encode_response(tok, r) for r in responses]
    shown = [r if isinstance(r, str) else tok.decode(list(r)) for r in responses]
    return r_ids, shown, None


def _projected_shift(
    base_model: HookedTransformer,
    finetuned_model: HookedTransformer,
    convs: list[list[Message]],
    r_ids: list[list[int]],
    sel: tuple[int, ...],
    units: Tensor,
    batch_size: int,
) -> tuple[dict[str, Table], dict[str, Table]]:
    """Per variant, the projected activation difference (finetuned - base) and the base
    model's projection, per prompt and selected layer; both models run the same batches."""
    tok = base_model.tokenizer
    p_ids = [encode_chat(tok, c) for c in convs]
    n = len(convs)
    n_ctx = base_model.cfg.n_ctx
    for i in range(n):
        if len(p_ids[i]) + len(r_ids[i]) > n_ctx:
            raise PersonaLensError(
                f"prompt {i} with its reply is {len(p_ids[i]) + len(r_ids[i])} tokens, more "
                f"than the model's context of {n_ctx}"
            )
    order = sorted(range(n), key=lambda i: -(len(p_ids[i]) + len(r_ids[i])))
    # one engine for both models, so that the shift holds no engine-to-engine rounding
    engines = {resolve_backend(m, "auto") for m in (base_model, finetuned_model)}
    backend = "tl" if "tl" in engines else "hf"
    shift = {v: torch.full((n, len(sel)), math.nan, dtype=torch.float64) for v in VARIANTS}
    base = {v: torch.full((n, len(sel)), math.nan, dtype=torch.float64) for v in VARIANTS}
    for start in range(0, n, batch_size):
        chunk = order[start : start + batch_size]
        ps, rs = [p_ids[i] for i in chunk], [r_ids[i] for i in chunk]
        a = summarize_batch(base_model, ps, rs, sel, backend=backend)
        b = summarize_batch(finetuned_model, ps, rs, sel, backend=backend)
        idx = torch.tensor(chunk)
        for v in VARIANTS:
            diff = (b.variant(v) - a.variant(v)).double()  # [chunk, n_sel, d_model]
            shift[v][idx] = torch.einsum("bld,ld->bl", diff, units)
            base[v][idx] = torch.einsum("bld,ld->bl", a.variant(v).double(), units)
        empty = torch.tensor([len(r) == 0 for r in rs])
        for table in (shift["response_avg"], base["response_avg"]):
            table[idx[empty]] = math.nan
    return shift, base


def _judge_both(
    base_model: HookedTransformer,
    finetuned_model: HookedTransformer,
    convs: list[list[Message]],
    gen: GenerationConfig,
    judge: Judge | str,
    trait: Trait | str | None,
    ft_text: list[str] | None,
    base_responses: Sequence[str] | None,
) -> tuple[dict[str, list[float]], list[str], list[str]]:
    if trait is None:
        raise PersonaLensError("judging needs trait= (a Trait or a trait name)")
    if isinstance(trait, str):
        trait = load_trait(trait)
    if isinstance(judge, str):
        judge = make_judge(judge)
    if ft_text is None:
        ft_text = list(generate(finetuned_model, convs, gen).responses)
    if base_responses is None:
        base_text = list(generate(base_model, convs, gen).responses)
    else:
        if len(base_responses) != len(convs):
            raise PersonaLensError(
                f"{len(convs)} prompts but {len(base_responses)} base_responses: one per prompt"
            )
        base_text = list(base_responses)
    questions = [next(m["content"] for m in reversed(c) if m["role"] == "user") for c in convs]
    records = [
        {"key": f"{side}{i}", "question": q, "response": r}
        for side, texts in (("b", base_text), ("f", ft_text))
        for i, (q, r) in enumerate(zip(questions, texts))
    ]
    scores = judge_records(records, trait, judge, progress=False)
    n = len(convs)
    return (
        {
            "trait_base": [scores[f"b{i}"]["trait"] for i in range(n)],
            "trait_finetuned": [scores[f"f{i}"]["trait"] for i in range(n)],
            "coherence_base": [scores[f"b{i}"]["coherence"] for i in range(n)],
            "coherence_finetuned": [scores[f"f{i}"]["coherence"] for i in range(n)],
        },
        ft_text,
        base_text,
    )
