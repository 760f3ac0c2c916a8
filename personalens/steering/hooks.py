"""Steering through TransformerLens hook points: add, ablate or cap along a persona vector.

::

    with steer(model, vector, coeff=4.0, layers=[12]):    # every position, like a TL hook
        result = generate(model, prompts)          # or model(...), model.run_with_cache(...)
    with steer(model, vector, coeff=4.0, layers=[12], positions="response"):  # Persona Vectors
        ...

Layer ``L`` is ``blocks.L.hook_resid_post`` (see :mod:`personalens.conventions`; a spliced
SAE's output there, see :func:`~personalens.conventions.resid_hook`); the hook edits the
residual stream there, so every later layer sees the edit and earlier ones do not. The modes
(``"add"``, ``"ablate"``, ``"cap"``) and positions (``"all"`` by default, ``"prompt"``,
``"response"``, a mask) are those of :mod:`personalens.steering.edits`; how a request becomes
per-layer edits (the default layer and coefficient, ``coeff_scale``, calibrated cap bounds) is
:mod:`personalens.steering.plan`.

Padding (as given by ``attention_mask`` or TransformerLens's own left-padding mask) is never
steered. Hooks live only inside the ``with`` block (or until ``handle.remove()`` for
:func:`add_steering`), even on exceptions; hooks the user added are never touched, and
personalens never clears a model's hooks.

The edits attached to a model are recorded on the model object (attribute
``_personalens_steering``, :data:`STEERING_ATTR`) when they are attached and dropped when they
are removed; an edit whose hook the user cleared by hand (TransformerLens's hook reset) no longer
counts.
Other engines read the attached steering only through :func:`attached_edits` and
:func:`foreign_hooks`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from torch import Tensor
from transformer_lens.utilities.tokenize_utils import get_attention_mask

from personalens._types import Mask
from personalens.conventions import resid_hook
from personalens.steering.edits import ForwardContext, LayerEdit, Positions, apply_edit
from personalens.steering.plan import SteeringPlan, plan_steering
from personalens.steering.resolve import LayerSpec, Number, PerLayer

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from personalens.vectors.vector import PersonaVector

STEERING_ATTR = "_personalens_steering"  # model.__dict__ key of the attached steering


# ----------------------------------------------------------------------------- the registry


@dataclass
class _Attached:
    """The steering personalens attached to one model (kept in ``model.__dict__``)."""

    hooks: list[tuple[LayerEdit, Any, Any]] = field(default_factory=list)  # edit, point, handle
    recorders: set[int] = field(default_factory=set)  # ids of the forward-recording pre-hooks


def _registry(model: HookedTransformer, *, create: bool = False) -> _Attached:
    """The model's registry, without the edits whose hook is no longer on its hook point
    (an empty one, not stored unless ``create``, for a model never steered)."""
    attached = model.__dict__.get(STEERING_ATTR)
    if attached is None:
        attached = _Attached()
        if create:
            model.__dict__[STEERING_ATTR] = attached  # a plain attribute, not in state_dict
    attached.hooks = [
        (edit, point, lens)
        for edit, point, lens in attached.hooks
        if any(h is lens for h in point.fwd_hooks)
    ]
    return attached


def attached_edits(model: HookedTransformer) -> list[LayerEdit]:
    """The personalens edits attached to ``model``, in the order its forward pass runs them
    (by layer, then in the order of each hook point's hooks)."""
    order = []
    for edit, point, lens in _registry(model).hooks:
        index = next(i for i, h in enumerate(point.fwd_hooks) if h is lens)
        order.append(((edit.layer, index), edit))
    return [edit for _, edit in sorted(order, key=lambda item: item[0])]


def foreign_hooks(model: HookedTransformer) -> list[str]:
    """``"module (hook)"`` for every hook on ``model`` other than attached personalens steering.

    TransformerLens hooks are read from each hook point's ``fwd_hooks``/``bwd_hooks``; hooks
    registered with torch directly on any module (forward, forward pre- and backward hooks, which
    torch lists only in its module dictionaries) count too, except personalens's own recorder
    of each forward on the model itself.
    """
    attached = _registry(model)
    ours = {id(lens) for _, _, lens in attached.hooks}
    found = []
    for name, module in model.named_modules():
        label = name or "model"
        lens_fwd, lens_bwd = getattr(module, "fwd_hooks", []), getattr(module, "bwd_hooks", [])
        for lens in lens_fwd:
            if id(lens) not in ours:
                found.append(f"{label} ({_fn_name(lens.user_hook)})")
        known = {lens.hook.id for lens in [*lens_fwd, *lens_bwd]}
        forward, pre, backward = _torch_hooks(module)
        found += [f"{label} ({_fn_name(fn)})" for hid, fn in forward.items() if hid not in known]
        for hid, fn in pre.items():
            if not (module is model and hid in attached.recorders):
                found.append(f"{label} (pre-hook {getattr(fn, '__name__', fn)!r})")
        if lens_bwd or backward:
            found.append(f"{label} (backward hook)")
    return found


def _fn_name(fn: Any) -> str:
    return getattr(fn, "__name__", repr(fn))


def _torch_hooks(module: Any) -> tuple[dict, dict, bool]:
    """``(forward hooks, forward pre-hooks, has backward hooks)`` registered on ``module``.

    torch has no public listing of a module's hooks, so these are its module dictionaries.
    """
    backward = bool(module._backward_hooks or module._backward_pre_hooks)
    return module._forward_hooks, module._forward_pre_hooks, backward


# ----------------------------------------------------------------------------- hooks


def _forward_recorder(
    model: HookedTransformer, context: ForwardContext
) -> Callable[[Any, tuple, dict], None]:
    """A forward pre-hook on ``model`` recording each forward's padding and KV-cache length."""

    def record_forward(module: Any, args: tuple, kwargs: dict) -> None:
        inp = args[0] if args else kwargs.get("input")
        cache = kwargs.get("past_kv_cache")
        context.past_len = 0 if cache is None else int(cache.previous_attention_mask.shape[1])
        mask = kwargs.get("attention_mask")
        context.pad_mask = mask.bool() if mask is not None else _pad_mask(model, inp, kwargs)

    return record_forward


def _pad_mask(model: HookedTransformer, inp: Any, kwargs: dict) -> Mask | None:
    """TransformerLens's own padding mask of a forward given no ``attention_mask``."""
    tokens = kwargs.get("tokens")
    if isinstance(inp, Tensor) and not inp.is_floating_point():
        tokens = inp
    elif isinstance(inp, str | list):
        tokens = model.to_tokens(
            inp, prepend_bos=kwargs.get("prepend_bos", model.cfg.default_prepend_bos)
        )
    if tokens is None or model.tokenizer is None:
        return None
    if tokens.ndim == 1:
        tokens = tokens[None]
    if model.tokenizer.padding_side == "left" or kwargs.get("past_kv_cache") is not None:
        prepend = kwargs.get("prepend_bos", model.cfg.default_prepend_bos)
        if not isinstance(prepend, bool):
            prepend = model.cfg.default_prepend_bos
        return get_attention_mask(model.tokenizer, tokens, prepend).bool()
    return None


def make_steering_hook(edit: LayerEdit, context: ForwardContext) -> Callable[[Tensor, Any], Tensor]:
    """A TransformerLens hook applying ``edit`` (:func:`~personalens.steering.edits.apply_edit`)
    to the forwards ``context`` records."""

    def steering_hook(resid: Tensor, hook: Any) -> Tensor:
        return apply_edit(edit, resid, context)

    steering_hook.__name__ = f"personalens_steer_{edit.mode}_L{edit.layer}"
    return steering_hook


class SteeringHandle:
    """Attached steering (:func:`add_steering`, :func:`apply_plan`); ``remove()`` detaches
    exactly its hooks."""

    def __init__(self, model: HookedTransformer, plan: SteeringPlan) -> None:
        self.model = model
        self.plan = plan
        attached = _registry(model, create=True)
        context = ForwardContext()
        self._pre = model.register_forward_pre_hook(
            _forward_recorder(model, context), with_kwargs=True
        )
        attached.recorders.add(self._pre.id)
        self._handles: list[tuple[Any, Any]] = []
        try:
            for edit in plan.edits:
                if edit.positions is not plan.positions:  # a hand-built plan: its positions
                    edit = replace(edit, positions=plan.positions)
                point = model.mod_dict[resid_hook(model, edit.layer)]
                point.add_hook(make_steering_hook(edit, context), dir="fwd")
                self._handles.append((point, point.fwd_hooks[-1]))
                attached.hooks.append((edit, point, point.fwd_hooks[-1]))
        except BaseException:
            self.remove()
            raise

    @property
    def active(self) -> bool:
        return any(h in point.fwd_hooks for point, h in self._handles) if self._handles else False

    def remove(self) -> None:
        """Detach this steering (idempotent); other hooks on the model stay."""
        for point, handle in self._handles:
            if any(h is handle for h in point.fwd_hooks):
                handle.hook.remove()
                point.fwd_hooks = [h for h in point.fwd_hooks if h is not handle]
        self._handles = []
        _registry(self.model).recorders.discard(self._pre.id)
        self._pre.remove()

    def __enter__(self) -> SteeringHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        return f"SteeringHandle({self.plan.description}, {state})"


# ----------------------------------------------------------------------------- entry points


@contextlib.contextmanager
def steer(
    model: HookedTransformer,
    vector: PersonaVector | Tensor,
    coeff: PerLayer | None = None,
    *,
    layers: LayerSpec = None,
    positions: Positions | None = None,
    mode: str = "add",
    coeff_scale: str | None = None,
    bound: PerLayer | None = None,
    percentile: Number = 95.0,
    cap_side: str = "max",
    reference: Sequence[Any] | None = None,
    resid_norms: Tensor | Sequence[Number] | None = None,
) -> Iterator[SteeringPlan]:
    """Steer every forward pass of ``model`` inside the ``with`` block (see the module doc).

    Args:
        vector: a :class:`~personalens.PersonaVector`, a ``[n_layers, d_model]`` tensor, or one
            ``[d_model]`` direction used at every steered layer.
        coeff: one number, one per layer (aligned with ``layers``), or ``{layer: coeff}``.
            For ``"add"``: required unless the vector records a ``steering_coeff`` (a steering
            sweep's best cell); for ``"ablate"`` the fraction removed (default 1).
        layers: an int, a list, ``"all"``, or ``None``: the vector's recorded
            ``steering_layer``, else the middle layer ``n_layers // 2`` (not the late
            monitoring ``best_layer``; see :mod:`~personalens.steering.plan`).
        positions: ``"all"`` (the default: every position, as a TransformerLens hook),
            ``"prompt"``, ``"response"`` (the Persona Vectors paper's choice) or a boolean
            mask; see :mod:`~personalens.steering.edits`. ``None`` is ``"all"``, or with a
            recorded ``steering_coeff`` the positions it was chosen at.
        mode: ``"add"``, ``"ablate"`` or ``"cap"``.
        coeff_scale: ``"raw"`` (default), ``"unit"`` or ``"resid"`` (how ``coeff`` is measured;
            add only; a recorded ``steering_coeff`` brings its own).
        bound: cap bound(s); ``None`` calibrates them at ``percentile`` of the projections of
            ``reference`` prompts (default:
            :data:`~personalens.steering.calibration.REFERENCE_PROMPTS`).
        resid_norms: precomputed :func:`~personalens.steering.calibration.residual_norms` for
            ``coeff_scale="resid"``.

    Yields the resolved :class:`~personalens.steering.plan.SteeringPlan` (its ``description``
    is handy for logging).
    """
    plan = plan_steering(
        model,
        vector,
        coeff,
        layers=layers,
        positions=positions,
        mode=mode,
        coeff_scale=coeff_scale,
        bound=bound,
        percentile=percentile,
        cap_side=cap_side,
        reference=reference,
        resid_norms=resid_norms,
    )
    with apply_plan(model, plan):
        yield plan


@contextlib.contextmanager
def apply_plan(model: HookedTransformer, plan: SteeringPlan) -> Iterator[SteeringPlan]:
    """Attach an already resolved plan for the duration of a ``with`` block."""
    with SteeringHandle(model, plan):
        yield plan


def add_steering(
    model: HookedTransformer, vector: PersonaVector | Tensor, coeff: PerLayer | None = None, **kw
) -> SteeringHandle:
    """Like :func:`steer` but stays until ``handle.remove()`` (for long interactive sessions).

    The hooks are ordinary non-permanent TransformerLens hooks: clearing the model's hooks by
    hand also removes them. personalens itself never clears hooks; ``handle.remove()`` takes off
    exactly this handle's own and leaves the user's alone.
    """
    return SteeringHandle(model, plan_steering(model, vector, coeff, **kw))
