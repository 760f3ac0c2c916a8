import torch

from personalens.model.layout import fast_weight_layout

from ..conftest import make_tiny_model


def test_relayout_is_bitwise_identical_and_removes_copies():
    ref = make_tiny_model(seed=3)
    fast = make_tiny_model(seed=3)
    n = fast_weight_layout(fast)
    # per block: W_Q, _W_K, _W_V, W_O, W_in, W_gate, W_out; plus W_U
    assert n == 7 * fast.cfg.n_layers + 1
    assert fast_weight_layout(fast) == 0  # idempotent
    tokens = torch.randint(3, 250, (3, 21))
    with torch.no_grad():
        a, cache_a = ref.run_with_cache(tokens)
        b, cache_b = fast.run_with_cache(tokens)
    assert torch.equal(a, b)
    for key in cache_a.keys():
        assert torch.equal(cache_a[key], cache_b[key]), key
    for (name, p), (_, q) in zip(ref.named_parameters(), fast.named_parameters()):
        assert torch.equal(p, q), name
    # the expressions TL evaluates on every forward are now free views
    mlp = fast.blocks[0].mlp
    assert mlp.W_in.T.is_contiguous() and fast.unembed.W_U.T.is_contiguous()
    assert fast.blocks[0].attn.W_Q.permute(0, 2, 1).is_contiguous()
