"""Big Five (OCEAN) control on the embedded model: orthogonality, scalar multiplication, and
addition/subtraction of the ten pole trait vectors (the experiments of PERSONA at our scale).

Vectors: the shipped ones (``pl.shipped_vector``; default) or ``--runs DIR``, a folder with one
extraction run per trait (``DIR/<trait>/vector.json``, e.g. ``/work/runs``). Scores: the Big Five
questionnaire with ``method="likelihood"`` (per dimension, mean log-prob of forward-keyed minus
reverse-keyed self-descriptions, nats/token; the Likert logprob answer does not read the items
at 135M), changes against the unsteered model.

1. Orthogonality: per-layer cosine matrix of the pole vectors, mean |cos| off the diagonal.
2. Scalar multiplication: for every pole, steer at each ``--coeffs`` (``coeff_scale`` resid by
   default, at ``--layer``) and fit score vs coefficient per dimension (slope, R²).
3. Addition/subtraction: for each ``--pairs a:b``, steer along a, b, a + b and a - b at
   ``--additive-coeff`` and compare the observed changes of a ± b with Δ(a) ± Δ(b). The sums
   are taken after the coeff_scale normalisation (see ``personalens.studies.personality.ocean``).

Writes to ``--out``: config.json (resolved settings; a rerun with other settings is refused),
baseline.json, cosine_by_layer.csv (every layer, every ordered pair), orthogonality.csv (mean
|cos| off the diagonal per layer), cosine_heatmap.html (``--layer`` first, slider over layers),
sweeps/<trait>.json and additive/<a>_<b>.json (finished steps, reused on a rerun), sweep.csv
(trait, coeff, dimension, score, sem, delta, delta_sem), sweep_fit.csv (every trait x
dimension), sweep_summary.csv (one row per trait: target dimension, its slope, R², whether it
moves in the steered direction, and the slopes of the other dimensions), additive.csv,
additive_summary.csv, figures.html (every sweep and additive figure, plotly.js embedded once),
summary.json. About 3-4 minutes on 2 CPU cores for ten traits, four coefficients, three pairs.

    .venv/bin/python experiments/ocean_algebra.py --out runs/ocean
    .venv/bin/python experiments/ocean_algebra.py --runs /work/runs --out runs/ocean_runs
    .venv/bin/python experiments/ocean_algebra.py --traits outgoing compassionate evil \\
        --pairs outgoing:compassionate --out runs/ocean_small
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _common import check_config

import personalens as pl
from personalens._io import atomic_write_json, atomic_write_text
from personalens.studies.personality.ocean import BIG_FIVE_POLES

DEFAULT_PAIRS = ["outgoing:compassionate", "inventive:dependable", "nervous:calm"]


def _parse_pairs(pairs: list[str], traits: list[str]) -> list[tuple[str, str]]:
    out = []
    for text in pairs:
        a, sep, b = text.partition(":")
        if not sep or not a or not b or a == b:
            raise SystemExit(f"--pairs {text!r}: write two different traits as A:B")
        missing = [t for t in (a, b) if t not in traits]
        if missing:
            raise SystemExit(f"--pairs {text!r}: {missing} not among --traits {traits}")
        out.append((a, b))
    return out


def _load_vectors(traits: list[str], runs: Path | None) -> dict[str, pl.PersonaVector]:
    """Every trait's vector, or one error listing all that are missing and how to make them."""
    from personalens.vectors.resolve import load_vector

    if runs is None:
        shipped = set(pl.vectors.list_shipped_vectors())
        missing = [t for t in traits if t not in shipped]
    else:
        missing = [t for t in traits if not (runs / t / "vector.json").is_file()]
    if missing:
        where = "shipped with personalens" if runs is None else f"in {runs}"
        fix = "\n".join(f"  personalens extract --trait {t} --out runs/{t}" for t in missing)
        ship = (
            "\nthen pass --runs runs, or ship them: python tools/ship_vectors.py "
            + " ".join(f"runs/{t}" for t in missing)
            if runs is None
            else ""
        )
        raise SystemExit(
            f"no persona vector {where} for: {', '.join(missing)}. Extract them (~8 min each on "
            f"2 CPU cores):\n{fix}{ship}\nor choose other traits with --traits."
        )
    if runs is None:
        return {t: pl.shipped_vector(t) for t in traits}
    return {t: load_vector(runs / t) for t in traits}


def _cached(path: Path, compute, load):
    """``load(json)`` of a finished step, or ``compute()`` then save its ``to_dict()``."""
    if path.is_file():
        return load(json.loads(path.read_text()))
    result = compute()
    atomic_write_json(path, result.to_dict())
    return result


def _figures_html(figures: list) -> str:
    parts = [
        fig.to_html(full_html=False, include_plotlyjs=(i == 0), include_mathjax=False)
        for i, fig in enumerate(figures)
    ]
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>OCEAN control</title></head>"
        "<body>" + "\n<hr>\n".join(parts) + "</body></html>\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--runs", type=Path, default=None, help="folder of extraction runs DIR/<trait>")
    p.add_argument("--traits", nargs="+", default=list(BIG_FIVE_POLES))
    p.add_argument("--layer", type=int, default=15, help="steered layer (and heatmap layer)")
    p.add_argument("--coeffs", type=float, nargs="+", default=[-0.1, -0.05, 0.05, 0.1])
    p.add_argument("--coeff-scale", default="resid", choices=["raw", "unit", "resid"])
    p.add_argument("--positions", default="all", choices=["all", "response", "prompt"])
    p.add_argument(
        "--pairs", nargs="*", default=None, help=f"A:B (default: {' '.join(DEFAULT_PAIRS)})"
    )
    p.add_argument("--additive-coeff", type=float, default=0.1)
    p.add_argument("--method", default="likelihood", choices=["likelihood", "logprob"])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    traits = list(dict.fromkeys(args.traits))
    pairs_arg = args.pairs
    if pairs_arg is None:
        pairs_arg = [x for x in DEFAULT_PAIRS if all(t in traits for t in x.split(":"))]
    pairs = _parse_pairs(pairs_arg, traits)
    vectors = _load_vectors(traits, args.runs)  # fails before the model loads

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config.pop("out")
    config.pop("threads")
    config.update(traits=traits, pairs=[f"{a}:{b}" for a, b in pairs])
    config["vectors"] = {
        t: {"model": v.model, "trait": v.trait, "sha": _directions_sha(v)}
        for t, v in vectors.items()
    }
    check_config(out / "config.json", config, "an OCEAN algebra run")
    t0 = time.perf_counter()

    import pandas as pd

    from personalens.studies.personality.additive_test import AdditiveTestResult
    from personalens.studies.personality.questionnaire_result import QuestionnaireResult
    from personalens.studies.personality.scalar_sweep import ScalarSweepResult

    # 1. orthogonality (no model needed)
    cm = pl.vectors.cosine_matrix(list(vectors.values()), names=traits)
    atomic_write_text(out / "cosine_by_layer.csv", cm.to_frame().to_csv(index=False))
    if len(traits) > 1:
        ortho = pd.DataFrame({"layer": cm.layers, "mean_abs_cos": cm.mean_abs_offdiag().tolist()})
        atomic_write_text(out / "orthogonality.csv", ortho.to_csv(index=False))
    pl.plot.save_html(pl.plot.plot_cosine_matrix(cm, layer=args.layer), out / "cosine_heatmap.html")

    # 2. scalar multiplication
    model = pl.load_model()
    for v in vectors.values():
        if v.model != model.cfg.model_name:
            raise SystemExit(
                f"vector {v.trait!r} is from {v.model!r}, not {model.cfg.model_name!r}"
            )
    norms = pl.steering.residual_norms(model) if args.coeff_scale == "resid" else None
    common = {
        "layers": [args.layer],
        "method": args.method,
        "coeff_scale": args.coeff_scale,
        "positions": args.positions,
        "batch_size": args.batch_size,
        "resid_norms": norms,
    }
    base_path = out / "baseline.json"
    if base_path.is_file():  # NaN is written as the JSON extension NaN and read back as such
        data = json.loads(base_path.read_text())
        data["dimension_names"] = tuple(data["dimension_names"])
        data["scale_values"] = tuple(data["scale_values"])
        baseline = QuestionnaireResult(**data)
    else:
        baseline = pl.studies.score_questionnaire(
            model, "big_five", method=args.method, batch_size=args.batch_size
        )
        atomic_write_json(base_path, baseline.__dict__)
    (out / "sweeps").mkdir(exist_ok=True)
    sweeps = {}
    for t in traits:
        sweeps[t] = _cached(
            out / "sweeps" / f"{t}.json",
            lambda t=t: pl.studies.scalar_sweep(
                model, vectors[t], args.coeffs, baseline=baseline, **common
            ),
            ScalarSweepResult.from_dict,
        )
        print(f"sweep {t}: {time.perf_counter() - t0:.0f}s", flush=True)
    sweep_frame = pd.concat([s.to_frame() for s in sweeps.values()], ignore_index=True)
    atomic_write_text(out / "sweep.csv", sweep_frame.to_csv(index=False))
    fits = pd.concat([s.fit() for s in sweeps.values()], ignore_index=True)
    atomic_write_text(out / "sweep_fit.csv", fits.to_csv(index=False))
    rows = []
    for t, s in sweeps.items():
        fit = s.fit().set_index("dimension")
        row = {"trait": t, "target": s.target, "sign": s.sign}
        if s.target is not None:
            row.update(
                slope=fit.loc[s.target, "slope"],
                r2=fit.loc[s.target, "r2"],
                as_expected=bool(fit.loc[s.target, "as_expected"]),
            )
        row.update({f"slope_{d}": fit.loc[d, "slope"] for d in s.dimensions})
        rows.append(row)
    sweep_summary = pd.DataFrame(rows)
    atomic_write_text(out / "sweep_summary.csv", sweep_summary.to_csv(index=False))

    # 3. addition and subtraction
    (out / "additive").mkdir(exist_ok=True)
    additive = []
    for a, b in pairs:
        additive.append(
            _cached(
                out / "additive" / f"{a}_{b}.json",
                lambda a=a, b=b: pl.studies.additive_test(
                    model, vectors[a], vectors[b], args.additive_coeff, baseline=baseline, **common
                ),
                AdditiveTestResult.from_dict,
            )
        )
        print(f"additive {a}:{b}: {time.perf_counter() - t0:.0f}s", flush=True)
    if additive:
        add_frame = pd.concat(
            [r.to_frame().assign(a=r.a, b=r.b) for r in additive], ignore_index=True
        )
        add_summary = pd.concat(
            [r.summary().assign(a=r.a, b=r.b) for r in additive], ignore_index=True
        )
        atomic_write_text(out / "additive.csv", add_frame.to_csv(index=False))
        atomic_write_text(out / "additive_summary.csv", add_summary.to_csv(index=False))

    figures = [pl.plot.plot_scalar_sweep(s) for s in sweeps.values()]
    figures += [pl.plot.plot_additive_test(r) for r in additive]
    atomic_write_text(out / "figures.html", _figures_html(figures))

    summary = {
        "layer": args.layer,
        "method": args.method,
        "units": baseline.units,
        "baseline": baseline.summary(),
        "mean_abs_cos_at_layer": (
            float(cm.mean_abs_offdiag()[cm.layers.index(args.layer)]) if len(traits) > 1 else None
        ),
        "sweep": json.loads(sweep_summary.to_json(orient="records")),
        "additive": json.loads(add_summary.to_json(orient="records")) if additive else [],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_json(out / "summary.json", summary)

    pd.set_option("display.width", 200)
    print(f"\nunsteered contrasts ({baseline.units}):")
    print(pd.Series(baseline.summary()).round(3).to_string())
    if len(traits) > 1:
        print(f"\nmean |cos| between the vectors at layer {args.layer}: "
              f"{summary['mean_abs_cos_at_layer']:.3f}")  # fmt: skip
    print(f"\nscalar sweep, layer {args.layer}, coeffs {args.coeffs} ({args.coeff_scale}):")
    print(sweep_summary.round(3).to_string(index=False))
    if additive:
        print(f"\naddition/subtraction at coeff {args.additive_coeff}:")
        print(add_summary.round(3).to_string(index=False))
    print(f"\n{summary['seconds']}s; outputs in {out}")
    return 0


def _directions_sha(v: pl.PersonaVector) -> str:
    import hashlib

    return hashlib.sha256(v.directions.contiguous().numpy().tobytes()).hexdigest()[:16]


if __name__ == "__main__":
    raise SystemExit(main())
