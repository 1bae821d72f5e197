"""Non-finite values in a run: no NaN or infinity reaches the weights, a checkpoint or a loaded model.

- :class:`NonFiniteGuard` looks at every batch's loss and, before each optimizer step, at the gradients; a
  non-finite value stops the run (:class:`NonFiniteError`, naming the step) before the optimizer touches the
  weights, or (``train.nonfinite: skip``) drops that step as AMP's gradient scaler does, up to
  ``train.nonfinite_max_skips`` in a row.
- :func:`check_finite` refuses non-finite tensors, on every save and every load of trained weights.

The run's other guards have their own modules: :mod:`infosam.signals` (Ctrl-C / SIGTERM), :mod:`infosam.lock` (a
second process on the same run folder) and :func:`infosam.files.atomic_write` (a full disk, a killed writer).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor

from .errors import RunError

log = logging.getLogger(__name__)

NONFINITE_POLICIES = ("stop", "skip")


class NonFiniteError(RunError):
    """A loss, gradient or weight is NaN or infinite; the message names the step and what was kept."""


# --------------------------------------------------------------------------------------------- finite checks


def nonfinite_names(tensors: Mapping[str, Tensor] | Iterable[tuple[str, Tensor]]) -> list[str]:
    """Names of the floating-point tensors that hold a NaN or an infinity."""
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    return [
        name
        for name, t in items
        if isinstance(t, Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]


def check_finite(
    tensors: Mapping[str, Tensor] | Iterable[tuple[str, Tensor]],
    where: str,
    *,
    error: type[Exception] = ValueError,
    hint: str = "",
) -> None:
    """Raise ``error`` naming ``where`` and the first bad tensors when any tensor is NaN or infinite."""
    bad = nonfinite_names(tensors)
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise error(f"{where}: non-finite values (NaN or inf) in {len(bad)} tensor(s): {shown}{hint}")


def nested_tensors(obj: object, prefix: str = "") -> list[tuple[str, Tensor]]:
    """Every tensor in nested dicts / lists / tuples (e.g. an optimizer state dict), with a dotted name."""
    if isinstance(obj, Tensor):
        return [(prefix, obj)]
    if isinstance(obj, Mapping):
        items = obj.items()
    elif isinstance(obj, list | tuple):
        items = enumerate(obj)
    else:
        return []
    out: list[tuple[str, Tensor]] = []
    for key, value in items:
        out += nested_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    return out


class NonFiniteGuard:
    """Decides, before each optimizer step, whether the step may touch the weights.

    Args:
        policy: ``stop`` (raise :class:`NonFiniteError`) or ``skip`` (drop the step: no weight update, gradients
            cleared; the scheduler still advances so the schedule keeps its length).
        max_skips: with ``skip``, stop anyway after this many skipped steps in a row.
        check_gradients: look at the gradients too (off under fp16, whose gradient scaler skips its own
            overflowing steps; the loss is still checked).
        accelerator: with several processes the verdict is all-reduced, so every process decides the same.
    """

    def __init__(
        self,
        policy: str = "stop",
        max_skips: int = 5,
        *,
        check_gradients: bool = True,
        accelerator=None,
    ) -> None:
        if policy not in NONFINITE_POLICIES:
            raise ValueError(f"train.nonfinite must be one of {NONFINITE_POLICIES}, got {policy!r}")
        self.policy = policy
        self.max_skips = max_skips
        self.check_gradients = check_gradients
        self.accelerator = accelerator
        self.has_checkpoint: Callable[[], bool] = lambda: True
        """Whether the run has written a checkpoint yet (set by the training loop); named in the stop message."""
        self.skipped = 0
        """Steps skipped by this process (all of them, not only in a row)."""
        self.in_a_row = 0
        self._losses: list[tuple[list[str], Tensor]] = []

    def observe(self, terms: Mapping[str, Tensor]) -> None:
        """Record one batch's loss terms (every batch of the accumulation window); checked in :meth:`allow_step`."""
        self._losses.append(
            (list(terms), torch.stack([v.detach().float().reshape(()) for v in terms.values()]))
        )

    def _kept(self) -> str:
        if self.has_checkpoint():
            return "The newest checkpoint is the last finite one"
        return "No checkpoint was written before it (--resume would start the run over)"

    def allow_step(self, parameters: Iterable[torch.nn.Parameter], step: int) -> bool:
        """True when optimizer step ``step`` (1-based) may run; False to skip it; :class:`NonFiniteError` to stop.

        One device synchronisation: the window's loss terms and the gradients' norms are checked together.
        Resets the window's loss record either way."""
        losses, self._losses = self._losses, []
        parts = [values for _, values in losses]
        grads = [p.grad for p in parameters if p.grad is not None] if self.check_gradients else []
        if grads:
            # A NaN or inf anywhere makes the norm non-finite (finite gradients overflow it only beyond ~1e19).
            parts.append(torch.nn.utils.get_total_norm(grads).float().reshape(1))
        if not parts:
            return True
        device = parts[-1].device
        ok = torch.isfinite(torch.cat([x.to(device) for x in parts])).all()
        verdict = (~ok).float()
        acc = self.accelerator
        if acc is not None and acc.num_processes > 1:
            verdict = acc.reduce(verdict.to(acc.device), reduction="sum")
        if float(verdict) == 0:
            self.in_a_row = 0
            return True
        bad_loss = [
            f"{name} {float(value):g}"
            for names, values in losses
            for name, value in zip(names, values.cpu(), strict=True)
            if not math.isfinite(float(value))
        ]
        bad_grads = sum(1 for g in grads if not bool(torch.isfinite(g).all()))
        what = []
        if bad_loss:
            what.append(f"loss ({', '.join(dict.fromkeys(bad_loss))})")
        if bad_grads:
            what.append(f"gradients ({bad_grads} tensors)")
        reason = f"non-finite {' and '.join(what) or 'loss or gradients on another process'} at step {step}"
        if self.policy == "stop":
            raise NonFiniteError(
                f"{reason}; stopped before the weights were updated (train.nonfinite=stop). "
                f"{self._kept()}; a lower train.lr or train.grad_clip usually helps"
            )
        self.skipped += 1
        self.in_a_row += 1
        if self.in_a_row > self.max_skips:
            raise NonFiniteError(
                f"{reason}: {self.in_a_row} steps in a row were non-finite (train.nonfinite_max_skips="
                f"{self.max_skips}); stopped. {self._kept()}"
            )
        log.warning(
            "%s: step skipped (%d in a row, %d in all; train.nonfinite=skip)",
            reason,
            self.in_a_row,
            self.skipped,
        )
        return False
