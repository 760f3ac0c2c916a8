"""Train SAEs on the residual stream with sae-lens, evaluate them, install them.

Reads a finished corpus (``sae/build_corpus.py``), holds out whole questions, packs the rest
into token rows and trains one sae-lens SAE per layer (``blocks.L.hook_resid_post``) from a
single forward pass per batch, streaming activations from the model. Each layer's SAE is loaded
back with ``sae_lens.SAE.load_from_disk``, measured on the held-out rows (quality.json) and
installed in OUT_ROOT/<model>/blocks.<L>.hook_resid_post/. Layers already there are skipped
unless --force. See sae/README.md.

    python sae/train.py                                       # default recipe: layers 15 and 28
    python sae/train.py --layers 15 --training-tokens 50000 --out-root /tmp/sae_smoke/out \\
        --corpus /tmp/sae_smoke/corpus                        # a smoke run
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
from recipe import (  # noqa: E402
    DEFAULT_CONFIG,
    DEFAULT_CORPUS_DIR,
    DEFAULT_OUT_ROOT,
    DEFAULT_WORK_DIR,
    load_config,
    override,
    quality_table,
    train_saes,
)

import personalens as pl  # noqa: E402


def cfg_model(path: str) -> str | None:
    return load_config(path).get("model")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", default=str(DEFAULT_CONFIG), help="recipe config (JSON)")
    ap.add_argument("--corpus", default=str(DEFAULT_CORPUS_DIR), help="a finished corpus dir")
    ap.add_argument("--out-root", default=str(DEFAULT_OUT_ROOT), help="where SAEs are installed")
    ap.add_argument("--work-dir", default=str(DEFAULT_WORK_DIR), help="scratch (emptied after)")
    ap.add_argument("--model", default=None, help="default: the config's (embedded model)")
    ap.add_argument("--layers", type=int, nargs="+", default=None)
    ap.add_argument("--training-tokens", type=int, default=None)
    ap.add_argument("--d-sae", type=int, default=None)
    ap.add_argument("--k", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--context-size", type=int, default=None)
    ap.add_argument("--eval-ce-rows", type=int, default=None)
    ap.add_argument("--save-dtype", default=None, help="float32 (default) or float16")
    ap.add_argument("--force", action="store_true", help="retrain layers that are done")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument(
        "--report", action="store_true", help="only print the installed SAEs' quality table"
    )
    args = ap.parse_args()
    if args.report:
        from personalens.model.load import EMBEDDED_MODEL_NAME

        print(
            quality_table(
                args.model or cfg_model(args.config) or EMBEDDED_MODEL_NAME, args.out_root
            )
        )
        return
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = load_config(args.config)
    train_cfg = override(
        cfg["train"],
        layers=args.layers,
        training_tokens=args.training_tokens,
        d_sae=args.d_sae,
        k=args.k,
        lr=args.lr,
        context_size=args.context_size,
        eval_ce_rows=args.eval_ce_rows,
        save_dtype=args.save_dtype,
    )
    t0 = time.perf_counter()
    model = pl.load_model(args.model or cfg.get("model"), device="cpu")
    print(f"model loaded in {time.perf_counter() - t0:.1f} s")
    quality = train_saes(
        model,
        args.corpus,
        train_cfg,
        out_root=args.out_root,
        work_dir=args.work_dir,
        force=args.force,
        progress=not args.quiet,
    )
    print(json.dumps(quality, indent=2))


if __name__ == "__main__":
    main()
