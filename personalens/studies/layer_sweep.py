"""Which layer carries the trait? Per-layer separation of pos vs neg samples with bootstrap CIs.

For every layer ``L`` (``blocks.L.hook_resid_post``) and every activation variant, the samples'
summaries are projected onto the unit direction ``v̂_L = v_L / ‖v_L‖`` of the persona vector
(as in the paper's monitoring) and the projections of pos and neg samples are compared:

* ``auc``: ROC-AUC, pos vs neg (Mann-Whitney ``U / (n_pos n_neg)``, ties count half; exactly
  :func:`personalens.stats.roc_auc`, and exactly the ``layer_auc`` of an extraction run's
  ``summary.json`` when evaluated on the same held-out samples);
* ``separation``: mean projection of pos minus mean projection of neg (residual units; grows
  with depth like the residual norm);
* ``cohens_d``: separation over the pooled within-class standard deviation (scale-free);
* ``var_pos`` / ``var_neg``: within-class variances of the projection (unbiased);
* ``auc_ci`` / ``separation_ci``: percentile bootstrap intervals. Each of ``n_boot`` resamples
  draws pos and neg samples separately with replacement (stratified, so both classes keep their
  sizes); the same resamples serve every layer. Vectorised over layers and resamples in torch.

For an extraction run, the same held-out replies are swept twice: read with their pos or neg
system prompt in context (``result[variant]``, ``summary.json``'s ``layer_auc``: through
attention every reply token reads the instruction, so this measures whether the model's state
tells the two instructions apart, an upper bound confounded by the prompt) and read after their
question alone (``result.neutral_metrics(variant)``, ``layer_auc_neutral``: does the reply's text
carry the trait the vector reads; its best layer is the one steering defaults to).

Entry points: :func:`layer_sweep` (here: an extraction run directory, an
:class:`~personalens.extraction.pipeline.ExtractionResult`, or a model with a vector and pos/neg
data), and in :mod:`personalens.studies.layer_sweep_metrics`
:func:`~personalens.studies.layer_sweep_metrics.sweep_from_activations` (``[n, n_layers,
d_model]`` tensors and directions) and
:func:`~personalens.studies.layer_sweep_metrics.sweep_from_projections` (``[n, n_layers]``
projections). Results are :class:`~personalens.studies.layer_sweep_result.LayerSweepResult`
objects: ``best_layer()``, ``to_frame()``, ``save()``/``load()``, and
:func:`personalens.plot.layer_sweep.plot_layer_sweep` draws them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from personalens.errors import PersonaLensError
from personalens.extraction.pipeline import ExtractionResult
from personalens.model.activations import VARIANTS, ActivationSet, collect_activations
from personalens.studies.extraction_run import NO_NEUTRAL_NOTE, SPLITS, RunData
from personalens.studies.layer_sweep_metrics import (
    check_sweep_args,
    project,
    sweep_from_projections,
)
from personalens.studies.layer_sweep_result import LayerMetrics, LayerSweepResult
from personalens.vectors.vector import PersonaVector

__all__ = ["layer_sweep"]


def layer_sweep(
    source: str | os.PathLike[str] | ExtractionResult | Any,
    vector: PersonaVector | Mapping[str, PersonaVector] | None = None,
    data: Any = None,
    *,
    variants: Sequence[str] | None = None,
    n_boot: int = 1000,
    ci: float | int = 0.95,
    seed: int = 0,
    split: str = "heldout",
    model: Any = None,
    batch_size: int = 16,
    progress: bool = False,
) -> LayerSweepResult:
    """AUC, separation and Cohen's d per layer and variant, with bootstrap CIs.

    ``source`` is one of:

    * an extraction run directory (``personalens extract --out DIR``, finished): reads its
      responses, judge scores and filter settings and its activation shards (no model needed)
      and projects onto the run's ``vectors/<variant>``. ``split="heldout"`` (default) uses all
      held-out replies, the samples of ``summary.json``'s ``layer_auc`` (so ``auc`` equals it up
      to its rounding, and with the default ``n_boot`` and ``seed`` ``auc_ci`` is its
      ``layer_auc_ci``); ``split="extract"`` uses the kept extraction pairs the vector was built
      from (in-sample, optimistic). ``result.neutral`` holds the same samples read without the
      system prompt (``layer_auc_neutral``), from the run's ``activations_neutral/``; a run made
      before those existed gets them computed (and cached there) when ``model=`` is given, else
      ``result.neutral`` is ``None`` and ``result.note`` says so (the figure then shows only the
      confounded curve, with that note).
    * an :class:`~personalens.extraction.pipeline.ExtractionResult`: the same, from its run directory,
      or, for a run without one, by recomputing activations with ``model=`` (a HookedTransformer).
    * a :class:`~personalens.vectors.vector.PersonaVector` alone (``pl.shipped_vector("evil")``,
      or any vector ``personalens extract`` saved): the sweep recorded in its metadata at
      extraction, with no model and no generation
      (:meth:`~personalens.studies.layer_sweep_result.LayerSweepResult.from_vector`; a
      :class:`~personalens.errors.PersonaLensError` when it records none).
    * a ``HookedTransformer`` with ``vector`` (a PersonaVector, or ``{variant: PersonaVector}``)
      and ``data``: ``{"pos": ..., "neg": ...}`` (a mapping or an object with ``.pos``/``.neg``)
      where each side is a list of ``(prompt, response)`` pairs, a mapping with ``"prompts"``
      and ``"responses"`` lists (and optionally ``"system"``), or an
      :class:`~personalens.model.activations.ActivationSet` already collected (then ``source`` may be
      None). Prompts are text or message lists, as :func:`~personalens.collect_activations`
      takes them.

    ``variants`` defaults to all three for runs and results, and for explicit data to the
    variants of the given vectors (one PersonaVector: its own ``variant``; it is projected
    from each variant's activations if you list several).
    """
    if isinstance(source, PersonaVector) and vector is None and data is None:
        return _recorded(source, variants)
    check_sweep_args(n_boot, ci)
    if split not in SPLITS:
        raise PersonaLensError(f"split must be one of {SPLITS}, got {split!r}")
    stats = {"n_boot": n_boot, "ci": float(ci), "seed": seed}
    if isinstance(source, (str, os.PathLike)):
        if vector is not None or data is not None:
            raise PersonaLensError(
                "a run directory brings its own vectors and samples: do not pass vector or data"
            )
        return _sweep_run(RunData.from_dir(Path(source), model), variants, split, stats)
    if isinstance(source, ExtractionResult):
        if vector is not None or data is not None:
            raise PersonaLensError(
                "an ExtractionResult brings its own vectors and samples: do not pass vector or data"
            )
        return _sweep_run(
            RunData.from_result(source, model, batch_size, progress), variants, split, stats
        )
    return _sweep_data(source, vector, data, variants, stats, batch_size, progress)


def _recorded(vector: PersonaVector, variants: Sequence[str] | None) -> LayerSweepResult:
    """The sweep ``vector`` recorded at extraction (its own variant only)."""
    if variants is not None and _check_variants(variants) != (vector.variant,):
        raise PersonaLensError(
            f"a vector records the sweep of its own variant ({vector.variant!r}) only, not "
            f"{list(variants)}: sweep its extraction run for the others"
        )
    return LayerSweepResult.from_vector(vector)


def _check_variants(variants: Sequence[str]) -> tuple[str, ...]:
    if isinstance(variants, str):
        variants = (variants,)
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        raise PersonaLensError(f"unknown variant(s) {bad}; use some of {VARIANTS}")
    return tuple(dict.fromkeys(variants))


def _sweep_run(
    run: RunData, variants: Sequence[str] | None, split: str, stats: dict[str, Any]
) -> LayerSweepResult:
    variants = _check_variants(variants if variants is not None else VARIANTS)
    absent = [v for v in variants if v not in run.vectors]
    if absent:
        raise PersonaLensError(f"{run.where} has no vector for variant(s) {absent}")
    pos, neg, evaluated_on = run.sides(split)
    first = run.vectors[variants[0]]
    metrics = {v: _variant_metrics(pos, neg, run.vectors[v], v, stats) for v in variants}
    clean = run.neutral_sides(split)
    neutral = None
    if clean is not None:
        neutral = {v: _variant_metrics(*clean, run.vectors[v], v, stats) for v in variants}
    meta: dict[str, Any] = {"source": run.where}
    for key in ("best_layer", "best_layer_neutral"):
        if run.summary.get(key) is not None:
            meta[f"run_{key}"] = run.summary[key]
    return LayerSweepResult(
        trait=run.summary.get("trait", first.trait),
        model=run.summary.get("model", first.model),
        metrics=metrics,
        split=split,
        evaluated_on=evaluated_on,
        metadata=meta,
        neutral=neutral,
        note="" if neutral is not None else NO_NEUTRAL_NOTE,
        **stats,
    )


def _variant_metrics(
    pos: ActivationSet,
    neg: ActivationSet,
    vector: PersonaVector,
    variant: str,
    stats: dict[str, Any],
) -> LayerMetrics:
    if pos.layers != neg.layers:
        raise PersonaLensError("pos and neg activations hold different layers")
    layers = list(pos.layers)
    if max(layers) >= vector.n_layers or pos.variant(variant).shape[-1] != vector.d_model:
        raise PersonaLensError(
            f"the activations (layers {layers[0]}..{layers[-1]}, d_model "
            f"{pos.variant(variant).shape[-1]}) do not fit the vector ({vector.n_layers} layers, "
            f"d_model {vector.d_model}): was it extracted from another model?"
        )
    directions = vector.directions[layers]
    return sweep_from_projections(
        project(pos.variant(variant), directions),
        project(neg.variant(variant), directions),
        layers=layers,
        **stats,
    )


def _side(data: Any, side: str) -> Any:
    if isinstance(data, Mapping):
        if side not in data:
            raise PersonaLensError(f"data has no {side!r} entry: give {{'pos': ..., 'neg': ...}}")
        return data[side]
    if hasattr(data, side):
        return getattr(data, side)
    raise PersonaLensError(
        "data must be a mapping {'pos': ..., 'neg': ...} or an object with .pos and .neg, got "
        f"{type(data).__name__}"
    )


def _side_acts(model: Any, value: Any, side: str, batch_size: int, progress: bool) -> ActivationSet:
    if isinstance(value, ActivationSet):
        return value
    system = None
    if isinstance(value, Mapping):
        if "prompts" not in value or "responses" not in value:
            raise PersonaLensError(
                f"data[{side!r}] as a mapping needs 'prompts' and 'responses' lists"
            )
        prompts, responses, system = value["prompts"], value["responses"], value.get("system")
    else:
        pairs = list(value)
        if not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pairs):
            raise PersonaLensError(
                f"data[{side!r}] must be (prompt, response) pairs, a mapping with 'prompts' and "
                "'responses', or an ActivationSet"
            )
        prompts, responses = [p for p, _ in pairs], [r for _, r in pairs]
    if model is None:
        raise PersonaLensError(
            "collecting activations needs a model: pass a HookedTransformer as source"
        )
    return collect_activations(
        model,
        list(prompts),
        list(responses),
        system=system,
        batch_size=batch_size,
        progress=progress,
    )


def _sweep_data(
    model: Any,
    vector: Any,
    data: Any,
    variants: Sequence[str] | None,
    stats: dict[str, Any],
    batch_size: int,
    progress: bool,
) -> LayerSweepResult:
    if vector is None or data is None:
        raise PersonaLensError(
            "layer_sweep(model, vector, data): with a model as source, give the persona "
            "vector and {'pos': ..., 'neg': ...} data (or pass a run directory)"
        )
    if isinstance(vector, PersonaVector):
        variants = _check_variants(variants if variants is not None else (vector.variant,))
        vectors = {v: vector for v in variants}
    elif isinstance(vector, Mapping):
        variants = _check_variants(variants if variants is not None else tuple(vector))
        missing = [v for v in variants if v not in vector]
        if missing:
            raise PersonaLensError(f"no vector given for variant(s) {missing}")
        vectors = {v: vector[v] for v in variants}
    else:
        raise PersonaLensError(
            f"vector must be a PersonaVector or {{variant: PersonaVector}}, got "
            f"{type(vector).__name__}"
        )
    if model is not None:
        for vec in vectors.values():
            vec.check_compatible(model)
    pos = _side_acts(model, _side(data, "pos"), "pos", batch_size, progress)
    neg = _side_acts(model, _side(data, "neg"), "neg", batch_size, progress)
    metrics = {v: _variant_metrics(pos, neg, vectors[v], v, stats) for v in variants}
    first = vectors[variants[0]]
    return LayerSweepResult(
        trait=first.trait,
        model=first.model,
        metrics=metrics,
        split="given",
        evaluated_on="given data",
        **stats,
    )
