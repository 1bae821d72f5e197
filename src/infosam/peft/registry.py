"""The registry of PEFT methods and ``apply_peft``, which turns a pretrained SAM into a student."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from segment_anything.modeling import Sam
from torch import nn

from ..options import OptionError, parse_assignment, set_dotted
from .adapter import AdapterConfig
from .adaptformer import AdaptFormerConfig
from .base import MethodConfig
from .bitfit import BitFitConfig
from .conv_lora import ConvLoraConfig
from .decoder import DecoderConfig
from .hq_token import HQTokenConfig
from .lora import LoraMethodConfig

METHODS: dict[str, type[MethodConfig]] = {
    cls.name: cls
    for cls in (
        DecoderConfig,
        BitFitConfig,
        AdapterConfig,
        AdaptFormerConfig,
        LoraMethodConfig,
        ConvLoraConfig,
        HQTokenConfig,
    )
}


@dataclass(frozen=True)
class PeftSpec:
    """What was applied to a model, enough to rebuild the same student from the same base model."""

    methods: tuple[str, ...]
    """Method names in the order they were applied."""
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per method, every option with its resolved value (defaults included)."""

    @property
    def name(self) -> str:
        """The composed name, e.g. ``'adapter+decoder'``."""
        return "+".join(self.methods)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; :meth:`from_dict` inverts it."""
        return {"methods": list(self.methods), "options": {k: dict(v) for k, v in self.options.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PeftSpec:
        return cls(
            methods=tuple(data["methods"]), options={k: dict(v) for k, v in data.get("options", {}).items()}
        )


def parse_methods(methods: str | Sequence[str]) -> tuple[str, ...]:
    """``"adapter+decoder"`` or ``["adapter", "decoder"]`` -> ``("adapter", "decoder")``, validated.

    Raises:
        ValueError: empty, unknown (the message lists the known methods) or repeated names.
    """
    names = methods.split("+") if isinstance(methods, str) else list(methods)
    names = [n.strip() for n in names]
    if not names or any(not n for n in names):
        raise ValueError(f"empty PEFT method name in {methods!r}; known methods: {', '.join(METHODS)}")
    for n in names:
        if n not in METHODS:
            raise ValueError(f"unknown PEFT method {n!r}; known methods: {', '.join(METHODS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"PEFT method repeated in {methods!r}")
    return tuple(names)


def resolve_configs(
    methods: str | Sequence[str], options: Mapping[str, Mapping[str, Any]] | None = None
) -> list[MethodConfig]:
    """Validate methods and options and return one config per method, in order (nothing is applied)."""
    names = parse_methods(methods)
    options = dict(options or {})
    stray = sorted(set(options) - set(names))
    if stray:
        raise ValueError(
            f"options given for method(s) {stray} that are not applied; applied methods: {list(names)}"
        )
    return [METHODS[n].from_options(options.get(n)) for n in names]


def apply_peft(
    model: Sam, methods: str | Sequence[str], options: Mapping[str, Mapping[str, Any]] | None = None
) -> PeftSpec:
    """Freeze ``model``, then apply each method in order (in place): it injects its wrappers and unfreezes its
    own parameters. Sets ``model.peft_spec`` and returns that :class:`PeftSpec`, which
    :func:`infosam.peft.load_peft` uses to rebuild the same student.

    ``options`` maps a method name to its options, e.g. ``{"adapter": {"init": "torch"}}``. Apply after
    loading the official checkpoint (wrapping renames the wrapped modules' state-dict keys, see
    :mod:`infosam.peft.base`).

    Raises:
        ValueError: unknown method (lists the known ones), unknown option (lists the method's valid options),
            or PEFT already applied to ``model``.
    """
    previous = getattr(model, "peft_spec", None)
    if previous is not None:
        raise ValueError(
            f"PEFT {previous.name!r} is already applied to this model; "
            f"apply {methods!r} to a freshly built one"
        )
    configs = resolve_configs(methods, options)
    model.requires_grad_(False)
    for config in configs:
        config.apply(model)
    spec = PeftSpec(methods=tuple(c.name for c in configs), options={c.name: c.to_options() for c in configs})
    # A plain attribute, like ``model.spec``: what was applied, for saving and for the guard above.
    model.peft_spec = spec
    return spec


def aux_loss_modules(model: nn.Module) -> list[nn.Module]:
    """The layers of ``model`` that keep a training loss of their own, as each method says
    (:meth:`MethodConfig.aux_loss_modules`: Conv-LoRA's load balancing); the step adds their sum
    (:func:`infosam.peft.base.collect_aux_loss`) to its loss. Empty for a student of no such method."""
    return [m for cls in METHODS.values() for m in cls.aux_loss_modules(model)]


def prefix_cache_conflict(methods: str | Sequence[str]) -> str | None:
    """Why the student-prefix cache cannot serve a student of ``methods`` (e.g. ``"hq_token fuses an early
    encoder block's output"``), or ``None`` when it can (:attr:`MethodConfig.prefix_cache_conflict`)."""
    for name in parse_methods(methods):
        reason = METHODS[name].prefix_cache_conflict
        if reason is not None:
            return f"{name} {reason}"
    return None


def parse_option_assignments(assignments: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["adapter.init=torch", "lora.r=8"]`` -> ``{"adapter": {"init": "torch"}, "lora": {"r": 8}}``.

    Values are read as YAML scalars/lists (``8`` -> int, ``0.5`` -> float, ``true`` -> bool, ``[qkv, proj]``
    -> list).
    """
    form = "METHOD.OPTION=VALUE, e.g. adapter.init=torch"
    out: dict[str, dict[str, Any]] = {}
    for item in assignments:
        parts, value = parse_assignment(item, what="PEFT option", form=form)
        if len(parts) != 2:
            raise OptionError(f"PEFT option {item!r} must look like {form}")
        out = set_dotted(out, parts, value)
    return out
