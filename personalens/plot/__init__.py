"""Plotly figures for personalens results.

This is the only personalens subpackage that imports plotly; ``import personalens`` does not
load it (``personalens.plot`` is imported on first use). Every ``plot_*`` function builds and returns a
:class:`plotly.graph_objects.Figure` and never calls ``.show()``: display it with ``fig.show()``
(or by leaving it as the last expression of a notebook cell), or write it with :func:`save_html`,
which embeds plotly.js so the file opens offline.

Figures:

* :func:`plot_cosine_matrix` -- heatmap of a :class:`~personalens.vectors.algebra.CosineMatrix` at one
  layer, with a slider to scrub through its layers.
* :func:`plot_cosine_by_layer` -- the cosine of each pair of vectors against the layer.
* :func:`plot_steering_sweep` -- mean judged trait score (± s.e.m.) and coherence against the
  steering coefficient, one line per layer.
* :func:`plot_steering_heatmap` -- layer x coefficient heatmap of the trait score, each cell
  annotated with the mean coherence.
* :func:`plot_layer_sweep` -- held-out AUC against layer with bootstrap CI bands, one or more
  traits overlaid, each trait's best layer starred.
* :func:`plot_layer_separation` -- separation (with CI) and Cohen's d against layer.
* :func:`plot_token_trace` -- the projection of every token of a conversation, coloured by
  segment (system, user, template, response).
* :func:`plot_monitoring_scatter` -- last-prompt-token projection vs judged trait score, one
  colour per prompt condition, condition means outlined, Pearson r in the title.
* :func:`plot_monitoring_r_by_layer` -- that Pearson r at every layer.
* :func:`plot_screening_histogram` -- overlaid histograms of the projection difference ΔP of
  one or more screened datasets, with each dataset's mean marked.
* :func:`plot_sae_cosines` -- the top-k SAE features of a persona vector per layer, as bars of
  signed decoder cosine (aligned red, anti-aligned blue).
* :func:`random_max_cosine` -- the random-direction baseline of that figure: a quantile of the
  largest |cos| between a vector and n random unit directions.
* :func:`plot_feature_steering` -- trait-score change (and coherence) against the steering
  coefficient, one line per SAE feature.
* :func:`plot_finetuning_shift` -- finetuning shift along the persona vector vs judged trait-score
  change, one point per finetuned model, Pearson r in the title.
* :func:`plot_shift_by_layer` -- the finetuning shift against the layer, one line per model.
* :func:`plot_scalar_sweep` -- questionnaire score change against the steering coefficient, one
  line per dimension with its least-squares fit, the trait's target dimension highlighted.
* :func:`plot_additive_test` -- observed vs predicted score changes of summed and subtracted
  trait vectors, one point per dimension, with the identity line.
* :func:`plot_persona_space` -- the roles in PC1-PC2-PC3 of the persona space at one layer,
  labelled and coloured by their projection on the Assistant Axis, the default assistant marked.
* :func:`plot_persona_variance` -- variance explained by each principal component at one layer.
* :func:`plot_persona_layers` -- per layer: PC1's explained variance, its cosine with the axis,
  and the default assistant's rank on PC1.
* :func:`plot_drift_trajectories` -- the mean projection on the Assistant Axis per turn of a
  conversation, one line per scenario kind, uncapped vs capped, with CI bands.
* :func:`plot_style_persona_cosines` -- cosines of style vectors with persona vectors at a layer.

One module per kind of result: :mod:`~personalens.plot.vectors` (cosines),
:mod:`~personalens.plot.steering`, :mod:`~personalens.plot.layer_sweep`,
:mod:`~personalens.plot.monitoring`, :mod:`~personalens.plot.screening`,
:mod:`~personalens.plot.sae`, :mod:`~personalens.plot.finetuning`,
:mod:`~personalens.plot.personality` , :mod:`~personalens.plot.persona_space` and
:mod:`~personalens.plot.drift`; :mod:`~personalens.plot.style` holds what they share.
"""

from __future__ import annotations

from personalens.plot.drift import plot_drift_trajectories, plot_style_persona_cosines
from personalens.plot.finetuning import plot_finetuning_shift, plot_shift_by_layer
from personalens.plot.layer_sweep import plot_layer_separation, plot_layer_sweep
from personalens.plot.monitoring import (
    plot_monitoring_r_by_layer,
    plot_monitoring_scatter,
    plot_token_trace,
)
from personalens.plot.persona_space import (
    plot_persona_layers,
    plot_persona_space,
    plot_persona_variance,
)
from personalens.plot.personality import plot_additive_test, plot_scalar_sweep
from personalens.plot.sae import plot_feature_steering, plot_sae_cosines, random_max_cosine
from personalens.plot.screening import plot_screening_histogram
from personalens.plot.steering import plot_steering_heatmap, plot_steering_sweep
from personalens.plot.style import save_html
from personalens.plot.vectors import plot_cosine_by_layer, plot_cosine_matrix

__all__ = [
    "plot_drift_trajectories",
    "plot_style_persona_cosines",
    "plot_additive_test",
    "plot_cosine_by_layer",
    "plot_cosine_matrix",
    "plot_feature_steering",
    "plot_finetuning_shift",
    "plot_layer_separation",
    "plot_layer_sweep",
    "plot_monitoring_r_by_layer",
    "plot_monitoring_scatter",
    "plot_persona_layers",
    "plot_persona_space",
    "plot_persona_variance",
    "plot_sae_cosines",
    "random_max_cosine",
    "plot_scalar_sweep",
    "plot_screening_histogram",
    "plot_shift_by_layer",
    "plot_steering_heatmap",
    "plot_steering_sweep",
    "plot_token_trace",
    "save_html",
]
