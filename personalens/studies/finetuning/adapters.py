"""Trainable adapters on the two matrices of every block that write into the residual stream.

``AdapterSpec`` says which weights (``"mlp_out"`` = the MLP down-projection ``W_out``,
``"attn_out"`` = the attention output ``W_O``), at which layers, LoRA or full; ``Adapters`` holds
the tensors, applies them to a forward pass through TransformerLens hooks (the base weights are
never touched) and merges them exactly into the weights; :func:`_merged_copy` is a model with
them merged in. Used by :mod:`personalens.studies.finetuning.train`, whose docstring says why
these two matrices.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from personalens.errors import PersonaLensError

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

__all__ = ["PARAMS", "TARGETS", "AdapterSpec", "Adapters"]

PARAMS = ("lora", "full")
TARGETS = ("mlp_out", "attn_out")
# target -> (hook that reads the adapter's input, hook whose output the update is added to)
_HOOKS = {
    "mlp_out": ("blocks.{L}.mlp.hook_post", "blocks.{L}.hook_mlp_out"),
    "attn_out": ("blocks.{L}.attn.hook_z", "blocks.{L}.hook_attn_out"),
}

# ----------------------------------------------------------------------------- adapters


@dataclass(frozen=True)
class AdapterSpec:
    """Which weights are adapted and how: ``params`` ``"lora"``/``"full"``, ``targets`` among
    :data:`TARGETS`, the ``layers``, and for LoRA the ``rank`` and ``alpha`` (scale alpha/rank)."""

    params: str = "lora"
    targets: tuple[str, ...] = TARGETS
    layers: tuple[int, ...] = ()
    rank: int = 8
    alpha: float = 16.0

    @property
    def scale(self) -> float:
        return self.alpha / self.rank if self.params == "lora" else 1.0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "params": self.params,
            "targets": list(self.targets),
            "layers": list(self.layers),
        }
        if self.params == "lora":
            out.update(rank=self.rank, alpha=self.alpha)
        return out

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> AdapterSpec:
        return AdapterSpec(
            params=d["params"],
            targets=tuple(d["targets"]),
            layers=tuple(int(L) for L in d["layers"]),
            rank=int(d.get("rank", 8)),
            alpha=float(d.get("alpha", 16.0)),
        )


def _in_features(model: HookedTransformer, target: str) -> int:
    cfg = model.cfg
    if target == "mlp_out":
        if cfg.d_mlp is None:
            raise PersonaLensError("this model has no d_mlp: use targets=('attn_out',)")
        return int(cfg.d_mlp)
    return int(cfg.n_heads * cfg.d_head)


def _check_adaptable(model: HookedTransformer, spec: AdapterSpec) -> None:
    cfg = model.cfg
    if spec.params not in PARAMS:
        raise PersonaLensError(f"unknown params {spec.params!r}: use one of {PARAMS}")
    bad = [t for t in spec.targets if t not in TARGETS]
    if bad or not spec.targets:
        raise PersonaLensError(
            f"targets {list(spec.targets)}: give one or more of {TARGETS} ('mlp_out' = the MLP "
            "down-projection W_out, 'attn_out' = the attention output W_O)"
        )
    if len(set(spec.targets)) != len(spec.targets):
        raise PersonaLensError(f"targets {list(spec.targets)} name a target twice")
    if spec.params == "lora" and (spec.rank < 1 or spec.alpha <= 0):
        raise PersonaLensError(f"LoRA needs rank >= 1 and alpha > 0, got {spec.rank}, {spec.alpha}")
    if getattr(cfg, "load_in_4bit", False):
        raise PersonaLensError("4-bit models cannot be finetuned here: load the model unquantised")
    if getattr(cfg, "use_normalization_before_and_after", False):
        raise PersonaLensError(
            "this architecture normalises the attention/MLP output before adding it to the "
            "residual stream, so an update added there would not merge into W_out/W_O"
        )
    for L in spec.layers:
        for t in spec.targets:
            for template in _HOOKS[t]:
                if template.format(L=L) not in model.hook_dict:
                    raise PersonaLensError(
                        f"this model has no hook {template.format(L=L)!r}: target {t!r} is not "
                        "supported for its architecture"
                    )


class Adapters:
    """The trained tensors, named ``blocks.L.<target>.A``/``.B`` (LoRA) or ``.delta`` (full).

    ``hooks()`` applies them to a forward pass; :meth:`merge_into` adds them to the weights.
    """

    def __init__(self, spec: AdapterSpec, tensors: Mapping[str, Tensor]) -> None:
        self.spec = spec
        self.tensors = dict(tensors)
        missing = [n for n in self.names() if n not in self.tensors]
        extra = sorted(set(self.tensors) - set(self.names()))
        if missing or extra:
            raise PersonaLensError(
                f"adapter tensors do not match the spec (missing {missing[:4]}, unexpected "
                f"{extra[:4]}); the checkpoint and its config do not belong together"
            )

    def names(self) -> list[str]:
        kinds = ("A", "B") if self.spec.params == "lora" else ("delta",)
        return [
            f"blocks.{L}.{t}.{k}"
            for L in self.spec.layers
            for t in self.spec.targets
            for k in kinds
        ]

    @classmethod
    def init(cls, model: HookedTransformer, spec: AdapterSpec, seed: int) -> Adapters:
        """Fresh adapters that leave the model unchanged (LoRA ``B`` = 0, full ``delta`` = 0)."""
        _check_adaptable(model, spec)
        g = torch.Generator().manual_seed(int(seed))
        d_model, device = model.cfg.d_model, model.cfg.device
        tensors = {}
        for L in spec.layers:
            for t in spec.targets:
                d_in = _in_features(model, t)
                key = f"blocks.{L}.{t}"
                if spec.params == "lora":
                    bound = 1.0 / math.sqrt(d_in)  # PEFT's kaiming_uniform_(a=sqrt(5))
                    a = (torch.rand(d_in, spec.rank, generator=g) * 2 - 1) * bound
                    tensors[f"{key}.A"] = a.to(device)
                    tensors[f"{key}.B"] = torch.zeros(spec.rank, d_model, device=device)
                else:
                    tensors[f"{key}.delta"] = torch.zeros(d_in, d_model, device=device)
        for v in tensors.values():
            v.requires_grad_(True)
        return cls(spec, tensors)

    def parameters(self) -> list[Tensor]:
        return [self.tensors[n] for n in self.names()]

    def delta(self, layer: int, target: str) -> Float[Tensor, "d_in d_model"]:
        """The weight update ``ΔW`` of ``target`` at ``layer``, ``[d_in, d_model]`` float32."""
        key = f"blocks.{layer}.{target}"
        if self.spec.params == "lora":
            return self.spec.scale * (self.tensors[f"{key}.A"] @ self.tensors[f"{key}.B"])
        return self.tensors[f"{key}.delta"]

    def _apply(self, layer: int, target: str, x: Tensor) -> Tensor:
        x = x.flatten(-2) if target == "attn_out" else x  # z: [batch, pos, n_heads, d_head]
        key = f"blocks.{layer}.{target}"
        if self.spec.params == "lora":
            low = x.float() @ self.tensors[f"{key}.A"]
            return self.spec.scale * (low @ self.tensors[f"{key}.B"])
        return x.float() @ self.tensors[f"{key}.delta"]

    def hooks(self) -> list[tuple[str, Any]]:
        """TransformerLens forward hooks that add ``x @ ΔW`` to each adapted output."""
        out = []
        for L in self.spec.layers:
            for t in self.spec.targets:
                read, write = (h.format(L=L) for h in _HOOKS[t])
                out.extend(self._hook_pair(L, t, read, write))
        return out

    def _hook_pair(self, layer: int, target: str, read: str, write: str) -> list:
        store: dict[str, Tensor] = {}

        def grab(x: Tensor, hook: Any) -> None:
            store["x"] = x

        def add(y: Tensor, hook: Any) -> Tensor:
            x = store.pop("x", None)
            if x is None:
                raise PersonaLensError(f"adapter at {write}: {read} did not run in this forward")
            return y + self._apply(layer, target, x).to(y.dtype)

        grab.__name__ = f"personalens_adapter_read_{target}_L{layer}"
        add.__name__ = f"personalens_adapter_add_{target}_L{layer}"
        return [(read, grab), (write, add)]

    @torch.no_grad()
    def merge_into(self, model: HookedTransformer) -> None:
        """Add every ``ΔW`` to the model's weights, in place (keeps the weights' memory layout)."""
        cfg = model.cfg
        for L in self.spec.layers:
            for t in self.spec.targets:
                delta = self.delta(L, t).detach()
                if t == "mlp_out":
                    w = model.blocks[L].mlp.W_out
                else:
                    w = model.blocks[L].attn.W_O
                    delta = delta.reshape(cfg.n_heads, cfg.d_head, cfg.d_model)
                w.add_(delta.to(device=w.device, dtype=w.dtype))

    def state(self) -> dict[str, Tensor]:
        return {n: self.tensors[n].detach().to("cpu").contiguous() for n in self.names()}

    def n_parameters(self) -> int:
        return sum(t.numel() for t in self.tensors.values())


def _merged_copy(model: HookedTransformer, adapters: Adapters) -> HookedTransformer:
    """A copy of ``model`` (no hooks, frozen, eval) with the adapters merged into its weights."""
    memo: dict[int, Any] = {}
    if model.tokenizer is not None:
        memo[id(model.tokenizer)] = model.tokenizer  # shared, not copied
    new = copy.deepcopy(model, memo)
    for module in new.modules():  # the copy must not inherit hooks active on the original
        for name in (
            "_forward_hooks",
            "_forward_hooks_with_kwargs",
            "_forward_hooks_always_called",
            "_forward_pre_hooks",
            "_forward_pre_hooks_with_kwargs",
            "_backward_hooks",
            "_backward_pre_hooks",
        ):
            hooks = getattr(module, name, None)
            if hooks is not None:
                hooks.clear()
        if isinstance(module, HookPoint):
            module.fwd_hooks = []
            module.bwd_hooks = []
    new.eval()
    for p in new.parameters():
        p.requires_grad_(False)
        p.grad = None
    adapters.merge_into(new)
    return new
