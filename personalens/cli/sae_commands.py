"""``personalens decompose``: the top-k SAE features of a persona vector (JSON, CSV, HTML), with
activation attributions and, with ``--contexts``, each feature's top-activating contexts.

The CLI must start fast: torch-heavy modules are imported inside the command that runs.
"""

from __future__ import annotations

import argparse
import html as html_lib
from pathlib import Path

from personalens._io import atomic_write_text
from personalens._validate import check_count
from personalens.cli import common, flags, preflight
from personalens.cli.flags import Flag
from personalens.errors import ArgumentError, PersonaLensError

# the decomposition table's columns `decompose` prints, where present
PRINTED_COLUMNS = "layer direction rank feature cosine attribution attribution_samples".split()


DECOMPOSE_HELP = (
    "top-k SAE features of a persona vector by decoder cosine (JSON, CSV, HTML), "
    "with activation attributions and top-activating contexts"
)


DECOMPOSE_FLAGS = (
    Flag(
        "--vector",
        "a persona vector: an extraction run directory (also used for attributions), a "
        ".json/.safetensors pair, a llama.cpp control-vector .gguf, or the name of a shipped "
        "vector (e.g. evil; without --contexts, one shipped for the embedded model)",
        required=True,
    ),
    Flag(
        "--sae",
        "an SAE directory (cfg.json + sae_weights.safetensors), a folder of "
        "blocks.L.hook_resid_post SAE directories, or 'embedded' (shipped with personalens)",
        required=True,
    ),
    *flags.layer(
        "layer(s) (blocks.L.hook_resid_post; default: the SAE's own layer; for 'embedded' or a "
        "folder of per-layer SAEs, every layer that has one)",
    ),
    Flag("--k", "most aligned features per layer", type=int, default=20),
    Flag("--k-anti", "most anti-aligned features (default: --k)", type=int),
    Flag(
        "--rank-by",
        "score that picks the top features (attributions need --run)",
        choices=["cosine", "attribution", "attribution_samples"],
        default="cosine",
    ),
    Flag(
        "--run",
        "extraction run directory for the activation attributions (default: --vector "
        "when it is a run directory)",
    ),
    Flag("--out", "output directory", required=True),
    Flag(
        "--contexts",
        "also find each feature's top-activating tokens (loads the model) in the run's "
        "responses and the --corpus files",
        action="store_true",
    ),
    Flag("--corpus", "text files for --contexts", nargs="+"),
    Flag("--contexts-n", "examples per feature", type=int, default=10),
)


def cmd_decompose(args: argparse.Namespace) -> int:
    """Top-k SAE features of a persona vector: JSON, CSV and HTML; optionally top contexts."""
    run = _check_decompose_args(args)  # every flag is checked before torch is imported
    from personalens.plot.sae import plot_sae_cosines
    from personalens.plot.style import save_html
    from personalens.sae.decompose import decompose
    from personalens.sae.load import load_sae
    from personalens.vectors.resolve import load_vector

    model = common.load_model_from_args(args) if _loads_model(args) else None
    vector = load_vector(args.vector, model)
    check = model if model is not None else vector
    saes = {}
    for layer in args.layer or _sae_layers(args.sae, check) or [None]:
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
        corpus = ([run] if run is not None else []) + [Path(c) for c in args.corpus or []]
        written += _write_contexts(model, saes, dec, corpus, args, out)
    cols = [c for c in PRINTED_COLUMNS if c in table.columns]
    print(table[cols].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if run is not None:
        print(f"\nattributions from {dec.settings['activations']}")
    print(f"wrote {', '.join(str(out / w) for w in written)}")
    return 0


DECOMPOSE = common.Command(
    "decompose", DECOMPOSE_HELP, DECOMPOSE_FLAGS, cmd_decompose, runs_model=True
)


def _loads_model(args: argparse.Namespace) -> bool:
    """Whether decompose needs the model: for --contexts, or to map a .gguf onto its layers."""
    return args.contexts or Path(args.vector).suffix == ".gguf"


def _check_decompose_args(args: argparse.Namespace) -> Path | None:
    """Check every flag, file and name before anything loads; the run directory of the
    activation attributions (``--run``, else ``--vector`` when it is a run directory) or None."""
    check_count("--k", args.k, what="features per layer")
    if args.k_anti is not None:
        check_count("--k-anti", args.k_anti, minimum=0, what="anti-aligned features per layer")
    check_count("--contexts-n", args.contexts_n, what="examples per feature")
    common.check_backend(args, "decompose")
    preflight.check_vector(args.vector, args.model if _loads_model(args) else None)
    if args.sae != "embedded" and not Path(args.sae).exists():
        raise ArgumentError(
            f"--sae {args.sae}: no such SAE directory (give a folder with cfg.json and "
            "sae_weights.safetensors, a folder of blocks.L.hook_resid_post ones, or 'embedded')"
        )
    for f in args.corpus or ():
        preflight.check_file("--corpus", f, "text file")
    vector_path = Path(args.vector)
    run = preflight.check_dir("--run", args.run, "run directory") if args.run else None
    if run is None and vector_path.is_dir() and (vector_path / "summary.json").is_file():
        run = vector_path  # a run directory as --vector also gives the activations
    if args.contexts and run is None and not args.corpus:
        raise PersonaLensError(
            "--contexts needs a corpus: --run RUN_DIR (its responses) and/or --corpus FILE ..."
        )
    preflight.model_name_hint(args.model)  # a missing --model path
    return run


def _sae_layers(sae: str, model) -> list[int]:
    """The layers of ``--sae`` without ``--layer``: for 'embedded' those shipped for the model,
    for a folder of ``blocks.L.hook_resid_post`` SAE folders those it holds; else none (a single
    SAE folder: its own layer)."""
    from personalens.sae.layer_sae import RESID_POST
    from personalens.sae.load import SAE_CFG_FILE, shipped_sae_dir

    if sae == "embedded":
        name = getattr(getattr(model, "cfg", None), "model_name", None)
        folder = shipped_sae_dir(name or getattr(model, "model", None))
        if not folder.is_dir():
            raise ArgumentError(
                f"--sae embedded: no SAE is shipped for {folder.name} (SAEs ship for the "
                "embedded model); give an SAE directory"
            )
    else:
        folder = Path(sae)
        if not folder.is_dir() or (folder / SAE_CFG_FILE).is_file():
            return []  # load_sae reads (or refuses) it
    found = (RESID_POST.match(d.name) for d in sorted(folder.iterdir()) if d.is_dir())
    return sorted(int(m.group(1)) for m in found if m)


def _write_contexts(model, saes: dict, dec, corpus: list[Path], args, out: Path) -> list[str]:
    """contexts.csv and contexts.html: each feature's top-activating contexts in ``corpus``."""
    import pandas as pd

    from personalens.sae.contexts import feature_contexts

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
    return ["contexts.csv", "contexts.html"]
