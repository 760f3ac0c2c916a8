"""Bad inputs fail at the API boundary with a clear personalens error, before anything slow.

NaN, infinite or huge steering values, counts of 0 or less, duplicate pairs, non-integer layers,
malformed trait files and SAEs that do not fit: each raises a
:class:`~personalens.errors.PersonaLensError` (an :class:`ArgumentError` for arguments) naming
the argument and the fix, and the CLI refuses bad flags before the model loads.
"""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from personalens._validate import MAX_STEERING_VALUE, load_json_file
from personalens.cli import common
from personalens.cli.main import main
from personalens.conventions import select_layers
from personalens.errors import ArgumentError, LayerError, PersonaLensError
from personalens.extraction.config import ExtractionConfig
from personalens.extraction.traits import TraitFileError, load_trait, load_trait_file
from personalens.model.generation import GenerationConfig
from personalens.sae.load import load_sae
from personalens.steering.hooks import add_steering, steer
from personalens.steering.plan import plan_steering
from personalens.vectors.vector import PersonaVector

NAN, INF = math.nan, math.inf
D_MODEL, N_LAYERS = 32, 3  # the tiny_model fixture


@pytest.fixture(scope="module")
def vector():
    g = torch.Generator().manual_seed(0)
    return PersonaVector(
        directions=torch.randn(N_LAYERS, D_MODEL, generator=g),
        model="tiny-random",
        trait="evil",
        metadata={"best_layer": 1},
    )


def _hook_count(model) -> int:
    return sum(len(point.fwd_hooks) for point in model.hook_dict.values())


# ----------------------------------------------------------------------------- 1. steering values


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"coeff": NAN}, r"coeff=nan: must be a finite number"),
        ({"coeff": INF}, r"coeff=inf: must be a finite number"),
        ({"coeff": -INF}, r"coeff=-inf"),
        ({"coeff": 1e30}, r"coeff=1e\+30: steering values must be within ±1e\+06"),
        ({"coeff": -2e6}, r"within ±1e\+06"),
        ({"coeff": [1.0, NAN], "layers": [0, 1]}, r"coeff\[1\]=nan"),
        ({"coeff": {1: INF}, "layers": [1]}, r"coeff\[1\]=inf"),
        ({"coeff": NAN, "coeff_scale": "resid"}, r"coeff=nan"),
        ({"coeff": NAN, "coeff_scale": "unit"}, r"coeff=nan"),
        ({"coeff": NAN, "mode": "ablate"}, r"coeff=nan"),
        ({"mode": "cap", "bound": NAN}, r"bound=nan"),
        ({"mode": "cap", "bound": -INF}, r"bound=-inf"),
        ({"mode": "cap", "bound": [1.0, 1e9], "layers": [0, 1]}, r"bound\[1\]=1000000000"),
        ({"mode": "cap", "percentile": NAN}, r"percentile=nan"),
        ({"mode": "cap", "percentile": 101}, r"percentile=101: must be in \[0, 100\]"),
        ({"coeff": True}, r"coeff=True"),
    ],
)
def test_plan_steering_refuses_bad_coefficients_and_bounds(tiny_model, vector, kwargs, match):
    kwargs = {"layers": 1, **kwargs}
    with pytest.raises(ArgumentError, match=match):
        plan_steering(tiny_model, vector, **kwargs)


def test_bad_coefficient_fails_before_resid_calibration(tiny_model, vector, monkeypatch):
    """coeff_scale='resid' runs reference prompts through the model: a NaN coefficient is
    refused before that forward pass."""

    def forward(*args, **kwargs):
        raise AssertionError("the model ran before the coefficient was checked")

    monkeypatch.setattr("personalens.steering.plan.residual_norms", forward)
    monkeypatch.setattr("personalens.steering.plan.calibrate_cap", forward)
    with pytest.raises(ArgumentError, match="coeff=nan"):
        plan_steering(tiny_model, vector, NAN, layers=1, coeff_scale="resid")
    with pytest.raises(ArgumentError, match="bound=nan"):
        plan_steering(tiny_model, vector, layers=1, mode="cap", bound=NAN)


def test_steer_and_add_steering_attach_nothing_on_a_bad_coefficient(tiny_model, vector):
    before = _hook_count(tiny_model)
    with pytest.raises(ArgumentError, match="coeff=nan"):
        with steer(tiny_model, vector, NAN, layers=1):
            pass
    with pytest.raises(ArgumentError, match=r"coeff=1e\+30"):
        add_steering(tiny_model, vector, 1e30, layers=1)
    assert _hook_count(tiny_model) == before


def test_resid_norms_must_be_finite(tiny_model, vector):
    with pytest.raises(ArgumentError, match=r"resid_norms at layer\(s\) \[1\]"):
        plan_steering(
            tiny_model, vector, 0.1, layers=1, coeff_scale="resid", resid_norms=[1.0, NAN, 1.0]
        )


def test_the_largest_allowed_coefficient_still_plans(tiny_model, vector):
    plan = plan_steering(tiny_model, vector, MAX_STEERING_VALUE, layers=1)
    assert plan.description["coeff"] == [MAX_STEERING_VALUE]


# ----------------------------------------------------------------------------- 2. ExtractionConfig


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_questions": -1}, r"max_questions=-1: must be >= 1"),
        ({"max_questions": 0}, r"max_questions=0"),
        ({"pairs": (0, 0)}, r"pair\(s\) \[0\] listed more than once"),
        ({"pairs": (1, 0, 1)}, r"pair\(s\) \[1\] listed more than once"),
        ({"pairs": (-1,)}, r"-1 is not an instruction-pair index"),
        ({"pairs": ()}, r"no instruction pair selected"),
        ({"n_per_question": 0}, r"n_per_question=0"),
        ({"max_new_tokens": 0}, r"max_new_tokens=0"),
        ({"max_new_tokens": -5}, r"max_new_tokens=-5"),
        ({"temperature": NAN}, r"temperature=nan"),
        ({"temperature": -1.0}, r"temperature=-1.0"),
        ({"top_p": 0.0}, r"top_p=0.0: must be in \(0, 1\]"),
        ({"top_p": 1.5}, r"top_p=1.5"),
        ({"generation_batch_size": 0}, r"generation_batch_size=0"),
        ({"activation_batch_size": 0}, r"activation_batch_size=0"),
        ({"judge_chunk": 0}, r"judge_chunk=0"),
        ({"threshold": NAN}, r"threshold=nan"),
        ({"threshold": 150.0}, r"threshold=150.0: must be in \[0, 100\]"),
        ({"coherence_threshold": -1.0}, r"coherence_threshold=-1.0"),
        ({"min_heldout_per_class": -1}, r"min_heldout_per_class=-1"),
    ],
)
def test_extraction_config_refuses_bad_settings(kwargs, match):
    with pytest.raises(ArgumentError, match=match):
        ExtractionConfig(**kwargs)


def test_extraction_config_keeps_its_fields_and_accepts_good_settings():
    from dataclasses import fields

    names = [f.name for f in fields(ExtractionConfig)]
    assert names == [
        "n_per_question",
        "max_new_tokens",
        "temperature",
        "top_p",
        "seed",
        "threshold",
        "coherence_threshold",
        "pairs",
        "max_questions",
        "generation_batch_size",
        "activation_batch_size",
        "judge_chunk",
        "min_heldout_per_class",
    ]  # fmt: skip  (a run's identity)
    cfg = ExtractionConfig(pairs=(2, 0), max_questions=1, threshold=0.0, temperature=0.0)
    assert cfg.pairs == (2, 0)
    ExtractionConfig(threshold=100.0, top_p=1.0, min_heldout_per_class=0)


# ----------------------------------------------------------------------------- 3. GenerationConfig


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_new_tokens": 0}, r"max_new_tokens=0: must be >= 1"),
        ({"max_new_tokens": -3}, r"max_new_tokens=-3"),
        ({"temperature": -1.0}, r"temperature=-1.0: must be >= 0"),
        ({"temperature": NAN}, r"temperature=nan: must be a finite number"),
        ({"temperature": INF}, r"temperature=inf"),
        ({"top_p": 0.0}, r"top_p=0.0"),
        ({"top_p": NAN}, r"top_p=nan"),
        ({"batch_size": 0}, r"batch_size=0"),
        ({"n": 0}, r"n=0"),
        ({"n": True}, r"n=True"),
    ],
)
def test_generation_config_refuses_bad_settings(kwargs, match):
    with pytest.raises(ArgumentError, match=match):
        GenerationConfig(**kwargs)
    with pytest.raises(ValueError):  # ArgumentError is also a ValueError
        GenerationConfig(**kwargs)


# ----------------------------------------------------------------------------- 4. layers


@pytest.mark.parametrize(
    "layers", [[1.5], [2.0], [True], (0, False), [None], ["1"], torch.tensor([1.5])]
)
def test_select_layers_refuses_non_integers(layers):
    with pytest.raises(ArgumentError, match="is not a layer index"):
        select_layers(layers, N_LAYERS)


def test_select_layers_still_takes_ints_and_integer_tensors():
    assert select_layers([0, -1], N_LAYERS) == (0, 2)
    assert select_layers(torch.tensor(1), N_LAYERS) == (1,)
    assert select_layers(torch.tensor([0, 2]), N_LAYERS) == (0, 2)
    with pytest.raises(LayerError, match="unknown layer 3"):
        select_layers([3], N_LAYERS)


def test_steering_layers_are_resolved_by_select_layers(tiny_model, vector):
    """plan_steering resolves its layers with select_layers (typed callers are stopped earlier
    by the runtime type checker the tests run under; untyped ones get the ArgumentError)."""
    with pytest.raises(ArgumentError, match=r"layers=\[1.5\]: 1.5 \(float\) is not a layer"):
        select_layers([1.5], N_LAYERS, unique=True)
    with pytest.raises(LayerError, match="unknown layer 7"):
        plan_steering(tiny_model, vector, 4.0, layers=[7])


# ----------------------------------------------------------------------------- 5. trait files

TRAIT = {
    "instruction": [{"pos": "Be evil.", "neg": "Be kind."}],
    "questions": ["How are you?", "What is new?"],
    "eval_prompt": "Q: {question} A: {answer}",
}


@pytest.mark.parametrize(
    ("pair", "found"),
    [
        ({"pos": "Be evil.", "foo": "x"}, "['foo', 'pos']"),
        ({"pos": "Be evil.", "neg": "Be kind.", "foo": "x"}, "['foo', 'neg', 'pos']"),
        ({"pos": "Be evil."}, "['pos']"),
        (["Be evil.", "Be kind."], "list"),
    ],
)
def test_a_pair_with_other_keys_names_the_pair_and_the_keys(tmp_path, pair, found):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({**TRAIT, "instruction": [TRAIT["instruction"][0], pair]}))
    with pytest.raises(TraitFileError) as info:
        load_trait_file(path)
    message = str(info.value)
    assert "key 'instruction[1]'" in message and "exactly the keys 'pos' and 'neg'" in message
    assert found in message


def test_a_non_utf8_trait_file_is_a_trait_file_error(tmp_path):
    path = tmp_path / "latin.json"
    text = json.dumps({**TRAIT, "description": "café"}, ensure_ascii=False)
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(TraitFileError, match="not UTF-8 text"):
        load_trait_file(path)
    with pytest.raises(TraitFileError, match="not UTF-8 text"):
        load_trait(str(path))


@pytest.mark.parametrize(
    "nested", ["[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000]
)
def test_deeply_nested_json_is_a_trait_file_error(tmp_path, nested):
    path = tmp_path / "deep.json"
    path.write_text(nested)
    with pytest.raises(TraitFileError, match="nested too deeply"):
        load_trait_file(path)


def test_load_json_file_turns_recursion_into_the_files_error(tmp_path):
    class MyFileError(PersonaLensError):
        pass

    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(MyFileError, match=r"my file .*deep.json: its JSON is nested too deeply"):
        load_json_file(path, MyFileError, "my file")


# ----------------------------------------------------------------------------- 6. SAEs


def _sae(d_in: int = D_MODEL, d_sae: int = 16, layer: int = 1):
    with warnings.catch_warnings():  # sae-lens imports deprecated TransformerLens names
        warnings.simplefilter("ignore", DeprecationWarning)
        from sae_lens import StandardSAE, StandardSAEConfig
        from sae_lens.saes.sae import SAEMetadata

    cfg = StandardSAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        metadata=SAEMetadata(hook_name=f"blocks.{layer}.hook_resid_post", model_name="other"),
    )
    return StandardSAE(cfg)


def test_an_sae_of_another_width_is_refused_before_its_weights_load(tmp_path, tiny_model):
    folder = tmp_path / "narrow"
    _sae(d_in=16).save_model(folder)
    weights = folder / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:20])  # would fail if it were read
    with pytest.raises(PersonaLensError, match=r"d_in=16 but model 'tiny-random' has d_model=32"):
        load_sae(folder, model=tiny_model)


def test_a_cut_weights_file_names_the_file(tmp_path, tiny_model):
    folder = tmp_path / "cut"
    _sae().save_model(folder)
    weights = folder / "sae_weights.safetensors"
    data = weights.read_bytes()
    for cut in (data[: len(data) // 2], data[:5]):
        weights.write_bytes(cut)
        with pytest.raises(PersonaLensError, match="damaged or cut short") as info:
            load_sae(folder, model=tiny_model)
        assert str(weights) in str(info.value)


def test_a_cfg_that_disagrees_with_its_weights_is_a_clear_error(tmp_path):
    folder = tmp_path / "mismatch"
    _sae(d_in=D_MODEL).save_model(folder)
    cfg_file = folder / "cfg.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["d_in"] = 16
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(PersonaLensError, match=r"cfg.json belongs to sae_weights.safetensors"):
        load_sae(folder)  # no model to compare with: the weights themselves disagree


# ----------------------------------------------------------------------------- 7. the CLI


class ModelLoaded(Exception):
    """Raised by the test's model loader: the command got as far as loading the model."""


@pytest.fixture
def no_model(monkeypatch):
    def load(args):
        raise ModelLoaded

    monkeypatch.setattr(common, "load_model_from_args", load)


STEER = ["steer", "--vector", "evil", "--prompt", "Hi"]
SWEEP = ["steering-sweep", "--vector", "evil", "--out", "OUT"]
EXTRACT = ["extract", "--trait", "evil", "--judge", "offline", "--out", "OUT"]


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        ([*STEER, "--coeff", "nan"], "--coeff nan"),
        ([*STEER, "--coeff", "inf"], "--coeff inf"),
        ([*STEER, "--coeff=-inf"], "--coeff -inf"),
        ([*STEER, "--coeff", "1e30"], "--coeff 1e+30"),
        ([*STEER, "--coeff", "nan", "--mode", "ablate"], "--coeff nan"),
        ([*STEER, "--coeff", "nan", "--coeff-scale", "resid"], "--coeff nan"),
        ([*STEER, "--mode", "cap", "--bound", "nan"], "--bound nan"),
        ([*STEER, "--mode", "cap", "--bound=-inf"], "--bound -inf"),
        ([*STEER, "--mode", "cap", "--percentile", "nan"], "--percentile nan"),
        ([*STEER, "--coeff", "4", "--max-new-tokens", "0"], "--max-new-tokens 0"),
        ([*STEER, "--coeff", "4", "--temperature", "-1"], "--temperature -1"),
        ([*STEER, "--coeff", "4", "--temperature", "nan"], "--temperature nan"),
        ([*STEER], "--coeff"),  # --mode add without --coeff
        ([*SWEEP, "--coeffs", "0", "nan"], "--coeffs nan"),
        ([*SWEEP, "--coeffs", "0", "4", "--batch-size", "0"], "--batch-size 0"),
        ([*SWEEP, "--coeffs", "0", "4", "--n-per-prompt", "0"], "--n-per-prompt 0"),
        ([*EXTRACT, "--max-questions", "-1"], "--max-questions -1"),
        ([*EXTRACT, "--pairs", "0", "0"], "listed more than once"),
        ([*EXTRACT, "--pairs", "99"], "out of range"),
        ([*EXTRACT, "--batch-size", "0"], "--batch-size 0"),
        ([*EXTRACT, "--n-per-question", "0"], "--n-per-question 0"),
        ([*EXTRACT, "--max-new-tokens", "0"], "--max-new-tokens 0"),
        ([*EXTRACT, "--temperature", "-1"], "--temperature -1"),
        ([*EXTRACT, "--threshold", "nan"], "--threshold nan"),
        ([*EXTRACT, "--shard-timeout", "nan"], "--shard-timeout nan"),
        (["chat", "--temperature", "-1"], "--temperature -1"),
        (["chat", "--top-p", "0"], "--top-p 0"),
        (["chat", "--vector", "evil", "--coeff", "nan"], "--coeff nan"),
        (["chat", "--vector", "evil", "--dynamic", "--max-coeff", "nan"], "--max-coeff nan"),
        (["chat", "--vector", "evil", "--dynamic", "--target", "evil=nan"], "--target"),
        (
            [
                "screen",
                "--vector",
                "evil",
                "--data",
                "d.jsonl",
                "--out",
                "o",
                "--max-new-tokens",
                "0",
            ],
            "--max-new-tokens 0",
        ),  # fmt: skip
        (["questionnaire", "--batch-size", "0"], "--batch-size 0"),
        (["questionnaire", "--vector", "evil", "--coeff", "inf"], "--coeff inf"),
        (["decompose", "--vector", "evil", "--sae", "s", "--out", "o", "--k", "0"], "--k 0"),
    ],
)
def test_cli_refuses_bad_numbers_before_loading_the_model(
    capsys, no_model, tmp_path, monkeypatch, argv, flag
):
    monkeypatch.chdir(tmp_path)
    code = main(argv)
    out = capsys.readouterr()
    assert code == 2, out.err
    assert out.out == ""  # no reply, no JSON with NaN in it
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("personalens: error: "), out.err
    assert flag in lines[0]
    assert not (tmp_path / "OUT").exists()  # nothing written


@pytest.mark.parametrize(
    "argv",
    [
        [*STEER, "--coeff", "4"],
        [*STEER, "--coeff", "1e6", "--mode", "ablate"],
        [*STEER, "--mode", "cap", "--bound", "-3.5"],
        [*SWEEP, "--coeffs", "0", "4", "--n-per-prompt", "2", "--batch-size", "1"],
        [*EXTRACT, "--pairs", "1", "0", "--max-questions", "1", "--temperature", "0"],
        [*EXTRACT, "--pairs"],  # a bare --pairs means all pairs, as before
        ["chat", "--top-p", "1", "--temperature", "0.7"],
        ["questionnaire", "--max-new-tokens", "1"],
    ],
)
def test_cli_with_good_numbers_goes_on_to_load_the_model(no_model, tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoaded):
        main(argv)
