"""Which SAE features make up a persona vector, and do they drive the trait?

For a persona vector (an extraction run directory) and SAEs of the embedded model (default: the
shipped ones, ``personalens/data/sae/...``, trained by ``sae/``):

1. ``decompose``: the top features by cosine between the vector and the SAE's decoder
   directions at each layer, aligned and anti-aligned, with activation-space attributions from
   the run's kept extraction pairs;
2. ``feature_contexts``: each top feature's top-activating reply tokens over the run's replies;
3. ``feature_steering_test``: steer along each of the top aligned features (and, as references,
   the persona vector and a random direction of the same length) at ``--steer-layer`` and judge
   the trait on held-out evaluation questions.

Writes to ``--out``: config.json (resolved settings; a rerun with other settings is refused),
decomposition.{json,csv,html}, contexts.{csv,html}, causal/ (resumable steering runs),
causal.csv (feature, cosine, attribution, trait change per coefficient), causal.html, and
summary.json.

    .venv/bin/python experiments/sae_decompose.py --vector /work/runs/evil --out runs/sae_evil
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vector", required=True, help="an extraction run directory")
    p.add_argument("--out", required=True)
    p.add_argument("--sae", default="embedded", help="'embedded' or a folder of SAE dirs")
    p.add_argument("--layers", type=int, nargs="+", default=None, help="default: all shipped")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--steer-layer", type=int, default=15)
    p.add_argument("--n-features", type=int, default=5, help="top aligned features to steer")
    p.add_argument("--coeffs", type=float, nargs="+", default=[0.0, 0.2, 0.4])
    p.add_argument("--max-questions", type=int, default=10)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--judge", default="offline")
    p.add_argument("--seed", type=int, default=0, help="random reference direction")
    args = p.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    check_config(
        out / "config.json",
        {k: v for k, v in vars(args).items() if k != "out"},
        "an SAE experiment",
    )
    t0 = time.perf_counter()
    from personalens.plot import plot_feature_steering, plot_sae_cosines, save_html
    from personalens.sae.causal import feature_steering_test
    from personalens.sae.contexts import feature_contexts
    from personalens.sae.decompose import decompose
    from personalens.sae.load import load_sae, shipped_sae_layers
    from personalens.vectors.resolve import load_vector

    model = pl.load_model()
    vector = load_vector(args.vector, model)
    layers = args.layers or (
        shipped_sae_layers(model.cfg.model_name) if args.sae == "embedded" else None
    )
    if not layers:
        raise SystemExit("no SAE layers: train them with sae/ or pass --sae DIR --layers L ...")
    saes = {L: load_sae(args.sae, layer=L, model=model) for L in layers}
    dec = decompose(vector, saes, k=args.k, activations=args.vector, model=model)
    dec.save(out / "decomposition.json")
    table = dec.to_frame()
    atomic_write_text(out / "decomposition.csv", table.to_csv(index=False))
    save_html(plot_sae_cosines(dec), out / "decomposition.html")

    import pandas as pd

    frames, blocks = [], []
    for L, sae in saes.items():
        ctx = feature_contexts(model, sae, L, dec.features(L, n=5), [Path(args.vector)], n=8)
        frames.append(ctx.to_frame().assign(layer=L))
        blocks.append(ctx.to_html())
    contexts = pd.concat(frames)
    atomic_write_text(out / "contexts.csv", contexts.to_csv(index=False))
    atomic_write_text(
        out / "contexts.html",
        "<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>"
        + "<hr>".join(blocks)
        + "</body></html>\n",
    )

    L = args.steer_layer
    if L not in saes:
        raise SystemExit(f"--steer-layer {L} has no SAE (layers {sorted(saes)})")
    feats = dec.features(L, direction="aligned", n=args.n_features)
    trait = pl.load_trait(vector.trait)
    prompts = list(trait.split_questions()[1][: args.max_questions])
    gen = pl.GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=0.0, batch_size=16)
    causal = feature_steering_test(
        model,
        saes[L],
        feats,
        L,
        coeffs=args.coeffs,
        trait=trait,
        judge=args.judge,
        prompts=prompts,
        generation=gen,
        vector=vector,
        out=out / "causal",
    )
    # a random direction of the same scale: what any push of this size does to the judge
    g = torch.Generator().manual_seed(args.seed)
    rand_dirs = torch.zeros(model.cfg.n_layers, model.cfg.d_model)
    rand_dirs[L] = torch.randn(model.cfg.d_model, generator=g)
    rand = pl.PersonaVector(directions=rand_dirs, model=vector.model, trait=vector.trait)
    rand_sweep = pl.steering_sweep(
        model,
        rand,
        prompts,
        layers=[L],
        coeffs=args.coeffs,
        trait=trait,
        judge=args.judge,
        generation=gen,
        coeff_scale="resid",
        out=out / "causal" / "random_direction",
    )
    ctab = causal.to_frame(dec)
    rtab = rand_sweep.summary()
    base = float(rtab.loc[rtab.coeff == 0.0, "trait"].iloc[0])
    rtab = rtab.assign(label="random direction", trait_change=rtab.trait - base)
    full = pd.concat([ctab, rtab], ignore_index=True)
    atomic_write_text(out / "causal.csv", full.to_csv(index=False))
    save_html(plot_feature_steering(causal), out / "causal.html")

    summary = {
        "trait": vector.trait,
        "layers": layers,
        "steer_layer": L,
        "top_cosines": {
            str(layer): table[(table.layer == layer) & (table.direction == "aligned")]
            .head(5)[["feature", "cosine"]]
            .to_dict(orient="records")
            for layer in layers
        },
        "causal": full[
            [
                c
                for c in full.columns
                if c
                in (
                    "label",
                    "feature",
                    "coeff",
                    "cosine",
                    "attribution",
                    "trait",
                    "coherence",
                    "trait_change",
                )
            ]
        ].to_dict(orient="records"),  # fmt: skip
        "seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_json(out / "summary.json", json.loads(json.dumps(summary, default=float)))
    print(table.head(2 * args.k).to_string(index=False))
    print(contexts.groupby(["layer", "feature"]).head(2).to_string(index=False))
    print(full.to_string(index=False))
    print(f"wrote {out} in {summary['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
