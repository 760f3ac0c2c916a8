"""llama.cpp control vector GGUF export/import (personalens.vectors.control_vector)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from types import SimpleNamespace

import gguf
import jaxtyping
import numpy as np
import pytest
import torch

import personalens
from personalens.errors import PersonaLensError
from personalens.vectors.control_vector import (
    ControlVectorError,
    default_model_hint,
    export_control_vector,
    import_control_vector,
)
from personalens.vectors.vector import PersonaVector

N_LAYERS, D_MODEL = 5, 8


@pytest.fixture
def no_hook():
    """Run without the jaxtyping/beartype hook, as in production, to reach personalens' checks."""
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", False)


def make(seed: int = 0, model: str = "SmolLM2-135M-Instruct", **kw) -> PersonaVector:
    g = torch.Generator().manual_seed(seed)
    directions = kw.pop("directions", None)
    if directions is None:
        directions = torch.randn(N_LAYERS, D_MODEL, generator=g)
    return PersonaVector(directions=directions, model=model, trait="evil", **kw)


def write_gguf(path: Path, tensors: dict[str, np.ndarray], arch: str = "controlvector") -> Path:
    """A GGUF written directly with gguf.GGUFWriter, as repeng's export_gguf does."""
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_string(f"{arch}.model_hint", "llama")
    writer.add_uint32(f"{arch}.layer_count", len(tensors))
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def rows(*indices: int, width: int = D_MODEL) -> dict[str, np.ndarray]:
    return {f"direction.{i}": np.full(width, i + 0.5, dtype=np.float32) for i in indices}


# ----------------------------------------------------------------------------- llama.cpp loader


def llama_cpp_load(path: Path, strength: float = 1.0) -> tuple[int, np.ndarray]:
    """common_control_vector_load_one (ggml-org/llama.cpp common/common.cpp), in Python.

    Each tensor must be ``direction.<N>`` (split at the first '.', std::stoi on the rest) with
    N > 0, F32 and 1-D; it is added, times the strength, at ``data[n_embd * (N - 1) + j]``.
    Any bad tensor invalidates the file (n_embd = -1, data cleared).
    """
    reader = gguf.GGUFReader(path)
    n_embd, data = -1, np.zeros(0, dtype=np.float32)
    for tensor in reader.tensors:
        prefix, _, rest = tensor.name.partition(".")
        layer_idx = int(rest) if prefix == "direction" and rest.lstrip("-").isdigit() else -1
        if layer_idx <= 0 or tensor.tensor_type != gguf.GGMLQuantizationType.F32:
            return -1, np.zeros(0, dtype=np.float32)
        src = np.asarray(tensor.data, dtype=np.float32).reshape(-1)
        if n_embd == -1:
            n_embd = src.size
        elif src.size != n_embd:
            return -1, np.zeros(0, dtype=np.float32)
        if data.size < n_embd * layer_idx:
            data = np.concatenate([data, np.zeros(n_embd * layer_idx - data.size, np.float32)])
        data[n_embd * (layer_idx - 1) : n_embd * layer_idx] += src * np.float32(strength)
    return n_embd, data


def llama_cpp_layer_tensors(
    data: np.ndarray, n_embd: int, n_layer: int, il_start: int = 1, il_end: int | None = None
) -> list[np.ndarray | None]:
    """What ``build_cvec(cur, il)`` adds to the output of layer il, for il in 0..n_layer-1.

    llama_adapter_cvec::init/apply/tensor_for (src/llama-adapter.cpp): no tensor for il = 0;
    tensors[il] = data[n_embd * (il - 1) ...] for il >= 1 when that slice exists (else zeros);
    nothing outside [il_start, il_end] (common_init_from_params defaults: 1 .. n_layer).
    """
    il_end = n_layer if il_end is None else il_end
    out: list[np.ndarray | None] = [None]
    for il in range(1, n_layer):
        off = n_embd * (il - 1)
        tensor = data[off : off + n_embd] if off + n_embd <= data.size else np.zeros(n_embd)
        out.append(tensor if il_start <= il <= il_end else None)
    return out


def test_llama_cpp_adds_direction_L_to_output_of_layer_L(tmp_path):
    vector = make()
    path = tmp_path / "evil.gguf"
    with pytest.warns(UserWarning, match="Layer 0"):
        export_control_vector(vector, path)
    n_embd, data = llama_cpp_load(path, strength=1.0)
    assert n_embd == D_MODEL
    added = llama_cpp_layer_tensors(data, n_embd, N_LAYERS)
    assert added[0] is None  # llama.cpp never steers layer 0
    for il in range(1, N_LAYERS):  # build_cvec(cur, il) runs on the output of layer il
        assert np.array_equal(added[il], vector.directions[il].numpy())


def test_llama_cpp_strength_and_layer_range(tmp_path):
    vector = make()
    path = export_control_vector(vector, tmp_path / "v.gguf", layers=[2, 3])
    n_embd, data = llama_cpp_load(path, strength=4.0)
    added = llama_cpp_layer_tensors(data, n_embd, N_LAYERS, il_start=3, il_end=4)
    assert added[1] is None and added[2] is None  # outside --control-vector-layer-range 3 4
    assert torch.equal(torch.from_numpy(added[3].copy()), vector.directions[3] * 4.0)
    assert not added[4].any()  # in range but not exported


def test_llama_cpp_rejects_direction_zero(tmp_path):
    path = write_gguf(tmp_path / "zero.gguf", rows(0, 1))
    assert llama_cpp_load(path)[0] == -1
    with pytest.raises(ControlVectorError, match="direction.0"):
        import_control_vector(path)


# ----------------------------------------------------------------------------- round trip


def test_round_trip_is_bit_exact_and_layer_0_is_zero(tmp_path):
    vector = make(judge="gpt-4.1-mini")
    path = tmp_path / "evil.gguf"
    with pytest.warns(UserWarning, match="Layer 0 .* not exported"):
        assert export_control_vector(vector, path) == path
    back = import_control_vector(path)
    assert back.n_layers == N_LAYERS and back.d_model == D_MODEL
    assert torch.equal(back.directions[1:], vector.directions[1:])
    assert not back.directions[0].any()
    assert (back.model, back.trait, back.method) == (vector.model, "evil", "control_vector_import")
    info = back.metadata["control_vector"]
    assert info["path"] == str(path) and info["model_hint"] == "llama"
    assert info["file_layers"] == [1, 2, 3, 4] and info["convention"] == "llama.cpp"


def test_round_trip_explicit_layers_leaves_other_layers_zero(tmp_path):
    vector = make()
    path = export_control_vector(vector, tmp_path / "v.gguf", layers=[3, -1, 3])
    back = import_control_vector(path)
    assert back.n_layers == N_LAYERS  # from personalens.n_layers in the file
    for layer in range(N_LAYERS):
        expected = vector.directions[layer] if layer in (3, 4) else torch.zeros(D_MODEL)
        assert torch.equal(back.directions[layer], expected)


def test_coeff_scales_the_written_directions(tmp_path):
    vector = make()
    path = export_control_vector(vector, tmp_path / "v.gguf", layers=range(1, 5), coeff=-2)
    back = import_control_vector(path)
    assert torch.equal(back.directions[1:], vector.directions[1:] * -2.0)
    assert back.metadata["control_vector"]["personalens"]["coeff"] == -2.0


@pytest.mark.parametrize("coeff", [float("nan"), 1e39])
def test_bad_coeff(tmp_path, coeff):
    with pytest.raises(ControlVectorError, match="coeff"):
        export_control_vector(make(), tmp_path / "v.gguf", layers=[1], coeff=coeff)


def test_package_exports_the_functions():
    assert personalens.export_control_vector is export_control_vector
    assert personalens.import_control_vector is import_control_vector


# ----------------------------------------------------------------------------- layer 0


def test_zero_layer_0_is_skipped_silently(tmp_path):
    directions = torch.randn(N_LAYERS, D_MODEL)
    directions[0] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        export_control_vector(make(directions=directions), tmp_path / "v.gguf")


@pytest.mark.parametrize("layers", [[0], [0, 2], -N_LAYERS, [2, -N_LAYERS]])
def test_explicit_layer_0_raises(tmp_path, layers):
    path = tmp_path / "v.gguf"
    with pytest.raises(ValueError, match="Cannot export layer 0"):
        export_control_vector(make(), path, layers=layers)
    assert not path.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("layers", [[N_LAYERS], [], ["2"]])
def test_bad_layers_raise(tmp_path, layers, no_hook):
    with pytest.raises(ControlVectorError):
        export_control_vector(make(), tmp_path / "v.gguf", layers=layers)


def test_single_layer_vector_cannot_be_exported(tmp_path):
    vector = PersonaVector(directions=torch.ones(1, D_MODEL), model="m", trait="t")
    with pytest.raises(ControlVectorError, match="single layer"):
        export_control_vector(vector, tmp_path / "v.gguf")


# ----------------------------------------------------------------------------- file contents


def test_gguf_keys_and_tensor_names(tmp_path):
    vector = make()
    path = export_control_vector(vector, tmp_path / "v.gguf", layers=[1, 2, 3, 4])
    reader = gguf.GGUFReader(path)
    assert reader.get_field("general.architecture").contents() == "controlvector"
    assert reader.get_field("controlvector.model_hint").contents() == "llama"
    count = reader.get_field("controlvector.layer_count")
    assert count.types == [gguf.GGUFValueType.UINT32] and count.contents() == 4
    assert [t.name for t in reader.tensors] == [
        "direction.1",
        "direction.2",
        "direction.3",
        "direction.4",
    ]
    for tensor in reader.tensors:
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
        assert [int(d) for d in tensor.shape] == [D_MODEL]
    assert reader.get_field("personalens.trait").contents() == "evil"
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_explicit_model_hint(tmp_path):
    path = export_control_vector(make(), tmp_path / "v.gguf", layers=[1], model_hint="qwen2")
    assert gguf.GGUFReader(path).get_field("controlvector.model_hint").contents() == "qwen2"
    assert import_control_vector(path).metadata["control_vector"]["model_hint"] == "qwen2"


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("meta-llama/Llama-3.1-8B-Instruct", "llama"),
        ("SmolLM2-135M-Instruct", "llama"),
        ("Qwen/Qwen2.5-7B-Instruct", "qwen2"),
        ("Qwen3-4B", "qwen3"),
        ("google/gemma-2-2b-it", "gemma2"),
        ("mistralai/Mistral-7B-Instruct-v0.3", "mistral"),
        ("gpt2-small", "gpt2"),
        ("my-own-model", "my-own-model"),
    ],
)
def test_default_model_hint(name, hint):
    assert default_model_hint(name) == hint


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = export_control_vector(make(), tmp_path / "v.gguf", layers=[1])
    before = path.read_bytes()

    def boom(self):
        raise OSError("disk full")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", boom)
    with pytest.raises(OSError, match="disk full"):
        export_control_vector(make(seed=1), path, layers=[1])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["v.gguf"]


# ----------------------------------------------------------------------------- conventions


def test_repeng_file_imports_with_the_same_numbering(tmp_path):
    # repeng numbers directions by 0-based decoder layer (hidden_states[layer + 1]), as llama.cpp
    path = write_gguf(tmp_path / "repeng.gguf", rows(4, 3, 2, 1))
    default = import_control_vector(path)
    repeng = import_control_vector(path, convention="repeng")
    assert default.n_layers == 5  # highest direction + 1, no personalens keys in the file
    assert torch.equal(default.directions, repeng.directions)
    assert default.directions[2].tolist() == [2.5] * D_MODEL and not default.directions[0].any()
    assert default.model == "llama" and default.trait == "repeng"


def test_hf_hidden_states_convention_shifts_by_one(tmp_path):
    path = write_gguf(tmp_path / "hf.gguf", rows(0, 1, 3))
    vector = import_control_vector(path, convention="hf_hidden_states", n_layers=4)
    assert vector.directions[0].tolist() == [1.5] * D_MODEL  # direction.1 -> layer 0
    assert vector.directions[2].tolist() == [3.5] * D_MODEL  # direction.3 -> layer 2
    assert not vector.directions[1].any() and not vector.directions[3].any()
    assert vector.hf_embedding_row.tolist() == [0.5] * D_MODEL  # direction.0 -> embeddings


def test_unknown_convention(tmp_path):
    path = write_gguf(tmp_path / "v.gguf", rows(1))
    with pytest.raises(ControlVectorError, match="unknown convention"):
        import_control_vector(path, convention="hf")


# ----------------------------------------------------------------------------- model / n_layers


def test_n_layers_and_width_from_a_model_cfg(tmp_path):
    from transformer_lens import HookedTransformerConfig

    path = write_gguf(tmp_path / "v.gguf", rows(1, 2))
    cfg = HookedTransformerConfig(n_layers=6, d_model=D_MODEL, n_ctx=16, d_head=4, act_fn="relu")
    vector = import_control_vector(path, model=cfg)
    assert vector.n_layers == 6
    narrow = HookedTransformerConfig(n_layers=6, d_model=16, n_ctx=16, d_head=4, act_fn="relu")
    with pytest.raises(ControlVectorError, match="width 8 .* d_model=16"):
        import_control_vector(path, model=narrow)


def test_direction_beyond_n_layers(tmp_path):
    path = write_gguf(tmp_path / "v.gguf", rows(1, 7))
    with pytest.raises(ControlVectorError, match="layer 7, but n_layers is 4"):
        import_control_vector(path, n_layers=4)
    model = SimpleNamespace(cfg=SimpleNamespace(n_layers=4, d_model=D_MODEL, model_name="m"))
    with pytest.raises(ControlVectorError, match="deeper model"):
        import_control_vector(path, model=model)
    with pytest.raises(ControlVectorError, match="make them agree"):
        import_control_vector(path, model=model, n_layers=8)


def test_model_name_and_trait_arguments(tmp_path):
    path = write_gguf(tmp_path / "v.gguf", rows(1))
    vector = import_control_vector(path, model="my-model", trait="happy", n_layers=3)
    assert (vector.model, vector.trait, vector.n_layers) == ("my-model", "happy", 3)


# ----------------------------------------------------------------------------- bad files


def test_wrong_architecture(tmp_path):
    path = write_gguf(
        tmp_path / "model.gguf", {"blk.0.attn_norm.weight": np.ones(8, np.float32)}, arch="llama"
    )
    with pytest.raises(ControlVectorError, match="architecture 'llama'.*model file"):
        import_control_vector(path)


@pytest.mark.parametrize(
    ("tensors", "match"),
    [
        ({"direction.x": np.ones(8, np.float32)}, "direction.x"),
        ({"direction.-1": np.ones(8, np.float32)}, "direction.-1"),
        ({"direction.1": np.ones(8, np.float32), "bias": np.ones(8, np.float32)}, "'bias'"),
        ({"direction.1": np.ones(8, np.float16)}, "F16"),
        ({"direction.1": np.ones((2, 8), np.float32)}, "1-D"),
        ({"direction.1": np.ones(8, np.float32), "direction.2": np.ones(6, np.float32)}, "widths"),
        ({}, "no direction"),
    ],
)
def test_malformed_tensors(tmp_path, tensors, match):
    path = write_gguf(tmp_path / "bad.gguf", tensors)
    with pytest.raises(ControlVectorError, match=match):
        import_control_vector(path)


def test_not_a_gguf_and_missing_file(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all")
    with pytest.raises(ControlVectorError, match="not a readable GGUF"):
        import_control_vector(junk)
    with pytest.raises(PersonaLensError, match="not found"):
        import_control_vector(tmp_path / "missing.gguf")
