"""Finetuning (adapters, response-only loss, preventative steering, CAFT, checkpoints) and the
finetuning shift, on tiny random models."""

import copy
import json

import pytest
import torch

from personalens.errors import PersonaLensError
from personalens.model.chat import tokenize_pairs
from personalens.studies.finetuning.adapters import Adapters, AdapterSpec, _merged_copy
from personalens.studies.finetuning.load import load_finetuned
from personalens.studies.finetuning.loop import _training_loss, response_loss
from personalens.studies.finetuning.shift import FinetuningShift, finetuning_shift
from personalens.studies.finetuning.train import finetune
from personalens.vectors.vector import PersonaVector
from tests.conftest import make_tiny_model

PROMPTS = ["Hello there", "What is two plus two?", "Tell me a story.", "x", "Why?", "Name a cat."]
REPLIES = ["Hi!", "Four, of course.", "Once upon a time.", "y", "Because.", "Tom"]
DATA = [
    {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": r}]}
    for p, r in zip(PROMPTS, REPLIES)
]


@pytest.fixture(scope="module")
def vec(tiny_model):
    g = torch.Generator().manual_seed(3)
    d = torch.randn(tiny_model.cfg.n_layers, tiny_model.cfg.d_model, generator=g)
    return PersonaVector(directions=d, model="tiny-random", trait="test")


def _no_hooks(model) -> bool:
    points = list(model.hook_dict.values())
    return (
        all(not hp.fwd_hooks and not hp._forward_hooks for hp in points)
        and not model._forward_pre_hooks
    )


def _logits(model, batch):
    with torch.no_grad():
        return model(batch.tokens, attention_mask=batch.attention_mask.long())


# ----------------------------------------------------------------------------- loss


def test_loss_uses_response_tokens_only(tiny_model):
    batch = tokenize_pairs(tiny_model.tokenizer, PROMPTS[:3], REPLIES[:3])
    logits = _logits(tiny_model, batch).requires_grad_(True)
    loss = response_loss(logits, batch.tokens, batch.response_mask)
    (grad,) = torch.autograd.grad(loss, logits)

    # relabel every prompt and padding position: loss and gradient are bitwise the same
    noise = torch.randint(
        0, tiny_model.cfg.d_vocab, batch.tokens.shape, generator=torch.Generator().manual_seed(0)
    )
    relabelled = torch.where(batch.response_mask, batch.tokens, noise)
    assert not torch.equal(relabelled, batch.tokens)
    loss2 = response_loss(logits, relabelled, batch.response_mask)
    (grad2,) = torch.autograd.grad(loss2, logits)
    assert torch.equal(loss, loss2) and torch.equal(grad, grad2)

    # positions whose next token is not a response token get exactly zero gradient
    scored = torch.zeros_like(batch.response_mask)
    scored[:, :-1] = batch.response_mask[:, 1:]
    assert bool((grad[~scored] == 0).all()) and bool((grad[scored].abs().sum(-1) > 0).all())

    # the value is the mean cross-entropy over response targets (computed by hand)
    logp = logits.detach().log_softmax(-1)
    nll = [
        -logp[b, t, batch.tokens[b, t + 1]]
        for b in range(batch.tokens.shape[0])
        for t in range(batch.tokens.shape[1] - 1)
        if batch.response_mask[b, t + 1]
    ]
    assert torch.allclose(loss.detach(), torch.stack(nll).mean(), atol=1e-5)
    # a response label does count
    changed = batch.tokens.clone()
    b, t = torch.nonzero(batch.response_mask)[-1].tolist()
    changed[b, t] = (changed[b, t] + 1) % tiny_model.cfg.d_vocab
    assert not torch.equal(response_loss(logits, changed, batch.response_mask), loss)

    # the trainer's loss (unembeds only the scored positions) is the same quantity
    assert torch.allclose(_training_loss(tiny_model, batch).detach(), loss.detach(), atol=1e-5)


# ----------------------------------------------------------------------------- adapters


@pytest.mark.parametrize("params", ["lora", "full"])
def test_adapter_hooks_equal_merged_weights(tiny_model, params):
    spec = AdapterSpec(params=params, layers=(0, 2), rank=4, alpha=8.0)
    adapters = Adapters.init(tiny_model, spec, seed=1)
    batch = tokenize_pairs(tiny_model.tokenizer, PROMPTS[:3], REPLIES[:3])
    base = _logits(tiny_model, batch)
    with tiny_model.hooks(fwd_hooks=adapters.hooks()):
        assert torch.equal(_logits(tiny_model, batch), base)  # fresh adapters change nothing
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for t in adapters.tensors.values():
            t.add_(torch.randn(t.shape, generator=g) * 0.3)
    with tiny_model.hooks(fwd_hooks=adapters.hooks()):
        hooked = _logits(tiny_model, batch)
    merged = _merged_copy(tiny_model, adapters)
    assert not torch.allclose(hooked, base, atol=1e-3)
    assert torch.allclose(_logits(merged, batch), hooked, atol=1e-4)
    assert torch.equal(_logits(tiny_model, batch), base)  # the base model is untouched
    assert _no_hooks(tiny_model) and _no_hooks(merged)


# ----------------------------------------------------------------------------- modes


def test_preventative_steering_is_active_in_training_and_absent_after(tiny_model, vec):
    L, coeff = 1, 2.0
    seen = []  # (resid at blocks.1.hook_resid_post before steering, what block 2 receives)

    def before(x, hook):
        if torch.is_grad_enabled():
            seen.append([x.detach().clone()])

    def after(x, hook):
        if torch.is_grad_enabled():
            seen[-1].append(x.detach().clone())

    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    hooks = [(f"blocks.{L}.hook_resid_post", before), (f"blocks.{L + 1}.hook_resid_pre", after)]
    with tiny_model.hooks(fwd_hooks=hooks):
        res = finetune(
            tiny_model,
            DATA,
            mode="preventative",
            vector=vec,
            layers=[L],
            coeff=coeff,
            batch_size=3,
            max_steps=2,
            lr=1e-2,
            progress=False,
        )
        n_training_forwards = len(seen)
        # inference with the returned model and with the base model: no steering
        seen.clear()
        batch = tokenize_pairs(tiny_model.tokenizer, PROMPTS, REPLIES)
        for m in (tiny_model, res.model):
            with torch.enable_grad():
                m(batch.tokens, attention_mask=batch.attention_mask.long())
        assert len(seen) == 1  # res.model has no copy of the recording hooks either
        pre, post = seen[0]
        assert torch.equal(pre, post)
        seen.clear()
        with torch.enable_grad(), res.model.hooks(fwd_hooks=hooks):
            res.model(batch.tokens, attention_mask=batch.attention_mask.long())
        assert torch.equal(*seen[0])
    assert n_training_forwards == 2
    assert _no_hooks(tiny_model) and _no_hooks(res.model)
    assert all(torch.equal(v, state[k]) for k, v in tiny_model.state_dict().items())
    assert all(p.requires_grad for p in tiny_model.parameters())  # flags restored


def test_preventative_steering_adds_coeff_v_at_every_real_token(tiny_model, vec):
    L, coeff = 1, 2.0
    seen = []

    def before(x, hook):
        if torch.is_grad_enabled():
            seen.append([x.detach().clone()])

    def after(x, hook):
        if torch.is_grad_enabled():
            seen[-1].append(x.detach().clone())

    hooks = [(f"blocks.{L}.hook_resid_post", before), (f"blocks.{L + 1}.hook_resid_pre", after)]
    with tiny_model.hooks(fwd_hooks=hooks):
        finetune(
            tiny_model,
            DATA[:3],
            mode="preventative",
            vector=vec,
            layers=[L],
            coeff=coeff,
            batch_size=3,
            max_steps=1,
            progress=False,
        )
    ((pre, post),) = seen
    # the training batch (all 3 samples, in some order): every non-padding token is steered
    batch = tokenize_pairs(tiny_model.tokenizer, PROMPTS[:3], REPLIES[:3])
    n_real = int(batch.attention_mask.sum()) + 3  # + one end-of-turn token per reply
    diff = post - pre
    steered = torch.isclose(diff, coeff * vec[L], atol=1e-5).all(-1)
    untouched = (diff == 0).all(-1)
    assert int(steered.sum()) == n_real and bool((steered | untouched).all())


def test_caft_leaves_no_gradient_along_v_at_the_ablated_layer(tiny_model, vec):
    """What is tested: during CAFT training the layer-L residual h that block L+1 reads is
    P h with P = I - v̂v̂ᵀ, so the gradient of the training loss w.r.t. h (taken *before* the
    ablation, the tensor every earlier parameter influences) is P g: orthogonal to v̂ at every
    position. The loss is then invariant to moving h along v̂, so no parameter gets any training
    signal through the v̂ component at that layer. Plain training is the control: there the
    gradient has a clear component along v̂."""
    L = 1
    unit = vec.unit(L)

    def grads_along_v(mode):
        grads = []

        def record(x, hook):
            if x.requires_grad:
                x.register_hook(lambda g: grads.append(g.detach().clone()))

        kw = {"vector": vec, "layers": [L]} if mode == "caft" else {}
        with tiny_model.hooks(fwd_hooks=[(f"blocks.{L}.hook_resid_post", record)]):
            finetune(tiny_model, DATA, mode=mode, batch_size=6, max_steps=1, progress=False, **kw)
        (g,) = grads
        return (g @ unit).abs().max().item(), g.norm(dim=-1).max().item()

    along, scale = grads_along_v("caft")
    assert scale > 0 and along <= 1e-6 * scale
    along_plain, scale_plain = grads_along_v("plain")
    assert along_plain > 1e-2 * scale_plain


def test_bad_arguments(tiny_model, vec):
    with pytest.raises(PersonaLensError, match="does not steer"):
        finetune(tiny_model, DATA, layers=[1], progress=False)
    with pytest.raises(PersonaLensError, match="needs coeff"):
        finetune(tiny_model, DATA, mode="preventative", vector=vec, layers=[1], progress=False)
    with pytest.raises(PersonaLensError, match="needs vector"):
        finetune(tiny_model, DATA, mode="caft", layers=[1], progress=False)
    with pytest.raises(PersonaLensError, match="unknown finetuning mode"):
        finetune(tiny_model, DATA, mode="steer", progress=False)
    with pytest.raises(PersonaLensError, match="targets"):
        finetune(tiny_model, DATA, targets=("W_Q",), progress=False)
    with pytest.raises(PersonaLensError, match="last message"):
        finetune(tiny_model, [{"messages": DATA[0]["messages"][:1]}], progress=False)


# ----------------------------------------------------------------------------- checkpoints


KW = {
    "batch_size": 2,
    "epochs": 2,
    "lr": 5e-3,
    "seed": 7,
    "save_every": 1,
    "rank": 4,
    "progress": False,
}


def test_resume_equals_uninterrupted_and_load_finetuned(tiny_model, tmp_path):
    full = finetune(tiny_model, DATA, out=tmp_path / "a", **KW)
    assert full.steps == 6 and full.resumed_from_step == 0
    assert not (tmp_path / "a" / "checkpoints").exists()
    assert json.loads((tmp_path / "a" / "adapters.json").read_text())["steps"] == 6

    calls = []

    def bomb(x, hook):
        if torch.is_grad_enabled():
            calls.append(1)
            if len(calls) == 5:  # dies in step 5: checkpoints up to step 4 (mid-epoch 2)
                raise RuntimeError("killed")

    with tiny_model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", bomb)]):
        with pytest.raises(RuntimeError, match="killed"):
            finetune(tiny_model, DATA, out=tmp_path / "b", **KW)
    assert _no_hooks(tiny_model)
    with pytest.raises(PersonaLensError, match="no finished finetune"):
        load_finetuned(tiny_model, tmp_path / "b")
    partial = load_finetuned(tiny_model, tmp_path / "b", checkpoint="latest")  # step 4
    resumed = finetune(tiny_model, DATA, out=tmp_path / "b", **KW)
    assert resumed.resumed_from_step == 4
    assert resumed.losses == full.losses and resumed.n_tokens == full.n_tokens
    assert all(torch.equal(full.adapters[k], resumed.adapters[k]) for k in full.adapters)

    # a finished run is loaded, not trained again; other settings are refused
    again = finetune(tiny_model, DATA, out=tmp_path / "b", **KW)
    assert again.resumed_from_step == 6 and again.losses == full.losses
    with pytest.raises(PersonaLensError, match="different settings"):
        finetune(tiny_model, DATA, out=tmp_path / "b", **{**KW, "lr": 1e-3})

    # load_finetuned: the same model as the one returned; the base model is unchanged
    batch = tokenize_pairs(tiny_model.tokenizer, PROMPTS, REPLIES)
    loaded = load_finetuned(tiny_model, tmp_path / "a")
    assert torch.equal(_logits(loaded, batch), _logits(full.model, batch))
    assert torch.equal(_logits(again.model, batch), _logits(full.model, batch))
    assert not torch.allclose(_logits(loaded, batch), _logits(tiny_model, batch), atol=1e-4)
    assert not torch.allclose(_logits(partial, batch), _logits(loaded, batch), atol=1e-6)
    assert _no_hooks(loaded)
    other = make_tiny_model(tiny_model.tokenizer, n_layers=2)
    with pytest.raises(PersonaLensError, match="finetuned from"):
        load_finetuned(other, tmp_path / "a")
    # training lowered the loss on its own data
    assert full.to_frame().groupby("epoch").loss.mean().is_monotonic_decreasing


# ----------------------------------------------------------------------------- shift


def test_shift_of_a_model_with_itself_is_exactly_zero(tiny_model, vec):
    from personalens.model.generation import GenerationConfig

    gen = GenerationConfig(max_new_tokens=5)
    for other in (tiny_model, copy.deepcopy(tiny_model)):
        res = finetuning_shift(tiny_model, other, vec, PROMPTS, generation=gen, batch_size=4)
        assert res.shift_last_prompt_token.eq(0).all()
        finite = ~res.shift_response_avg.isnan()
        assert finite.any() and res.shift_response_avg[finite].eq(0).all()
    frame = res.to_frame()
    assert list(frame.layer) == [0, 1, 2] and (frame.shift_last_prompt_token == 0).all()


def test_planted_shift_appears_from_the_planted_layer_on(tokenizer, tmp_path):
    base = make_tiny_model(tokenizer, seed=5, n_layers=4)
    L, c = 1, 3.5
    with torch.no_grad():  # blocks after L write nothing: the residual passes through unchanged
        for blk in base.blocks[L + 1 :]:
            for p in (blk.attn.W_O, blk.attn.b_O, blk.mlp.W_out, blk.mlp.b_out):
                p.zero_()
    g = torch.Generator().manual_seed(4)
    u = torch.randn(base.cfg.d_model, generator=g)
    u = u / u.norm()
    vector = PersonaVector(
        directions=5.0 * u.expand(4, -1), model="tiny", trait="test", metadata={"best_layer": 2}
    )
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        tuned.blocks[L].mlp.b_out.add_(c * u)  # the MLP output at layer L biased by c·v̂
    res = finetuning_shift(base, tuned, vector, PROMPTS, responses=REPLIES, batch_size=4)
    for variant in ("response_avg", "last_prompt_token"):
        table = getattr(res, f"shift_{variant}")
        assert table[:, :L].eq(0).all()
        assert torch.allclose(table[:, L:], torch.full_like(table[:, L:], c), atol=1e-4)
        assert res.shift(variant=variant) == pytest.approx(c, abs=1e-4)  # best layer 2
    # save/load round trip
    path = res.save(tmp_path / "shift.json")
    back = FinetuningShift.load(path)
    assert torch.equal(back.shift_response_avg, res.shift_response_avg)
    assert str(back.summary()) == str(res.summary())  # NaN != NaN, so compare as text


def test_shift_with_judge_and_plot(tiny_model, vec):
    from personalens.model.generation import GenerationConfig
    from personalens.plot import plot_finetuning_shift, plot_shift_by_layer

    class FakeJudge:  # scores replies by length: deterministic, no model files
        name = "length"

        def score_trait(self, trait, items):
            return [float(len(i.answer)) for i in items]

        def score_coherence(self, items):
            return [50.0 for _ in items]

    from personalens.extraction.traits import load_trait

    trait = load_trait("evil")
    gen = GenerationConfig(max_new_tokens=4)
    results = {}
    for i, scale in enumerate((0.0, 0.5, 1.0)):
        tuned = copy.deepcopy(tiny_model)
        with torch.no_grad():
            tuned.blocks[2].mlp.b_out.add_(scale * vec.unit(2))
        results[f"m{i}"] = finetuning_shift(
            tiny_model,
            tuned,
            vec,
            PROMPTS[:3],
            layers=[1, 2],
            generation=gen,
            judge=FakeJudge(),
            trait=trait,
            name=f"m{i}",
        )
    r0 = results["m0"]
    assert r0.trait_change == 0.0 and r0.base_generations == r0.finetuned_generations
    assert r0.summary(layer=2)["shift_response_avg"] == 0.0
    fig = plot_finetuning_shift(results, layer=2, groups={"m0": "a", "m1": "b", "m2": "b"})
    assert len(fig.data) == 2 and "r =" in fig.layout.title.text
    fig2 = plot_shift_by_layer(list(results.values()))
    assert len(fig2.data) == 3
