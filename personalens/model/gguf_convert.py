"""GGUF files as plain Hugging Face model directories: dequantised once, cached by file.

:func:`hf_dir_for_gguf` converts a ``.gguf`` file on first use (``convert_gguf_to_hf``, atomic)
into ``cache_dir()/models/<stem>-<key>``, the key the start of the file's SHA-256, so every
copy of the same file (one per virtualenv for the embedded model) shares one converted copy.
The hash of a file is computed once per path, size and mtime and remembered in
``cache_dir()/models/gguf-sha256.json``. :func:`embedded_hf_dir` does so for the embedded
model's file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from personalens._io import atomic_write_json, file_sha256
from personalens.errors import ModelLoadError
from personalens.model.embedded import cache_dir, embedded_gguf_path

log = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet_progress():
    """Silence transformers' per-tensor GGUF progress bars while converting."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def convert_gguf_to_hf(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Dequantise a GGUF file into a plain Hugging Face directory (safetensors + tokenizer).

    transformers keeps a ``quantization_config`` (gguf) on GGUF-loaded models, which both
    ``save_pretrained`` and TransformerLens refuse; we rebuild the model from a clean config
    and copy the dequantised weights. The write is atomic: ``out_dir`` appears complete or
    not at all.
    """
    gguf_path = Path(gguf_path).resolve()
    out_dir = Path(out_dir)
    if not gguf_path.is_file():
        raise ModelLoadError(f"GGUF file not found: {gguf_path}")
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        with quiet_progress():
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            quantised = AutoModelForCausalLM.from_pretrained(
                folder, gguf_file=name, dtype=torch.float32
            )
    except Exception as exc:  # transformers raises many types for unsupported GGUF files
        raise ModelLoadError(
            f"Could not read the GGUF file {gguf_path}: {type(exc).__name__}: {exc}. "
            "transformers reads GGUF files of common architectures (llama, mistral, qwen2, "
            "gemma, phi3, ...); for other files convert them to a Hugging Face directory first."
        ) from exc

    config_dict = quantised.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = AutoConfig.for_model(**config_dict)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantised.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise ModelLoadError(
            f"GGUF conversion of {gguf_path} left weights unmatched (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]})."
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "personalens_source.json").write_text(
            json.dumps({"gguf": str(gguf_path), "size": gguf_path.stat().st_size}, indent=2)
        )
        try:
            os.replace(tmp, out_dir)
        except OSError:
            if not (out_dir / "config.json").is_file():  # lost a race to a complete copy? fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _gguf_cache_dir(gguf_path: Path) -> Path:
    return cache_dir() / "models" / f"{gguf_path.stem}-{gguf_content_hash(gguf_path)[:12]}"


def gguf_content_hash(gguf_path: Path) -> str:
    """SHA-256 of a file, remembered by path, size and mtime (hashing 270 MB takes a while)."""
    st = gguf_path.stat()
    stamp = f"{gguf_path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    index_path = cache_dir() / "models" / "gguf-sha256.json"
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        index = {}
    if not isinstance(index, dict):
        index = {}
    sha = index.get(stamp)
    if not isinstance(sha, str):
        sha = file_sha256(gguf_path)
        atomic_write_json(index_path, {**index, stamp: sha})  # a racing writer loses one entry
    return sha


def hf_dir_for_gguf(gguf_path: str | Path) -> Path:
    """The cached plain HF copy of a GGUF file, converting it on first use."""
    gguf_path = Path(gguf_path)
    target = _gguf_cache_dir(gguf_path)
    if not (target / "config.json").is_file():
        t0 = time.perf_counter()
        log.info("converting %s to a Hugging Face copy in %s (once)", gguf_path, target)
        convert_gguf_to_hf(gguf_path, target)
        log.info("converted in %.1f s", time.perf_counter() - t0)
    return target


def embedded_hf_dir() -> Path:
    """The plain Hugging Face copy of the embedded model (created on first use)."""
    return hf_dir_for_gguf(embedded_gguf_path())
