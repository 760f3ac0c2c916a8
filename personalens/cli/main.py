"""The ``personalens`` command line. Heavy libraries are imported only by the command that runs."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from personalens.errors import PersonaLensError


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="TransformerLens model name, local HF directory or .gguf file "
        "(default: the embedded SmolLM2-135M-Instruct, offline)",
    )
    p.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)"
    )
    p.add_argument(
        "--dtype", default=None, help="float32, bfloat16, float16 (default: fp32 on CPU)"
    )


def _load(args: argparse.Namespace):
    from personalens.model.load import load_model

    device = args.device
    if getattr(args, "shard", None):
        from personalens.runs.sharding import local_device

        device = local_device(device)  # under torchrun: this worker's own GPU
    return load_model(args.model, device=device, dtype=args.dtype)


def _add_backend_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        choices=("auto", "tl", "hf"),  # hf_backend.BACKENDS, spelled out: it imports torch
        default="auto",
        help="engine for generation and activations: 'hf' runs a Hugging Face model sharing the "
        "weights (faster; Llama-style models; applies personalens steering exactly), 'tl' "
        "TransformerLens; 'auto' (default) takes 'hf' where the model maps, else 'tl'. The "
        "results agree within float tolerance; not part of a run's identity",
    )


def _add_shard_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="be worker I of N (0-based) sharing the run directory, one per GPU or node; 'auto' "
        "reads the rank from torchrun, accelerate launch or srun. Worker 0 writes the results.",
    )
    p.add_argument(
        "--shard-timeout",
        type=float,
        default=None,
        metavar="S",
        help="give up after waiting S seconds for the other workers (default: wait)",
    )


def _shard(args: argparse.Namespace):
    from personalens.runs.sharding import Shard, resolve_shard

    if not args.shard:
        return None
    return resolve_shard(Shard.parse(args.shard, timeout_s=args.shard_timeout))


def cmd_info(args: argparse.Namespace) -> int:
    from personalens.model.load import model_info

    print(json.dumps(model_info(_load(args))))
    return 0


CHAT_HELP = "commands: /reset (forget the conversation), /system TEXT (new system prompt), /exit"


def cmd_chat(args: argparse.Namespace) -> int:
    from personalens.model.chat import build_messages
    from personalens.model.generation import GenerationConfig, generate

    vectors = args.vector or []
    _check_chat_args(args, vectors)
    model = _load(args)
    handle = None
    if vectors and not args.dynamic:
        one = argparse.Namespace(**{**vars(args), "vector": vectors[0]})
        handle = _steering_from_args(model, one)
    if handle is not None:
        print(f"steering: {handle.plan.description}", file=sys.stderr)
    config = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        progress=False,
    )
    steerer = _dynamic_from_args(model, args, vectors, config) if args.dynamic else None
    interactive = sys.stdin.isatty()
    system = args.system
    history: list[dict[str, str]] = []
    if interactive:
        print(f"personalens chat with {model.cfg.model_name}. {CHAT_HELP}", file=sys.stderr)
    while True:
        if interactive:
            print("you> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        text = line.strip()
        if not text:
            continue
        if text in {"/exit", "/quit"}:
            break
        if text == "/reset":
            history = []
            continue
        if text.startswith("/system"):
            system = text.removeprefix("/system").strip() or None
            history = []
            continue
        if text.startswith("/"):
            print(f"unknown command {text.split()[0]!r}; {CHAT_HELP}", file=sys.stderr)
            continue
        messages = build_messages(text, system=system, history=history)
        extra: dict = {}
        if steerer is None:
            reply = generate(model, [messages], config).responses[0]
        else:
            turn = steerer.respond(messages)
            reply = turn.reply
            extra = {k: v for k, v in turn.to_dict().items() if k not in ("user", "reply")}
            if args.format != "jsonl":
                coeffs = " ".join(f"{t}={c:+.2f}" for t, c in turn.coefficients.items())
                print(f"[dynamic] {coeffs} ({turn.rationale})", file=sys.stderr)
        history = [m for m in messages if m["role"] != "system"]
        history.append({"role": "assistant", "content": reply})
        if args.format == "jsonl":
            print(json.dumps({"user": text, "assistant": reply, **extra}), flush=True)
        else:
            print(("assistant> " if interactive else "") + reply, flush=True)
    if handle is not None:
        handle.remove()
    return 0


def _check_chat_args(args: argparse.Namespace, vectors: list[str]) -> None:
    """Reject contradictory chat options before the model is loaded."""
    if not args.dynamic:
        if len(vectors) > 1:
            raise PersonaLensError(
                "static steering takes one --vector; to steer several traits turn by turn add "
                "--dynamic (--vector NAME=PATH for each)"
            )
        if args.target:
            raise PersonaLensError("--target sets the target persona of --dynamic steering")
        return
    if not vectors:
        raise PersonaLensError("--dynamic needs at least one --vector NAME=PATH (or PATH)")
    if args.coeff is not None:
        raise PersonaLensError("--dynamic chooses the coefficients; bound them with --max-coeff")
    if args.mode != "add":
        raise PersonaLensError("--dynamic steers with --mode add only")
    if args.layer is not None and len(args.layer) > 1:
        raise PersonaLensError(
            "--dynamic takes one --layer for all vectors (or none: each vector's best layer)"
        )
    _parse_targets(args.target)


def _parse_targets(items: list[str] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            level = float(value)
        except ValueError:
            level = None
        if not sep or not name.strip() or level is None:
            raise PersonaLensError(
                f"--target {item!r}: write NAME=VALUE with VALUE in [-1, 1], e.g. --target evil=-1"
            )
        out[name.strip()] = level
    return out


def _named_vector(item: str, model):
    """``NAME=PATH`` or ``PATH`` (named by the vector's trait) -> (name, vector)."""
    from pathlib import Path

    name, sep, path = item.partition("=")
    if not sep or Path(item).exists() or "/" in name or not name.strip():
        vector = _load_vector(item, model)
        return vector.trait, vector
    return name.strip(), _load_vector(path, model)


def _dynamic_from_args(model, args: argparse.Namespace, vectors: list[str], config):
    from personalens.steering.dynamic import DynamicSteerer

    named: dict = {}
    for item in vectors:
        name, vector = _named_vector(item, model)
        if name in named:
            raise PersonaLensError(f"two --vector options are named {name!r}; use NAME=PATH")
        named[name] = vector
    if args.policy == "llm":
        from personalens.judges.openai_api import APIConfig

        policy_options = {
            "config": APIConfig.from_env(base_url=args.judge_base_url, model=args.judge_model)
        }
    else:
        policy_options = {"target_sd": args.target_sd, "one_sided": args.one_sided}
    steerer = DynamicSteerer(
        model,
        named,
        layers=args.layer[0] if args.layer else None,
        policy=args.policy,
        policy_options=policy_options,
        target=_parse_targets(args.target),
        max_coeff=args.max_coeff,
        coeff_scale=args.coeff_scale,
        positions=args.positions,
        generation=config,
    )
    print(
        f"dynamic steering: {steerer.policy!r}, layers {steerer.layers}, target "
        f"{steerer.target}, max coeff {args.max_coeff} ({args.coeff_scale})",
        file=sys.stderr,
    )
    return steerer


# ----------------------------------------------------------------------------- steering


def _add_steering_args(
    p: argparse.ArgumentParser, *, required: bool, sweep: bool = False, multi: bool = False
) -> None:
    p.add_argument(
        "--vector",
        required=required,
        default=None,
        action="append" if multi else "store",
        help="a persona vector: an extraction run directory, a .json/.safetensors pair, "
        "or a llama.cpp control-vector .gguf"
        + (
            "; with --dynamic repeat it as --vector NAME=PATH (NAME defaults to the trait)"
            if multi
            else ""
        ),
    )
    if not sweep:
        p.add_argument(
            "--layer",
            type=int,
            nargs="+",
            default=None,
            help="layer(s) to steer (default: the vector's best layer)",
        )
        p.add_argument("--coeff", type=float, default=None, help="steering coefficient")
    p.add_argument("--mode", choices=["add", "ablate", "cap"], default="add")
    p.add_argument("--positions", choices=["response", "prompt", "all"], default="response")
    p.add_argument(
        "--coeff-scale",
        choices=["raw", "unit", "resid"],
        default="raw",
        help="raw: multiples of the vector; unit: of its unit direction; resid: of the mean "
        "residual norm at the layer",
    )
    p.add_argument("--bound", type=float, default=None, help="cap bound (default: calibrated)")
    p.add_argument("--percentile", type=float, default=95.0, help="cap calibration percentile")


def _load_vector(path: str, model):
    from pathlib import Path

    from personalens.vectors.vector import PersonaVector

    p = Path(path)
    if p.suffix == ".gguf":
        from personalens.vectors.control_vector import import_control_vector

        return import_control_vector(p, model=model)
    if p.is_dir():
        if not (p / "vector.json").exists():
            raise PersonaLensError(
                f"{p} holds no vector.json: is it a finished extraction run directory? "
                "(run `personalens extract ... --out DIR` to completion, or give a vector file)"
            )
        vector = PersonaVector.load(p / "vector")
        summary = p / "summary.json"
        if "best_layer" not in vector.metadata and summary.exists():
            best = json.loads(summary.read_text()).get("best_layer")
            if best is not None:
                vector = vector.replace(metadata={**vector.metadata, "best_layer": best})
        return vector
    return PersonaVector.load(p)


def _steering_kwargs(args: argparse.Namespace) -> dict:
    return {
        "positions": args.positions,
        "mode": args.mode,
        "coeff_scale": args.coeff_scale,
        "bound": args.bound,
        "percentile": args.percentile,
    }


def _steering_from_args(model, args: argparse.Namespace):
    from personalens.steering.steer import add_steering

    vector = _load_vector(args.vector, model)
    if args.mode == "add" and args.coeff is None:
        raise PersonaLensError("--mode add needs --coeff C (try --coeff 4 and adjust)")
    return add_steering(model, vector, args.coeff, layers=args.layer, **_steering_kwargs(args))


def _side_by_side(left: str, right: str, titles: tuple[str, str]) -> str:
    import shutil
    import textwrap
    from itertools import zip_longest

    width = max(30, (shutil.get_terminal_size((120, 20)).columns - 3) // 2)

    def wrap(text: str) -> list[str]:
        lines: list[str] = []
        for para in text.splitlines() or [""]:
            lines.extend(textwrap.wrap(para, width) or [""])
        return lines

    rows = [f"{titles[0]:<{width}} | {titles[1]}", f"{'-' * width}-+-{'-' * width}"]
    for a, b in zip_longest(wrap(left), wrap(right), fillvalue=""):
        rows.append(f"{a:<{width}} | {b}")
    return "\n".join(rows)


def cmd_steer(args: argparse.Namespace) -> int:
    from personalens.model.generation import GenerationConfig, generate

    model = _load(args)
    config = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
        progress=False,
    )
    plain = generate(model, args.prompt, config, system=args.system, backend=args.backend).responses
    handle = _steering_from_args(model, args)
    try:
        steered = generate(
            model, args.prompt, config, system=args.system, backend=args.backend
        ).responses
    finally:
        handle.remove()
    desc = handle.plan.description
    label = f"steered ({desc['mode']}, layer {','.join(map(str, desc['layers']))}"
    label += (
        f", coeff {','.join(f'{c:g}' for c in desc['coeff'])})" if desc["mode"] == "add" else ")"
    )
    for prompt, a, b in zip(args.prompt, plain, steered):
        if args.format == "json":
            print(json.dumps({"prompt": prompt, "unsteered": a, "steered": b, "steering": desc}))
        else:
            print(f"\n>>> {prompt}\n")
            print(_side_by_side(a, b, ("unsteered", label)))
    return 0


def cmd_sweep_steer(args: argparse.Namespace) -> int:
    from pathlib import Path

    from personalens.judges.factory import make_judge
    from personalens.model.generation import GenerationConfig
    from personalens.plot.figures import plot_steering_heatmap, plot_steering_sweep, save_html
    from personalens.studies.steering_sweep import steering_sweep

    shard = _shard(args)
    model = _load(args)
    vector = _load_vector(args.vector, model)
    prompts = None
    if args.prompts_file:
        prompts = [
            line.strip()
            for line in Path(args.prompts_file).read_text().splitlines()
            if line.strip()
        ]
    judge_kwargs = {}
    if args.judge == "openai":
        judge_kwargs = {"base_url": args.judge_base_url, "model": args.judge_model}
    layers = args.layers
    if layers is None:
        best = vector.metadata.get("best_layer")
        if best is None:
            raise PersonaLensError("give --layers L [L ...]: this vector records no best layer")
        layers = [int(best)]
    result = steering_sweep(
        model,
        vector,
        prompts,
        layers=layers,
        coeffs=args.coeffs,
        trait=args.trait,
        judge=make_judge(args.judge, **judge_kwargs),
        system=args.system,
        generation=GenerationConfig(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            n=args.n_per_prompt,
            seed=args.seed,
            batch_size=args.batch_size,
        ),
        mode=args.mode,
        positions=args.positions,
        coeff_scale=args.coeff_scale,
        out=args.out,
        progress=not args.quiet,
        backend=args.backend,
        shard=shard,
    )
    if shard is not None and not shard.is_leader:
        print(f"shard {shard}: done; worker 0 writes the tables and figures")
        return 0
    out = Path(args.out)
    table = result.summary()
    from personalens._io import atomic_write_text

    atomic_write_text(out / "sweep.csv", table.to_csv(index=False))
    save_html(plot_steering_sweep(result), out / "sweep.html")
    save_html(plot_steering_heatmap(result), out / "heatmap.html")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.1f}"))
    print(f"\nwrote {out / 'sweep.csv'}, {out / 'sweep.html'}, {out / 'heatmap.html'}")
    return 0


def cmd_traits(args: argparse.Namespace) -> int:
    from personalens.extraction.traits import list_traits, load_trait

    if args.traits_command == "new":
        return cmd_traits_new(args)
    if args.traits_command == "show":
        print(json.dumps(load_trait(args.name).to_dict(), indent=2, ensure_ascii=False))
        return 0
    for name in list_traits():
        trait = load_trait(name)
        extract_q, eval_q = trait.split_questions()
        print(
            f"{name:18s} {trait.n_pairs} pairs, {len(extract_q)}+{len(eval_q)} questions  {trait.description}"
        )
    return 0


def cmd_traits_new(args: argparse.Namespace) -> int:
    from pathlib import Path

    from personalens.extraction.traits import save_trait
    from personalens.judges.openai_api import APIConfig, generate_trait_artifact

    config = APIConfig.from_env(base_url=args.base_url, model=args.judge_model)
    data = generate_trait_artifact(args.name, args.description, config=config)
    out = Path(args.out) if args.out else Path("traits") / f"{args.name}.json"
    if out.exists() and not args.force:
        print(f"personalens: error: {out} exists; pass --force to overwrite", file=sys.stderr)
        return 2
    save_trait(data, out)
    print(str(out))
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from personalens.extraction.pipeline import ExtractionConfig, extract
    from personalens.extraction.traits import load_trait
    from personalens.judges.factory import make_judge

    if bool(args.trait) == bool(args.trait_file):
        print(
            "personalens: error: give exactly one of --trait NAME or --trait-file PATH",
            file=sys.stderr,
        )
        return 2
    trait = load_trait(args.trait_file or args.trait)
    judge_kwargs = {}
    if args.judge == "openai":
        judge_kwargs = {"base_url": args.judge_base_url, "model": args.judge_model}
    judge = make_judge(args.judge, **judge_kwargs)
    config = ExtractionConfig(
        n_per_question=args.n_per_question,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
        threshold=args.threshold,
        pairs=tuple(args.pairs) if args.pairs else None,
        generation_batch_size=args.batch_size,
        max_questions=args.max_questions,
    )
    shard = _shard(args)
    model = _load(args)
    result = extract(
        model,
        trait,
        judge,
        config,
        run_dir=args.out,
        progress=not args.quiet,
        backend=args.backend,
        shard=shard,
    )
    s = result.summary
    print(
        json.dumps(
            {
                k: s[k]
                for k in (
                    "trait",
                    "model",
                    "judge",
                    "n_pos",
                    "n_neg",
                    "best_layer",
                    "best_auc",
                    "timings_s",
                )
            }
        )
    )
    return 0


# ----------------------------------------------------------------------------- layer sweep


def cmd_sweep(args: argparse.Namespace) -> int:
    """Per-layer AUC (with bootstrap CIs) of finished extraction runs: JSON, HTML and best layers."""
    import os
    from pathlib import Path

    from personalens.plot.figures import plot_layer_sweep, save_html
    from personalens.studies.layer_sweep import layer_sweep

    runs = [Path(r) for r in args.run]
    results = [
        layer_sweep(
            run,
            variants=args.variants,
            n_boot=args.n_boot,
            ci=args.ci,
            seed=args.seed,
            split=args.split,
        )
        for run in runs
    ]  # every run is read (and may fail) before anything is written
    labels = [r.trait for r in results]
    if len(set(labels)) < len(labels):
        labels = [f"{r.trait} ({run.name})" for r, run in zip(results, runs)]
    out = Path(args.out) if args.out else None
    if len(runs) == 1:
        json_paths = [(out or runs[0]) / "layer_sweep.json"]
        html_path = (out or runs[0]) / "layer_sweep.html"
    else:
        if out is not None:
            names = [run.resolve().name for run in runs]
            if len(set(names)) < len(names):
                names = [f"{n}_{i + 1}" for i, n in enumerate(names)]
            json_paths = [out / f"layer_sweep_{n}.json" for n in names]
        else:
            json_paths = [run / "layer_sweep.json" for run in runs]
        common = Path(os.path.commonpath([str(run.resolve()) for run in runs]))
        html_path = (out or common) / "layer_sweep.html"
    for result, path in zip(results, json_paths):
        result.save(path)
    first = results[0]
    variant = "response_avg" if "response_avg" in first.variants else first.variants[0]
    save_html(plot_layer_sweep(dict(zip(labels, results)), variant), html_path)
    width = max(len(label) for label in labels)
    for label, result in zip(labels, results):
        for v in result.variants:
            b = result.best(v)
            ci = f" [{b['auc_ci'][0]:.3f}, {b['auc_ci'][1]:.3f}]" if b["auc_ci"] else ""
            print(
                f"{label:<{width}}  {v:<17}  best layer {b['layer']:>3}  AUC {b['auc']:.3f}{ci}"
                f"  d {b['cohens_d']:.2f}  (n {b['n_pos']} pos / {b['n_neg']} neg, "
                f"{result.evaluated_on})"
            )
    print(f"wrote {', '.join(str(p) for p in json_paths)}, {html_path}")
    return 0


# ----------------------------------------------------------------------------- screening (ΔP)


def cmd_screen(args: argparse.Namespace) -> int:
    """ΔP of every sample of one or more datasets; tables, summaries and an overlay histogram."""
    from pathlib import Path

    from personalens._io import atomic_write_text
    from personalens.model.generation import GenerationConfig
    from personalens.plot.figures import plot_screening_histogram, save_html
    from personalens.studies.screening import load_screening_data, screen

    files = [Path(f) for f in args.data]
    for f in files:  # every file parses (and may fail) before the model loads
        load_screening_data(f)
    names = [f.stem for f in files]
    if len(set(names)) < len(names):
        names = [f"{n}_{i + 1}" for i, n in enumerate(names)]
    out = Path(args.out)
    dirs = [out] if len(files) == 1 else [out / n for n in names]
    shard = _shard(args)
    model = _load(args)
    vector = _load_vector(args.vector, model)
    layer = args.layer
    if layer is None:
        best = vector.metadata.get("best_layer")
        if best is None:
            raise PersonaLensError("give --layer L: this vector records no best layer")
        layer = int(best)
    generation = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=0.0)
    results = {}
    for name, f, d in zip(names, files, dirs):
        results[name] = screen(
            model,
            vector,
            f,
            layer=layer,
            out=d,
            generation=generation,
            batch_size=args.batch_size,
            name=name,
            progress=not args.quiet,
            backend=args.backend,
            shard=shard,
        )
    if shard is not None and not shard.is_leader:
        print(f"shard {shard}: done; worker 0 writes the tables and the figure")
        return 0
    html = out / "screening.html"
    save_html(plot_screening_histogram(results), html)
    if len(files) > 1:
        import pandas as pd

        table = pd.DataFrame([{"dataset": n, **r.summary()} for n, r in results.items()])
        table = table.drop(columns=["name", "quantiles"])
        atomic_write_text(out / "datasets.csv", table.to_csv(index=False))
    for (name, result), d in zip(results.items(), dirs):
        top = ", ".join(str(i) for i in result.top(5)["id"])
        print(
            f"{name}: n={len(result)} mean ΔP {result.mean:+.4g} (std {result.std:.4g}, layer "
            f"{result.layer}); top 5 ids: {top}  [{d / 'scores.csv'}]"
        )
    print(f"wrote {html}")
    return 0


def _add_screen_parser(sub) -> None:
    p = sub.add_parser(
        "screen",
        help="score dataset samples by projection difference ΔP (dataset reply minus the "
        "model's own, on the persona vector); resumable",
    )
    _add_model_args(p)
    _add_backend_arg(p)
    p.add_argument(
        "--vector",
        required=True,
        help="a persona vector: an extraction run directory, a .json/.safetensors pair, "
        "or a llama.cpp control-vector .gguf",
    )
    p.add_argument(
        "--data",
        action="extend",
        nargs="+",
        required=True,
        help=".jsonl (chat 'messages', last = the response; or 'prompt'/'answer') or .csv "
        "('prompt', 'answer'; optional 'id', 'system'). Several: one subfolder each, one "
        "overlaid histogram",
    )
    p.add_argument(
        "--layer", type=int, default=None, help="layer L (default: the vector's best layer)"
    )
    p.add_argument(
        "--out", required=True, help="output directory (rerun the same command to resume)"
    )
    p.add_argument(
        "--max-new-tokens", type=int, default=128, help="length of the model's own (greedy) reply"
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_shard_args(p)
    p.set_defaults(func=cmd_screen)


# ----------------------------------------------------------------------------- questionnaires


def cmd_questionnaire(args: argparse.Namespace) -> int:
    """One JSON object: the per-dimension scores, then `_stats` and `_meta`."""
    from personalens.studies.personality.questionnaire import (
        load_questionnaire,
        score_questionnaire,
    )

    if args.file and args.name:
        raise PersonaLensError("give --file PATH or --name NAME, not both")
    # the questionnaire is validated before the model loads
    questionnaire = load_questionnaire(args.file or args.name or "big_five")
    model = _load(args)
    steering = None
    if args.vector:
        from personalens.steering.steer import plan_steering

        vector = _load_vector(args.vector, model)
        if args.mode == "add" and args.coeff is None:
            raise PersonaLensError("--mode add needs --coeff C (try --coeff 4 and adjust)")
        steering = plan_steering(
            model, vector, args.coeff, layers=args.layer, **_steering_kwargs(args)
        )
    judge = None
    if args.method == "judge":
        from personalens.judges.factory import make_judge

        judge = make_judge("openai", base_url=args.judge_base_url, model=args.judge_model)
    result = score_questionnaire(
        model,
        questionnaire,
        steering=steering,
        system=args.system,
        method=args.method,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        judge=judge,
    )
    full = result.to_dict()
    out = dict(full["scores"])  # dimension names are lowercase identifiers: no clash with _keys
    out["_stats"] = full["dimensions"]
    out["_meta"] = {
        "questionnaire": result.questionnaire,
        "method": result.method,
        "mean_scale_mass": full["mean_scale_mass"],
        **{k: v for k, v in result.settings.items() if k != "scale"},
    }
    print(json.dumps(out))
    return 0


def _add_questionnaire_parser(sub) -> None:
    p = sub.add_parser(
        "questionnaire",
        help="answer a Likert questionnaire (default: the shipped Big Five items) and print "
        "per-dimension scores as one JSON object",
    )
    _add_model_args(p)
    p.add_argument("--file", default=None, help="a questionnaire JSON file")
    p.add_argument("--name", default=None, help="a shipped questionnaire (default: big_five)")
    p.add_argument("--system", default=None, help="system prompt for every item")
    p.add_argument(
        "--method",
        choices=["logprob", "generate", "judge", "likelihood"],
        default="logprob",
        help="logprob: next-token probabilities of the scale answers (no judge); generate: "
        "greedy reply parsed strictly (unparseable = NaN); judge: reply rated by an "
        "OpenAI-compatible LLM judge; likelihood: mean log-prob of each statement as the "
        "model's self-description, scored per dimension as forward - reverse (nats/token, "
        "not on the Likert scale)",
    )
    p.add_argument("--judge-base-url", default=None)
    p.add_argument("--judge-model", default=None)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=32, help="generate/judge reply length")
    _add_steering_args(p, required=False)
    p.set_defaults(func=cmd_questionnaire)


# ----------------------------------------------------------------------------- SAE decomposition


def cmd_decompose(args: argparse.Namespace) -> int:
    """Top-k SAE features of a persona vector: JSON, CSV and HTML; optionally top contexts."""
    import html as html_lib
    from pathlib import Path

    from personalens._io import atomic_write_text
    from personalens.plot.figures import plot_sae_cosines, save_html
    from personalens.sae.contexts import feature_contexts
    from personalens.sae.decompose import decompose
    from personalens.sae.load import load_sae

    vector_path = Path(args.vector)
    run = Path(args.run) if args.run else None
    if run is None and vector_path.is_dir() and (vector_path / "summary.json").is_file():
        run = vector_path  # a run directory as --vector also gives the activations
    if args.contexts and run is None and not args.corpus:
        raise PersonaLensError(
            "--contexts needs a corpus: --run RUN_DIR (its responses) and/or --corpus FILE ..."
        )
    model = _load(args) if args.contexts or vector_path.suffix == ".gguf" else None
    vector = _load_vector(args.vector, model)
    check = model if model is not None else vector
    layers = args.layer or [None]
    saes = {}
    for layer in layers:
        sae = load_sae(args.sae, layer=layer, model=check, device=args.device)
        saes[sae.layer] = sae
    dec = decompose(
        vector,
        saes,
        k=args.k,
        k_anti=args.k_anti,
        activations=run,
        model=model,
        rank_by=args.rank_by,
    )
    out = Path(args.out)
    dec.save(out / "decomposition.json")
    table = dec.to_frame()
    atomic_write_text(out / "decomposition.csv", table.to_csv(index=False))
    save_html(plot_sae_cosines(dec), out / "decomposition.html")
    written = ["decomposition.json", "decomposition.csv", "decomposition.html"]
    if args.contexts:
        import pandas as pd

        corpus = ([run] if run is not None else []) + [Path(c) for c in args.corpus or []]
        frames, blocks = [], []
        for layer, sae in saes.items():
            ctx = feature_contexts(
                model, sae, layer, dec, corpus, n=args.contexts_n, progress=not args.quiet
            )
            frames.append(ctx.to_frame().assign(layer=layer))
            blocks.append(ctx.to_html())
        atomic_write_text(out / "contexts.csv", pd.concat(frames).to_csv(index=False))
        title = html_lib.escape(f"Top-activating contexts: {dec.trait}")
        page = (
            f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title></head>'
            f"<body><h2>{title}</h2>" + "<hr>".join(blocks) + "</body></html>\n"
        )
        atomic_write_text(out / "contexts.html", page)
        written += ["contexts.csv", "contexts.html"]
    cols = [c for c in ("layer", "direction", "rank", "feature", "cosine", "attribution",
                        "attribution_samples") if c in table.columns]  # fmt: skip
    print(table[cols].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if run is not None:
        print(f"\nattributions from {dec.settings['activations']}")
    print(f"wrote {', '.join(str(out / w) for w in written)}")
    return 0


def _add_decompose_parser(sub) -> None:
    p = sub.add_parser(
        "decompose",
        help="top-k SAE features of a persona vector by decoder cosine (JSON, CSV, HTML), "
        "with activation attributions and top-activating contexts",
    )
    _add_model_args(p)
    p.add_argument(
        "--vector",
        required=True,
        help="a persona vector: an extraction run directory (also used for attributions), a "
        ".json/.safetensors pair, or a llama.cpp control-vector .gguf",
    )
    p.add_argument(
        "--sae",
        required=True,
        help="an SAE directory (cfg.json + sae_weights.safetensors), a folder of "
        "blocks.L.hook_resid_post SAE directories, or 'embedded' (shipped with personalens)",
    )
    p.add_argument(
        "--layer",
        type=int,
        nargs="+",
        default=None,
        help="layer(s) (blocks.L.hook_resid_post; default: the SAE's own layer)",
    )
    p.add_argument("--k", type=int, default=20, help="most aligned features per layer")
    p.add_argument(
        "--k-anti", type=int, default=None, help="most anti-aligned features (default: --k)"
    )
    p.add_argument(
        "--rank-by",
        choices=["cosine", "attribution", "attribution_samples"],
        default="cosine",
        help="score that picks the top features (attributions need --run)",
    )
    p.add_argument(
        "--run",
        default=None,
        help="extraction run directory for the activation attributions (default: --vector "
        "when it is a run directory)",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--contexts",
        action="store_true",
        help="also find each feature's top-activating tokens (loads the model) in the run's "
        "responses and the --corpus files",
    )
    p.add_argument("--corpus", nargs="+", default=None, help="text files for --contexts")
    p.add_argument("--contexts-n", type=int, default=10, help="examples per feature")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_decompose)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="personalens", description="Persona vectors on TransformerLens."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="print the model's shape and hook convention as JSON")
    _add_model_args(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("chat", help="chat with the model (reads stdin; works from a pipe)")
    _add_model_args(p)
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--format",
        choices=["text", "jsonl"],
        default="text",
        help="jsonl: one JSON object per reply, for scripts (replies may span lines)",
    )
    _add_steering_args(p, required=False, multi=True)
    p.add_argument(
        "--dynamic",
        action="store_true",
        help="predict-then-steer: before each reply choose a coefficient per --vector",
    )
    p.add_argument(
        "--target",
        action="append",
        default=None,
        metavar="NAME=VALUE",
        help="with --dynamic: target level in [-1, 1] of a trait (repeatable)",
    )
    p.add_argument("--policy", choices=["projection", "llm"], default="projection")
    p.add_argument(
        "--max-coeff", type=float, default=4.0, help="with --dynamic: coefficient at adjustment 1"
    )
    p.add_argument(
        "--target-sd",
        type=float,
        default=2.0,
        help="projection policy: target +1 = this many neutral-prompt std above the mean",
    )
    p.add_argument(
        "--one-sided",
        action="store_true",
        help="projection policy: a target is a floor (>0) or ceiling (<0), never pushed back",
    )
    p.add_argument("--judge-base-url", default=None, help="--policy llm: OpenAI-compatible URL")
    p.add_argument("--judge-model", default=None, help="--policy llm: model name")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("steer", help="print unsteered and steered completions side by side")
    _add_model_args(p)
    _add_backend_arg(p)
    _add_steering_args(p, required=True)
    p.add_argument("--prompt", action="append", required=True, help="user prompt (repeatable)")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_steer)

    p = sub.add_parser(
        "sweep-steer",
        help="steer at every (layer, coeff), judge trait and coherence; write table and figures",
    )
    _add_model_args(p)
    _add_backend_arg(p)
    _add_steering_args(p, required=True, sweep=True)
    p.add_argument(
        "--layers", type=int, nargs="+", default=None, help="default: the vector's best layer"
    )
    p.add_argument(
        "--coeffs", type=float, nargs="+", required=True, help="coefficients (0 = unsteered)"
    )
    p.add_argument("--out", required=True, help="output directory (rerun to resume)")
    p.add_argument("--trait", default=None, help="trait to judge (default: the vector's trait)")
    p.add_argument(
        "--prompts-file", default=None, help="one prompt per line (default: held-out questions)"
    )
    p.add_argument("--system", default=None)
    p.add_argument("--judge", choices=["offline", "openai", "auto"], default="auto")
    p.add_argument("--judge-base-url", default=None)
    p.add_argument("--judge-model", default=None)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--n-per-prompt", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--quiet", action="store_true")
    _add_shard_args(p)
    p.set_defaults(func=cmd_sweep_steer)

    p = sub.add_parser(
        "traits", help="list the shipped traits; `traits new` writes one with an LLM"
    )
    p.set_defaults(func=cmd_traits, traits_command=None)
    tsub = p.add_subparsers(dest="traits_command")
    show = tsub.add_parser("show", help="print a trait file")
    show.add_argument("name")
    new = tsub.add_parser("new", help="write a new trait file with an LLM (OpenAI-compatible API)")
    new.add_argument("name")
    new.add_argument("--description", required=True, help="what the trait is, in a sentence or two")
    new.add_argument("--out", default=None, help="output path (default: traits/NAME.json)")
    new.add_argument(
        "--base-url",
        default=None,
        help="OpenAI-compatible base URL (env PERSONALENS_JUDGE_BASE_URL)",
    )
    new.add_argument("--judge-model", default=None, help="model name (env PERSONALENS_JUDGE_MODEL)")
    new.add_argument("--force", action="store_true")

    p = sub.add_parser("extract", help="extract a persona vector into a resumable run directory")
    _add_model_args(p)
    _add_backend_arg(p)
    p.add_argument("--trait", default=None, help="a shipped trait name (see `personalens traits`)")
    p.add_argument("--trait-file", default=None, help="a trait JSON file")
    p.add_argument("--out", required=True, help="run directory (rerun the same command to resume)")
    p.add_argument(
        "--judge",
        choices=["offline", "openai", "auto"],
        default="auto",
        help="auto: openai when PERSONALENS_JUDGE_BASE_URL or OPENAI_API_KEY is set, else offline",
    )
    p.add_argument("--judge-base-url", default=None)
    p.add_argument("--judge-model", default=None)
    p.add_argument("--n-per-question", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", type=float, default=50.0)
    p.add_argument(
        "--pairs", type=int, nargs="*", default=None, help="instruction pairs to use (default all)"
    )
    p.add_argument("--batch-size", type=int, default=32, help="generation batch size")
    p.add_argument(
        "--max-questions", type=int, default=None, help="use the first N questions of each split"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_shard_args(p)
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser(
        "sweep",
        help="per-layer AUC with bootstrap CIs of finished extraction runs (JSON + HTML figure)",
    )
    p.add_argument(
        "--run",
        action="extend",
        nargs="+",
        required=True,
        metavar="DIR",
        help="extraction run directory (several overlay their traits in one figure)",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        choices=["response_avg", "prompt_avg", "last_prompt_token"],
        default=None,
        metavar="VARIANT",
        help="response_avg, prompt_avg and/or last_prompt_token (default: all three)",
    )
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (0: no CIs)")
    p.add_argument("--ci", type=float, default=0.95, help="interval coverage")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument(
        "--split",
        choices=["heldout", "extract"],
        default="heldout",
        help="heldout: the samples summary.json's layer_auc uses; extract: the kept extraction "
        "pairs (in-sample)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="output directory (default: the run directory; with several runs, each run's "
        "JSON goes to its own directory and the figure to their common parent)",
    )
    p.set_defaults(func=cmd_sweep)
    _add_screen_parser(sub)
    _add_questionnaire_parser(sub)
    _add_decompose_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PersonaLensError as exc:
        print(f"personalens: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
