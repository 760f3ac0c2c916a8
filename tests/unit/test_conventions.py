import pytest

from personalens.conventions import (
    HOOK_TEMPLATE,
    check_layer,
    hf_hidden_states_index,
    hook_name,
    layer_from_hf_index,
)


def test_hook_name_is_resid_post():
    assert HOOK_TEMPLATE == "blocks.{layer}.hook_resid_post"
    assert hook_name(12) == "blocks.12.hook_resid_post"


def test_hf_index_round_trip():
    for layer in range(30):
        assert hf_hidden_states_index(layer) == layer + 1
        assert layer_from_hf_index(hf_hidden_states_index(layer)) == layer
    with pytest.raises(ValueError, match="embedding output"):
        layer_from_hf_index(0)


def test_check_layer():
    assert check_layer(0, 30) == 0
    assert check_layer(-1, 30) == 29
    with pytest.raises(
        ValueError, match=r"unknown layer 30: this model has 30 layers, numbered 0..29"
    ):
        check_layer(30, 30)
    with pytest.raises(ValueError, match="unknown layer -31"):
        check_layer(-31, 30)
    with pytest.raises(TypeError):
        check_layer(1.0, 30)  # type: ignore[arg-type]
