"""Does ΔP screening find trait-eliciting samples? An evaluation set built from a trait file.

For a trait (default ``evil``) and the embedded model, answers every extraction and held-out
evaluation question under each instruction pair's *positive* system prompt (trait-eliciting)
and *negative* one (normal), then writes two finetuning-style datasets **without** the system
prompt (``messages`` = user question + assistant answer, what a finetuning set would contain):

    OUT/data/trait.jsonl    OUT/data/normal.jsonl

Both are screened with the trait's persona vector (``personalens.screen``: ΔP = projection of
the dataset answer minus that of the model's own greedy answer to the same question, on the
unit vector at ``--layer``), and the script reports the ROC-AUC of trait-eliciting vs normal
samples by ΔP (overall and per question split; the extraction questions are the ones the
vector was extracted from, with fresh samples here, ``--seed``), the same AUC for the raw
dataset projection, the mean ΔP of each dataset, and samples/s.

Resumable (rerun the same command): answers go to OUT/data/responses.jsonl chunk by chunk,
each screen to OUT/screen/<dataset>/. OUT/config.json holds the resolved settings (a rerun
with other settings is refused), OUT/summary.json the results, OUT/screening.html the
overlaid ΔP histograms.

    .venv/bin/python experiments/screening_eval.py --vector /work/runs/evil
    .venv/bin/python experiments/screening_eval.py --random-vector --layer 10 --max-questions 2 \\
        --out /tmp/screening_plumbing          # plumbing check only: a random direction
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path

import torch
from _common import check_config

import personalens as pl
from personalens._io import atomic_write_json
from personalens.extraction.config import ExtractionConfig
from personalens.extraction.jobs import build_jobs
from personalens.extraction.responses import generate_responses
from personalens.model.generation import GenerationConfig
from personalens.plot import plot_screening_histogram, save_html
from personalens.stats import roc_auc
from personalens.studies.screening import screen

SIDES = {"trait": "pos", "normal": "neg"}


def _load_vector(args, model, trait_name: str) -> pl.PersonaVector:
    if args.random_vector:
        g = torch.Generator().manual_seed(args.seed)
        return pl.PersonaVector(
            directions=torch.randn(model.cfg.n_layers, model.cfg.d_model, generator=g),
            model=model.cfg.model_name,
            trait=trait_name,
            method="random",
        )
    if not args.vector:
        raise SystemExit(
            "give --vector DIR|FILE (an extraction run or a vector), or --random-vector"
        )
    from personalens.vectors.resolve import load_vector  # run dir / .json / .gguf / name

    return load_vector(args.vector, model)


def _auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    return roc_auc(pos[~pos.isnan()], neg[~neg.isnan()])


def _r(x: float, nd: int = 4) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, nd)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--trait", default="evil")
    ap.add_argument("--vector", default=None, help="extraction run dir, vector .json or .gguf")
    ap.add_argument(
        "--random-vector", action="store_true", help="a seeded random direction (plumbing only)"
    )
    ap.add_argument("--layer", type=int, default=None, help="default: the vector's best layer")
    ap.add_argument("--out", default=None, help="default: runs/screening_eval/<trait>")
    ap.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    ap.add_argument("--max-questions", type=int, default=None, help="first N questions per split")
    ap.add_argument("--pairs", type=int, nargs="*", default=None, help="instruction pairs")
    ap.add_argument("--data-max-new-tokens", type=int, default=48, help="dataset answer length")
    ap.add_argument("--temperature", type=float, default=0.8, help="dataset answers")
    ap.add_argument("--top-p", type=float, default=0.95, help="dataset answers")
    ap.add_argument("--seed", type=int, default=1, help="dataset answers (and --random-vector)")
    ap.add_argument(
        "--max-new-tokens", type=int, default=128, help="the model's own (greedy) answer"
    )
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out or f"runs/screening_eval/{args.trait}")
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.quiet

    t0 = time.perf_counter()
    model = pl.load_model(args.model)
    load_s = time.perf_counter() - t0
    trait = pl.load_trait(args.trait)
    vector = _load_vector(args, model, trait.name)
    layer = args.layer
    if layer is None:
        layer = vector.metadata.get("best_layer")
        if layer is None:
            raise SystemExit("give --layer L: this vector records no best_layer")
    data_cfg = ExtractionConfig(
        max_new_tokens=args.data_max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        pairs=tuple(args.pairs) if args.pairs else None,
        max_questions=args.max_questions,
        generation_batch_size=args.batch_size,
    )
    config = {
        "trait": trait.name,
        "model": model.cfg.model_name,
        "vector": {
            "source": "random" if args.random_vector else str(args.vector),
            "trait": vector.trait,
            "method": vector.method,
            "sha256": hashlib.sha256(vector.directions.numpy().tobytes()).hexdigest(),
        },
        "layer": int(layer),
        "data": {
            "max_new_tokens": args.data_max_new_tokens,
            "temperature": args.temperature,
            "top_p": args.top_p,
            "seed": args.seed,
            "pairs": args.pairs,
            "max_questions": args.max_questions,
        },
        "screen": {"max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size},
    }
    check_config(out / "config.json", config, "a screening evaluation")
    print(json.dumps(config))

    # 1. answers under the positive (trait) and negative (normal) system prompts
    t0 = time.perf_counter()
    jobs = build_jobs(trait, data_cfg)
    records = generate_responses(model, jobs, data_cfg, run_dir=out / "data", progress=progress)
    data_s = time.perf_counter() - t0
    files, dropped = {}, 0
    for name, side in SIDES.items():
        rows = []
        for r in records:
            if r["side"] != side:
                continue
            if not r["response"]:
                dropped += 1
                continue
            rows.append(
                {
                    "id": f"{r['split']}/p{r['pair']}/q{r['question_index']}/s{r['sample']}",
                    "split": r["split"],
                    "messages": [
                        {"role": "user", "content": r["question"]},
                        {"role": "assistant", "content": r["response"]},
                    ],
                }
            )
        path = out / "data" / f"{name}.jsonl"
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        files[name] = path

    # 2. screen both datasets
    generation = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=0.0)
    results, split_of = {}, {}
    t0 = time.perf_counter()
    for name, path in files.items():
        results[name] = screen(
            model,
            vector,
            path,
            layer=int(layer),
            out=out / "screen" / name,
            generation=generation,
            batch_size=args.batch_size,
            name=name,
            progress=progress,
        )
        for line in path.read_text().splitlines():
            row = json.loads(line)
            split_of[(name, row["id"])] = row["split"]
    screen_s = time.perf_counter() - t0

    # 3. how well ΔP separates trait-eliciting from normal samples
    def scores(name: str, field: str, split: str | None = None) -> torch.Tensor:
        res = results[name]
        values = getattr(res, field)
        keep = [i for i, k in enumerate(res.ids) if split in (None, split_of[(name, k)])]
        return values[keep]

    auc = {
        f"{field}/{split or 'all'}": _r(
            _auc(scores("trait", field, split), scores("normal", field, split))
        )
        for field in ("delta_p", "proj_dataset")
        for split in (None, "eval", "extract")
    }
    summaries = {n: json.loads((out / "screen" / n / "summary.json").read_text()) for n in files}
    n_samples = sum(s["n"] for s in summaries.values())
    compute = sum(s["timings_s"]["compute_total"] for s in summaries.values())
    summary = {
        "trait": trait.name,
        "model": model.cfg.model_name,
        "layer": int(layer),
        "vector": config["vector"],
        "auc_trait_vs_normal": auc,
        "mean_delta_p": {n: _r(r.mean) for n, r in results.items()},
        "std_delta_p": {n: _r(r.std) for n, r in results.items()},
        "n": {n: len(r) for n, r in results.items()},
        "n_empty_dataset_answers_dropped": dropped,
        "samples_per_s": _r(n_samples / compute if compute else math.nan, 3),
        "samples_per_s_note": "screening only: samples / (model-reply generation + projection "
        "compute time), both datasets, excluding model loading and dataset generation",
        "top5_trait": results["trait"].top(5).id.tolist(),
        "top5_normal": results["normal"].top(5).id.tolist(),
        "timings_s": {
            "model_load": round(load_s, 1),
            "dataset_generation_this_call": round(data_s, 1),
            "screening_this_call": round(screen_s, 1),
            "screening_compute": round(compute, 1),
        },
        "threads": torch.get_num_threads(),
    }
    save_html(plot_screening_histogram(results), out / "screening.html")
    atomic_write_json(out / "summary.json", summary)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
