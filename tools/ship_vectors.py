"""Copy extraction runs' persona vectors into the package data, for pl.shipped_vector(trait).

    .venv/bin/python tools/ship_vectors.py /work/runs/outgoing /work/runs/compassionate ...

Each RUN_DIR must be a finished ``personalens extract`` run of the embedded model (its
``vector.json`` + ``vector.safetensors``, the response-average vector, and ``summary.json``).
The vector is checked (model name, shape, trait and model agreeing with ``summary.json``,
``best_layer`` recorded) and written with :meth:`PersonaVector.save` to
``personalens/data/vectors/<model>/<trait>.json`` + ``.safetensors``, with the run's headline
numbers added to ``metadata["shipped_from"]``. The directions are copied bit for bit (checked
after writing). An existing shipped vector of the same trait is replaced.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from personalens._data import VECTORS_KIND  # noqa: E402
from personalens.model.load import EMBEDDED_MODEL_NAME  # noqa: E402
from personalens.vectors.vector import PersonaVector  # noqa: E402

EMBEDDED_SHAPE = (30, 576)
RECORDED_SWEEP = (
    "layer_auc_ci",
    "layer_auc_neutral",
    "layer_auc_neutral_ci",
    "n_heldout_pos",
    "n_heldout_neg",
    "heldout_bootstrap",
    "heldout_auc_on",
)  # SmolLM2-135M-Instruct: n_layers, d_model


def ship(run: Path, dest_root: Path) -> Path:
    if not (run / "vector.json").is_file() or not (run / "summary.json").is_file():
        raise SystemExit(
            f"{run}: no vector.json/summary.json; is it a finished `personalens extract` run?"
        )
    vector = PersonaVector.load(run / "vector")
    summary = json.loads((run / "summary.json").read_text())
    problems = []
    if vector.model != EMBEDDED_MODEL_NAME:
        problems.append(f"model is {vector.model!r}, not the embedded {EMBEDDED_MODEL_NAME!r}")
    if tuple(vector.directions.shape) != EMBEDDED_SHAPE:
        problems.append(f"shape {list(vector.directions.shape)} != {list(EMBEDDED_SHAPE)}")
    if summary.get("trait") != vector.trait:
        problems.append(f"summary.json trait {summary.get('trait')!r} != {vector.trait!r}")
    if summary.get("model") != vector.model:
        problems.append(f"summary.json model {summary.get('model')!r} != {vector.model!r}")
    if vector.variant != "response_avg":
        problems.append(f"variant {vector.variant!r} (expected response_avg)")
    if problems:
        raise SystemExit(f"{run}: refusing to ship: {'; '.join(problems)}")
    metadata = dict(vector.metadata)
    if "best_layer" not in metadata:
        metadata["best_layer"] = summary["best_layer"]
    metadata["shipped_from"] = {
        "run": run.name,
        "n_candidates": summary.get("n_candidates"),
        "n_pairs_kept": summary.get("n_pairs_kept"),
        "best_layer": summary.get("best_layer"),
        "best_auc": summary.get("best_auc"),
        "source_tensors_sha256": json.loads((run / "vector.json").read_text()).get(
            "tensors_sha256"
        ),
        # the recorded layer sweep with its CIs and n: pl.plot.plot_layer_sweep(vector) draws it
        **{k: summary[k] for k in RECORDED_SWEEP if summary.get(k) is not None},
    }
    shipped = vector.replace(metadata=metadata)
    dest = dest_root / VECTORS_KIND / vector.model / vector.trait
    path = shipped.save(dest)
    back = PersonaVector.load(path)
    assert torch.equal(back.directions, vector.directions), "directions changed on the way"
    for written in (path, path.with_suffix(".safetensors")):
        written.chmod(0o644)  # package data: readable by everyone (atomic writes make 0600 files)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="extraction run directories")
    p.add_argument(
        "--data",
        type=Path,
        default=ROOT / "personalens" / "data",
        help="package data folder (default: personalens/data of this checkout)",
    )
    args = p.parse_args(argv)
    for run in args.runs:
        print(f"{run} -> {ship(run, args.data)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
