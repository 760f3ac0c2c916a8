"""The result of a layer sweep: per-layer metrics of each activation variant, saved as JSON.

:class:`LayerMetrics` holds one variant's AUC, separation, Cohen's d and variances per layer
(with bootstrap CIs); :class:`LayerSweepResult` one trait's metrics per variant, with
``best_layer()``, ``to_frame()`` and ``save()``/``load()`` (format ``personalens.layer_sweep``),
and :meth:`LayerSweepResult.from_vector`: the sweep an extraction run recorded on its vector
(``layer_auc`` and, where recorded, its CIs, ``layer_auc_neutral`` and the held-out n).
A sweep of an extraction run holds two readings of the same replies: ``metrics``, each reply
read with its pos or neg system prompt in context (confounded by the prompt), and ``neutral``,
the reply read after its question with no system prompt (does the text carry the trait).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from personalens.errors import PersonaLensError
from personalens.results import Result, json_safe

FORMAT = "personalens.layer_sweep"
VERSION = 1
Interval = tuple[float, float]
_PER_LAYER = ("auc", "separation", "cohens_d", "var_pos", "var_neg")
_INTERVALS = ("auc_ci", "separation_ci")

# what the two readings of an extraction run's replies are called (legends, notes)
CONTAMINATED_LABEL = "with the system prompt in context (confounded)"
NEUTRAL_LABEL = "reply only, no system prompt"


@dataclass(frozen=True)
class LayerMetrics(Result):
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
    n_pos: int | None  # None: not recorded (a sweep read from a vector's metadata)
    n_neg: int | None

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
        """The fields (per-layer lists first, then the intervals) and ``best_layer``."""
        out: dict[str, Any] = {"layers": list(self.layers)}
        out.update({name: json_safe(getattr(self, name)) for name in _PER_LAYER + _INTERVALS})
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
            **{name: floats(name) for name in _PER_LAYER},
            **{name: intervals(name) for name in _INTERVALS},
            n_pos=None if data.get("n_pos") is None else int(data["n_pos"]),
            n_neg=None if data.get("n_neg") is None else int(data["n_neg"]),
        )


@dataclass(frozen=True)
class LayerSweepResult(Result):
    """A layer sweep of one trait: :class:`LayerMetrics` per activation variant.

    ``result["response_avg"]`` is that variant's metrics; ``result.variants`` lists them.
    ``evaluated_on`` says which samples were projected (e.g. ``"all held-out replies"``).

    For an extraction run (``split`` "heldout" or "extract"), ``metrics`` are the samples read
    with their system prompt in context: through attention every reply token reads the
    instruction, so they measure whether the model's state tells the two instructions apart
    (an upper bound, confounded by the prompt). ``neutral`` holds the same samples read after
    their question with no system prompt (does the reply's text carry the trait the vector
    reads), ``None`` when unavailable; ``note`` says why, or any other caveat.
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
    neutral: dict[str, LayerMetrics] | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if not self.metrics:
            raise PersonaLensError("a LayerSweepResult needs metrics for at least one variant")

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(self.metrics)

    @property
    def layers(self) -> tuple[int, ...]:
        return next(iter(self.metrics.values())).layers

    @property
    def prompted(self) -> bool:
        """``metrics`` were read with each sample's system prompt in context (an extraction
        run's samples), so they are confounded by the instruction."""
        return self.split != "given"

    def __getitem__(self, variant: str) -> LayerMetrics:
        if variant not in self.metrics:
            raise PersonaLensError(
                f"variant {variant!r} is not in this sweep; it has {list(self.metrics)}"
            )
        return self.metrics[variant]

    def neutral_metrics(self, variant: str = "response_avg") -> LayerMetrics:
        """``variant``'s metrics read with no system prompt (an error when the sweep has none)."""
        if self.neutral is None:
            raise PersonaLensError(
                f"this sweep has no metrics without the system prompt: {self.note or 'none given'}"
            )
        if variant not in self.neutral:
            raise PersonaLensError(
                f"variant {variant!r} is not in this sweep; it has {list(self.neutral)}"
            )
        return self.neutral[variant]

    def _pick(self, variant: str, neutral: bool) -> LayerMetrics:
        return self.neutral_metrics(variant) if neutral else self[variant]

    def best_layer(self, variant: str = "response_avg", *, neutral: bool = False) -> int:
        """Highest-AUC layer of ``variant`` (``neutral=True``: of the reading without the
        system prompt); ties go to the larger Cohen's d, then the lower layer (see
        :meth:`LayerMetrics.best_layer`). This can differ from an extraction run's recorded
        ``best_layer`` / ``best_layer_neutral``, which break ties by the lower layer only."""
        return self._pick(variant, neutral).best_layer()

    def best(self, variant: str = "response_avg", *, neutral: bool = False) -> dict[str, Any]:
        """All metrics at :meth:`best_layer` (``layer``, ``auc``, ``auc_ci``, ``cohens_d``, ...)."""
        m = self._pick(variant, neutral)
        return m.at(m.best_layer())

    def frame_records(self) -> list[dict[str, Any]]:
        """Rows of :meth:`to_frame`, one per (variant, layer): ``trait, variant, layer, auc,
        auc_low, auc_high, separation, separation_low, separation_high, cohens_d, var_pos,
        var_neg, n_pos, n_neg, best`` (``best``: this is the variant's best layer), and when
        the sweep has the reading without the system prompt ``auc_neutral, auc_neutral_low,
        auc_neutral_high, cohens_d_neutral, best_neutral``."""
        rows = []
        nan_ci = (math.nan, math.nan)
        for variant, m in self.metrics.items():
            best = m.best_layer()
            for i, layer in enumerate(m.layers):
                auc_ci = m.auc_ci[i] if m.auc_ci is not None else nan_ci
                sep_ci = m.separation_ci[i] if m.separation_ci is not None else nan_ci
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
                        **self._neutral_columns(variant, i),
                    }
                )
        return rows

    def _neutral_columns(self, variant: str, i: int) -> dict[str, Any]:
        if self.neutral is None or variant not in self.neutral:
            return {}
        m = self.neutral[variant]
        lo, hi = m.auc_ci[i] if m.auc_ci is not None else (math.nan, math.nan)
        return {
            "auc_neutral": m.auc[i],
            "auc_neutral_low": lo,
            "auc_neutral_high": hi,
            "cohens_d_neutral": m.cohens_d[i],
            "best_neutral": m.layers[i] == m.best_layer(),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes ``None``); :meth:`from_dict` inverts it exactly."""
        return json_safe(
            {
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
                "best_layer_neutral": (
                    None
                    if self.neutral is None
                    else {v: m.best_layer() for v, m in self.neutral.items()}
                ),
                "neutral_variants": (
                    None
                    if self.neutral is None
                    else {v: m.to_dict() for v, m in self.neutral.items()}
                ),
                "note": self.note,
                "metadata": self.metadata,
            }
        )

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
            neutral=(
                None
                if data.get("neutral_variants") is None
                else {v: LayerMetrics.from_dict(m) for v, m in data["neutral_variants"].items()}
            ),
            note=data.get("note", ""),
        )

    @classmethod
    def from_vector(cls, vector: Any) -> LayerSweepResult:
        """The layer sweep recorded on ``vector`` (a PersonaVector) when it was extracted, with
        no generation and no model: its metadata's ``layer_auc`` (each held-out reply read with
        its system prompt in context) and, where recorded, ``layer_auc_ci``,
        ``layer_auc_neutral`` (+ ``_ci``: read with no system prompt), ``n_heldout_pos`` /
        ``n_heldout_neg``, ``heldout_bootstrap`` and ``heldout_auc_on`` (also read from
        ``metadata["shipped_from"]``). The vector's own variant is the only variant; metrics
        an extraction does not record (separation, Cohen's d, variances) are NaN, and ``note``
        names whatever was not recorded. ``pl.shipped_vector("evil")`` records ``layer_auc``
        only. A :class:`~personalens.errors.PersonaLensError` when the vector records no sweep.
        """
        meta = dict(getattr(vector, "metadata", None) or {})
        recorded = {**(meta.get("shipped_from") or {}), **meta}
        if not recorded.get("layer_auc"):
            raise PersonaLensError(
                f"the vector {getattr(vector, 'trait', '')!r} ({getattr(vector, 'model', '')}) "
                "records no layer sweep: its metadata has no 'layer_auc' (only vectors saved by "
                "`personalens extract` record one; its metadata has "
                f"{sorted(meta) or 'no keys'}). Sweep its extraction run instead, with no "
                "generation: pl.layer_sweep('RUN_DIR'); or your own pos/neg replies: "
                "pl.layer_sweep(model, vector, {'pos': ..., 'neg': ...})."
            )
        n_layers = getattr(vector, "n_layers", None)
        boot = recorded.get("heldout_bootstrap") or {}
        n = (recorded.get("n_heldout_pos"), recorded.get("n_heldout_neg"))
        prompted = _recorded_metrics(recorded, "layer_auc", n, n_layers)
        neutral = None
        if recorded.get("layer_auc_neutral"):
            neutral = _recorded_metrics(recorded, "layer_auc_neutral", n, n_layers)
        missing = [
            text
            for text, absent in (
                ("no CIs", prompted.auc_ci is None),
                ("no n", n[0] is None),
                ("no curve without the system prompt (layer_auc_neutral)", neutral is None),
            )
            if absent
        ]
        variant = str(getattr(vector, "variant", "response_avg"))
        return cls(
            trait=str(getattr(vector, "trait", "")),
            model=str(getattr(vector, "model", "")),
            metrics={variant: prompted},
            split="heldout",
            evaluated_on=recorded.get("heldout_auc_on") or "held-out replies",
            n_boot=int(boot.get("n_boot", 0)) if prompted.auc_ci is not None else 0,
            ci=float(boot.get("ci", 0.95)),
            seed=int(boot.get("seed", 0)),
            metadata={"source": "recorded on the vector at extraction", **_best_layers(meta)},
            neutral=None if neutral is None else {variant: neutral},
            note=(
                "recorded at extraction; the vector records " + ", ".join(missing)
                if missing
                else ""
            ),
        )

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
        if self.neutral is not None:
            best += "; no system prompt: " + ", ".join(
                f"{v}: L{m.best_layer()} AUC {m.auc[m.layers.index(m.best_layer())]:.3f}"
                for v, m in self.neutral.items()
            )
        return (
            f"LayerSweepResult(trait={self.trait!r}, model={self.model!r}, "
            f"n_layers={len(self.layers)}, split={self.split!r}, best: {best})"
        )


def _recorded_metrics(
    recorded: Mapping[str, Any],
    key: str,
    n: tuple[int | None, int | None],
    n_layers: int | None,
) -> LayerMetrics:
    """The AUC curve ``recorded[key]`` (one value per layer from 0) with its ``<key>_ci`` when
    recorded, as :class:`LayerMetrics` (the metrics not recorded are NaN)."""
    auc = tuple(_from_json_float(x) for x in recorded[key])
    if n_layers is not None and len(auc) != n_layers:
        raise PersonaLensError(
            f"the vector's {key} has {len(auc)} values for its {n_layers} layers: the metadata "
            "does not belong to these directions"
        )
    raw_ci = recorded.get(f"{key}_ci")
    ci = None
    if raw_ci is not None:
        if len(raw_ci) != len(auc):
            raise PersonaLensError(
                f"the vector's {key}_ci has {len(raw_ci)} intervals for {len(auc)} layers"
            )
        ci = tuple((_from_json_float(lo), _from_json_float(hi)) for lo, hi in raw_ci)
    nan = (math.nan,) * len(auc)
    return LayerMetrics(
        layers=tuple(range(len(auc))),
        auc=auc,
        auc_ci=ci,
        separation=nan,
        separation_ci=None,
        cohens_d=nan,
        var_pos=nan,
        var_neg=nan,
        n_pos=None if n[0] is None else int(n[0]),
        n_neg=None if n[1] is None else int(n[1]),
    )


def _best_layers(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The best layers the vector records, named as a run's sweep names the summary's
    (``run_best_layer``: with the system prompt, ``run_best_layer_neutral``: without). A
    vector's ``best_layer`` is the one without the system prompt when it also records
    ``best_layer_contaminated``, else (older vectors) the one with it."""
    best, contaminated = meta.get("best_layer"), meta.get("best_layer_contaminated")
    if contaminated is None:
        return {} if best is None else {"run_best_layer": best}
    return {"run_best_layer": contaminated, "run_best_layer_neutral": best}


def _from_json_float(x: float | int | None) -> float:
    return math.nan if x is None else float(x)


def _or_neg_inf(x: float) -> float:
    return -math.inf if math.isnan(x) else x
