"""What every distillation objective of the registry shares: its inputs, its options and its module contract.

The registry (:mod:`infosam.distill.registry`) holds InfoSAM (:mod:`infosam.distill.infosam`) and the baselines
of the paper's comparison; the step and the trainer know only this contract. An objective is an ``nn.Module`` whose ``forward(teacher, student, masks)`` returns named scalar terms with a
``total`` (already weighted). ``teacher`` and ``student`` are :class:`infosam.sam.forward.SamOutput`: image
embeddings (B, C, h, w), the single-mask token (B, 1, C), the low-resolution logits (B, 1, 4h, 4w) when the class
sets ``needs_logits`` (the teacher then decodes in full), and ``features`` (the intermediate encoder maps of
:mod:`infosam.distill.features`) when it sets ``needs_features``. Teacher tensors are detached by the objective,
so the frozen teacher never receives a gradient whatever the caller did; learned parts of an objective (VID's
variance, regressors, ReviewKD's fusion) are its parameters and train in the same optimizer as the student.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor, nn

from ..options import check_value


@dataclass(frozen=True)
class ObjectiveOptions:
    """Options every objective has; subclasses add their own fields (one-line doc each)."""

    weight: float = 1.0
    """Weight of the objective next to the segmentation loss."""

    @classmethod
    def from_options(cls, method: str, options: Mapping[str, Any] | None) -> ObjectiveOptions:
        """Build from ``{field: value}``; unknown names or ill-typed values raise ValueError naming them."""
        built = options_from_mapping(cls, method, options, f"distill.options.{method}.")
        for f in dataclasses.fields(built):
            value = getattr(built, f.name)
            if isinstance(value, float) and not value >= 0:
                raise ValueError(f"distill.options.{method}.{f.name} must be >= 0, got {value}")
        return built


def options_from_mapping(cls: type, method: str, options: Mapping[str, Any] | None, prefix: str) -> Any:
    """The options dataclass ``cls`` of ``distill.method`` ``method`` from ``{field: value}``: unknown names, or
    values of the wrong type (named ``<prefix><field>``), raise ValueError naming them."""
    options = dict(options or {})
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for distill.method {method!r}; valid options: {', '.join(names)}"
        )
    hints = typing.get_type_hints(cls)
    return cls(**{k: check_value(f"{prefix}{k}", hints[k], v) for k, v in options.items()})


class Objective(nn.Module):
    """Base of the registry's objectives (see the module docstring)."""

    name: ClassVar[str]
    Options: ClassVar[type[ObjectiveOptions]] = ObjectiveOptions
    needs_logits: ClassVar[bool] = False
    """The teacher must decode in full (mask logits), not stop after its two-way transformer."""
    needs_features: ClassVar[bool] = False
    """Teacher and student must expose their intermediate encoder features (scoped hooks)."""
    min_batch: ClassVar[int] = 1
    """Smallest batch the objective says anything about (batch-relational objectives need 2)."""

    options_section: ClassVar[str | None] = None
    """The config section that holds its options (its :attr:`Options` fields by name); ``None``: they are
    ``distill.options.<name>``."""
    module_name: ClassVar[str] = "objective"
    """The name a :class:`infosam.step.Trainee` holds it under: the prefix of its keys in the trainee's
    ``state_dict``."""
    title: ClassVar[str | None] = None
    """How a run's first log line names it; ``None``: ``distill.method=<name>``."""
    learned_title: ClassVar[str | None] = None
    """How a run's first log line names its learned parts; ``None``: ``<name> objective``."""
    stats: ClassVar[tuple[str, ...]] = ()
    """Detached statistics among its terms, logged every optimizer step (metrics.csv's last columns, TensorBoard
    group :attr:`stats_group`); they never change a loss."""
    stats_group: ClassVar[str] = "objective"
    """The TensorBoard group of :attr:`stats`."""
    keeps_resume_state: ClassVar[bool] = True
    """Its ``state_dict`` goes into every resume checkpoint's state (key ``distill``); false when its learned
    part is saved as a weights file of its own instead (:meth:`saved_module`)."""

    taps: tuple[int, ...] = ()
    """Encoder blocks whose outputs it reads (set by :func:`infosam.distill.registry.build_objective`)."""

    def __init__(self, options: ObjectiveOptions, **_dims: object) -> None:
        super().__init__()
        self.options = options

    def forward(self, teacher: Any, student: Any, masks: Tensor) -> dict[str, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def step_terms(self, terms: dict[str, Tensor]) -> dict[str, Tensor]:
        """What a training step reports of ``terms`` (this objective's output) beside ``loss`` and ``seg``: by
        default its weighted total, as ``distill``."""
        return {"distill": terms["total"]}

    def saved_module(self) -> nn.Module | None:
        """A learned part saved beside the student's weights as a file of its own (in every weights folder and
        resume checkpoint), or ``None`` (the default: nothing such)."""
        return None

    def load_saved(self, path: Path) -> None:
        """Load :meth:`saved_module`'s values back from the file a resume checkpoint holds at ``path``."""
        raise NotImplementedError(f"distill.method {self.name!r} saves no module of its own")


def feature_pairs(teacher: Any, student: Any) -> tuple[list[Tensor], list[Tensor]]:
    """The teacher's (detached) and the student's intermediate feature maps, checked to pair up."""
    t, s = teacher.features, student.features
    if not t or not s or len(t) != len(s):
        raise ValueError(
            f"this objective needs intermediate encoder features of teacher and student (got {len(t or [])} and "
            f"{len(s or [])}); were they captured with infosam.distill.features.capture_features?"
        )
    return [x.detach().float() for x in t], [x.float() for x in s]
