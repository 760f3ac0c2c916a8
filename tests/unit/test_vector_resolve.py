"""load_vector: run directories, vector files and shipped vector names."""

import json
from types import SimpleNamespace

import pytest
import torch

from personalens.errors import PersonaLensError
from personalens.vectors.resolve import load_vector
from personalens.vectors.shipped import shipped_vector
from personalens.vectors.vector import PersonaVector


def _vector(seed: int, **metadata) -> PersonaVector:
    g = torch.Generator().manual_seed(seed)
    return PersonaVector(
        directions=torch.randn(3, 8, generator=g), model="m", trait="evil", metadata=metadata
    )


def test_a_shipped_name_loads_the_shipped_vector(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no file called evil here
    vector = load_vector("evil")
    shipped = shipped_vector("evil")
    assert vector.trait == "evil" and torch.equal(vector.directions, shipped.directions)
    assert vector.metadata.get("best_layer") == shipped.metadata.get("best_layer")


def test_a_path_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = _vector(0)
    mine.save(tmp_path / "evil")  # evil.json + evil.safetensors
    assert torch.equal(load_vector("evil").directions, mine.directions)


def test_an_unknown_name_is_the_missing_file_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PersonaLensError, match="No persona vector at nosuchtrait"):
        load_vector("nosuchtrait")
    with pytest.raises(PersonaLensError, match="No persona vector at evil"):
        other = SimpleNamespace(cfg=SimpleNamespace(model_name="some-other-model"))
        load_vector("evil", other)  # nothing is shipped for that model


def test_a_run_directory_adds_its_best_layer(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _vector(1).save(run / "vector")
    (run / "summary.json").write_text(json.dumps({"best_layer": 2}))
    assert load_vector(run).metadata["best_layer"] == 2
    with pytest.raises(PersonaLensError, match="holds no vector.json"):
        load_vector(tmp_path)
