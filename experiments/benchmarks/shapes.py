"""Models for the benchmark: the embedded model, or a random-weight model of a named real shape.

A *shape* is the published configuration of a real checkpoint (hidden size, MLP size, layers,
heads, key/value heads, vocabulary, rope theta, tied embeddings). Its weights are random
(``from_config``), so nothing is downloaded and throughput equals the real model's: the
matrices have the real sizes, and the data are random token ids anyway.

Random shapes use a self-contained byte-level tokenizer (256 byte tokens + 3 ChatML specials,
no files): every token id it produces is < 259, below every shape's vocabulary. Generated ids
above 258 decode to nothing, which is harmless for timing.

Memory: the HF model is built directly on the device; :func:`personalens.model.load.hf_to_hooked`
then copies its weights into a HookedTransformer (TL parameters are separate tensors, built on
the CPU and moved), so the device holds both copies, 2 x the weight bytes, for the whole run.
That is the minimum for a side-by-side run of both models; :func:`build_random` records the
device memory after each step so the JSON shows it.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import time
from dataclasses import dataclass, field
from typing import Any

import torch

# Published configurations (config.json of each checkpoint on the Hugging Face hub).
# "arch": the HF architecture; the other keys are HF config fields.
SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": dict(
        arch="Qwen2ForCausalLM",
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
        rope_theta=1000000.0,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
        max_position_embeddings=32768,
    ),
    "qwen2.5-1.5b": dict(
        arch="Qwen2ForCausalLM",
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        vocab_size=151936,
        rope_theta=1000000.0,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
        max_position_embeddings=32768,
    ),
    "qwen2.5-3b": dict(
        arch="Qwen2ForCausalLM",
        hidden_size=2048,
        intermediate_size=11008,
        num_hidden_layers=36,
        num_attention_heads=16,
        num_key_value_heads=2,
        vocab_size=151936,
        rope_theta=1000000.0,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
        max_position_embeddings=32768,
    ),
    "qwen2.5-7b": dict(
        arch="Qwen2ForCausalLM",
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        rope_theta=1000000.0,
        tie_word_embeddings=False,
        rms_norm_eps=1e-6,
        max_position_embeddings=32768,
    ),
    "qwen2.5-14b": dict(
        arch="Qwen2ForCausalLM",
        hidden_size=5120,
        intermediate_size=13824,
        num_hidden_layers=48,
        num_attention_heads=40,
        num_key_value_heads=8,
        vocab_size=152064,
        rope_theta=1000000.0,
        tie_word_embeddings=False,
        rms_norm_eps=1e-6,
        max_position_embeddings=32768,
    ),
    "llama-3.2-1b": dict(
        arch="LlamaForCausalLM",
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        rope_theta=500000.0,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        max_position_embeddings=131072,
        rope_scaling=dict(
            rope_type="llama3",
            factor=32.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=8192,
        ),
    ),
    "llama-3.2-3b": dict(
        arch="LlamaForCausalLM",
        hidden_size=3072,
        intermediate_size=8192,
        num_hidden_layers=28,
        num_attention_heads=24,
        num_key_value_heads=8,
        vocab_size=128256,
        rope_theta=500000.0,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        max_position_embeddings=131072,
        rope_scaling=dict(
            rope_type="llama3",
            factor=32.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=8192,
        ),
    ),
    "llama-3.1-8b": dict(
        arch="LlamaForCausalLM",
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        rope_theta=500000.0,
        tie_word_embeddings=False,
        rms_norm_eps=1e-5,
        max_position_embeddings=131072,
        rope_scaling=dict(
            rope_type="llama3",
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=8192,
        ),
    ),
    "smollm2-135m": dict(
        arch="LlamaForCausalLM",
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        rope_theta=100000.0,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        max_position_embeddings=8192,
    ),
    "smollm2-360m": dict(
        arch="LlamaForCausalLM",
        hidden_size=960,
        intermediate_size=2560,
        num_hidden_layers=32,
        num_attention_heads=15,
        num_key_value_heads=5,
        vocab_size=49152,
        rope_theta=100000.0,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        max_position_embeddings=8192,
    ),
    "smollm2-1.7b": dict(
        arch="LlamaForCausalLM",
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=24,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=49152,
        rope_theta=130000.0,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        max_position_embeddings=8192,
    ),
    # not a real model: a few layers, for the unit test and smoke runs
    "tiny": dict(
        arch="LlamaForCausalLM",
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=320,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        max_position_embeddings=512,
    ),
}

_MODEL_TYPES = {"Qwen2ForCausalLM": "qwen2", "LlamaForCausalLM": "llama"}

# Peak numbers per GPU for the bounds: dense bf16/fp16 matmul TFLOP/s as measured on this
# workplace's machines (an 8192^3 bf16 matmul: H100 798, H200 769-798; spec sheets say 989),
# and the spec HBM bandwidth in GB/s. Only used when --peak-tflops / --peak-gbps are not given.
PEAKS: dict[str, dict[str, float]] = {
    "H100": {"tflops_bf16": 800.0, "gbps": 3350.0},
    "H200": {"tflops_bf16": 790.0, "gbps": 4800.0},
    "A100": {"tflops_bf16": 312.0, "gbps": 2039.0},
}


def byte_tokenizer() -> Any:
    """A byte-level tokenizer (256 byte tokens + 3 specials) with a ChatML template; no files."""
    from tests.byte_tokenizer import byte_tokenizer as build

    return build("personalens-bench-tok-")


# ----------------------------------------------------------------------------- device


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def describe_device(device: str) -> dict[str, Any]:
    """The device in words (and a slug for file names)."""
    if device.startswith("cuda"):
        idx = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(idx)
        name = props.name
        words = (
            f"{name} ({props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs), "
            f"CUDA {torch.version.cuda}; host CPU {cpu_name()}"
        )
        slug = "cuda-" + "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
        return {"kind": "cuda", "name": name, "words": words, "slug": slug}
    threads = torch.get_num_threads()
    name = cpu_name()
    words = (
        f"CPU {name}, {threads} torch thread(s), {os.cpu_count()} logical core(s) visible; "
        "CPU timings are contaminated by anything else running on the machine"
    )
    return {"kind": "cpu", "name": name, "threads": threads, "words": words, "slug": "cpu"}


def known_peaks(device_info: dict[str, Any], dtype: torch.dtype) -> dict[str, float | None]:
    """Default peak TFLOP/s and GB/s for a known GPU (TFLOP/s only for 16-bit dtypes)."""
    if device_info["kind"] != "cuda":
        return {"tflops": None, "gbps": None}
    for key, peak in PEAKS.items():
        if key in device_info["name"]:
            half = dtype in (torch.bfloat16, torch.float16)
            return {"tflops": peak["tflops_bf16"] if half else None, "gbps": peak["gbps"]}
    return {"tflops": None, "gbps": None}


def measured_cpu_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """TFLOP/s of the best of ``repeats`` ``n x n @ n x n`` matmuls in ``dtype`` on this CPU, at
    the current torch thread count: the attainable peak that the CPU compute bound uses."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dtype)
    b = torch.randn(n, n, generator=g).to(dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e12


def memory_now(device: str) -> dict[str, Any]:
    """Allocated device memory (CUDA) or the process's peak RSS so far (CPU), in bytes."""
    if device.startswith("cuda"):
        return {
            "kind": "cuda_allocated",
            "allocated": torch.cuda.memory_allocated(),
            "peak_allocated": torch.cuda.max_memory_allocated(),
        }
    return {
        "kind": "cpu_max_rss",
        "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


# ----------------------------------------------------------------------------- models


@dataclass
class ModelPair:
    """The HookedTransformer, its HF twin (same weights) and how they were built."""

    tl: Any
    hf: Any
    tokenizer: Any
    name: str
    source: str  # "embedded" or "random shape <name>"
    device: str
    dtype: torch.dtype
    build: dict[str, Any] = field(default_factory=dict)


def weight_stats(hf: Any) -> dict[str, Any]:
    """Parameter counts of the HF model for the bounds.

    ``matmul_params``: weights of every ``nn.Linear`` (attention, MLP and the LM head, counted
    even when tied to the embedding): one multiply-add per weight per token.
    ``bytes_per_decode_step``: bytes of every distinct parameter a decode step reads: all of
    them except the input embedding table (only one row per token is read), which is counted
    when it is tied to the LM head.
    """
    matmul = sum(m.weight.numel() for m in hf.modules() if isinstance(m, torch.nn.Linear))
    params = {p.data_ptr(): p for p in hf.parameters()}
    total = sum(p.numel() for p in params.values())
    total_bytes = sum(p.numel() * p.element_size() for p in params.values())
    emb = hf.get_input_embeddings().weight
    out = hf.get_output_embeddings()
    tied = out is not None and out.weight.data_ptr() == emb.data_ptr()
    step_bytes = total_bytes - (0 if tied else emb.numel() * emb.element_size())
    return {
        "params": total,
        "matmul_params": matmul,
        "weight_bytes": total_bytes,
        "bytes_per_decode_step": step_bytes,
        "tied_embeddings": tied,
    }


def hf_config_for(shape: str, tokenizer: Any) -> Any:
    from transformers import AutoConfig

    if shape not in SHAPES:
        raise SystemExit(f"unknown --shape {shape!r}; known shapes: {', '.join(SHAPES)}")
    fields = dict(SHAPES[shape])
    arch = fields.pop("arch")
    return AutoConfig.for_model(
        _MODEL_TYPES[arch],
        architectures=[arch],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **fields,
    )


def build_random(shape: str, device: str, dtype: torch.dtype, seed: int = 0) -> ModelPair:
    """A random-weight HF model of a named shape on ``device`` and its HookedTransformer twin."""
    from transformers import AutoModelForCausalLM

    from personalens.model.load import _prepare_tokenizer, hf_to_hooked

    tokenizer = _prepare_tokenizer(byte_tokenizer())
    config = hf_config_for(shape, tokenizer)
    torch.manual_seed(seed)
    build: dict[str, Any] = {"before": memory_now(device)}
    t0 = time.perf_counter()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with torch.device(device):
        hf = AutoModelForCausalLM.from_config(config, dtype=dtype)
    hf.eval()
    for p in hf.parameters():
        p.requires_grad_(False)
    build["hf_seconds"] = round(time.perf_counter() - t0, 2)
    build["after_hf"] = memory_now(device)
    t0 = time.perf_counter()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    tl = hf_to_hooked(hf, tokenizer, model_name=f"random-{shape}", device=device, dtype=dtype)
    build["tl_seconds"] = round(time.perf_counter() - t0, 2)
    build["after_tl"] = memory_now(device)
    return ModelPair(
        tl, hf, tokenizer, f"random-{shape}", f"random shape {shape}", device, dtype, build
    )


def load_embedded(device: str, dtype: torch.dtype) -> ModelPair:
    """The embedded SmolLM2-135M-Instruct as a HookedTransformer plus its HF twin."""
    import personalens as pl
    from personalens.model.load import EMBEDDED_MODEL_NAME, embedded_hf_dir, load_hf_dir

    build: dict[str, Any] = {"before": memory_now(device)}
    t0 = time.perf_counter()
    tl = pl.load_model(device=device, dtype=dtype)
    build["tl_seconds"] = round(time.perf_counter() - t0, 2)
    build["after_tl"] = memory_now(device)
    t0 = time.perf_counter()
    hf, _ = load_hf_dir(embedded_hf_dir(), dtype=dtype)
    hf.to(device)
    for p in hf.parameters():
        p.requires_grad_(False)
    build["hf_seconds"] = round(time.perf_counter() - t0, 2)
    build["after_hf"] = memory_now(device)
    return ModelPair(tl, hf, tl.tokenizer, EMBEDDED_MODEL_NAME, "embedded", device, dtype, build)
