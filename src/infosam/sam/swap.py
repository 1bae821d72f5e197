"""Swapping a module's forward by class, without editing the package that defines it.

The fast kernels (:mod:`infosam.sam.tinyvit_attention`, :mod:`infosam.sam.layernorm`) give existing module
instances a subclass of their own class and a mixin whose ``forward`` computes the same function faster; the
parameters, buffers, state-dict keys and any wrapper inside stay as they are. :func:`swap_in` and
:func:`swap_out` do the bookkeeping: one generated subclass per original class, the original remembered on the
instance so the swap is undone exactly.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

_ORIGINAL = "_infosam_original_class"
_CLASSES: dict[tuple[type, type], type] = {}


def swap_in(model: nn.Module, mixin: type, matches: Callable[[nn.Module], bool], prefix: str) -> int:
    """Give every module of ``model`` that ``matches`` (and has not the mixin yet) the class
    ``<prefix><Original>(mixin, Original)``; returns how many were switched."""
    count = 0
    for module in model.modules():
        if matches(module) and not isinstance(module, mixin):
            original = type(module)
            key = (mixin, original)
            if key not in _CLASSES:
                _CLASSES[key] = type(f"{prefix}{original.__name__}", (mixin, original), {})
            module.__class__ = _CLASSES[key]
            module.__dict__[_ORIGINAL] = original
            count += 1
    return count


def swap_out(model: nn.Module, mixin: type) -> int:
    """Undo :func:`swap_in` for ``mixin``; returns how many modules were restored."""
    count = 0
    for module in model.modules():
        if isinstance(module, mixin) and _ORIGINAL in module.__dict__:
            module.__class__ = module.__dict__.pop(_ORIGINAL)
            count += 1
    return count
