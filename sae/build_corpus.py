"""Build (or resume) the SAE training corpus: the model's own chat replies, offline.

Every question of every shipped trait file (``questions`` and ``eval_questions``) is answered
under the trait's positive and negative instruction system prompts and a baseline (no system
prompt / a neutral one, alternating), with personalens's batched generation. Replies are
appended to OUT/responses.jsonl chunk by chunk: Ctrl-C and rerun the same command to resume.
See sae/README.md.

    python sae/build_corpus.py                               # the default recipe (sae/config.json)
    python sae/build_corpus.py --traits evil --max-questions 2 --out /tmp/sae_smoke/corpus
"""

from __future__ import annotations

import os

# nothing in the recipe may reach a model hub (set before transformers / datasets load)
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from recipe import DEFAULT_CONFIG, DEFAULT_CORPUS_DIR, build_corpus, load_config, override  # noqa: E402

import personalens as pl  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", default=str(DEFAULT_CONFIG), help="recipe config (JSON)")
    ap.add_argument("--out", default=str(DEFAULT_CORPUS_DIR), help="corpus directory")
    ap.add_argument("--model", default=None, help="default: the config's (embedded model)")
    ap.add_argument("--traits", nargs="+", default=None, help="default: all shipped traits")
    ap.add_argument("--max-questions", type=int, default=None, help="first N per trait and split")
    ap.add_argument("--conditions", nargs="+", default=None, help="pos neg none neutral baseline")
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--text-files", nargs="+", default=None, help="local text files to add")
    ap.add_argument("--no-trait-text", action="store_true", help="leave out anchors/descriptions")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = load_config(args.config)
    corpus_cfg = override(
        cfg["corpus"],
        traits=args.traits,
        max_questions=args.max_questions,
        conditions=args.conditions,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
        text_files=[os.path.abspath(f) for f in args.text_files] if args.text_files else None,
        trait_text=False if args.no_trait_text else None,
    )
    t0 = time.perf_counter()
    model = pl.load_model(args.model or cfg.get("model"), device="cpu")
    print(f"model loaded in {time.perf_counter() - t0:.1f} s")
    summary = build_corpus(model, corpus_cfg, args.out, progress=not args.quiet)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
