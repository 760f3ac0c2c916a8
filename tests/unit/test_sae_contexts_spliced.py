"""Feature contexts on a HookedSAETransformer with an SAE spliced in at the read layer: the
residual is read at the spliced SAE's input (what the SAE being described encodes), as on the
plain model, not at the replaced hook point."""

from __future__ import annotations

import pytest
import torch

from personalens.conventions import resid_input_hook
from personalens.errors import PersonaLensError
from personalens.sae.contexts import feature_contexts

# the spliced model (an SAE at layer 1 of the tiny model's weights) and the SAE-test helpers
from tests.unit.test_first_hour_steering import sae_model  # noqa: F401
from tests.unit.test_sae import TEXTS, make_sae

SPLICED = "blocks.1.hook_resid_post"


def test_contexts_read_the_spliced_saes_input(sae_model, tiny_model):  # noqa: F811
    assert resid_input_hook(tiny_model, 1) == SPLICED
    assert resid_input_hook(sae_model, 1) == f"{SPLICED}.hook_sae_input"
    assert resid_input_hook(sae_model, 0) == "blocks.0.hook_resid_post"  # no SAE there
    sae = make_sae(layer=1, seed=4)
    kw = dict(n=3, window=(2, 1), batch_size=2, progress=False)
    spliced = feature_contexts(sae_model, sae, 1, [0, 5, 17], TEXTS, **kw).to_frame()
    plain = feature_contexts(tiny_model, sae, 1, [0, 5, 17], TEXTS, **kw).to_frame()
    assert len(plain) > 0
    assert spliced[["feature", "token", "source", "position"]].equals(
        plain[["feature", "token", "source", "position"]]
    )
    torch.testing.assert_close(
        torch.tensor(spliced.activation.to_numpy()),
        torch.tensor(plain.activation.to_numpy()),
        rtol=1e-4,
        atol=1e-5,
    )


def test_a_replaced_hook_point_without_sae_hooks_is_refused():
    from torch import nn

    from tests.conftest import make_tiny_model

    model = make_tiny_model(n_layers=2)
    model.blocks[1].hook_resid_post = nn.Identity()
    model.setup()
    with pytest.raises(PersonaLensError, match="not a hook point"):
        resid_input_hook(model, 1)
