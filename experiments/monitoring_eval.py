"""Monitoring: does the last-prompt-token projection predict the trait score of the reply?

The Persona Vectors paper's monitoring experiment at our scale. For a trait's persona vector
(an extraction run directory) and the embedded model:

* a system-prompt spectrum from trait-suppressing to trait-promoting
  (``personalens.system_prompt_spectrum``: the trait's negative instructions, "You are a
  <opposite> assistant.", no system prompt, "You are a <trait> assistant.", the positive
  instructions), and
* many-shot prompts with 0/5/10/15/20 earlier turns whose replies display the trait (the
  extraction run's best positive-side replies to *extraction* questions),

each applied to the trait's held-out evaluation questions. For every prompt: the projection of
the last prompt token on the unit vector (every layer, before generating), the greedy reply,
its judged trait score. Writes to ``--out``:

    config.json            resolved settings (a rerun with other settings is refused)
    run/                   the resumable monitoring run (projections, replies, judge scores)
    summary.json           Pearson r overall / condition means / within condition, per kind
    conditions.csv         per condition: mean projection, mean trait score, n
    scatter.html           projection vs trait score, one colour per condition
    r_by_layer.html        Pearson r at every layer
    trace.html             a per-token trace of one question under the most trait-promoting
                           and the most trait-suppressing system prompt

    .venv/bin/python experiments/monitoring_eval.py --vector /work/runs/evil --out runs/monitor_evil
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
from personalens.plot import (
    plot_monitoring_r_by_layer,
    plot_monitoring_scatter,
    plot_token_trace,
    save_html,
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vector", required=True, help="an extraction run directory")
    p.add_argument("--out", required=True)
    p.add_argument("--model", default=None, help="default: the embedded model")
    p.add_argument("--layer", type=int, default=None, help="headline layer (default: best)")
    p.add_argument("--pairs", type=int, default=2, help="instruction pairs per spectrum end")
    p.add_argument("--shots", type=int, nargs="+", default=[0, 5, 10, 15, 20])
    p.add_argument("--max-questions", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--judge", default="offline")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in vars(args).items() if k not in ("out", "threads")}
    check_config(out / "config.json", config, "a monitoring experiment")

    t0 = time.perf_counter()
    model = pl.load_model(args.model) if args.model else pl.load_model()
    from personalens.vectors.resolve import load_vector

    vector = load_vector(args.vector, model)
    trait = pl.load_trait(vector.trait)
    questions = list(trait.split_questions()[1])[: args.max_questions]
    conditions = pl.studies.system_prompt_spectrum(trait, pairs=args.pairs)
    if args.shots:
        examples = pl.studies.trait_examples(args.vector, max(args.shots))
        conditions += pl.studies.many_shot_conditions(examples, counts=args.shots)
    result = pl.studies.monitoring_experiment(
        model,
        vector,
        conditions,
        questions=questions,
        judge=args.judge,
        layer=args.layer,
        generation=pl.GenerationConfig(
            max_new_tokens=args.max_new_tokens, temperature=0.0, batch_size=args.batch_size
        ),
        out=out / "run",
    )
    seconds = time.perf_counter() - t0

    kinds = [None, *sorted({c.kind for c in conditions})]
    summary = {
        "trait": result.trait,
        "layer": result.layer,
        "n_questions": len(questions),
        "n_conditions": len(conditions),
        "n_prompt_tokens_max": max(r["n_prompt_tokens"] for r in result.records),
        "seconds_this_call": round(seconds, 1),
        "correlations": {k or "all": result.correlations(kind=k) for k in kinds},
        "best_layer_by_r": {
            k or "all": (
                lambda df: {"layer": int(df.loc[df.r.idxmax(), "layer"]), "r": float(df.r.max())}
            )(result.r_by_layer(k))
            for k in kinds
        },
    }
    atomic_write_json(out / "summary.json", json.loads(json.dumps(summary, default=float)))
    atomic_write_text(out / "conditions.csv", result.summary().to_csv(index=False))
    save_html(plot_monitoring_scatter(result), out / "scatter.html")
    save_html(plot_monitoring_r_by_layer(result), out / "r_by_layer.html")

    system = [c for c in conditions if c.kind == "system"]
    q = questions[0]
    traces = []
    for cond in (system[-1], system[0]):
        tr = pl.studies.token_trace(
            model, vector, cond.conversation(q), generate=args.max_new_tokens, layer=result.layer
        )
        fig = plot_token_trace(tr, title=f"{cond.name}: {q}")
        traces.append((cond.name, tr, fig))
    body = "".join(
        f"<h3>{name}</h3>{tr.to_html()}"
        + fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False)
        for i, (name, tr, fig) in enumerate(traces)
    )
    atomic_write_text(out / "trace.html", f"<html><meta charset='utf-8'><body>{body}</body></html>")

    c = summary["correlations"]
    for k, v in c.items():
        lo, hi = v["r_ci95"]
        print(
            f"{k:>10}: r = {v['r']:.3f} [{lo:.3f}, {hi:.3f}] over {v['n']} replies; "
            f"condition means r = {v['r_condition_means']:.3f} ({v['n_conditions']} conditions); "
            f"mean within-condition r = {v['r_within_mean']:.3f}"
        )
    print(result.summary().to_string(index=False))
    print(f"wrote {out}/summary.json, scatter.html, r_by_layer.html, trace.html ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
