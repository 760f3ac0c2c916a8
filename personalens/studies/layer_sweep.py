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

Entry points: :func:`layer_sweep` (an extraction run directory, an
:class:`~personalens.extraction.pipeline.ExtractionResult`, or a model with a vector and pos/neg data),
:func:`sweep_from_activations` (``[n, n_layers, d_model]`` tensors and directions) and
:func:`sweep_from_projections` (``[n, n_layers]`` projections). Results are
:class:`LayerSweepResult` objects: ``best_layer()``, ``to_frame()``, ``save()``/``load()``, and
:func:`personalens.plot.figures.plot_layer_sweep` draws them.

(The module is ``layerwise``, not ``layer_sweep``: a submodule of that name would replace the
exported function ``personalens.layer_sweep`` once imported.)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from personalens._io import atomic_write_json
from personalens.errors import PersonaLensError
from personalens.model.activations import VARIANTS, ActivationSet
from personalens.runs.sharding import read_run_log

if TYPE_CHECKING:
    import pandas as pd

    from personalens.extraction.pipeline import ExtractionConfig, ExtractionResult
    from personalens.vectors.vector import PersonaVector

FORMAT = "personalens.layer_sweep"
VERSION = 1
SPLITS = ("heldout", "extract")

Acts = Float[Tensor, "n n_layers d_model"]
PosActs = Float[Tensor, "n_pos n_layers d_model"]
NegActs = Float[Tensor, "n_neg n_layers d_model"]
Projections = Float[Tensor, "n n_layers"]
Interval = tuple[float, float]

# bootstrap resamples are processed in blocks of about this many float64 values
_BLOCK_ELEMENTS = 8_000_000


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class LayerMetrics:
    """Per-layer metrics of one variant; every tuple has one entry per layer in ``layers``.

    The CIs are ``(low, high)`` percentile bootstrap intervals, ``None`` when ``n_boot`` was 0.
    NaN marks a metric that is undefined (e.g. Cohen's d with zero pooled variance).
    """

    layers: tuple[int, ...]
    auc: tuple[float, ...]
    auc_ci: tuple[Interval, ...] | None
    separation: tuple[float, ...]
    separation_ci: tuple[Interval, ...] | None
    cohens_d: tuple[float, ...]
    var_pos: tuple[float, ...]
    var_neg: tuple[float, ...]
    n_pos: int
    n_neg: int

    def best_layer(self) -> int:
        """The layer with the highest AUC; ties go to the larger Cohen's d, then the lower layer.

        Cohen's d (not the raw separation) breaks ties because it is scale-free: the raw
        separation grows with depth along with the residual norm, and late layers would win
        every tie. NaN metrics lose to any number.
        """

        def key(i: int) -> tuple[float, float, int]:
            return (_or_neg_inf(self.auc[i]), _or_neg_inf(self.cohens_d[i]), -self.layers[i])

        return self.layers[max(range(len(self.layers)), key=key)]

    def at(self, layer: int) -> dict[str, Any]:
        """Every metric at ``layer`` as a dict (``layer``, ``auc``, ``auc_ci``, ...)."""
        if layer not in self.layers:
            raise PersonaLensError(
                f"layer {layer} was not swept; the sweep has {list(self.layers)}"
            )
        i = self.layers.index(layer)
        return {
            "layer": layer,
            "auc": self.auc[i],
            "auc_ci": None if self.auc_ci is None else self.auc_ci[i],
            "separation": self.separation[i],
            "separation_ci": None if self.separation_ci is None else self.separation_ci[i],
            "cohens_d": self.cohens_d[i],
            "var_pos": self.var_pos[i],
            "var_neg": self.var_neg[i],
            "n_pos": self.n_pos,
            "n_neg": self.n_neg,
        }

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"layers": list(self.layers)}
        for name in ("auc", "separation", "cohens_d", "var_pos", "var_neg"):
            out[name] = [_json_float(x) for x in getattr(self, name)]
        for name in ("auc_ci", "separation_ci"):
            value = getattr(self, name)
            out[name] = None if value is None else [[_json_float(x) for x in iv] for iv in value]
        out["n_pos"], out["n_neg"] = self.n_pos, self.n_neg
        out["best_layer"] = self.best_layer()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerMetrics:
        def floats(name: str) -> tuple[float, ...]:
            return tuple(_from_json_float(x) for x in data[name])

        def intervals(name: str) -> tuple[Interval, ...] | None:
            if data.get(name) is None:
                return None
            return tuple((_from_json_float(lo), _from_json_float(hi)) for lo, hi in data[name])

        return cls(
            layers=tuple(int(x) for x in data["layers"]),
            auc=floats("auc"),
            auc_ci=intervals("auc_ci"),
            separation=floats("separation"),
            separation_ci=intervals("separation_ci"),
            cohens_d=floats("cohens_d"),
            var_pos=floats("var_pos"),
            var_neg=floats("var_neg"),
            n_pos=int(data["n_pos"]),
            n_neg=int(data["n_neg"]),
        )


@dataclass(frozen=True)
class LayerSweepResult:
    """A layer sweep of one trait: :class:`LayerMetrics` per activation variant.

    ``result["response_avg"]`` is that variant's metrics; ``result.variants`` lists them.
    ``evaluated_on`` says which samples were projected (e.g. ``"kept held-out pairs"``).
    """

    trait: str
    model: str
    metrics: dict[str, LayerMetrics]
    split: str = "heldout"
    evaluated_on: str = ""
    n_boot: int = 1000
    ci: float = 0.95
    seed: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.metrics:
            raise PersonaLensError("a LayerSweepResult needs metrics for at least one variant")

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(self.metrics)

    @property
    def layers(self) -> tuple[int, ...]:
        return next(iter(self.metrics.values())).layers

    def __getitem__(self, variant: str) -> LayerMetrics:
        if variant not in self.metrics:
            raise PersonaLensError(
                f"variant {variant!r} is not in this sweep; it has {list(self.metrics)}"
            )
        return self.metrics[variant]

    def best_layer(self, variant: str = "response_avg") -> int:
        """Highest-AUC layer of ``variant``; ties go to the larger Cohen's d, then the lower
        layer (see :meth:`LayerMetrics.best_layer`). This can differ from an extraction run's
        recorded ``best_layer``, which breaks ties by the lower layer only."""
        return self[variant].best_layer()

    def best(self, variant: str = "response_avg") -> dict[str, Any]:
        """All metrics at :meth:`best_layer` (``layer``, ``auc``, ``auc_ci``, ``cohens_d``, ...)."""
        return self[variant].at(self.best_layer(variant))

    def to_frame(self) -> pd.DataFrame:
        """Long table, one row per (variant, layer): ``trait, variant, layer, auc, auc_low,
        auc_high, separation, separation_low, separation_high, cohens_d, var_pos, var_neg,
        n_pos, n_neg, best`` (``best``: this is the variant's best layer)."""
        import pandas as pd

        rows = []
        nan = math.nan
        for variant, m in self.metrics.items():
            best = m.best_layer()
            for i, layer in enumerate(m.layers):
                auc_ci = m.auc_ci[i] if m.auc_ci is not None else (nan, nan)
                sep_ci = m.separation_ci[i] if m.separation_ci is not None else (nan, nan)
                rows.append(
                    {
                        "trait": self.trait,
                        "variant": variant,
                        "layer": layer,
                        "auc": m.auc[i],
                        "auc_low": auc_ci[0],
                        "auc_high": auc_ci[1],
                        "separation": m.separation[i],
                        "separation_low": sep_ci[0],
                        "separation_high": sep_ci[1],
                        "cohens_d": m.cohens_d[i],
                        "var_pos": m.var_pos[i],
                        "var_neg": m.var_neg[i],
                        "n_pos": m.n_pos,
                        "n_neg": m.n_neg,
                        "best": layer == best,
                    }
                )
        return pd.DataFrame.from_records(rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes ``None``); :meth:`from_dict` inverts it exactly."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "trait": self.trait,
            "model": self.model,
            "split": self.split,
            "evaluated_on": self.evaluated_on,
            "n_boot": self.n_boot,
            "ci": self.ci,
            "seed": self.seed,
            "best_layer": {v: m.best_layer() for v, m in self.metrics.items()},
            "variants": {v: m.to_dict() for v, m in self.metrics.items()},
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerSweepResult:
        if data.get("format") != FORMAT:
            raise PersonaLensError(
                f"not a personalens layer sweep (format {data.get('format')!r}, "
                f"expected {FORMAT!r})"
            )
        if int(data.get("version", 0)) > VERSION:
            raise PersonaLensError(
                f"layer sweep format version {data['version']} is newer than this personalens "
                f"reads ({VERSION}); upgrade personalens"
            )
        return cls(
            trait=data["trait"],
            model=data["model"],
            metrics={v: LayerMetrics.from_dict(m) for v, m in data["variants"].items()},
            split=data.get("split", "heldout"),
            evaluated_on=data.get("evaluated_on", ""),
            n_boot=int(data.get("n_boot", 0)),
            ci=float(data.get("ci", 0.95)),
            seed=int(data.get("seed", 0)),
            metadata=dict(data.get("metadata") or {}),
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as JSON (atomically; strict JSON, no NaN). Returns the path."""
        path = Path(path)
        json.dumps(self.to_dict(), allow_nan=False)  # fail before writing anything
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LayerSweepResult:
        path = Path(path)
        if not path.is_file():
            raise PersonaLensError(f"no layer sweep file at {path}")
        return cls.from_dict(json.loads(path.read_text()))

    def __repr__(self) -> str:
        best = ", ".join(
            f"{v}: L{m.best_layer()} AUC {m.auc[m.layers.index(m.best_layer())]:.3f}"
            for v, m in self.metrics.items()
        )
        return (
            f"LayerSweepResult(trait={self.trait!r}, model={self.model!r}, "
            f"n_layers={len(self.layers)}, split={self.split!r}, best: {best})"
        )


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) or math.isinf(x) else float(x)


def _from_json_float(x: float | int | None) -> float:
    return math.nan if x is None else float(x)


def _or_neg_inf(x: float) -> float:
    return -math.inf if math.isnan(x) else x


# ----------------------------------------------------------------------------- statistics


def _weighted_auc(
    pos: Float[Tensor, "n_pos n_layers"],
    neg: Float[Tensor, "n_neg n_layers"],
    w_pos: Float[Tensor, "n_boot n_pos"],
    w_neg: Float[Tensor, "n_boot n_neg"],
) -> Float[Tensor, "n_boot n_layers"]:
    """AUC per layer of samples weighted by multiplicities (a bootstrap resample's counts).

    ``U = sum_i w_i (W_neg(< p_i) + W_neg(= p_i) / 2)``, with the weighted neg counts read off a
    cumulative sum over the sorted neg scores: ``O(n_boot x n_layers x n)`` after one sort.
    With unit weights this is exactly :func:`personalens.stats.roc_auc` (the counts are
    half-integers, summed exactly in float64, then divided by ``n_pos n_neg`` the same way).
    """
    n_pos, n_neg = pos.shape[0], neg.shape[0]
    n_boot, n_layers = w_pos.shape[0], pos.shape[1]
    neg_sorted, order = torch.sort(neg, dim=0)
    seq = neg_sorted.T.contiguous()  # [n_layers, n_neg], sorted along the last dim
    values = pos.T.contiguous()  # [n_layers, n_pos]
    below = torch.searchsorted(seq, values, right=False)  # neg < p
    upto = torch.searchsorted(seq, values, right=True)  # neg <= p
    w_sorted = w_neg[:, order.T]  # [n_boot, n_layers, n_neg] in sorted order per layer
    cum = torch.cat([w_sorted.new_zeros(n_boot, n_layers, 1), w_sorted.cumsum(-1)], dim=-1)
    lo = cum.gather(-1, below.unsqueeze(0).expand(n_boot, -1, -1))
    hi = cum.gather(-1, upto.unsqueeze(0).expand(n_boot, -1, -1))
    u = ((lo + 0.5 * (hi - lo)) * w_pos.unsqueeze(1)).sum(-1)
    return u / (n_pos * n_neg)


def _resample_counts(n: int, n_boot: int, generator: torch.Generator) -> Float[Tensor, "b n"]:
    idx = torch.randint(0, n, (n_boot, n), generator=generator)
    counts = torch.zeros(n_boot, n, dtype=torch.float64)
    return counts.scatter_add_(1, idx, torch.ones(n_boot, n, dtype=torch.float64))


def _percentiles(boot: Float[Tensor, "n_boot n_layers"], ci: float | int) -> tuple[Interval, ...]:
    alpha = (1.0 - float(ci)) / 2.0
    q = torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64)
    lo_hi = torch.quantile(boot, q, dim=0)  # [2, n_layers], linear interpolation like numpy
    return tuple((float(a), float(b)) for a, b in zip(lo_hi[0].tolist(), lo_hi[1].tolist()))


def _check_sweep_args(n_boot: int, ci: float | int) -> None:
    if isinstance(n_boot, bool) or n_boot < 0:
        raise PersonaLensError(f"n_boot must be a non-negative int, got {n_boot!r}")
    if not 0.0 < float(ci) < 1.0:
        raise PersonaLensError(f"ci must be a coverage between 0 and 1 (e.g. 0.95), got {ci!r}")


def sweep_from_projections(
    pos: Float[Tensor, "n_pos n_layers"],
    neg: Float[Tensor, "n_neg n_layers"],
    *,
    layers: Sequence[int] | None = None,
    n_boot: int = 1000,
    ci: float | int = 0.95,
    seed: int = 0,
) -> LayerMetrics:
    """Per-layer metrics of pos vs neg projections (``[n_pos, n_layers]``, ``[n_neg, n_layers]``).

    ``layers`` labels the columns (default ``0 .. n_layers-1``). Bootstrap: ``n_boot``
    stratified resamples from ``torch.Generator().manual_seed(seed)``; percentile intervals of
    coverage ``ci``. ``n_boot=0`` skips the bootstrap (CIs are ``None``).
    """
    _check_sweep_args(n_boot, ci)
    if pos.ndim != 2 or neg.ndim != 2 or pos.shape[1] != neg.shape[1]:
        raise PersonaLensError(
            f"projections must be [n_pos, n_layers] and [n_neg, n_layers], got "
            f"{list(pos.shape)} and {list(neg.shape)}"
        )
    n_pos, n_neg, n_layers = pos.shape[0], neg.shape[0], pos.shape[1]
    if n_pos == 0 or n_neg == 0:
        raise PersonaLensError(
            f"a layer sweep needs samples of both classes, got {n_pos} pos and {n_neg} neg"
        )
    layers = tuple(range(n_layers)) if layers is None else tuple(int(L) for L in layers)
    if len(layers) != n_layers:
        raise PersonaLensError(f"{len(layers)} layer labels for {n_layers} projection columns")
    p, q = pos.to(torch.float64), neg.to(torch.float64)
    if not (bool(torch.isfinite(p).all()) and bool(torch.isfinite(q).all())):
        raise PersonaLensError("non-finite projections (NaN or inf): check the activations")

    auc = _weighted_auc(p, q, p.new_ones(1, n_pos), q.new_ones(1, n_neg))[0]
    separation = p.mean(0) - q.mean(0)
    nan = torch.full((n_layers,), math.nan, dtype=torch.float64)
    var_pos = p.var(0) if n_pos >= 2 else nan
    var_neg = q.var(0) if n_neg >= 2 else nan
    if n_pos >= 2 and n_neg >= 2:
        pooled = ((n_pos - 1) * var_pos + (n_neg - 1) * var_neg) / (n_pos + n_neg - 2)
        d = torch.where(pooled > 0, separation / pooled.clamp_min(1e-300).sqrt(), math.nan)
    else:
        d = nan

    auc_ci = separation_ci = None
    if n_boot > 0:
        g = torch.Generator().manual_seed(seed)
        w_pos = _resample_counts(n_pos, n_boot, g)
        w_neg = _resample_counts(n_neg, n_boot, g)
        block = max(1, _BLOCK_ELEMENTS // max(1, n_layers * (n_pos + n_neg + 1)))
        boot_auc = torch.cat(
            [
                _weighted_auc(p, q, w_pos[i : i + block], w_neg[i : i + block])
                for i in range(0, n_boot, block)
            ]
        )
        boot_sep = (w_pos @ p) / n_pos - (w_neg @ q) / n_neg
        auc_ci, separation_ci = _percentiles(boot_auc, ci), _percentiles(boot_sep, ci)

    return LayerMetrics(
        layers=layers,
        auc=tuple(auc.tolist()),
        auc_ci=auc_ci,
        separation=tuple(separation.tolist()),
        separation_ci=separation_ci,
        cohens_d=tuple(d.tolist()),
        var_pos=tuple(var_pos.tolist()),
        var_neg=tuple(var_neg.tolist()),
        n_pos=n_pos,
        n_neg=n_neg,
    )


def project(
    acts: Acts, directions: Float[Tensor, "n_layers d_model"] | PersonaVector
) -> Projections:
    """``acts[:, i] · v̂_i`` for every layer slot ``i``: projections onto the unit directions.

    ``directions`` has one row per layer slot of ``acts`` (a PersonaVector's ``directions``).
    Computed one layer at a time exactly as :func:`personalens.extraction.pipeline.heldout_layer_auc`
    does, so AUCs agree bit for bit. Zero directions project to 0.
    """
    from personalens.vectors.vector import PersonaVector, unit_rows

    dirs = directions.directions if isinstance(directions, PersonaVector) else directions
    if acts.ndim != 3 or dirs.ndim != 2 or acts.shape[1:] != dirs.shape:
        raise PersonaLensError(
            f"activations [n, n_layers, d_model] {list(acts.shape)} and directions "
            f"[n_layers, d_model] {list(dirs.shape)} do not match"
        )
    dtype = torch.float64 if acts.dtype == torch.float64 else torch.float32
    acts = acts.to(dtype)
    dirs = dirs.detach().to(device="cpu", dtype=torch.float32)
    cols = [
        acts[:, i] @ unit_rows(dirs[i][None])[0].to(device=acts.device, dtype=dtype)
        for i in range(dirs.shape[0])
    ]
    return torch.stack(cols, dim=1).cpu()


def sweep_from_activations(
    pos_acts: PosActs,
    neg_acts: NegActs,
    directions: Float[Tensor, "n_layers d_model"] | PersonaVector,
    *,
    layers: Sequence[int] | None = None,
    variant: str = "response_avg",
    trait: str = "",
    model: str = "",
    n_boot: int = 1000,
    ci: float | int = 0.95,
    seed: int = 0,
) -> LayerSweepResult:
    """Layer sweep of raw activations ``[n, n_layers, d_model]`` against per-layer directions.

    ``directions`` (a ``[n_layers, d_model]`` tensor or a PersonaVector) has one row per layer
    slot of the activations; ``layers`` labels the slots (default ``0 .. n_layers-1``). The
    result holds one variant, named ``variant``; ``trait`` and ``model`` default to the
    PersonaVector's when one is given.
    """
    from personalens.vectors.vector import PersonaVector

    if isinstance(directions, PersonaVector):
        trait, model = trait or directions.trait, model or directions.model
    metrics = sweep_from_projections(
        project(pos_acts, directions),
        project(neg_acts, directions),
        layers=layers,
        n_boot=n_boot,
        ci=ci,
        seed=seed,
    )
    return LayerSweepResult(
        trait=trait,
        model=model,
        metrics={variant: metrics},
        split="given",
        evaluated_on="given activations",
        n_boot=n_boot,
        ci=float(ci),
        seed=seed,
    )


# ----------------------------------------------------------------------------- layer_sweep


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
      and projects onto the run's ``vectors/<variant>``. ``split="heldout"`` (default) uses the
      held-out samples ``summary.json``'s ``layer_auc`` was measured on (the kept held-out pairs,
      or all held-out samples when too few were kept), so ``auc`` equals that ``layer_auc`` up to
      its rounding; ``split="extract"`` uses the kept extraction pairs the vector was built from
      (in-sample, optimistic).
    * an :class:`~personalens.extraction.pipeline.ExtractionResult`: the same, from its run directory,
      or, for a run without one, by recomputing activations with ``model=`` (a HookedTransformer).
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
    from personalens.extraction.pipeline import ExtractionResult

    _check_sweep_args(n_boot, ci)
    if split not in SPLITS:
        raise PersonaLensError(f"split must be one of {SPLITS}, got {split!r}")
    stats = {"n_boot": n_boot, "ci": float(ci), "seed": seed}
    if isinstance(source, (str, os.PathLike)):
        if vector is not None or data is not None:
            raise PersonaLensError(
                "a run directory brings its own vectors and samples: do not pass vector or data"
            )
        return _sweep_run(RunData.from_dir(Path(source)), variants, split, stats)
    if isinstance(source, ExtractionResult):
        if vector is not None or data is not None:
            raise PersonaLensError(
                "an ExtractionResult brings its own vectors and samples: do not pass vector or data"
            )
        return _sweep_run(
            RunData.from_result(source, model, batch_size, progress), variants, split, stats
        )
    return _sweep_data(source, vector, data, variants, stats, batch_size, progress)


def _check_variants(variants: Sequence[str]) -> tuple[str, ...]:
    if isinstance(variants, str):
        variants = (variants,)
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        raise PersonaLensError(f"unknown variant(s) {bad}; use some of {VARIANTS}")
    return tuple(dict.fromkeys(variants))


@dataclass
class RunData:
    records: list[dict[str, Any]]
    scores: dict[str, dict[str, float]]
    config: ExtractionConfig
    vectors: dict[str, PersonaVector]
    summary: dict[str, Any]
    acts_for: Any  # callable: records -> {key: ActivationSet}
    where: str

    @classmethod
    def from_dir(cls, run: Path) -> RunData:
        from personalens.extraction.pipeline import build_jobs, collect_run_activations
        from personalens.extraction.traits import parse_trait
        from personalens.judges.base import none_to_nan
        from personalens.vectors.vector import PersonaVector

        if not run.is_dir():
            raise PersonaLensError(
                f"{run}: no such run directory (give the --out directory of `personalens extract`)"
            )
        if not (run / "config.json").is_file():
            raise PersonaLensError(
                f"{run} is not an extraction run directory (no config.json); give the --out "
                "directory of `personalens extract`"
            )
        if not (run / "summary.json").is_file():
            raise PersonaLensError(
                f"{run} holds an unfinished extraction run (no summary.json): rerun its "
                "`personalens extract ... --out` command to finish it first"
            )
        cfg = json.loads((run / "config.json").read_text())
        summary = json.loads((run / "summary.json").read_text())
        config = _config_from_json(cfg["config"])
        jobs = build_jobs(parse_trait(cfg["trait_file"], source=str(run / "config.json")), config)
        done = {r["key"]: r for r in read_run_log(run / "responses.jsonl")}
        judged = {r["key"]: r for r in read_run_log(run / "judge_scores.jsonl")}
        missing = [j.key for j in jobs if j.key not in done or j.key not in judged]
        if missing:
            raise PersonaLensError(
                f"{run}: {len(missing)} response(s) or judge score(s) missing (first "
                f"{missing[0]!r}); the run directory is incomplete or was modified"
            )
        records = [done[j.key] for j in jobs]
        scores = {
            j.key: {
                "trait": none_to_nan(judged[j.key]["trait"]),
                "coherence": none_to_nan(judged[j.key]["coherence"]),
            }
            for j in jobs
        }
        vectors = {}
        for v in VARIANTS:
            if (run / "vectors" / f"{v}.json").is_file():
                vectors[v] = PersonaVector.load(run / "vectors" / v)

        def acts_for(wanted):
            return collect_run_activations(None, wanted, config, run, progress=False)

        return cls(records, scores, config, vectors, summary, acts_for, str(run))

    @classmethod
    def from_result(
        cls, result: ExtractionResult, model: Any, batch_size: int, progress: bool
    ) -> RunData:
        from personalens.extraction.pipeline import collect_run_activations

        if result.run_dir is not None and model is None:
            return cls.from_dir(Path(result.run_dir))
        if model is None:
            raise PersonaLensError(
                "this ExtractionResult has no run directory to read activations from: pass "
                "model=<the HookedTransformer it was extracted with>"
            )
        config = _config_from_json(result.summary["config"])
        config = dataclasses.replace(config, activation_batch_size=batch_size)

        def acts_for(wanted):
            return collect_run_activations(model, wanted, config, None, progress=progress)

        return cls(
            list(result.records),
            dict(result.scores),
            config,
            dict(result.vectors),
            dict(result.summary),
            acts_for,
            "an ExtractionResult",
        )


def _config_from_json(data: Mapping[str, Any]) -> ExtractionConfig:
    from personalens.extraction.pipeline import ExtractionConfig

    known = {f.name for f in dataclasses.fields(ExtractionConfig)}
    kwargs = {k: v for k, v in data.items() if k in known}
    if kwargs.get("pairs") is not None:
        kwargs["pairs"] = tuple(kwargs["pairs"])
    return ExtractionConfig(**kwargs)


def _sweep_run(
    run: RunData, variants: Sequence[str] | None, split: str, stats: dict[str, Any]
) -> LayerSweepResult:
    from personalens.extraction.pipeline import (
        activation_records,
        filter_pairs,
        gather_side,
        heldout_sets,
    )

    variants = _check_variants(variants if variants is not None else VARIANTS)
    absent = [v for v in variants if v not in run.vectors]
    if absent:
        raise PersonaLensError(f"{run.where} has no vector for variant(s) {absent}")
    filt = filter_pairs(run.records, run.scores, run.config)
    acts = run.acts_for(activation_records(run.records, filt))
    if split == "heldout":
        held = heldout_sets(run.records, filt, acts, run.config)
        pos, neg, evaluated_on = held.pos, held.neg, held.description
    else:
        keys = filt.keys("extract")
        pos, neg = (
            gather_side(acts, run.records, keys, "pos"),
            gather_side(acts, run.records, keys, "neg"),
        )
        evaluated_on = "kept extraction pairs (in-sample)"
        if pos is None or neg is None:
            raise PersonaLensError(f"{run.where}: no kept extraction pairs with activations")
    first = run.vectors[variants[0]]
    metrics = {v: _variant_metrics(pos, neg, run.vectors[v], v, stats) for v in variants}
    meta: dict[str, Any] = {"source": run.where}
    if "best_layer" in run.summary:
        meta["run_best_layer"] = run.summary["best_layer"]
    return LayerSweepResult(
        trait=run.summary.get("trait", first.trait),
        model=run.summary.get("model", first.model),
        metrics=metrics,
        split=split,
        evaluated_on=evaluated_on,
        metadata=meta,
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
    from personalens.model.activations import collect_activations

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
    from personalens.vectors.vector import PersonaVector

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
