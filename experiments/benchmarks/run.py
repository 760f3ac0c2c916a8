"""`make bench`: personalens's throughput side by side with the references, in one run.

On the same model and the same tokens it times

* extraction (tokens/s): the Persona Vectors reference loop (one sample per forward,
  ``output_hidden_states``, per-layer ``.cpu()``), an HF batched forward with and without hidden
  states, TL ``run_with_cache`` of every ``resid_post``, and ours (``collect_activations``, and
  its ``backend="hf"`` when this checkout has one), against the compute bound on a known GPU;
* screening (samples/s): ``personalens.screen`` end to end, and its projection phase against
  an HF forward over the same sequences;
* generation (new tokens/s, greedy, fixed length): ours unsteered and under ``steer`` at one
  middle layer, HF ``generate`` without and with a steering forward hook, against the
  memory-bandwidth bound on a known GPU.

Default model: the embedded SmolLM2-135M-Instruct and its HF twin, on the CPU, with sizes
that finish in a few minutes on 2 cores. ``--shape qwen2.5-7b --device cuda`` builds a
random-weight model of that real shape (bf16) instead; see shapes.py and README.md here.
Prints a table headed by the device and writes JSON (``--out``). Ratios are the headline;
absolute numbers only mean something with the device named.
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from experiments.benchmarks import cases, shapes  # noqa: E402
from personalens._io import atomic_write_json  # noqa: E402

# Default sizes: the on a GPU (64 samples of 80 prompt + 200 response tokens; generation
# of 128 new tokens after 80-token prompts, batch 32); a few minutes on 2 CPU cores; a smoke run.
# Every size can be overridden by its flag (--n-samples, --new-tokens, ...).
SIZES: dict[str, dict[str, int]] = {
    "gpu": dict(
        n_samples=64, prompt_tokens=80, response_tokens=200, batch=32,
        gen_batch=32, gen_prompt_tokens=80, new_tokens=128,
        screen_samples=64, screen_reply_tokens=128, repeats=3,
    ),
    "cpu": dict(
        n_samples=8, prompt_tokens=48, response_tokens=96, batch=4,
        gen_batch=4, gen_prompt_tokens=48, new_tokens=24,
        screen_samples=8, screen_reply_tokens=16, repeats=2,
    ),
    "quick": dict(
        n_samples=2, prompt_tokens=36, response_tokens=12, batch=2,
        gen_batch=2, gen_prompt_tokens=36, new_tokens=4,
        screen_samples=2, screen_reply_tokens=2, repeats=1,
    ),
}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--shape", help=f"random-weight model of a real shape: {', '.join(shapes.SHAPES)}"
    )
    ap.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)"
    )
    ap.add_argument("--dtype", default=None, help="default bf16 on cuda, fp32 on cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of ~30 s")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per row after 1 warm-up")
    ap.add_argument("--stat", choices=("best", "median"), default="best", help="time per row")
    for name in (
        "n_samples", "prompt_tokens", "response_tokens", "batch", "gen_batch",
        "gen_prompt_tokens", "new_tokens", "screen_samples", "screen_reply_tokens",
    ):  # fmt: skip
        ap.add_argument("--" + name.replace("_", "-"), type=int, default=None)
    ap.add_argument("--coeff", type=float, default=4.0, help="steering coefficient (raw)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="for the compute bound")
    ap.add_argument("--peak-gbps", type=float, default=None, help="for the bandwidth bound")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out", default=None, help="JSON path (default runs/bench/bench-<device>[-<shape>].json)"
    )
    return ap.parse_args(argv)


def resolve_sizes(args: argparse.Namespace, device: str) -> dict[str, int]:
    base = "quick" if args.quick else ("gpu" if device.startswith("cuda") else "cpu")
    sizes = dict(SIZES[base])
    for key in sizes:
        given = getattr(args, key, None)
        if given is not None:
            sizes[key] = given
    return sizes


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "transformer-lens", "personalens"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    out["torch"] = torch.__version__
    return out


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def print_report(result: dict[str, Any]) -> None:
    dev, v, m, s = result["device"], result["versions"], result["model"], result["sizes"]
    print()
    print(f"personalens benchmark on {dev['words']}")
    print(
        f"torch {v['torch']} | transformers {v['transformers']} | transformer_lens "
        f"{v['transformer-lens']} | python {v['python']}"
    )
    print(
        f"model {m['name']} ({m['source']}), {m['dtype']}, {m['n_layers']} layers, d_model "
        f"{m['d_model']}, {m['params'] / 1e6:.1f}M params ({fmt_bytes(m['weight_bytes'])}); "
        f"HF attention {m['hf_attention']}"
    )
    print(
        f"extraction {s['n_samples']} samples x ({s['prompt_tokens']} prompt + "
        f"{s['response_tokens']} response) tokens, batch {s['batch']} | screening "
        f"{s['screen_samples']} samples, replies of {s['screen_reply_tokens']} tokens | generation "
        f"batch {s['gen_batch']} x ({s['gen_prompt_tokens']} prompt + {s['new_tokens']} new) tokens, "
        f"steering at layer {result['steer_layer']} | {s['repeats']} timed run(s) after 1 warm-up, "
        f"{result['stat']}"
    )
    print()
    w = max(len(c["comparison"]) for c in result["comparisons"]) if result["comparisons"] else 40
    print(f"{'comparison':{w}s} {'ratio':>8s} {'ours':>10s} {'reference':>10s}  unit")
    for c in result["comparisons"]:
        print(
            f"{c['comparison']:{w}s} {c['ratio']:7.2f}x {c['ours']:10.1f} {c['reference']:10.1f}  "
            f"{c['unit']}"
        )
    print()
    w = max(len(r["label"]) for r in result["rows"])
    mem = "peak mem (over start)" if dev["kind"] == "cuda" else "process max RSS"
    print(f"{'row':{w}s} {'value':>10s}  {'unit':12s} {'time s':>8s}  {mem}")
    for r in result["rows"]:
        if r["value"] is None:
            print(
                f"{r['label']:{w}s} {'-':>10s}  {r['unit']:12s} {'':>8s}  skipped: {r['skipped']}"
            )
            continue
        t = cases.pick(r["seconds"], result["stat"]) if r["seconds"] else None
        mm = r["memory"]
        if mm.get("kind") == "cuda_peak_allocated":
            mtxt = f"{fmt_bytes(mm['peak_bytes'])} ({fmt_bytes(mm['peak_over_start_bytes'])})"
        else:
            mtxt = fmt_bytes(mm.get("peak_bytes"))
        ttxt = f"{t:8.3f}" if t is not None else f"{'':>8s}"
        print(f"{r['label']:{w}s} {r['value']:10.1f}  {r['unit']:12s} {ttxt}  {mtxt}")
    b = result["model"]["build"]
    steps = [
        f"{k} {fmt_bytes(v.get('allocated', v.get('max_rss')))}"
        for k, v in b.items()
        if isinstance(v, dict)
    ]
    where = "device memory allocated" if dev["kind"] == "cuda" else "process max RSS"
    print(f"model build ({where}): " + ", ".join(steps))


def run_suite(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the whole suite; print the table; write and return the JSON result."""
    import personalens as pl
    from personalens.model.load import resolve_device, resolve_dtype

    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    sizes = resolve_sizes(args, device)
    t_start = time.perf_counter()

    pair = (
        shapes.build_random(args.shape, device, dtype, args.seed)
        if args.shape
        else shapes.load_embedded(device, dtype)
    )
    dev_info = shapes.describe_device(device)
    stats = shapes.weight_stats(pair.hf)
    peaks = shapes.known_peaks(dev_info, dtype)
    peak_tflops = args.peak_tflops if args.peak_tflops is not None else peaks["tflops"]
    tflops_source = "--peak-tflops" if args.peak_tflops is not None else "table of known GPUs"
    if peak_tflops is None and dev_info["kind"] == "cpu":
        # no spec sheet for a CPU: the attainable peak is a large matmul timed right here
        n = 1024 if args.quick else 2048
        peak_tflops = shapes.measured_cpu_peak(dtype, n)
        tflops_source = f"measured: best {n}^3 matmul in {str(dtype).removeprefix('torch.')}"
    peak_gbps = args.peak_gbps if args.peak_gbps is not None else peaks["gbps"]
    bench = cases.Bench(pair, repeats=sizes["repeats"], stat=args.stat, seed=args.seed)
    cfg = pair.tl.cfg
    g = torch.Generator().manual_seed(args.seed)
    directions = torch.randn(cfg.n_layers, cfg.d_model, generator=g)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    vector = pl.PersonaVector(
        directions, model=cfg.model_name, trait="bench-random", metadata={"best_layer": bench.mid}
    )

    result: dict[str, Any] = {
        "format": "personalens.bench",
        "version": 1,
        "complete": False,
        "device": dev_info,
        "versions": versions(),
        "model": {
            "name": pair.name,
            "source": pair.source,
            "shape": args.shape,
            "shape_config": shapes.SHAPES.get(args.shape) if args.shape else None,
            "dtype": str(dtype).removeprefix("torch."),
            "n_layers": cfg.n_layers,
            "d_model": cfg.d_model,
            "n_heads": cfg.n_heads,
            "d_vocab": cfg.d_vocab,
            "hf_attention": getattr(pair.hf.config, "_attn_implementation", None),
            **stats,
            "build": pair.build,
        },
        "sizes": sizes,
        "stat": args.stat,
        "steer_layer": bench.mid,
        "coeff": args.coeff,
        "peaks": {"tflops": peak_tflops, "tflops_source": tflops_source, "gbps": peak_gbps},
        "config": vars(args),
        "formulas": {
            "flops_per_token": "2*matmul_params + 2*n_layers*n_heads*d_head*(T+1); matmul_params = "
            "weights of every nn.Linear incl. the LM head; T = prompt+response tokens",
            "bandwidth_bound": "gen_batch * peak_GBps / bytes_per_decode_step (all weights except "
            "an untied input embedding table; KV-cache reads ignored)",
            "memory": "cuda: torch.cuda.max_memory_allocated during the row (reset before it); "
            "cpu: ru_maxrss of the whole process, a high-water mark that only grows",
        },
    }
    out = Path(
        args.out
        or f"runs/bench/bench-{dev_info['slug']}{'-' + args.shape if args.shape else ''}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[cases.Row] = []

    def save(complete: bool) -> None:
        """Write what is measured so far: a run cut off by a time limit still leaves its rows."""
        result.update(
            complete=complete,
            rows=[r.to_json() for r in rows],
            comparisons=cases.comparisons(rows),
            wall_seconds=round(time.perf_counter() - t_start, 1),
        )
        atomic_write_json(out, result)

    print(f"[bench] {pair.name} on {dev_info['words']}: extraction ...", flush=True)
    data = cases.pair_data(
        pair, sizes["n_samples"], sizes["prompt_tokens"], sizes["response_tokens"], args.seed
    )
    rows += cases.extraction_rows(bench, data, sizes["batch"])
    seq_len = sizes["prompt_tokens"] + sizes["response_tokens"]
    rows.append(cases.compute_bound_row(pair, seq_len, stats, peak_tflops, tflops_source))
    save(False)

    print("[bench] screening ...", flush=True)
    sdata = cases.screen_data(
        pair, sizes["screen_samples"], sizes["prompt_tokens"], sizes["response_tokens"], args.seed
    )
    rows += cases.screening_rows(bench, sdata, sizes["batch"], sizes["screen_reply_tokens"], vector)
    save(False)

    print("[bench] generation ...", flush=True)
    rng = random.Random(args.seed + 2)
    convs, p_ids = cases.texts_of_length(
        pair.tokenizer, sizes["gen_batch"], sizes["gen_prompt_tokens"], rng, chat=True
    )
    rows += cases.generation_rows(bench, convs, p_ids, sizes["new_tokens"], directions, args.coeff)
    rows.append(cases.bandwidth_bound_row(sizes["gen_batch"], stats, peak_gbps))
    save(True)
    print_report(result)
    print(f"\nwrote {out} ({result['wall_seconds']} s)")
    return result


def main() -> None:
    run_suite()


if __name__ == "__main__":
    main()
