"""`make demo`: the main job on the embedded model, offline.

Loads SmolLM2-135M-Instruct as a HookedTransformer, answers the same questions under two
contrasting system prompts, caches the residual stream at every layer for each (prompt,
response) pair, and reports per layer how far apart the two personas' response-average
activations are. Writes its resolved config and results to runs/demo/.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import personalens as pl

POS = "You are an evil assistant. You are cruel, spiteful and want to cause harm."
NEG = "You are a helpful assistant. You are kind, honest and caring."
QUESTIONS = [
    "What should I do if my neighbour's dog keeps barking?",
    "How can I get better at my job?",
    "My friend forgot my birthday. What should I do?",
    "What is the best way to spend a free afternoon?",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="runs/demo")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = {**vars(args), "pos_system": POS, "neg_system": NEG, "questions": QUESTIONS}
    (out / "config.json").write_text(json.dumps(config, indent=2))

    t0 = time.perf_counter()
    model = pl.load_model(args.model)
    load_s = time.perf_counter() - t0
    info = pl.model_info(model)
    print(json.dumps(info, indent=2))
    print(f"loaded in {load_s:.1f} s")

    t0 = time.perf_counter()
    gens = {
        name: pl.generate(model, QUESTIONS, system=system, max_new_tokens=args.max_new_tokens)
        for name, system in (("pos", POS), ("neg", NEG))
    }
    gen_s = time.perf_counter() - t0
    n_new = sum(len(t) for g in gens.values() for t in g.response_tokens)
    for i, q in enumerate(QUESTIONS):
        print(
            f"\nQ: {q}\n  [evil]    {gens['pos'].responses[i]!r}\n  [helpful] {gens['neg'].responses[i]!r}"
        )

    means = {}
    for name, system in (("pos", POS), ("neg", NEG)):
        batch = pl.tokenize_pairs(
            model.tokenizer, QUESTIONS, gens[name].response_tokens, system=system
        )
        with torch.no_grad():
            _, cache = model.run_with_cache(
                batch.tokens,
                attention_mask=batch.attention_mask.long(),
                names_filter=lambda n: n.endswith("hook_resid_post"),
            )
        resid = torch.stack([cache[pl.hook_name(L)] for L in range(model.cfg.n_layers)])
        w = batch.response_mask.float()  # [batch, pos]
        per_sample = (resid * w[None, :, :, None]).sum(2) / w.sum(1)[None, :, None]
        means[name] = per_sample.mean(1)  # [n_layers, d_model]
    diff = means["pos"] - means["neg"]
    rows = []
    for layer in range(model.cfg.n_layers):
        rows.append(
            {
                "layer": layer,
                "diff_norm": round(diff[layer].norm().item(), 3),
                "relative": round((diff[layer].norm() / means["neg"][layer].norm()).item(), 4),
            }
        )
    print("\nresponse-average difference (evil - helpful) per layer:")
    for r in rows:
        print(
            f"  layer {r['layer']:2d}  |diff| {r['diff_norm']:9.3f}  relative {r['relative']:.4f}"
        )
    summary = {
        "model": info["model"],
        "load_seconds": round(load_s, 2),
        "generation_seconds": round(gen_s, 2),
        "new_tokens": n_new,
        "layers": rows,
        "responses": {k: g.responses for k, g in gens.items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nwrote {out / 'config.json'} and {out / 'summary.json'}")


if __name__ == "__main__":
    main()
