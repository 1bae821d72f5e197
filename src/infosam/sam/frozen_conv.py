"""TinyViT's frozen ``Conv2d_BN`` pairs without keeping their inputs for the backward, swapped in by class.

TinyViT builds every convolution as ``Conv2d_BN``: a ``Sequential`` of a bias-free ``Conv2d`` ``c`` and a
``BatchNorm2d`` ``bn``, which stays in eval mode here (:mod:`infosam.sam.tinyvit`). When neither trains, autograd
still saves both their inputs (the convolution's input for a weight gradient nobody asks for, the BatchNorm's input
for a reduction its eval-mode input gradient never uses): on MobileSAM at batch 4 the pairs of stages 2-3 and the
stage-2 downsampling held 310 MiB of 4 x 160/320 x 64 x 64 tensors in a training step, which this module removes
(docs/performance.md).
Yet the input gradient of the pair needs only weights: the eval-mode BatchNorm scales each channel by
``weight / sqrt(running_var + eps)``, and the convolution's input gradient is a transposed convolution of the
output gradient with the weight.

:class:`FrozenConv2dBN` computes the pair through :class:`_FrozenConvBNFunction`, whose forward is the module's own
(``F.conv2d`` then ``F.batch_norm``, run under grad mode as the module runs, so the convolution picks the backend it
picks when a backward will follow) and which saves only the weights, the per-channel inverse standard deviation and
the input's shape and strides. Its backward repeats the float operations of the kernels autograd would call, in the
same order, so the input gradient is bitwise the same:

- the BatchNorm: PyTorch's CPU eval-mode ``batch_norm_backward`` computes ``dy * invstd * w`` per channel, left to
  right in float32, with ``invstd = 1 / sqrt(running_var + eps)`` evaluated in double and rounded to float32;
- the convolution: ``aten.convolution_backward`` asking for the input gradient only (``output_mask`` [True, False,
  False], what autograd asks when the weight is frozen), given an uninitialised stand-in of the input's exact sizes
  and strides (the backend and memory format are chosen from them; the values are never read).

The swap applies per call, where it is exact and saves something: grad mode on, an input that requires a gradient,
float32 on the CPU, no autocast, every parameter of ``c`` and ``bn`` frozen, ``bn`` in eval mode with running
statistics, ``c`` with zero padding given as numbers, no hooks on either. Otherwise the package's own forward runs,
so a PEFT method that trains these layers (BitFit's BatchNorm biases, say) keeps the usual path. Parameters,
buffers and state-dict keys are untouched; :func:`disable_frozen_conv` restores the original class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .swap import swap_in, swap_out


def _is_conv2d_bn(module: nn.Module) -> bool:
    return (
        type(module).__name__ == "Conv2d_BN"
        and isinstance(module, nn.Sequential)
        and len(module) == 2
        and type(getattr(module, "c", None)) is nn.Conv2d
        and type(getattr(module, "bn", None)) is nn.BatchNorm2d
    )


def _frozen_pair_applies(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: Tensor) -> bool:
    """Whether :class:`_FrozenConvBNFunction` computes this call exactly as the modules do, and saves something."""
    if type(conv) is not nn.Conv2d or type(bn) is not nn.BatchNorm2d:
        return False  # e.g. a PEFT wrapper around the convolution
    if not (torch.is_grad_enabled() and x.requires_grad):
        return False  # nothing would be saved: the plain path is the same computation
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.layout != torch.strided:
        return False
    if torch.is_autocast_enabled("cpu"):
        return False
    if bn.training or bn.running_mean is None or bn.running_var is None:
        return False
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return False
    if any(p.requires_grad or p.dtype != torch.float32 for p in (*conv.parameters(), *bn.parameters())):
        return False
    if bn.running_var.dtype != torch.float32:
        return False
    for module in (conv, bn):
        if module._forward_hooks or module._forward_pre_hooks or module._backward_hooks:
            return False
    return True


def _same(t: Tensor) -> Tensor:
    return t


class _FrozenConvBNFunction(torch.autograd.Function):
    """``bn(conv(x))`` for a frozen convolution and an eval-mode BatchNorm, saving no activation."""

    @staticmethod
    def forward(ctx, x: Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> Tensor:
        # The module's forward, under grad mode on an alias of x that requires a gradient, as autograd runs it:
        # the convolution's backend choice looks at whether a backward will follow. The small graph this records
        # is dropped on return; identity hooks keep any saved-tensor hooks of the caller (offloading, counting)
        # away from it.
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(_same, _same):
            y = F.conv2d(
                x.detach().requires_grad_(True),
                conv.weight,
                conv.bias,
                conv.stride,
                conv.padding,
                conv.dilation,
                conv.groups,
            )
            momentum = (
                0.0 if bn.momentum is None else bn.momentum
            )  # unused in eval mode; passed as the module does
            out = F.batch_norm(
                y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, momentum, bn.eps
            )
        with torch.no_grad():
            # what batch_norm's CPU backward computes per channel in eval mode: 1 / sqrt(var + eps) in double,
            # stored as float32
            invstd = (1 / torch.sqrt(bn.running_var.double() + bn.eps)).float()
        ctx.save_for_backward(conv.weight, invstd, bn.weight)
        ctx.x_shape, ctx.x_stride = tuple(x.shape), tuple(x.stride())
        ctx.conv = (list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups)
        return out.detach()

    @staticmethod
    def backward(ctx, grad: Tensor):
        weight, invstd, bn_weight = ctx.saved_tensors
        channels = (1, -1, 1, 1)
        grad = grad * invstd.view(channels)  # dy * invstd * w, left to right, as the kernel does
        if bn_weight is not None:
            grad = grad * bn_weight.view(channels)
        stand_in = torch.empty_strided(ctx.x_shape, ctx.x_stride, dtype=grad.dtype, device=grad.device)
        stride, padding, dilation, groups = ctx.conv
        grad_x, _, _ = torch.ops.aten.convolution_backward(
            grad,
            stand_in,
            weight,
            None,
            stride,
            padding,
            dilation,
            False,
            [0, 0],
            groups,
            [True, False, False],
        )
        return grad_x, None, None


class FrozenConv2dBN(nn.Module):
    """Mixin swapped onto a TinyViT ``Conv2d_BN`` instance: the same function, no saved input when frozen.

    Never built directly; :func:`enable_frozen_conv` makes each instance an instance of a subclass of its own class
    and this one.
    """

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C_in, H, W) -> (B, C_out, H', W')."""
        if _frozen_pair_applies(self.c, self.bn, x):
            return _FrozenConvBNFunction.apply(x, self.c, self.bn)
        return super().forward(x)


def enable_frozen_conv(model: nn.Module) -> int:
    """Run every TinyViT ``Conv2d_BN`` in ``model`` through :class:`FrozenConv2dBN`; returns how many were
    switched."""
    return swap_in(model, FrozenConv2dBN, _is_conv2d_bn, "Frozen")


def disable_frozen_conv(model: nn.Module) -> int:
    """Undo :func:`enable_frozen_conv`; returns how many modules were restored."""
    return swap_out(model, FrozenConv2dBN)
