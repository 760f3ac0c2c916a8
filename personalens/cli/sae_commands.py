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
from personalens.cli import common
from personalens.errors import PersonaLensError

# the decomposition table's columns `decompose` prints, where present
PRINTED_COLUMNS = "layer direction rank feature cosine attribution attribution_samples".split()


DECOMPOSE_HELP = (
    "top-k SAE features of a persona vector by decoder cosine (JSON, CSV, HTML), "
    "with activation attributions and top-activating contexts"
)


def add_decompose_parser(sub) -> None:
    p = common.add_command(sub, "decompose", help=DECOMPOSE_HELP, model=True)
    p.add_argument(
        "--vector",
        required=True,
        help="a persona vector: an extraction run directory (also used for attributions), a "
        ".json/.safetensors pair, a llama.cpp control-vector .gguf, or the name of a shipped "
        "vector (e.g. evil)",
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


def cmd_decompose(args: argparse.Namespace) -> int:
    """Top-k SAE features of a persona vector: JSON, CSV and HTML; optionally top contexts."""
    from personalens.plot.sae import plot_sae_cosines
    from personalens.plot.style import save_html
    from personalens.sae.decompose import decompose
    from personalens.sae.load import load_sae
    from personalens.vectors.resolve import load_vector

    check_count("--k", args.k, what="features per layer")
    if args.k_anti is not None:
        check_count("--k-anti", args.k_anti, minimum=0, what="anti-aligned features per layer")
    check_count("--contexts-n", args.contexts_n, what="examples per feature")
    vector_path = Path(args.vector)
    run = Path(args.run) if args.run else None
    if run is None and vector_path.is_dir() and (vector_path / "summary.json").is_file():
        run = vector_path  # a run directory as --vector also gives the activations
    if args.contexts and run is None and not args.corpus:
        raise PersonaLensError(
            "--contexts needs a corpus: --run RUN_DIR (its responses) and/or --corpus FILE ..."
        )
    model = (
        common.load_model_from_args(args)
        if args.contexts or vector_path.suffix == ".gguf"
        else None
    )
    vector = load_vector(args.vector, model)
    check = model if model is not None else vector
    saes = {}
    for layer in args.layer or [None]:
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
