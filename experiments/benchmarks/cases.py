"""The benchmark cases: each times ours and the references on the very same tokens.

Every case returns :class:`Row` objects (one throughput each); :func:`comparisons` turns them
into the headline ratios. Timing: one warm-up run on the first batch (the same shapes as the
timed runs), then ``repeats`` timed runs, ``torch.cuda.synchronize()`` around each on a GPU.
Memory per row: on CUDA the peak allocated during the row (``max_memory_allocated`` reset
before it) minus what was allocated before it (the weights), and the absolute peak; on the
CPU only the process-wide peak RSS so far (``ru_maxrss``, it never goes down), which is coarse.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import personalens as pl
from personalens.model.chat import batch_from_ids, encode_chat, encode_response, pad_id

from .shapes import ModelPair, memory_now, sync

# single-token words of common BPE vocabularies (leading space); checked against the tokenizer
_WORDS = (
    " the", " a", " of", " and", " to", " in", " is", " it", " for", " on", " with", " as",
    " was", " be", " at", " by", " this", " from", " or", " an",
)  # fmt: skip
_LETTERS = tuple("abcdefghijklmnopqrstuvwxyz")


# ----------------------------------------------------------------------------- rows


@dataclass
class Row:
    """One measured (or bounding) throughput."""

    group: str  # extraction | screening | generation
    key: str
    label: str
    unit: str
    value: float | None = None  # work / chosen time (best or median)
    work: float = 0.0  # units of work per run (tokens, new tokens or samples)
    seconds: list[float] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    skipped: str | None = None  # why there is no value
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Bench:
    """What every case needs: the models, the device and the timing settings."""

    pair: ModelPair
    repeats: int = 3
    stat: str = "best"  # best | median
    seed: int = 0

    @property
    def device(self) -> str:
        return self.pair.device

    @property
    def n_layers(self) -> int:
        return self.pair.tl.cfg.n_layers

    @property
    def mid(self) -> int:
        return self.n_layers // 2


def pick(seconds: list[float], stat: str) -> float:
    return min(seconds) if stat == "best" else statistics.median(seconds)


def measure(
    bench: Bench,
    row: Row,
    fn: Callable[[], Any],
    warmup: Callable[[], Any] | None = None,
) -> Any:
    """Warm up once, time ``bench.repeats`` runs of ``fn``; fill ``row``; return the last output."""
    dev = bench.device
    before = memory_now(dev)
    if dev.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    sync(dev)
    (warmup or fn)()
    sync(dev)
    out = None
    for _ in range(bench.repeats):
        sync(dev)
        t0 = time.perf_counter()
        out = fn()
        sync(dev)
        row.seconds.append(time.perf_counter() - t0)
    row.value = row.work / pick(row.seconds, bench.stat)
    after = memory_now(dev)
    if dev.startswith("cuda"):
        row.memory = {
            "kind": "cuda_peak_allocated",
            "peak_bytes": after["peak_allocated"],
            "peak_over_start_bytes": after["peak_allocated"] - before["allocated"],
        }
    else:
        row.memory = {"kind": "cpu_process_max_rss", "peak_bytes": after["max_rss"]}
    return out


def skipped(group: str, key: str, label: str, unit: str, why: str) -> Row:
    print(f"  note: row {label!r} skipped: {why}")
    return Row(group, key, label, unit, skipped=why)


def optional(
    rows: list[Row], row: Row, why_not: str | None, body: Callable[[Row], list[Row] | Any]
) -> None:
    """Measure an optional row with ``body(row)`` (it may return the rows to add instead).

    Without support (``why_not``) or when ``body`` raises, a skipped row that says why is added
    and the reason printed: the table shows every row it could not fill.
    """
    if why_not is None:
        try:
            made = body(row)
        except Exception as exc:  # a failure goes into the table, it does not end the suite
            why_not = f"failed: {type(exc).__name__}: {exc}"
        else:
            rows.extend(made if isinstance(made, list) else [row])
            return
    rows.append(skipped(row.group, row.key, row.label, row.unit, why_not))


def no_backend(fn: Callable[..., Any], config_cls: type | None = None) -> str | None:
    """Why ``fn`` cannot run with ``backend="hf"`` in this checkout, or None when it can."""
    if hf_backend_supported(fn, config_cls):
        return None
    return f"{fn.__name__} has no backend argument in this checkout"


# ----------------------------------------------------------------------------- data


def _pool(tokenizer: Any) -> tuple[str, ...]:
    """Text pieces that each encode to exactly one token (and stay one token when joined)."""
    words = tuple(w for w in _WORDS if len(tokenizer.encode(w, add_special_tokens=False)) == 1)
    if len(words) >= 8:
        return words
    letters = tuple(c for c in _LETTERS if len(tokenizer.encode(c, add_special_tokens=False)) == 1)
    if len(tokenizer.encode("abcabc", add_special_tokens=False)) == 6 and len(letters) >= 8:
        return letters  # a byte-level tokenizer without merges
    raise SystemExit("cannot build prompts of exact token lengths with this tokenizer")


def texts_of_length(
    tokenizer: Any, n: int, target: int, rng: random.Random, *, chat: bool
) -> tuple[list[Any], list[list[int]]]:
    """``n`` distinct texts (user turns when ``chat``) of exactly ``target`` tokens and their ids.

    A chat prompt's ``target`` counts the whole rendered conversation (template included).
    """
    pool = _pool(tokenizer)

    def encode(content: str) -> list[int]:
        if chat:
            return encode_chat(tokenizer, [{"role": "user", "content": content}])
        return encode_response(tokenizer, content)

    overhead = len(encode(""))
    if target <= overhead:
        raise SystemExit(
            f"a prompt of {target} tokens is too short: the chat template alone takes "
            f"{overhead}; ask for more prompt tokens"
        )
    items, ids = [], []
    for _ in range(n):
        pieces = [rng.choice(pool) for _ in range(target - overhead)]
        for _attempt in range(8):  # joins can merge or split tokens: adjust until exact
            got = encode("".join(pieces))
            if len(got) == target:
                break
            if len(got) > target:
                pieces = pieces[: len(pieces) - (len(got) - target)]
            else:
                pieces += [rng.choice(pool) for _ in range(target - len(got))]
        content = "".join(pieces)
        items.append([{"role": "user", "content": content}] if chat else content)
        ids.append(encode(content))
    return items, ids


@dataclass
class PairData:
    """(prompt, response) samples: chat prompts and random response token ids."""

    conversations: list[list[dict[str, str]]]
    prompt_ids: list[list[int]]
    response_ids: list[list[int]]

    @property
    def n_tokens(self) -> int:
        return sum(len(p) + len(r) for p, r in zip(self.prompt_ids, self.response_ids))


def pair_data(
    pair: ModelPair, n: int, prompt_tokens: int, response_tokens: int, seed: int
) -> PairData:
    rng = random.Random(seed)
    convs, p_ids = texts_of_length(pair.tokenizer, n, prompt_tokens, rng, chat=True)
    hi = min(len(pair.tokenizer), pair.tl.cfg.d_vocab)
    lo = min(100, hi // 2)  # skip special and control tokens
    g = torch.Generator().manual_seed(seed)
    r_ids = torch.randint(lo, hi, (n, response_tokens), generator=g).tolist()
    return PairData(convs, p_ids, r_ids)


def batches(n: int, size: int) -> list[list[int]]:
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def padded(pair: ModelPair, p_ids: list[list[int]], r_ids: list[list[int]] | None):
    return batch_from_ids(p_ids, r_ids, pad_id(pair.tokenizer), pair.device)


# ----------------------------------------------------------------------------- backend="hf"


def hf_backend_supported(fn: Callable[..., Any], config_cls: type | None = None) -> bool:
    """Whether ``fn`` (or its config dataclass) takes a ``backend`` argument."""
    if "backend" in inspect.signature(fn).parameters:
        return True
    if config_cls is not None and dataclasses.is_dataclass(config_cls):
        return any(f.name == "backend" for f in dataclasses.fields(config_cls))
    return False


# ----------------------------------------------------------------------------- extraction


def reference_loop(hf: Any, data: PairData, device: str) -> list[torch.Tensor]:
    """The Persona Vectors ``get_hidden_p_and_r`` loop: one sample per forward,
    ``output_hidden_states=True``, and per layer three summaries moved to the CPU one by one.

    As in the paper's code the means are taken on the model's device and each ``[1, d_model]``
    result is ``.cpu()``-ed separately (3 x (n_layers + 1) transfers per sample). The paper
    tokenises each text inside the loop and runs with autograd on; here the ids are given and
    autograd is off (both in the reference's favour).
    """
    n_hidden = hf.config.num_hidden_layers + 1
    prompt_avg = [[] for _ in range(n_hidden)]
    response_avg = [[] for _ in range(n_hidden)]
    prompt_last = [[] for _ in range(n_hidden)]
    with torch.inference_mode():
        for p, r in zip(data.prompt_ids, data.response_ids):
            ids = torch.tensor([p + r], device=device)
            n_p = len(p)
            out = hf(input_ids=ids, output_hidden_states=True)
            for layer in range(n_hidden):
                hs = out.hidden_states[layer]
                prompt_avg[layer].append(hs[:, :n_p, :].mean(dim=1).detach().cpu())
                response_avg[layer].append(hs[:, n_p:, :].mean(dim=1).detach().cpu())
                prompt_last[layer].append(hs[:, n_p - 1, :].detach().cpu())
            del out
    return [
        torch.cat(v[layer])
        for v in (prompt_avg, response_avg, prompt_last)
        for layer in range(n_hidden)
    ]


def extraction_rows(bench: Bench, data: PairData, batch: int) -> list[Row]:
    pair = bench.pair
    hf, tl, dev = pair.hf, pair.tl, pair.device
    n = len(data.prompt_ids)
    work = float(data.n_tokens)
    chunks = batches(n, batch)
    tb = [
        padded(pair, [data.prompt_ids[i] for i in c], [data.response_ids[i] for i in c])
        for c in chunks
    ]
    first = PairData(data.conversations[:1], data.prompt_ids[:1], data.response_ids[:1])
    rows: list[Row] = []

    def hf_forward(hidden: bool, only_first: bool = False) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                for b in tb[:1] if only_first else tb:
                    hf(
                        input_ids=b.tokens,
                        attention_mask=b.attention_mask.long(),
                        output_hidden_states=hidden,
                    )

        return run

    row = Row(
        "extraction",
        "ref_loop",
        "reference loop: HF, 1 sample/forward, hidden_states, per-layer .cpu()",
        "tokens/s",
        work=work,
    )
    measure(
        bench, row, lambda: reference_loop(hf, data, dev), lambda: reference_loop(hf, first, dev)
    )
    rows.append(row)

    row = Row(
        "extraction",
        "hf_hidden",
        f"HF batched forward + output_hidden_states (batch {batch})",
        "tokens/s",
        work=work,
    )
    measure(bench, row, hf_forward(True), hf_forward(True, True))
    rows.append(row)

    row = Row(
        "extraction",
        "hf_plain",
        f"HF plain batched forward (batch {batch}; the target)",
        "tokens/s",
        work=work,
    )
    row.note = "full CausalLM forward, logits at every position"
    measure(bench, row, hf_forward(False), hf_forward(False, True))
    rows.append(row)

    def tl_cache(only_first: bool = False) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                for b in tb[:1] if only_first else tb:
                    tl.run_with_cache(
                        b.tokens,
                        attention_mask=b.attention_mask.long(),
                        names_filter=lambda name: name.endswith("hook_resid_post"),
                    )

        return run

    row = Row(
        "extraction",
        "tl_cache",
        f"TL run_with_cache, resid_post of all layers (batch {batch})",
        "tokens/s",
        work=work,
    )
    measure(bench, row, tl_cache(), tl_cache(True))
    rows.append(row)

    def ours(d: PairData, **kw: Any) -> Callable[[], Any]:
        return lambda: pl.collect_activations(
            tl, d.conversations, d.response_ids, batch_size=batch, progress=False, **kw
        )

    head = PairData(*(x[:batch] for x in (data.conversations, data.prompt_ids, data.response_ids)))
    row = Row(
        "extraction",
        "ours_extract",
        f"ours: collect_activations, all layers, 3 summaries (batch {batch})",
        "tokens/s",
        work=work,
    )
    row.note = "includes chat-template tokenisation of the prompts; stops before the unembedding"
    acts = measure(bench, row, ours(data), ours(head))
    assert acts.response_avg.shape == (n, bench.n_layers, tl.cfg.d_model)
    rows.append(row)

    label = f"ours: collect_activations(backend='hf') (batch {batch})"
    row = Row("extraction", "ours_extract_hf", label, "tokens/s", work=work)
    why = no_backend(pl.collect_activations)
    optional(
        rows,
        row,
        why,
        lambda r: measure(bench, r, ours(data, backend="hf"), ours(head, backend="hf")),
    )
    return rows


def flops_per_token(pair: ModelPair, seq_len: int, stats: dict[str, Any]) -> float:
    """2 * matmul_params + 2 * n_layers * n_heads * d_head * (T + 1): the weight matmuls of a
    full forward (LM head included) plus causal attention (QK^T and AV, a token attends to
    (T + 1) / 2 keys on average in a sequence of T)."""
    cfg = pair.tl.cfg
    attn = 2 * cfg.n_layers * cfg.n_heads * cfg.d_head * (seq_len + 1)
    return 2.0 * stats["matmul_params"] + attn


def compute_bound_row(
    pair: ModelPair,
    seq_len: int,
    stats: dict[str, Any],
    peak_tflops: float | None,
    source: str = "",
) -> Row:
    label = "compute bound (full forward FLOPs / peak)"
    if peak_tflops is None:
        return skipped(
            "extraction",
            "compute_bound",
            label,
            "tokens/s",
            "no peak TFLOP/s known for this device and dtype: pass --peak-tflops",
        )
    f = flops_per_token(pair, seq_len, stats)
    row = Row(
        "extraction", "compute_bound", f"compute bound at {peak_tflops:g} TFLOP/s", "tokens/s"
    )
    row.value = peak_tflops * 1e12 / f
    row.note = f"{f / 1e9:.3f} GFLOP/token = 2*matmul_params + 2*n_layers*n_heads*d_head*(T+1), T={seq_len}"
    if source:
        row.note += f"; peak: {source}"
    row.extra = {"flops_per_token": f, "peak_tflops": peak_tflops}
    return row


# ----------------------------------------------------------------------------- screening


@dataclass
class ScreenData:
    samples: list[dict[str, str]]
    prompt_ids: list[list[int]]
    response_ids: list[list[int]]


def screen_data(
    pair: ModelPair, n: int, prompt_tokens: int, response_tokens: int, seed: int
) -> ScreenData:
    rng = random.Random(seed + 1)
    convs, p_ids = texts_of_length(pair.tokenizer, n, prompt_tokens, rng, chat=True)
    texts, r_ids = texts_of_length(pair.tokenizer, n, response_tokens, rng, chat=False)
    samples = [
        {"id": f"s{i}", "prompt": c[0]["content"], "answer": t}
        for i, (c, t) in enumerate(zip(convs, texts))
    ]
    return ScreenData(samples, p_ids, r_ids)


def hf_generate(
    hf: Any, pair: ModelPair, prompt_ids: list[list[int]], new_tokens: int
) -> torch.Tensor:
    """Greedy HF ``generate`` of exactly ``new_tokens`` tokens per row (no early stop)."""
    b = padded(pair, prompt_ids, None)
    with torch.inference_mode():
        out = hf.generate(
            input_ids=b.tokens,
            attention_mask=b.attention_mask.long(),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=pad_id(pair.tokenizer),
        )
    assert out.shape[1] == b.tokens.shape[1] + new_tokens, "HF generate stopped early"
    return out


def screening_rows(
    bench: Bench, data: ScreenData, batch: int, reply_tokens: int, vector: Any
) -> list[Row]:
    """``personalens.screen`` end to end (own replies + projections) vs the same work in HF."""
    pair = bench.pair
    tok, n_ctx = pair.tokenizer, pair.tl.cfg.n_ctx
    n = len(data.samples)
    gen = pl.GenerationConfig(max_new_tokens=reply_tokens, temperature=0.0, stop_token_ids=(-1,))
    runs: list[dict[str, Any]] = []

    def ours(samples: list[dict[str, str]], **extra: Any) -> Callable[[], Any]:
        def run() -> Any:
            with tempfile.TemporaryDirectory(prefix="bench-screen-") as tmp:
                res = pl.screen(
                    pair.tl, vector, samples, layer=bench.mid, out=tmp,
                    generation=gen, batch_size=batch, progress=False, **extra,
                )  # fmt: skip
                runs.append(json.loads((Path(tmp) / "summary.json").read_text()))
            return res

        return run

    def measure_ours(key: str, label: str, **extra: Any) -> tuple[list[Row], Any]:
        runs.clear()
        row = Row("screening", key, label, "samples/s", work=float(n))
        res = measure(bench, row, ours(data.samples, **extra), ours(data.samples[:batch], **extra))
        timed = runs[1:]  # drop the warm-up's summary
        proj_tokens, _ = projected(res)
        fastest = min(timed, key=lambda r: r["timings_s"]["compute_total"])
        row.extra = {
            "tokens_per_s": (proj_tokens + gen_tokens) / pick(row.seconds, bench.stat),
            "projected_tokens": proj_tokens,
            "generated_tokens": gen_tokens,
            "timings_s_of_fastest_run": fastest["timings_s"],
        }
        row.note = "tokens/s in extra: projected (prompt+response, twice per sample) + generated"
        proj = Row("screening", key + "_project", label + ", projection phase", "tokens/s")
        proj.work = float(proj_tokens)
        proj.seconds = [r["timings_s"]["project"] for r in timed]
        proj.value = proj_tokens / pick(proj.seconds, bench.stat)
        proj.memory = row.memory
        proj.note = (
            "screen's own timing of its projection chunks (summary.json); it runs blocks 0..L "
            "only, the HF reference runs the whole model"
        )
        return [row, proj], res

    def projected(res: Any) -> tuple[int, list[tuple[list[int], list[int]]]]:
        # what screen projects: the dataset's responses, and its own replies re-encoded from text
        reply_ids = [
            encode_response(tok, t)[: n_ctx - len(p)]
            for t, p in zip(res.model_responses, data.prompt_ids)
        ]
        seqs = list(zip(data.prompt_ids, data.response_ids))
        seqs += [(p, r) for p, r in zip(data.prompt_ids, reply_ids) if r]
        return sum(len(p) + len(r) for p, r in seqs), seqs

    gen_tokens = n * reply_tokens
    label = f"ours: screen (own greedy replies of {reply_tokens} tokens + ΔP), batch {batch}"
    rows, res = measure_ours("ours_screen", label)
    proj_tokens, seqs = projected(res)
    row = Row(
        "screening", "ours_screen_hf", f"ours: screen(backend='hf'), batch {batch}", "samples/s"
    )
    optional(
        rows, row, no_backend(pl.screen), lambda r: measure_ours(r.key, r.label, backend="hf")[0]
    )

    chunks = batches(len(seqs), batch)
    tb = [padded(pair, [seqs[i][0] for i in c], [seqs[i][1] for i in c]) for c in chunks]

    def hf_forward(only_first: bool = False) -> None:
        with torch.inference_mode():
            for b in tb[:1] if only_first else tb:
                pair.hf(input_ids=b.tokens, attention_mask=b.attention_mask.long())

    fwd = Row(
        "screening",
        "hf_screen_forward",
        f"HF plain forward over the same sequences (batch {batch})",
        "tokens/s",
        work=float(proj_tokens),
    )
    measure(bench, fwd, hf_forward, lambda: hf_forward(True))
    rows.append(fwd)

    p_chunks = batches(n, batch)

    def hf_replies(only_first: bool = False) -> None:
        for c in p_chunks[:1] if only_first else p_chunks:
            hf_generate(pair.hf, pair, [data.prompt_ids[i] for i in c], reply_tokens)

    hgen = Row(
        "screening",
        "hf_screen_generate",
        f"HF generate of the same replies (batch {batch})",
        "new tokens/s",
        work=float(gen_tokens),
    )
    measure(bench, hgen, hf_replies, lambda: hf_replies(True))
    rows.append(hgen)

    ref = Row(
        "screening",
        "ref_screen",
        "reference pipeline: HF generate + HF plain forward",
        "samples/s",
        work=float(n),
    )
    ref.seconds = [pick(hgen.seconds, bench.stat) + pick(fwd.seconds, bench.stat)]
    ref.value = n / ref.seconds[0]
    ref.memory = hgen.memory
    ref.note = "sum of the two HF rows above (no per-sample bookkeeping, no resumable files)"
    rows.append(ref)
    return rows


# ----------------------------------------------------------------------------- generation


def steering_hook(delta: torch.Tensor) -> Callable[..., Any]:
    """A forward hook on an HF decoder layer that adds ``delta`` at the last position of every
    forward (the Persona Vectors ``ActivationSteerer`` with ``positions="response"``)."""

    def hook(module: Any, args: Any, output: Any) -> Any:
        hs = output[0] if isinstance(output, tuple) else output
        hs = hs.clone()
        hs[:, -1, :] += delta.to(hs.dtype)
        return (hs, *output[1:]) if isinstance(output, tuple) else hs

    return hook


def generation_rows(
    bench: Bench,
    convs: list[list[dict[str, str]]],
    prompt_ids: list[list[int]],
    new_tokens: int,
    directions: torch.Tensor,
    coeff: float,
) -> list[Row]:
    pair = bench.pair
    tl, hf, dev = pair.tl, pair.hf, pair.device
    g = len(convs)
    work = float(g * new_tokens)
    L = bench.mid
    kw = dict(
        max_new_tokens=new_tokens,
        temperature=0.0,
        stop_token_ids=(-1,),
        batch_size=g,
        progress=False,
    )
    rows: list[Row] = []

    def ours(steered: bool, **extra: Any) -> Callable[[], Any]:
        def run() -> Any:
            steering = pl.steer(tl, directions, coeff, layers=[L], positions="response")
            with steering if steered else nullcontext():
                res = pl.generate(tl, convs, **kw, **extra)
            got = sum(len(t) for t in res.response_tokens)
            assert got == g * new_tokens, f"generation stopped early ({got} of {g * new_tokens})"
            return res

        return run

    row = Row(
        "generation",
        "ours_gen",
        f"ours: generate, unsteered (batch {g})",
        "new tokens/s",
        work=work,
    )
    measure(bench, row, ours(False))
    rows.append(row)

    row = Row(
        "generation",
        "ours_gen_steered",
        f"ours: generate under steer(layers=[{L}]) (batch {g})",
        "new tokens/s",
        work=work,
    )
    row.note = "TL + KV cache; steer adds coeff*v at the prefill's last token and every decode step"
    measure(bench, row, ours(True))
    rows.append(row)

    label = f"ours: generate(backend='hf') under steer(layers=[{L}]) (batch {g})"
    row = Row("generation", "ours_gen_steered_hf", label, "new tokens/s", work=work)
    why = no_backend(pl.generate, pl.GenerationConfig)
    optional(rows, row, why, lambda r: measure(bench, r, ours(True, backend="hf")))

    label = f"ours: generate(backend='hf', compile=True) under steer(layers=[{L}]) (batch {g})"
    row = Row("generation", "ours_gen_steered_hf_compiled", label, "new tokens/s", work=work)
    row.note = "the warm-up run compiles; timed runs reuse the compiled decode step"
    if why is None and "compile" not in inspect.signature(pl.generate).parameters:
        why = "generate has no compile argument in this checkout"
    if why is None and not dev.startswith("cuda"):
        why = "compile=True (CUDA graphs) is meant for CUDA; not run on the CPU"
    optional(rows, row, why, lambda r: measure(bench, r, ours(True, backend="hf", compile=True)))

    row = Row(
        "generation", "hf_gen", f"HF generate, unsteered (batch {g})", "new tokens/s", work=work
    )
    measure(bench, row, lambda: hf_generate(hf, pair, prompt_ids, new_tokens))
    rows.append(row)

    delta = (coeff * directions[L]).to(dev)
    row = Row(
        "generation",
        "hf_gen_hook",
        f"HF generate + forward hook at layer {L} (batch {g}; the reference)",
        "new tokens/s",
        work=work,
    )
    row.note = (
        "hook on model.layers[L] output (= hidden_states[L+1]), adds coeff*v at the last position"
    )
    handle = hf.model.layers[L].register_forward_hook(steering_hook(delta))
    try:
        measure(bench, row, lambda: hf_generate(hf, pair, prompt_ids, new_tokens))
    finally:
        handle.remove()
    rows.append(row)
    return rows


def bandwidth_bound_row(batch: int, stats: dict[str, Any], peak_gbps: float | None) -> Row:
    label = "bandwidth bound (weights read once per decode step)"
    if peak_gbps is None:
        return skipped(
            "generation",
            "bandwidth_bound",
            label,
            "new tokens/s",
            "no peak GB/s for this device: pass --peak-gbps",
        )
    step = stats["bytes_per_decode_step"]
    row = Row(
        "generation", "bandwidth_bound", f"bandwidth bound at {peak_gbps:g} GB/s", "new tokens/s"
    )
    row.value = batch * peak_gbps * 1e9 / step
    row.note = f"batch * GB/s / {step / 1e9:.3f} GB per step (weights only; KV-cache reads ignored)"
    row.extra = {"bytes_per_step": step, "peak_gbps": peak_gbps}
    return row


# ----------------------------------------------------------------------------- ratios

COMPARISONS = (
    ("extraction: ours / reference loop", "ours_extract", "ref_loop"),
    ("extraction: ours / HF batched + output_hidden_states", "ours_extract", "hf_hidden"),
    ("extraction: ours / HF plain batched forward (target)", "ours_extract", "hf_plain"),
    ("extraction: ours / TL run_with_cache", "ours_extract", "tl_cache"),
    ("extraction: ours / compute bound", "ours_extract", "compute_bound"),
    ("extraction: reference loop / compute bound", "ref_loop", "compute_bound"),
    ("extraction: ours backend=hf / reference loop", "ours_extract_hf", "ref_loop"),
    ("extraction: ours backend=hf / HF plain forward", "ours_extract_hf", "hf_plain"),
    ("extraction: ours backend=hf / compute bound", "ours_extract_hf", "compute_bound"),
    ("screening end to end: ours / HF generate + forward", "ours_screen", "ref_screen"),
    ("screening projections: ours / HF plain forward", "ours_screen_project", "hf_screen_forward"),
    ("screening end to end: ours backend=hf / HF gen + fwd", "ours_screen_hf", "ref_screen"),
    (
        "screening projections: ours backend=hf / HF forward",
        "ours_screen_hf_project",
        "hf_screen_forward",
    ),
    ("generation: ours steered / HF generate + hook", "ours_gen_steered", "hf_gen_hook"),
    ("generation: ours steered / ours unsteered", "ours_gen_steered", "ours_gen"),
    ("generation: ours unsteered / HF generate", "ours_gen", "hf_gen"),
    ("generation: ours backend=hf steered / HF gen + hook", "ours_gen_steered_hf", "hf_gen_hook"),
    (
        "generation: ours hf+compile steered / HF gen + hook",
        "ours_gen_steered_hf_compiled",
        "hf_gen_hook",
    ),
    (
        "generation: ours backend=hf steered / bandwidth bound",
        "ours_gen_steered_hf",
        "bandwidth_bound",
    ),
    ("generation: ours steered / bandwidth bound", "ours_gen_steered", "bandwidth_bound"),
)


def comparisons(rows: list[Row]) -> list[dict[str, Any]]:
    """The headline ratios ``ours / reference`` for every pair whose rows both have a value."""
    by_key = {r.key: r for r in rows}
    out = []
    for label, ours, ref in COMPARISONS:
        a, b = by_key.get(ours), by_key.get(ref)
        if a is None or b is None or a.value is None or b.value is None:
            continue
        out.append(
            {
                "comparison": label,
                "ratio": a.value / b.value,
                "ours": a.value,
                "reference": b.value,
                "unit": a.unit,
                "ours_key": ours,
                "reference_key": ref,
            }
        )
    return out
