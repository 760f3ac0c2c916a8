"""The SAE recipe: an offline chat corpus, sae-lens training, and measured quality.

Used by ``sae/build_corpus.py`` and ``sae/train.py`` (see ``sae/README.md``); the functions
take a loaded ``HookedTransformer`` so the unit test can run the whole recipe on a tiny model.

1. **Corpus** (:func:`build_corpus`): the model's own replies to the questions of every shipped
   trait file (``questions`` and ``eval_questions``) under a mix of system prompts: the trait's
   positive and negative ``instruction`` prompts (the contrast persona vectors are built from)
   and a baseline (no system prompt, i.e. the chat template's default, alternating with a neutral
   helpful-assistant prompt). Generated with :func:`personalens.model.generation.generate_samples`
   through :func:`personalens.runs.resume.run_resumable`, so an interrupted build resumes. Each
   trait's ``description`` and ``judge_anchors`` (example replies showing the trait and its
   opposite) are added as plain-text documents, plus any local text files given.
2. **Token rows** (:func:`corpus_split`, :func:`pack_rows`): every conversation becomes
   ``prompt tokens + generated tokens (+ end-of-turn)``; whole questions (all their system-prompt
   variants) are held out for evaluation; documents are shuffled and packed into rows of
   ``context_size`` tokens, each row starting at a document start, its tail filled with the start
   of the document that opens the next row (so no reply is cut off from its system prompt).
3. **Training** (:func:`train_saes`): sae-lens's ``MultiSAETrainingRunner`` trains one SAE per
   layer from a single forward pass per batch, streaming activations from the model (nothing is
   stored on disk). Position 0 of every row is left out (``seqpos_slice=(1, None)``): it is the
   attention sink, with a residual norm ~100x the others.
4. **Quality** (:func:`evaluate_saes`): on the held-out rows, explained variance, L0, dead
   latents, and the CE-loss / KL increase with the reconstruction spliced into the forward pass.

Outputs go to ``<out_root>/<model_dirname(model name)>/blocks.<L>.hook_resid_post/``
(:func:`sae_dir`), one folder per layer, installed atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import re
import shutil
import signal
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from personalens._io import append_jsonl, atomic_write_json, read_jsonl
from personalens.conventions import hook_name
from personalens.errors import PersonaLensError
from personalens.extraction.traits import Trait, list_traits, load_trait
from personalens.model.chat import as_conversation, format_chat
from personalens.model.generation import GenerationConfig, generate_samples
from personalens.runs.resume import run_resumable

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

SAE_DIR = Path(__file__).resolve().parent
REPO_ROOT = SAE_DIR.parent
DEFAULT_CONFIG = SAE_DIR / "config.json"
DEFAULT_OUT_ROOT = REPO_ROOT / "personalens" / "data" / "sae"
DEFAULT_CORPUS_DIR = REPO_ROOT / "runs" / "sae" / "corpus"
DEFAULT_WORK_DIR = REPO_ROOT / "runs" / "sae" / "train"

CONDITIONS = ("pos", "neg", "none", "neutral", "baseline")
DONE_FILES = ("cfg.json", "sae_weights.safetensors", "quality.json")


class RecipeError(PersonaLensError):
    """The SAE recipe was given settings or a corpus it cannot use."""


# ----------------------------------------------------------------------------- paths


def model_dirname(model_name: str) -> str:
    """A model name made safe as one path component.

    Runs of characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_`` and
    leading/trailing ``.``/``_`` are dropped: ``"SmolLM2-135M-Instruct"`` stays as it is,
    ``"Qwen/Qwen2.5-7B-Instruct"`` becomes ``"Qwen_Qwen2.5-7B-Instruct"``.
    """
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(model_name)).strip("._")
    if not name:
        raise RecipeError(f"model name {model_name!r} leaves no usable folder name")
    return name


def sae_dir(model_name: str, layer: int, root: str | Path = DEFAULT_OUT_ROOT) -> Path:
    """``<root>/<model_dirname(model_name)>/blocks.<layer>.hook_resid_post``."""
    return Path(root) / model_dirname(model_name) / hook_name(layer)


def is_done(folder: Path) -> bool:
    return all((folder / f).is_file() for f in DONE_FILES)


# ----------------------------------------------------------------------------- config


def load_config(path: str | Path = DEFAULT_CONFIG) -> dict[str, Any]:
    """The recipe config (``{"model": ..., "corpus": {...}, "train": {...}}``)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe config {path} does not exist; pass --config sae/config.json")
    cfg = json.loads(path.read_text())
    for section in ("corpus", "train"):
        if not isinstance(cfg.get(section), dict):
            raise RecipeError(f"recipe config {path}: needs a {section!r} object")
    return cfg


def override(section: dict[str, Any], **values: Any) -> dict[str, Any]:
    """``section`` with every non-None value replaced; unknown keys are an error."""
    out = dict(section)
    for key, value in values.items():
        if value is None:
            continue
        if key not in out:
            raise RecipeError(f"unknown setting {key!r}; known: {', '.join(sorted(out))}")
        out[key] = value
    return out


def _check_run_config(path: Path, config: dict[str, Any]) -> None:
    """Write ``config`` to ``path``, or refuse when a different one is there (resume guard)."""
    config = json.loads(json.dumps(config))
    if path.exists():
        old = json.loads(path.read_text())
        if old != config:
            diff = sorted(k for k in old.keys() | config.keys() if old.get(k) != config.get(k))
            raise RecipeError(
                f"{path.parent} holds a corpus built with other settings ({', '.join(diff)}); "
                "rerun with the same settings to resume, or pass another --out"
            )
    else:
        atomic_write_json(path, config)


def _sha(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- 1. corpus


@dataclass(frozen=True)
class CorpusJob:
    """One conversation of the corpus: a trait question under one system prompt."""

    key: str
    trait: str
    split: str  # "extract" (trait ``questions``) or "eval" (``eval_questions``)
    question_index: int
    question: str
    condition: str  # "pos", "neg", "none" (template default), "neutral"
    pair: int | None
    system: str | None

    @property
    def group(self) -> str:
        """All conditions of one question share a group (held out together)."""
        return f"{self.trait}/{self.split}/q{self.question_index}"


def _traits(names: Sequence[str] | None) -> list[Trait]:
    names = list(names) if names else list_traits()
    if not names:
        raise RecipeError("no traits: personalens ships none and none were given")
    return [load_trait(n) for n in names]


def build_jobs(corpus_cfg: dict[str, Any]) -> list[CorpusJob]:
    """Every (trait, question, condition) of the corpus, in a fixed order (shorter prompts first)."""
    conditions = list(corpus_cfg["conditions"])
    bad = [c for c in conditions if c not in CONDITIONS]
    if bad or not conditions:
        raise RecipeError(f"unknown condition(s) {bad}; use some of {', '.join(CONDITIONS)}")
    neutral = corpus_cfg["neutral_system"]
    jobs: list[CorpusJob] = []
    for trait in _traits(corpus_cfg["traits"]):
        extract, held = trait.split_questions()
        for split, questions in (("extract", extract), ("eval", held)):
            if corpus_cfg["max_questions"] is not None:
                questions = questions[: corpus_cfg["max_questions"]]
            for qi, question in enumerate(questions):
                pair = qi % trait.n_pairs
                for cond in conditions:
                    if cond == "baseline":  # alternate none / neutral over questions
                        cond = "none" if qi % 2 == 0 else "neutral"
                    system = {
                        "pos": trait.system_prompt(pair, "pos"),
                        "neg": trait.system_prompt(pair, "neg"),
                        "none": None,
                        "neutral": neutral,
                    }[cond]
                    jobs.append(
                        CorpusJob(
                            key=f"{trait.name}/{split}/q{qi}/{cond}",
                            trait=trait.name,
                            split=split,
                            question_index=qi,
                            question=question,
                            condition=cond,
                            pair=pair if cond in ("pos", "neg") else None,
                            system=system,
                        )
                    )
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        raise RecipeError("duplicate corpus jobs: list each condition and trait once")
    # similar prompt lengths in one batch: less padding. Fixed order, so resumes batch the same way.
    return sorted(jobs, key=lambda j: (len(j.system or ""), j.key))


def _text_documents(corpus_cfg: dict[str, Any]) -> list[dict[str, str]]:
    """Plain-text documents: trait descriptions and judge anchors, then local text files."""
    docs: list[dict[str, str]] = []
    if corpus_cfg["trait_text"]:
        for trait in _traits(corpus_cfg["traits"]):
            if trait.description:
                docs.append({"key": f"text/{trait.name}/description", "text": trait.description})
            for side, texts in (trait.judge_anchors or {}).items():
                for i, text in enumerate(texts):
                    docs.append({"key": f"text/{trait.name}/anchor/{side}/{i}", "text": text})
    for name in corpus_cfg["text_files"]:
        path = Path(name)
        if not path.is_file():
            raise RecipeError(f"text file {path} does not exist")
        # paragraphs (blank-line separated), in file order
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", path.read_text(errors="replace"))]
        for i, para in enumerate(p for p in paragraphs if p):
            docs.append({"key": f"file/{path.name}/{i}", "text": para})
    return docs


def build_corpus(
    model: HookedTransformer,
    corpus_cfg: dict[str, Any],
    out_dir: str | Path,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate (or resume) the corpus in ``out_dir``; returns the summary written there.

    ``out_dir`` gets ``config.json`` (resolved settings; a rerun with other settings is
    refused), ``responses.jsonl`` (one record per conversation, appended chunk by chunk),
    ``texts.jsonl`` (plain-text documents) and, last, ``summary.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = build_jobs(corpus_cfg)
    texts = _text_documents(corpus_cfg)
    run_config = {
        "model": model.cfg.model_name,
        "d_vocab": model.cfg.d_vocab,
        "corpus": corpus_cfg,
        "n_jobs": len(jobs),
        "jobs_sha1": _sha([asdict(j) for j in jobs]),
        "texts_sha1": _sha(texts),
    }
    _check_run_config(out / "config.json", run_config)
    text_path = out / "texts.jsonl"
    if not text_path.exists():
        tmp = text_path.with_suffix(".jsonl.tmp")
        tmp.unlink(missing_ok=True)
        append_jsonl(tmp, texts)
        os.replace(tmp, text_path)

    gen_cfg = GenerationConfig(
        max_new_tokens=corpus_cfg["max_new_tokens"],
        temperature=corpus_cfg["temperature"],
        top_p=corpus_cfg["top_p"],
        seed=corpus_cfg["seed"],
        batch_size=corpus_cfg["batch_size"],
        progress=False,
    )

    def process(chunk: list[CorpusJob]) -> list[dict[str, Any]]:
        conversations = [as_conversation(j.question, j.system) for j in chunk]
        res = generate_samples(model, conversations, [0] * len(chunk), gen_cfg)
        return [
            {
                **asdict(j),
                "prompt_tokens": res.prompt_tokens[i],
                "response": res.responses[i],
                "response_tokens": res.response_tokens[i],
                "finish_reason": res.finish_reasons[i],
            }
            for i, j in enumerate(chunk)
        ]

    t0 = time.perf_counter()
    before = {r["key"] for r in read_jsonl(out / "responses.jsonl")}
    done = run_resumable(
        jobs,
        lambda j: j.key,
        process,
        path=out / "responses.jsonl",
        chunk_size=corpus_cfg["batch_size"],
        desc="corpus",
        progress=progress,
    )
    seconds = time.perf_counter() - t0
    records = [done[j.key] for j in jobs]
    new_tokens = sum(len(r["response_tokens"]) for r in records if r["key"] not in before)
    summary = {
        "model": model.cfg.model_name,
        "n_conversations": len(records),
        "n_text_documents": len(texts),
        "n_prompt_tokens": sum(len(r["prompt_tokens"]) for r in records),
        "n_response_tokens": sum(len(r["response_tokens"]) for r in records),
        "n_text_tokens": sum(
            len(model.tokenizer.encode(t["text"], add_special_tokens=False)) for t in texts
        ),
        "finish_reasons": {
            why: sum(r["finish_reason"] == why for r in records) for why in ("stop", "length")
        },
        "conditions": {
            c: sum(r["condition"] == c for r in records)
            for c in sorted({r["condition"] for r in records})
        },
        "n_traits": len({r["trait"] for r in records}),
        "generated_this_run": sum(r["key"] not in before for r in records),
        "generated_tokens_this_run": new_tokens,
        "seconds_this_run": round(seconds, 1),
        "generated_tokens_per_s_this_run": round(new_tokens / seconds, 1) if new_tokens else None,
        "torch_threads": torch.get_num_threads(),
    }
    atomic_write_json(out / "summary.json", summary)
    return summary


# ----------------------------------------------------------------------------- 2. token rows


@dataclass(frozen=True)
class Document:
    key: str
    group: str  # held out together
    tokens: list[int]


def assistant_suffix(tokenizer: Any) -> list[int]:
    """Tokens the chat template puts after an assistant reply (``<|im_end|>\\n`` for ChatML)."""
    marker = "QZXJ-END-OF-REPLY"
    text = format_chat(
        tokenizer,
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}],
        add_generation_prompt=False,
    )
    tail = text[text.rindex(marker) + len(marker) :]
    return list(tokenizer.encode(tail, add_special_tokens=False))


def corpus_documents(tokenizer: Any, corpus_dir: str | Path) -> list[Document]:
    """Token documents of a finished corpus, in a fixed order.

    A conversation is its prompt tokens (system + user turn + assistant header, as the model saw
    them) followed by the generated tokens, plus the template's end-of-turn tokens when the
    model stopped by itself. A text document is its tokens followed by a blank line.
    """
    corpus_dir = Path(corpus_dir)
    if not (corpus_dir / "summary.json").is_file():
        raise RecipeError(
            f"{corpus_dir} holds no finished corpus (no summary.json); run "
            f"`python sae/build_corpus.py --out {corpus_dir}` first (it resumes)"
        )
    suffix = assistant_suffix(tokenizer)
    sep = list(tokenizer.encode("\n\n", add_special_tokens=False))
    docs = []
    for r in sorted(read_jsonl(corpus_dir / "responses.jsonl"), key=lambda r: r["key"]):
        tokens = list(r["prompt_tokens"]) + list(r["response_tokens"])
        if r["finish_reason"] == "stop":
            tokens += suffix
        group = f"{r['trait']}/{r['split']}/q{r['question_index']}"
        docs.append(Document(r["key"], group, tokens))
    for t in sorted(read_jsonl(corpus_dir / "texts.jsonl"), key=lambda t: t["key"]):
        tokens = list(tokenizer.encode(t["text"], add_special_tokens=False)) + sep
        docs.append(Document(t["key"], t["key"], tokens))
    return docs


def _rank(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}/{key}".encode(), digest_size=8).digest(), "big")


def corpus_split(
    docs: Sequence[Document], heldout_fraction: float, seed: int
) -> tuple[list[Document], list[Document]]:
    """(train, held-out): a seeded, fixed share of groups (whole questions) is held out."""
    if not 0 < heldout_fraction < 1:
        raise RecipeError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    groups = sorted({d.group for d in docs}, key=lambda g: _rank(seed, g))
    if len(groups) < 2:
        raise RecipeError("the corpus has fewer than 2 questions; it cannot hold any out")
    n_held = min(len(groups) - 1, max(1, round(heldout_fraction * len(groups))))
    held = set(groups[:n_held])
    return [d for d in docs if d.group not in held], [d for d in docs if d.group in held]


def pack_rows(docs: Sequence[Document], context_size: int, seed: int) -> list[list[int]]:
    """Shuffle ``docs`` (seeded) and pack them into rows of exactly ``context_size`` tokens.

    Every row starts at the start of a document, and every document appears whole (cut at
    ``context_size`` if longer) at least once. Documents follow each other while they fit; the
    tail of a row is filled with the first tokens of the document that opens the next row
    (the last row wraps around to the first document).
    """
    if context_size < 2:
        raise RecipeError(f"context_size must be >= 2, got {context_size}")
    order = [list(d.tokens[:context_size]) for d in docs if d.tokens]
    if not order:
        raise RecipeError("no documents to pack")
    random.Random(seed).shuffle(order)
    rows: list[list[int]] = []
    row: list[int] = []
    for tokens in order:
        if row and len(row) + len(tokens) > context_size:
            rows.append(row + tokens[: context_size - len(row)])
            row = []
        row = row + tokens
        if len(row) == context_size:
            rows.append(row)
            row = []
    if row:
        filler = [t for doc in order for t in doc]
        while len(row) < context_size:
            row = row + filler[: context_size - len(row)]
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- 3. training


def _steps(train_cfg: dict[str, Any]) -> int:
    return train_cfg["training_tokens"] // train_cfg["train_batch_size_tokens"]


def sae_lens_config(
    model: HookedTransformer,
    train_cfg: dict[str, Any],
    layers: list[int],
    *,
    output_path: str,
    dataset_label: str,
) -> Any:
    """The sae-lens ``MultiSAETrainingRunnerConfig`` for ``layers`` (one SAE each)."""
    from sae_lens.config import LoggingConfig
    from sae_lens.multi_sae_training_runner import MultiSAETrainingRunnerConfig
    from sae_lens.registry import get_sae_training_class

    arch = train_cfg["architecture"]
    try:
        _, cfg_class = get_sae_training_class(arch)
    except Exception as exc:
        raise RecipeError(f"sae-lens has no SAE architecture {arch!r}") from exc
    sae_kwargs: dict[str, Any] = {
        "d_in": model.cfg.d_model,
        "d_sae": train_cfg["d_sae"],
        "dtype": "float32",
        "device": "cpu",
        "normalize_activations": train_cfg["normalize_activations"],
    }
    sae_kwargs.update(train_cfg["architecture_kwargs"])
    if arch in ("topk", "batchtopk", "matryoshka_batchtopk"):
        sae_kwargs["k"] = train_cfg["k"]
    steps = _steps(train_cfg)
    if steps < 1:
        raise RecipeError("training_tokens must be at least train_batch_size_tokens")
    names = {f"L{L}": L for L in layers}
    return MultiSAETrainingRunnerConfig(
        saes={name: cfg_class(**sae_kwargs) for name in names},
        hook_names={name: hook_name(L) for name, L in names.items()},
        model_name=model.cfg.model_name,
        dataset_path=dataset_label,
        streaming=False,
        context_size=train_cfg["context_size"],
        n_batches_in_buffer=train_cfg["n_batches_in_buffer"],
        training_tokens=train_cfg["training_tokens"],
        store_batch_size_prompts=train_cfg["store_batch_size_prompts"],
        seqpos_slice=(1, None) if train_cfg["skip_first_position"] else (None,),
        device="cpu",
        seed=train_cfg["seed"],
        dtype="float32",
        prepend_bos=False,  # rows are pre-tokenised; each starts with the chat template's BOS
        sequence_separator_token=None,  # (only used when sae-lens tokenises text itself)
        train_batch_size_tokens=train_cfg["train_batch_size_tokens"],
        lr=train_cfg["lr"],
        lr_scheduler_name="constant",
        lr_warm_up_steps=max(0, round(train_cfg["lr_warm_up_fraction"] * steps)),
        lr_decay_steps=max(0, round(train_cfg["lr_decay_fraction"] * steps)),
        dead_feature_window=train_cfg["dead_feature_window"],
        feature_sampling_window=train_cfg["feature_sampling_window"],
        logger=LoggingConfig(log_to_wandb=False),
        n_checkpoints=0,
        checkpoint_path=None,
        output_path=output_path,
        n_batches_for_norm_estimate=train_cfg["n_batches_for_norm_estimate"],
        # how personalens loads models: no weight processing (sae-lens repeats this advice
        # in a warning whenever the SAE is loaded)
        model_from_pretrained_kwargs={
            "fold_ln": False,
            "center_writing_weights": False,
            "center_unembed": False,
            "fold_value_biases": False,
        },
    )


@contextlib.contextmanager
def _keep_signal_handlers() -> Iterator[None]:
    """sae-lens installs its own SIGINT/SIGTERM handlers; put ours back afterwards."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def _install_dir(src: Path, dest: Path) -> None:
    """Move the finished folder ``src`` to ``dest`` in one rename (replacing an old one)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    umask = os.umask(0)
    os.umask(umask)
    for f in tmp.iterdir():  # safetensors writes 0600 files; give the usual permissions
        f.chmod(0o666 & ~umask)
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{os.getpid()}"
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old)
    else:
        os.replace(tmp, dest)


def train_saes(
    model: HookedTransformer,
    corpus_dir: str | Path,
    train_cfg: dict[str, Any],
    *,
    out_root: str | Path = DEFAULT_OUT_ROOT,
    work_dir: str | Path = DEFAULT_WORK_DIR,
    force: bool = False,
    progress: bool = True,
) -> dict[int, dict[str, Any]]:
    """Train (and evaluate) an SAE at each of ``train_cfg["layers"]``; returns ``{layer: quality}``.

    Layers whose folder under ``out_root`` is complete are skipped unless ``force``.
    """
    layers = sorted({int(L) for L in train_cfg["layers"]})
    bad = [L for L in layers if not 0 <= L < model.cfg.n_layers]
    if bad or not layers:
        raise RecipeError(
            f"layers {bad or layers} are not in 0..{model.cfg.n_layers - 1} for this model"
        )
    corpus_dir = Path(corpus_dir)
    docs = corpus_documents(model.tokenizer, corpus_dir)  # raises without a finished corpus
    corpus_config = json.loads((corpus_dir / "config.json").read_text())
    if (
        corpus_config["model"] != model.cfg.model_name
        or corpus_config["d_vocab"] != model.cfg.d_vocab
    ):
        raise RecipeError(
            f"{corpus_dir} was generated by {corpus_config['model']!r}, not by "
            f"{model.cfg.model_name!r}; build a corpus with this model (another --corpus dir)"
        )
    corpus_summary = json.loads((corpus_dir / "summary.json").read_text())

    results: dict[int, dict[str, Any]] = {}
    todo = []
    for L in layers:
        dest = sae_dir(model.cfg.model_name, L, out_root)
        if is_done(dest) and not force:
            print(f"layer {L}: {dest} is complete, skipped (use --force to retrain)")
            results[L] = json.loads((dest / "quality.json").read_text())
        else:
            todo.append(L)
    if not todo:
        return results

    ctx = train_cfg["context_size"]
    if ctx > model.cfg.n_ctx:
        raise RecipeError(f"context_size {ctx} exceeds the model's n_ctx {model.cfg.n_ctx}")
    train_docs, held_docs = corpus_split(docs, train_cfg["heldout_fraction"], train_cfg["seed"])
    train_rows = pack_rows(train_docs, ctx, train_cfg["seed"])
    held_rows = pack_rows(held_docs, ctx, train_cfg["seed"] + 1)
    pad = model.tokenizer.pad_token_id
    if any(r[0] == pad for r in train_rows + held_rows):
        # TransformerLens masks leading pad tokens out of attention when no mask is given
        raise RecipeError(
            "a packed row starts with the pad token; documents must not start with it"
        )
    if train_cfg["eval_max_rows"] is not None:
        held_rows = held_rows[: train_cfg["eval_max_rows"]]
    first = 1 if train_cfg["skip_first_position"] else 0
    tokens_per_epoch = len(train_rows) * (ctx - first)
    data_info = {
        "corpus_dir": str(corpus_dir),
        "corpus_jobs_sha1": corpus_config["jobs_sha1"],
        "n_documents_train": len(train_docs),
        "n_documents_heldout": len(held_docs),
        "heldout_groups": sorted({d.group for d in held_docs}),
        "n_rows_train": len(train_rows),
        "n_rows_heldout": len(held_rows),
        "train_tokens_per_epoch": tokens_per_epoch,
        "epochs": round(train_cfg["training_tokens"] / tokens_per_epoch, 3),
        "rows_sha1": _sha(train_rows),
    }
    print(json.dumps({k: v for k, v in data_info.items() if k != "heldout_groups"}))

    from datasets import Dataset
    from sae_lens import SAE
    from sae_lens import __version__ as sae_lens_version
    from sae_lens.multi_sae_training_runner import MultiSAETrainingRunner

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="sae-", dir=work_dir))
    try:
        runner_cfg = sae_lens_config(
            model,
            train_cfg,
            todo,
            output_path=str(staging / "sae_lens"),
            dataset_label=f"personalens-sae-corpus:{corpus_config['jobs_sha1']}",
        )
        dataset = Dataset.from_dict({"input_ids": train_rows})
        t0 = time.perf_counter()
        # seeded SAE init and buffer shuffles, without touching the caller's RNG state
        with _keep_signal_handlers(), torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            torch.manual_seed(train_cfg["seed"])
            warnings.filterwarnings("ignore", message="The training dataset contains fewer")
            warnings.filterwarnings("ignore", message="To copy construct from a tensor")
            runner = MultiSAETrainingRunner(
                runner_cfg, override_dataset=dataset, override_model=model
            )
            runner.run()
        train_seconds = time.perf_counter() - t0

        saes = {}
        for L in todo:
            folder = staging / "sae_lens" / f"L{L}"
            sae = SAE.load_from_disk(folder, device="cpu")  # exactly what ships
            if train_cfg["save_dtype"] != "float32":
                sae = sae.to(dtype=getattr(torch, train_cfg["save_dtype"]))
                sae.save_model(folder)
                sae = SAE.load_from_disk(folder, device="cpu")
            saes[L] = sae
        t0 = time.perf_counter()
        quality = evaluate_saes(
            model,
            saes,
            torch.tensor(held_rows, dtype=torch.long),
            first_position=first,
            batch_rows=train_cfg["eval_batch_rows"],
            ce_rows=train_cfg["eval_ce_rows"],
            progress=progress,
        )
        eval_seconds = time.perf_counter() - t0

        runner_dict = json.loads((staging / "sae_lens" / "runner_cfg.json").read_text())
        steps = _steps(train_cfg)
        for L in todo:
            folder = staging / "sae_lens" / f"L{L}"
            q = quality[L]
            q.update(_training_dead(folder, train_cfg, steps))
            q["timings"] = {
                "train_seconds_all_layers": round(train_seconds, 1),
                "train_tokens_per_s": round(train_cfg["training_tokens"] / train_seconds, 1),
                "eval_seconds_all_layers": round(eval_seconds, 1),
                "layers_trained_together": todo,
                "torch_threads": torch.get_num_threads(),
            }
            atomic_write_json(folder / "quality.json", q)
            atomic_write_json(folder / "runner_cfg.json", runner_dict)
            atomic_write_json(
                folder / "recipe_config.json",
                {
                    "recipe": "sae/train.py (personalens)",
                    "model": model.cfg.model_name,
                    "layer": L,
                    "hook_name": hook_name(L),
                    "train": train_cfg,
                    "corpus": corpus_config,
                    "corpus_summary": corpus_summary,
                    "data": data_info,
                    "versions": {
                        "sae_lens": sae_lens_version,
                        "torch": torch.__version__,
                    },
                },
            )
            dest = sae_dir(model.cfg.model_name, L, out_root)
            _install_dir(folder, dest)
            results[L] = q
            print(f"layer {L}: wrote {dest}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return results


def _training_dead(folder: Path, train_cfg: dict[str, Any], steps: int) -> dict[str, Any]:
    """Dead latents at the end of training, from what sae-lens saved with the SAE.

    ``sparsity.safetensors`` holds log10 firing frequencies over the last sparsity
    window (the steps since the last multiple of ``feature_sampling_window``);
    ``cfg.json`` metadata ``num_dead_features`` counts latents that did not fire in the last
    ``dead_feature_window`` steps.
    """
    from sae_lens.constants import SAE_CFG_FILENAME, SPARSITY_FILENAME
    from safetensors.torch import load_file

    batch = train_cfg["train_batch_size_tokens"]
    window = train_cfg["feature_sampling_window"]
    last_reset = window * ((steps - 1) // window) if steps > window else 0
    log_freq = load_file(str(folder / SPARSITY_FILENAME))["sparsity"]
    meta = json.loads((folder / SAE_CFG_FILENAME).read_text()).get("metadata", {})
    d_sae = log_freq.numel()
    out = {
        "dead_fraction_train_last_window": float((log_freq <= -9.99).float().mean()),
        "train_last_window_tokens": (steps - last_reset) * batch,
        "l0_train_last_window": meta.get("l0"),
    }
    if meta.get("num_dead_features") is not None and steps > train_cfg["dead_feature_window"]:
        out["dead_fraction_train_dead_feature_window"] = meta["num_dead_features"] / d_sae
        out["dead_feature_window_tokens"] = min(train_cfg["dead_feature_window"], steps) * batch
    return out


# ----------------------------------------------------------------------------- 4. quality


def _nll(log_probs: torch.Tensor, target: torch.Tensor) -> float:
    return float(-log_probs.gather(-1, target[..., None]).sum())


@torch.no_grad()
def evaluate_saes(
    model: HookedTransformer,
    saes: dict[int, Any],
    rows: torch.Tensor,
    *,
    first_position: int = 1,
    batch_rows: int = 4,
    ce_rows: int | None = 32,
    progress: bool = False,
) -> dict[int, dict[str, Any]]:
    """Quality of each layer's SAE on held-out token rows ``[n_rows, ctx]``.

    Over positions ``>= first_position`` of every row: explained variance
    ``1 - sum |x - x_hat|^2 / sum |x - mean(x)|^2``, mean L0, the fraction of latents that never
    fire, the mean cosine between ``x`` and ``x_hat`` and the norm ratio. On the first
    ``ce_rows`` rows, the next-token CE loss and the KL divergence from the clean model when the
    reconstruction replaces the residual stream at the layer (positions ``>= first_position``;
    position 0, the attention sink left out of training, is kept), and the CE loss with those
    positions zeroed (``ce_loss_recovered = (zero - sae) / (zero - clean)``).
    """
    layers = sorted(saes)
    for L, sae in saes.items():
        hook = sae.cfg.metadata.hook_name
        if hook is not None and hook != hook_name(L):
            raise RecipeError(f"the SAE for layer {L} was trained on {hook}, not {hook_name(L)}")
        if sae.cfg.d_in != model.cfg.d_model:
            raise RecipeError(f"SAE d_in {sae.cfg.d_in} != the model's d_model {model.cfg.d_model}")
    n_rows, ctx = rows.shape
    ce_rows = n_rows if ce_rows is None else min(ce_rows, n_rows)
    d = model.cfg.d_model
    stats = {
        L: {
            "n": 0,
            "sum_x": torch.zeros(d, dtype=torch.float64),
            "sum_sq": 0.0,
            "sum_err": 0.0,
            "l0": 0.0,
            "cos": 0.0,
            "ratio": 0.0,
            "fired": torch.zeros(saes[L].cfg.d_sae, dtype=torch.long),
            "ce_clean": 0.0,
            "ce_sae": 0.0,
            "ce_zero": 0.0,
            "kl": 0.0,
            "n_ce": 0,
        }
        for L in layers
    }
    hooks = [hook_name(L) for L in layers]
    checked = False
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_rows, desc="evaluating", unit="row")
    for start in range(0, n_rows, batch_rows):
        tokens = rows[start : start + batch_rows].to(model.cfg.device)
        with_ce = start < ce_rows
        if with_ce:
            tokens = tokens[: ce_rows - start]
        mask = torch.ones_like(tokens)
        logits, cache = model.run_with_cache(
            tokens,
            names_filter=hooks,
            stop_at_layer=None if with_ce else max(layers) + 1,
            return_type="logits" if with_ce else None,
        )
        for L in layers:
            sae, s = saes[L], stats[L]
            resid = cache[hook_name(L)]
            x = resid[:, first_position:].reshape(-1, d)
            acts = sae.encode(x.to(sae.dtype))
            x_hat = sae.decode(acts).to(x.dtype)
            s["n"] += x.shape[0]
            s["sum_x"] += x.double().sum(0)
            s["sum_sq"] += float(x.double().pow(2).sum())
            s["sum_err"] += float((x - x_hat).double().pow(2).sum())
            active = acts != 0
            s["l0"] += float(active.sum())
            s["fired"] += active.sum(0).long()
            s["cos"] += float(torch.nn.functional.cosine_similarity(x, x_hat, dim=-1).sum())
            s["ratio"] += float((x_hat.norm(dim=-1) / x.norm(dim=-1)).sum())
            if not with_ce:
                continue
            if not checked:  # the spliced forward reproduces the model when nothing is replaced
                again = model(resid, start_at_layer=L + 1, attention_mask=mask)
                if not torch.allclose(again, logits, atol=1e-3, rtol=1e-3):
                    raise RecipeError(
                        "running the model from a cached residual stream does not reproduce "
                        "its logits; the CE/KL evaluation would be wrong"
                    )
                checked = True
            spliced = resid.clone()
            spliced[:, first_position:] = x_hat.reshape(resid.shape[0], -1, d)
            zeroed = resid.clone()
            zeroed[:, first_position:] = 0
            logits_sae = model(spliced, start_at_layer=L + 1, attention_mask=mask)
            logits_zero = model(zeroed, start_at_layer=L + 1, attention_mask=mask)
            # predictions made at positions first_position .. ctx-2
            target = tokens[:, first_position + 1 :]
            sl = slice(first_position, -1)

            lp_clean = logits[:, sl].float().log_softmax(-1)
            lp_sae = logits_sae[:, sl].float().log_softmax(-1)
            lp_zero = logits_zero[:, sl].float().log_softmax(-1)
            s["ce_clean"] += _nll(lp_clean, target)
            s["ce_sae"] += _nll(lp_sae, target)
            s["ce_zero"] += _nll(lp_zero, target)
            s["kl"] += float((lp_clean.exp() * (lp_clean - lp_sae)).sum())
            s["n_ce"] += target.numel()
        if bar is not None:
            bar.update(tokens.shape[0])
    if bar is not None:
        bar.close()

    out = {}
    for L in layers:
        s, sae = stats[L], saes[L]
        n = s["n"]
        mean = s["sum_x"] / n
        total_var = s["sum_sq"] - n * float(mean.pow(2).sum())
        q: dict[str, Any] = {
            "layer": L,
            "hook_name": hook_name(L),
            "architecture": sae.cfg.architecture(),
            "d_in": sae.cfg.d_in,
            "d_sae": sae.cfg.d_sae,
            "dtype": str(sae.cfg.dtype),
            "heldout_rows": int(n_rows),
            "heldout_tokens": int(n),
            "positions": f"{first_position}..{ctx - 1} of each {ctx}-token row",
            "explained_variance": 1 - s["sum_err"] / total_var,
            "mse_per_token": s["sum_err"] / n,
            "l0": s["l0"] / n,
            "dead_fraction_heldout": float((s["fired"] == 0).float().mean()),
            "dense_fraction_heldout": float((s["fired"] > 0.1 * n).float().mean()),
            "cosine_x_xhat": s["cos"] / n,
            "norm_ratio_xhat_x": s["ratio"] / n,
        }
        if s["n_ce"]:
            nce = s["n_ce"]
            clean, with_sae, zero = s["ce_clean"] / nce, s["ce_sae"] / nce, s["ce_zero"] / nce
            q.update(
                {
                    "ce_tokens": int(nce),
                    "ce_loss_clean": clean,
                    "ce_loss_sae": with_sae,
                    "ce_loss_increase": with_sae - clean,
                    "ce_loss_zero_ablation": zero,
                    "ce_loss_recovered": (zero - with_sae) / (zero - clean)
                    if zero != clean
                    else math.nan,
                    "kl_div_sae": s["kl"] / nce,
                }
            )
        out[L] = q
    return out


def quality_table(model_name: str, root: str | Path = DEFAULT_OUT_ROOT) -> str:
    """A Markdown table of every installed layer's quality.json (for sae/README.md)."""
    base = Path(root) / model_dirname(model_name)
    rows = []
    for folder in sorted(
        base.glob("blocks.*.hook_resid_post"), key=lambda p: int(p.name.split(".")[1])
    ):
        if not (folder / "quality.json").is_file():
            continue
        q = json.loads((folder / "quality.json").read_text())
        ce = (
            f"{q['ce_loss_clean']:.3f} -> {q['ce_loss_sae']:.3f} (+{q['ce_loss_increase']:.3f})"
            if "ce_loss_clean" in q
            else "-"
        )
        rows.append(
            f"| {q['layer']} | {q['d_sae']} | {q['explained_variance']:.3f} | {q['l0']:.1f} "
            f"| {q['dead_fraction_heldout']:.3f} ({q['heldout_tokens']} tok) "
            f"| {q['dead_fraction_train_last_window']:.3f} ({q['train_last_window_tokens']} tok) "
            f"| {ce} | {q.get('kl_div_sae', float('nan')):.3f} "
            f"| {q.get('ce_loss_recovered', float('nan')):.3f} |"
        )
    if not rows:
        raise RecipeError(f"no trained SAEs under {base}")
    head = (
        "| layer | d_sae | explained variance | L0 | dead (held-out) | dead (last training "
        "window) | CE loss clean -> with SAE | KL | CE recovered |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    return "\n".join([head, *rows])
