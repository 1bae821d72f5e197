"""What every part of :mod:`infosam.load` shares: the kinds of source, a source looked at (:class:`ModelSource`),
the model it opens to (:class:`OpenedModel`) and the table from a kind to its opener.

Each source module registers its openers here with :func:`opener`; :meth:`ModelSource.open` looks the kind up in
:data:`OPENERS`. The table sits below the openers, which build :class:`OpenedModel`, so nothing here imports them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from segment_anything.modeling import Sam

if TYPE_CHECKING:
    from ..config import Config, EvalConfig

KINDS = ("run", "export", "checkpoint", "name", "config", "module")
"""What a source can be: run folder, self-contained student file, plain SAM state dict, SAM model name,
Config/ModelConfig, built module."""


class SourceError(ValueError):
    """A source that names no model, or options that do not apply to it; the message names both."""


# --------------------------------------------------------------------------------------------- the opened model


@dataclass
class OpenedModel:
    """A model ready to segment with (eval mode, on its device) and what it came from."""

    model: Sam
    """The student of a run or export; the SAM itself for every other source."""
    source: ModelSource
    description: dict
    """What the model is, for summaries: ``model``, ``checkpoint`` and, for a run, ``run``, ``weights``,
    ``run_finished``; ``image_size`` when one was asked for."""
    teacher: Sam | None = None
    """The pretrained base of a student, when asked for (``teacher=True``); the model itself for a zero-shot SAM."""
    sam: dict = field(default_factory=dict)
    """``name`` and ``image_size`` of the SAM (what a self-contained export records)."""
    config: Config | None = None
    """The config the model was built as: a run's (read once; a ``checkpoint`` override applied), the one given,
    or for a model name or checkpoint file its ``model`` section; None for an export or a built module."""

    @property
    def kind(self) -> str:
        """One of :data:`KINDS`."""
        return self.source.kind

    @property
    def is_student(self) -> bool:
        """Whether the model carries trained PEFT weights on a pretrained base (run folder or export)."""
        return self.source.kind in ("run", "export")


# --------------------------------------------------------------------------------------------- sources


@dataclass
class ModelSource:
    """A source looked at but not yet built: see :func:`infosam.load.resolve`."""

    kind: str
    given: Any
    """The source as the caller gave it."""
    path: Path | None = None
    config: Config | None = None
    """A run's config (read once), or the Config/ModelConfig given (as a Config)."""
    checkpoint: str | Path | None = None
    weights: str | Path | None = None
    image_size: int | None = None
    attention: str | None = None
    require_final: bool = False

    def __str__(self) -> str:
        if self.kind == "module":
            return f"the given {type(self.given).__name__}"
        if self.kind == "config":
            return f"the config of model {self.config.model.name}"
        return str(self.path if self.path is not None else self.given)

    def eval_settings(self) -> EvalConfig:
        """How this source is scored by default: a run's (or config's) ``eval`` section, else the defaults."""
        from ..config import EvalConfig

        return copy.deepcopy(self.config.eval) if self.config is not None else EvalConfig()

    def object_selection(
        self, categories: list[str] | None = None, include_crowd: bool | None = None
    ) -> dict[str, Any]:
        """Which annotations of a COCO instance file this source is scored on, as ``open_dataset``'s keywords:
        ``categories`` (names) and ``include_crowd`` as given, each one not given (``None``) taken from its config
        (a run's ``data.categories`` / ``data.include_crowd``: the objects it trained and was tested on), else
        every category and no crowd annotations."""
        data = self.config.data if self.config is not None else None
        if categories is None and data is not None:
            categories = data.categories
        if include_crowd is None:
            include_crowd = data.include_crowd if data is not None else False
        return {"categories": categories, "include_crowd": include_crowd}

    def open(self, *, device: str | torch.device = "cpu", teacher: bool = False) -> OpenedModel:
        """Build (or load) the model on ``device`` in eval mode; ``teacher`` also gives a student's pretrained base.

        Raises:
            FileNotFoundError: the run holds no trained weights, or its recorded SAM checkpoint moved.
            ValueError: damaged weights, weights holding NaN/inf, or a file that is no SAM.
        """
        opened = OPENERS[self.kind](self, teacher)
        opened.model = opened.model.eval().to(device)
        if opened.teacher is not None:
            opened.teacher = opened.teacher.eval().to(device)
        return opened


# --------------------------------------------------------------------------------------------- the openers' table

Opener = Callable[[ModelSource, bool], OpenedModel]
"""Builds the model of a source (``teacher``: also its pretrained base); :meth:`ModelSource.open` puts it in eval
mode on its device."""

OPENERS: dict[str, Opener] = {}
"""The opener of each kind of :data:`KINDS`, filled by the source modules (:func:`opener`) as
:mod:`infosam.load` imports them."""


def opener(kind: str) -> Callable[[Opener], Opener]:
    """Register the decorated function as the opener of ``kind`` (one of :data:`KINDS`)."""

    def register(function: Opener) -> Opener:
        OPENERS[kind] = function
        return function

    return register


def with_attention(config: Config, attention: str | None) -> Config:
    """``config`` with ``model.attention`` replaced when one is asked for (a copy; the run's own is untouched)."""
    if attention is None:
        return config
    config = copy.deepcopy(config)
    config.model.attention = attention
    return config
