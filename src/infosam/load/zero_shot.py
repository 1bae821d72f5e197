"""The sources that open to a SAM without trained PEFT weights: a plain SAM state dict (an official checkpoint or
an ``infosam export --format sam``/``sam2`` file, its architecture recognised from the weights), a SAM model name,
a :class:`~infosam.config.ModelConfig` or :class:`~infosam.config.Config` (the pretrained base it trains from), and
an already-built module (used as given). The model is its own teacher.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import ModelSource, OpenedModel, SourceError, opener, with_attention

if TYPE_CHECKING:
    from ..config import Config

RANDOM_MODELS = ("tiny", "tiny_tinyvit")
"""Model names that may be built without a checkpoint (random weights: tests and CPU examples)."""


@opener("checkpoint")
def _open_checkpoint(source: ModelSource, teacher: bool) -> OpenedModel:
    from ..model import build_base
    from ..sam.checkpoint import inspect_checkpoint

    info = inspect_checkpoint(source.path)  # CheckpointError (a ValueError) names the file when it is no SAM
    if info["spec"] is None:
        raise SourceError(f"{source.path}: the weights match none of the known SAM models")
    size = source.image_size if source.image_size is not None else info["image_size"]
    model = build_base(
        info["spec"], checkpoint=source.path, image_size=size, attention=source.attention or "fold"
    )
    description = {"model": info["spec"], "checkpoint": str(source.path)}
    if source.image_size is not None:
        description["image_size"] = source.image_size
    sam = {"name": info["spec"], "image_size": size}
    config = zero_shot_config(info["spec"], str(source.path), size, source.attention)
    return OpenedModel(model, source, description, model if teacher else None, sam, config)


@opener("name")
def _open_name(source: ModelSource, teacher: bool) -> OpenedModel:
    from ..model import build_base

    name = source.given
    model = build_base(
        name, checkpoint=source.checkpoint, image_size=source.image_size, attention=source.attention or "fold"
    )
    description = {"model": name, "checkpoint": None if source.checkpoint is None else str(source.checkpoint)}
    if source.image_size is not None:
        description["image_size"] = source.image_size
    sam = {"name": name, "image_size": source.image_size}
    checkpoint = None if source.checkpoint is None else str(source.checkpoint)
    config = zero_shot_config(name, checkpoint, source.image_size, source.attention)
    return OpenedModel(model, source, description, model if teacher else None, sam, config)


def zero_shot_config(
    name: str, checkpoint: str | None, image_size: int | None, attention: str | None
) -> Config:
    """The config whose base model is this zero-shot SAM (for its caches; seed 0, as it was built)."""
    from ..config import Config, ModelConfig

    model = ModelConfig(
        name=name, checkpoint=checkpoint, image_size=image_size, attention=attention or "fold"
    )
    return seeded(Config(model=model))


def seeded(config: Config) -> Config:
    """``config`` with ``train.seed`` 0: a bare model section is built with :func:`infosam.model.build_base`'s
    default seed, not a training run's default."""
    config.train.seed = 0
    return config


@opener("config")
def _open_config(source: ModelSource, teacher: bool) -> OpenedModel:
    from ..model import build_configured

    config = with_attention(source.config, source.attention)
    model = build_configured(config)
    m = config.model
    description = {"model": m.name, "checkpoint": m.checkpoint}
    sam = {"name": m.name, "image_size": m.image_size}
    return OpenedModel(model, source, description, model if teacher else None, sam, config)


@opener("module")
def _open_module(source: ModelSource, teacher: bool) -> OpenedModel:
    model = source.given
    spec = getattr(model, "spec", None)
    name = getattr(spec, "name", type(model).__name__)
    sam = {"name": name, "image_size": getattr(model.image_encoder, "img_size", None)}
    return OpenedModel(model, source, {"model": name, "checkpoint": None}, model if teacher else None, sam)
