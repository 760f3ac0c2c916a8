"""The README's figures: real runs on the embedded model, drawn with personalens.plot, as PNGs.

    .venv/bin/pip install "personalens[static]"      # kaleido, the static image engine
    apt-get install chromium                          # or any Chrome; kaleido drives it
    BROWSER_PATH=/usr/bin/chromium .venv/bin/python tools/make_figures.py

Everything it computes is resumable and lands in ``--runs`` (default ``runs/figures``): the
`evil` extraction at the demo's settings, a steering sweep on all 20 held-out questions (n = 20
replies per cell, with CIs), a decomposition into the shipped SAEs whose features are labelled
with their top-activating tokens over the extraction's replies, the OCEAN cosine matrix of the
shipped Big Five vectors, and a monitoring experiment over the system-prompt spectrum. The PNGs go to ``--out`` (default
``docs/figures``) with ``config.json``, the resolved settings. A first run takes about ten
minutes on 2 CPU cores; a rerun only redraws.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import personalens as pl

OCEAN = [
    "inventive", "consistent", "dependable", "careless", "outgoing", "solitary",
    "compassionate", "self-interested", "nervous", "calm",
]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs/figures", help="where the runs are cached")
    ap.add_argument("--out", default="docs/figures", help="where the PNGs go")
    ap.add_argument("--width", type=int, default=900)
    ap.add_argument("--height", type=int, default=520)
    args = ap.parse_args()
    runs, out = Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "model": "embedded SmolLM2-135M-Instruct",
        "extraction": {"trait": "evil", "max_questions": 10, "judge": "offline"},
        "steering_sweep": {"layers": [5, 10, 15, 20], "coeffs": [-8, -4, 0, 4, 8],
                           "prompts": "all held-out questions", "min_replies": 20,
                           "max_new_tokens": 32, "positions": "response"},
        "sae": {"layers": "shipped", "k": 12,
                "feature_labels": "top tokens over the evil extraction's replies (n=10)"},
        "ocean_vectors": OCEAN,
        "monitoring": {"conditions": "system_prompt_spectrum(evil, pairs=1)", "n_questions": 6,
                       "max_new_tokens": 32},
        "size": [args.width, args.height],
    }  # fmt: skip
    (out / "config.json").write_text(json.dumps(settings, indent=2) + "\n")

    def save(fig, name: str, height: int | None = None) -> None:
        path = out / f"{name}.png"
        height = fig.layout.height or height or args.height  # a figure that sizes itself wins
        fig.write_image(path, width=args.width, height=height, scale=1)
        print(f"wrote {path}", flush=True)

    model = pl.load_model()
    trait = pl.load_trait("evil")
    result = pl.extract(
        model, trait, pl.make_judge("offline"), pl.ExtractionConfig(max_questions=10),
        run_dir=runs / "evil",
    )  # fmt: skip
    vec = result.vector
    save(pl.plot.plot_layer_sweep({"evil": pl.layer_sweep(runs / "evil")}), "layer_sweep")

    gen = pl.model.GenerationConfig(max_new_tokens=32)
    # every held-out question (and samples until each cell holds 20 replies): honest n and CIs
    sweep = pl.steering_sweep(
        model, vec, layers=[5, 10, 15, 20], coeffs=[-8, -4, 0, 4, 8], trait=trait,
        judge="offline", generation=gen, positions="response", min_replies=20,
        out=runs / "steering_sweep_all_questions",
    )  # fmt: skip
    save(pl.plot.plot_steering_heatmap(sweep), "steering_heatmap")

    saes = {L: pl.load_sae("embedded", layer=L, model=model) for L in pl.sae.shipped_sae_layers()}
    decomposition = pl.decompose(vec, saes, k=12)
    # each feature labelled by its top-activating tokens among the extraction's replies
    contexts = [
        pl.sae.feature_contexts(model, saes[L], L, decomposition, runs / "evil", n=10)
        for L in decomposition.layers
    ]
    save(
        pl.plot.plot_sae_cosines(decomposition, feature_labels=contexts), "sae_cosines", height=700
    )

    vectors = [pl.vectors.shipped_vector(t, model) for t in OCEAN]
    save(pl.plot.plot_cosine_matrix(pl.vectors.cosine_matrix(vectors)), "ocean_cosines", 760)

    conditions = pl.studies.system_prompt_spectrum(trait, pairs=1)
    monitoring = pl.studies.monitoring_experiment(
        model, vec, conditions, questions=list(trait.split_questions()[1][:6]), trait=trait,
        judge="offline", generation=gen, out=runs / "monitoring",
    )  # fmt: skip
    save(pl.plot.plot_monitoring_scatter(monitoring), "monitoring_scatter")


if __name__ == "__main__":
    main()
