"""What every PEFT method shares: option validation for its config dataclass and the wrapper-injection
helpers.

A method is a config dataclass (one-line doc per field) with ``apply(model)``, which injects wrappers into SAM
and marks trainable what the method owns. Wrappers keep the wrapped module as ``base_layer`` (the ``peft``
library's convention), so the wrapped module's parameters move from ``<name>.<p>`` to
``<name>.base_layer.<p>`` in the state dict: load official weights *before* applying a method.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

import torch
from segment_anything.modeling import Sam
from torch import Tensor, nn

from ..options import check_value


class MethodConfig:
    """Mixin for the config dataclass of one PEFT method: construction from an options dict, and back."""

    name: typing.ClassVar[str]
    prefix_cache_conflict: typing.ClassVar[str | None] = None
    """Why the student-prefix cache cannot serve a student of this method (it skips what the method reads), as
    the rest of a sentence after the method's name; ``None``: it can."""

    @classmethod
    def aux_loss_modules(cls, model: nn.Module) -> list[nn.Module]:
        """The layers this method put in ``model`` that keep a training loss of their own: each holds, after its
        forward, an ``aux_loss`` scalar (or ``None``) for the step to add (:func:`collect_aux_loss`). None by
        default."""
        return []

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None) -> MethodConfig:
        """Build the config from ``{field: value}``; unknown names or ill-typed values raise ValueError."""
        options = dict(options or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - set(fields))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for PEFT method {cls.name!r}; "
                f"valid options: {', '.join(fields) or '(none)'}"
            )
        hints = typing.get_type_hints(cls)
        checked = {k: check_value(f"option {cls.name}.{k}", hints[k], v) for k, v in options.items()}
        return cls(**checked)

    def to_options(self) -> dict[str, Any]:
        """All fields (defaults included) as a JSON-serialisable dict; ``from_options`` rebuilds the
        config."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def apply(self, model: Sam) -> None:  # pragma: no cover - every method overrides it
        raise NotImplementedError


def collect_aux_loss(modules: list[nn.Module]) -> Tensor | None:
    """Sum (and clear) the ``aux_loss`` the given modules kept from the last forward; None if none has one."""
    losses = [m.aux_loss for m in modules if getattr(m, "aux_loss", None) is not None]
    for m in modules:
        m.aux_loss = None
    return torch.stack(losses).sum() if losses else None


def check_block_range(method: str, first_block: int, depth: int) -> None:
    """Refuse a first adapted block outside ``0..depth-1`` (it would silently adapt nothing)."""
    if not 0 <= first_block < depth:
        raise ValueError(
            f"option {method}.first_block must be in 0..{depth - 1} for this model, got {first_block}"
        )


def replace_child(parent: nn.Module, child_name: str, wrapper: nn.Module) -> None:
    """Put ``wrapper`` in place of ``parent.<child_name>`` (the wrapper holds the original as
    ``base_layer``)."""
    setattr(parent, child_name, wrapper)


def bottleneck(dim: int, hidden: int, activation: type[nn.Module], init: str) -> nn.Sequential:
    """Linear(dim -> hidden) -> activation -> Linear(hidden -> dim), on the last axis of any (..., dim)
    tensor.

    ``init="zero"`` zeroes the up-projection (weight and bias), so the branch outputs exactly 0 until it
    trains; ``init="torch"`` keeps PyTorch's default Linear initialisation for both projections.
    """
    branch = nn.Sequential(nn.Linear(dim, hidden), activation(), nn.Linear(hidden, dim))
    if init == "zero":
        nn.init.zeros_(branch[2].weight)
        nn.init.zeros_(branch[2].bias)
    return branch


def mark_trainable(module: nn.Module) -> None:
    """Let every parameter of ``module`` train."""
    for p in module.parameters():
        p.requires_grad_(True)
