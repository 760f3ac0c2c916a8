"""`make bench`: side-by-side throughput on the same model and data, in one run.

Reports ratios first (absolute numbers only with the device named):
  * forward: TransformerLens forward vs the Hugging Face forward of the same weights;
  * residual caching at every layer: TL run_with_cache (resid_post, all layers) vs HF
    output_hidden_states;
  * generation: personalens.generate (TL + KV cache) vs HF generate, greedy, same prompts.
Writes JSON to runs/bench/bench.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import personalens as pl
from personalens.models import embedded_hf_dir, load_hf_dir


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--gen-batch", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="runs/bench")
    args = ap.parse_args()
    torch.manual_seed(0)

    model = pl.load_model(device="cpu")
    hf, tok = load_hf_dir(embedded_hf_dir())
    tokens = torch.randint(100, 40000, (args.batch, args.seq))
    n_tok = tokens.numel()

    with torch.inference_mode():
        t_tl = timed(lambda: model(tokens), args.repeats)
        t_hf = timed(lambda: hf(tokens), args.repeats)
        t_tl_cache = timed(
            lambda: model.run_with_cache(
                tokens, names_filter=lambda n: n.endswith("hook_resid_post")
            ),
            args.repeats,
        )
        t_hf_hidden = timed(lambda: hf(tokens, output_hidden_states=True), args.repeats)

    prompts = [f"Write a sentence about the number {i}." for i in range(args.gen_batch)]
    gen_kw = dict(
        max_new_tokens=args.new_tokens,
        stop_token_ids=(-1,),
        batch_size=args.gen_batch,
        progress=False,
    )
    t_gen = timed(lambda: pl.generate(model, prompts, **gen_kw), 1)
    batch = pl.tokenize_prompts(model.tokenizer, prompts)
    with torch.inference_mode():
        t_hf_gen = timed(
            lambda: hf.generate(
                batch.tokens,
                attention_mask=batch.attention_mask.long(),
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            ),
            1,
        )
    new_tokens = args.gen_batch * args.new_tokens

    device = (
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    )
    rows = [
        ("forward: TL / HF", t_hf / t_tl, n_tok / t_tl, n_tok / t_hf, "tokens/s"),
        (
            "cache all layers: TL run_with_cache / HF hidden_states",
            t_hf_hidden / t_tl_cache,
            n_tok / t_tl_cache,
            n_tok / t_hf_hidden,
            "tokens/s",
        ),
        (
            "generate: personalens / HF generate",
            t_hf_gen / t_gen,
            new_tokens / t_gen,
            new_tokens / t_hf_gen,
            "new tokens/s",
        ),
    ]
    print(
        f"model {model.cfg.model_name} on {device}; forward batch {args.batch}x{args.seq}, generation batch {args.gen_batch} x {args.new_tokens} new tokens"
    )
    print(f"{'comparison':58s} {'ratio':>7s} {'ours':>10s} {'reference':>10s}")
    for name, ratio, ours, ref, unit in rows:
        print(f"{name:58s} {ratio:7.2f}x {ours:10.1f} {ref:10.1f}  {unit}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "device": device,
        "model": model.cfg.model_name,
        "config": vars(args),
        "rows": [dict(zip(["comparison", "ratio", "ours", "reference", "unit"], r)) for r in rows],
    }
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {out / 'bench.json'}")


if __name__ == "__main__":
    main()
