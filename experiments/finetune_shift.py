"""Does trait-eliciting finetuning data shift the model along the persona vector, and does
steering during training (preventative steering, CAFT) prevent it?

For a trait (default ``evil``) and the embedded model:

1. builds three datasets of the model's own replies to the same prompts (``finetune_data.py``):
   ``normal`` (helpful system prompt), ``level1`` (mildly eliciting), ``level2`` (the trait's
   positive instructions), stored without the system prompt;
2. finetunes a LoRA (``W_out`` of every MLP and ``W_O`` of every attention layer) on each dataset
   in each mode: ``plain``; ``preventative`` (add ``coeff · v`` at ``--steer-layers`` in every
   training forward pass); ``caft`` (ablate ``v̂`` there during training);
3. measures each finetuned model against the base model on the trait's held-out evaluation
   questions: the finetuning shift (``personalens.finetuning_shift``: response-average over the
   finetuned model's greedy replies, both models reading the same tokens, and last prompt token;
   projected on the unit vector) at every layer, and the judged trait score of both models'
   greedy replies (offline judge by default).

Writes to OUT: ``config.json`` (resolved settings; a rerun with other settings is refused),
``data/`` (the datasets), ``runs/<level>-<mode>/`` (each finetune's run directory, resumable,
and its ``shift.json``), ``base_generations.json``, then ``results.csv`` / ``results.json`` (one
row per finetune: losses, shift at the vector's best layer and at the steering layer, trait
scores), ``shift_vs_trait.html`` (shift vs trait change, Pearson r) and ``shift_by_layer.html``.
Every stage resumes: rerun the same command after an interruption.

    .venv/bin/python experiments/finetune_shift.py --vector runs/evil --out runs/finetune_shift/evil
    .venv/bin/python experiments/finetune_shift.py --random-vector --max-prompts 4 --epochs 1 \\
        --n-eval 2 --eval-max-new-tokens 8 --data-max-new-tokens 8 --out /tmp/ft_plumbing
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import torch
from _common import check_config

import personalens as pl
from personalens._io import atomic_write_json, atomic_write_text
from personalens.model.generation import GenerationConfig, generate
from personalens.plot import plot_finetuning_shift, plot_shift_by_layer, save_html
from personalens.studies.finetuning.shift import FinetuningShift, finetuning_shift
from personalens.studies.finetuning.train import finetune

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_data import LEVELS, build_datasets  # noqa: E402

MODES = ("plain", "preventative", "caft")


def _load_vector(args, model, trait_name: str) -> pl.PersonaVector:
    if args.random_vector:
        g = torch.Generator().manual_seed(args.seed)
        return pl.PersonaVector(
            directions=torch.randn(model.cfg.n_layers, model.cfg.d_model, generator=g),
            model=model.cfg.model_name,
            trait=trait_name,
            method="random",
            metadata={"best_layer": model.cfg.n_layers - 2},
        )
    path = args.vector or f"runs/{trait_name}"
    if not Path(path).exists():
        raise SystemExit(
            f"no vector at {path}: give --vector DIR|FILE (an extraction run, e.g. from "
            f"`personalens extract --trait {trait_name} --out runs/{trait_name}`), or "
            "--random-vector for a plumbing check"
        )
    from personalens.vectors.resolve import load_vector  # run dir / .json / .gguf / name

    return load_vector(path, model)


def _r(x, nd: int = 4):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return round(float(x), nd)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--trait", default="evil")
    ap.add_argument("--vector", default=None, help="extraction run dir, vector .json or .gguf")
    ap.add_argument("--random-vector", action="store_true", help="plumbing only")
    ap.add_argument("--out", default=None, help="default: runs/finetune_shift/<trait>")
    ap.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    ap.add_argument("--levels", nargs="+", default=list(LEVELS), choices=LEVELS)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    g = ap.add_argument_group("datasets")
    g.add_argument("--n-per-prompt", type=int, default=1)
    g.add_argument(
        "--max-prompts", type=int, default=None, help="first N trait questions (and N/4 generic)"
    )
    g.add_argument("--data-max-new-tokens", type=int, default=48)
    g.add_argument("--data-seed", type=int, default=1)
    g = ap.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=3)
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--max-steps", type=int, default=None)
    g.add_argument("--params", default="lora", choices=("lora", "full"))
    g.add_argument("--rank", type=int, default=8)
    g.add_argument("--alpha", type=float, default=16.0)
    g.add_argument("--targets", nargs="+", default=["mlp_out", "attn_out"])
    g.add_argument("--adapter-layers", type=int, nargs="+", default=None, help="default: all")
    g.add_argument("--seed", type=int, default=0)
    g = ap.add_argument_group("steering during training")
    g.add_argument(
        "--steer-layers",
        type=int,
        nargs="+",
        default=None,
        help="default: two thirds of the depth (layer 20 of 30)",
    )
    g.add_argument(
        "--coeff",
        type=float,
        default=0.5,
        help="preventative: coeff · v added (raw: v's norm at a layer is the gap between the "
        "positive- and negative-prompted replies there, so 0.5 adds half that gap; on the "
        "embedded model 2.0 over-corrected: the finetune learnt to cancel it and ended far on "
        "the negative side, while 0.5 kept level II's shift near 0 at the plain run's loss)",
    )
    g.add_argument("--coeff-scale", default="raw", choices=("raw", "unit", "resid"))
    g = ap.add_argument_group("evaluation")
    g.add_argument("--n-eval", type=int, default=20, help="held-out evaluation questions")
    g.add_argument("--eval-max-new-tokens", type=int, default=48)
    g.add_argument("--judge", default="offline", help="offline or openai")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    progress = not args.quiet
    t_all = time.perf_counter()

    model = pl.load_model(args.model)
    trait = pl.load_trait(args.trait)
    vector = _load_vector(args, model, trait.name)
    n_layers = model.cfg.n_layers
    best = vector.metadata.get("best_layer")
    best = int(best) if best is not None else n_layers - 1
    steer_layers = args.steer_layers or [round(n_layers * 2 / 3)]
    out = Path(args.out or f"runs/finetune_shift/{trait.name}")
    out.mkdir(parents=True, exist_ok=True)
    eval_questions = list(trait.split_questions()[1][: args.n_eval])
    train_kw = {
        "params": args.params,
        "targets": tuple(args.targets),
        "adapter_layers": args.adapter_layers,
        "rank": args.rank,
        "alpha": args.alpha,
        "lr": args.lr,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "max_steps": args.max_steps,
        "seed": args.seed,
    }
    steer_kw = {
        "preventative": {
            "layers": steer_layers,
            "coeff": args.coeff,
            "coeff_scale": args.coeff_scale,
        },
        "caft": {"layers": steer_layers},
        "plain": {},
    }
    config = {
        "trait": trait.name,
        "model": model.cfg.model_name,
        "vector": {
            "source": "random" if args.random_vector else str(args.vector or f"runs/{trait.name}"),
            "trait": vector.trait,
            "sha256": hashlib.sha256(vector.directions.numpy().tobytes()).hexdigest(),
            "best_layer": best,
        },
        "levels": args.levels,
        "modes": args.modes,
        "data": {
            "n_per_prompt": args.n_per_prompt,
            "max_prompts": args.max_prompts,
            "max_new_tokens": args.data_max_new_tokens,
            "seed": args.data_seed,
        },
        "training": {**train_kw, "targets": list(args.targets)},
        "steering": {k: v for k, v in steer_kw.items() if v},
        "evaluation": {
            "questions": eval_questions,
            "max_new_tokens": args.eval_max_new_tokens,
            "judge": args.judge,
            "shift_layers": "all",
        },
    }
    check_config(out / "config.json", config, "a finetuning experiment")
    print(json.dumps({k: v for k, v in config.items() if k != "evaluation"}))

    # 1. datasets
    t0 = time.perf_counter()
    files = build_datasets(
        model,
        trait,
        out / "data",
        n_per_prompt=args.n_per_prompt,
        max_new_tokens=args.data_max_new_tokens,
        seed=args.data_seed,
        max_prompts=args.max_prompts,
        judge=args.judge,
        progress=progress,
    )
    data_s = time.perf_counter() - t0

    # 2. the base model's greedy replies to the evaluation questions (once, reused by every run)
    gen = GenerationConfig(max_new_tokens=args.eval_max_new_tokens, temperature=0.0)
    base_path = out / "base_generations.json"
    if base_path.exists():
        base_gen = json.loads(base_path.read_text())["responses"]
    else:
        base_gen = generate(model, eval_questions, gen, progress=progress).responses
        atomic_write_json(base_path, {"questions": eval_questions, "responses": base_gen})
    judge = pl.make_judge(args.judge)

    # 3. finetune and measure, one run at a time
    shifts: dict[str, FinetuningShift] = {}
    rows = []
    for level in args.levels:
        for mode in args.modes:
            name = f"{level}-{mode}"
            run = out / "runs" / name
            shift_path = run / "shift.json"
            t0 = time.perf_counter()
            res = finetune(
                model,
                files[level],
                mode=mode,
                vector=vector if mode != "plain" else None,
                **steer_kw[mode],
                **train_kw,
                out=run,
                merge=not shift_path.exists(),
                progress=progress,
            )
            if shift_path.exists():
                sh = FinetuningShift.load(shift_path)
            else:
                sh = finetuning_shift(
                    model,
                    res.model,
                    vector,
                    eval_questions,
                    layers="all",
                    generation=gen,
                    judge=judge,
                    trait=trait,
                    base_responses=base_gen,
                    name=name,
                )
                sh.save(shift_path)
            run_s = time.perf_counter() - t0
            shifts[name] = sh
            summary = res.summary()
            rows.append(
                {
                    "run": name,
                    "level": level,
                    "mode": mode,
                    "steps": summary["steps"],
                    "first_epoch_loss": _r(summary["first_epoch_loss"]),
                    "last_epoch_loss": _r(summary["last_epoch_loss"]),
                    **{
                        f"shift_{v}_L{L}": _r(sh.shift(L, v))
                        for L in dict.fromkeys([best, *steer_layers])
                        for v in ("response_avg", "last_prompt_token")
                    },
                    "trait_base": _r(sh.summary()["trait_base"], 2),
                    "trait_finetuned": _r(sh.summary()["trait_finetuned"], 2),
                    "trait_change": _r(sh.trait_change, 2),
                    "coherence_finetuned": _r(sh.summary()["coherence_finetuned"], 2),
                    "n_empty_replies": sh.summary()["n_empty_responses"],
                    "train_seconds": _r(res.seconds, 1),
                    "seconds_this_call": _r(run_s, 1),
                }
            )
            print(json.dumps(rows[-1]))
            del res
            gc.collect()

    # 4. tables and figures
    import pandas as pd

    table = pd.DataFrame(rows)
    atomic_write_text(out / "results.csv", table.to_csv(index=False))
    data_summary = json.loads((out / "data" / "summary.json").read_text())
    atomic_write_json(
        out / "results.json",
        {
            "config": config,
            "best_layer": best,
            "steer_layers": steer_layers,
            "data": {k: data_summary.get(k) for k in ("n", "mean_trait_score", "n_dropped_empty")},
            "runs": rows,
            "shift_by_layer": {
                n: json.loads(s.to_frame().to_json(orient="records")) for n, s in shifts.items()
            },
            "timings_s": {
                "datasets_this_call": round(data_s, 1),
                "total_this_call": round(time.perf_counter() - t_all, 1),
            },
            "threads": torch.get_num_threads(),
        },
    )
    groups = {n: n.split("-")[0] for n in shifts}
    if len(shifts) >= 1:
        save_html(
            plot_finetuning_shift(shifts, layer=best, groups=groups), out / "shift_vs_trait.html"
        )
        save_html(plot_shift_by_layer(shifts), out / "shift_by_layer.html")
    print("dataset mean trait scores:", json.dumps(data_summary.get("mean_trait_score")))
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.drop(columns=["seconds_this_call"]).to_string(index=False))
    print(
        f"total {time.perf_counter() - t_all:.0f} s; wrote {out}/results.csv, results.json, *.html"
    )


if __name__ == "__main__":
    main()
