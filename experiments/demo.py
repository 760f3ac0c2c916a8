"""`make demo`: the main job on the embedded model, offline.

Extracts an `evil` persona vector from SmolLM2-135M-Instruct: answers under evil and helpful
system prompts (5 instruction pairs x 10 extraction + 10 held-out questions), judged offline,
filtered, residual stream summarised at all 30 layers, mean difference per layer, and ROC-AUC
per layer on the held-out questions. Resumable: run it again to continue or to reuse the
results. Writes its resolved config and all artifacts to runs/demo/ (see summary.json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import personalens as pl
from personalens.engines import BACKENDS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="runs/demo")
    ap.add_argument("--trait", default="evil")
    ap.add_argument("--max-questions", type=int, default=10)
    ap.add_argument("--model", default=None)
    ap.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="engine for generation and activations (personalens.engines.hf); auto: HF when exact",
    )
    args = ap.parse_args()
    out = Path(args.out)

    t0 = time.perf_counter()
    print(
        f"loading {args.model or 'the embedded SmolLM2-135M-Instruct'} (the first time, the GGUF "
        "file is converted and cached: about a minute)...",
        flush=True,
    )
    model = pl.load_model(args.model)
    print(json.dumps(pl.model_info(model)))
    print(f"model loaded in {time.perf_counter() - t0:.1f} s")

    trait = pl.load_trait(args.trait)
    config = pl.ExtractionConfig(max_questions=args.max_questions)
    judge = pl.make_judge("offline")
    t0 = time.perf_counter()
    result = pl.extract(model, trait, judge, config, run_dir=out, backend=args.backend)
    minutes = (time.perf_counter() - t0) / 60
    s = result.summary

    frame = result.to_frame()
    print(f"\n{trait.name}: {trait.description}")
    for side in ("pos", "neg"):
        row = (
            frame[(frame.side == side) & (frame.split == "eval")]
            .sort_values("trait")
            .iloc[-1 if side == "pos" else 0]
        )
        print(f"\n[{side}] system: {trait.system_prompt(int(row.pair), side)[:100]}...")
        print(
            f"  Q: {row.question}\n  A: {row.response[:240]!r}\n  judged trait {row.trait:.0f}, coherence {row.coherence:.0f}"
        )

    print(
        "\nheld-out ROC-AUC of the response-average projection, per layer, on all held-out "
        "answers:\n  reply only (no system prompt: does the text carry the trait) | with the "
        "system prompt in context (confounded by it)"
    )
    for layer, (clean, prompted) in enumerate(zip(s["layer_auc_neutral"], s["layer_auc"])):
        bar = "#" * round(30 * max(clean - 0.5, 0) / 0.5)
        print(f"  layer {layer:2d}  {clean:.3f} {bar:<30} | {prompted:.3f}")
    print(
        f"\nkept {s['n_pos']} contrastive pairs for the vector; on {s['n_heldout_pos']}+"
        f"{s['n_heldout_neg']} held-out answers the best layer is {s['best_layer_neutral']} "
        f"reading the reply only (AUC {s['best_auc_neutral']:.3f}) and {s['best_layer']} with the "
        f"system prompt in context (AUC {s['best_auc']:.3f}); {minutes:.1f} min"
    )
    print(f"vector: {out / 'vector.safetensors'} (+ .json); summary: {out / 'summary.json'}")


if __name__ == "__main__":
    try:
        main()
    except pl.errors.PersonaLensError as exc:  # one paragraph, no traceback
        raise SystemExit(f"demo: error: {exc}") from None
