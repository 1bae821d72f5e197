"""The door itself: :func:`resolve` tells what a source is and checks the options against it, :func:`open_model`
resolves and opens it (:meth:`~infosam.load.base.ModelSource.open`, through the openers' table), and
:func:`load_model` is the public loader of a path.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from segment_anything.modeling import Sam

from .base import ModelSource, OpenedModel, SourceError
from .student import is_student_file
from .zero_shot import RANDOM_MODELS, seeded

if TYPE_CHECKING:
    from ..config import Config, ModelConfig


def resolve(
    source: str | Path | Config | ModelConfig | Sam | ModelSource,
    *,
    checkpoint: str | Path | None = None,
    weights: str | Path | None = None,
    image_size: int | None = None,
    attention: str | None = None,
    require_final: bool = False,
    require_run: bool = False,
) -> ModelSource:
    """What ``source`` is (see :mod:`infosam.load`), with the options checked against it; nothing is built.

    A run folder's config is read here, once; a file's kind is told from its header (an export's metadata), a
    plain state dict is only read when opened.

    Args:
        checkpoint: base SAM weights: for a run, instead of the path its config records (moved files); for a model
            name, the weights to load (``"bundled"``: LiteMedSAM's packaged file).
        weights: for a run, a ``peft.safetensors`` to load instead of the run's newest.
        image_size: for a model name, the input side (default the spec's).
        attention: the encoder attention (``fold``, ``mask`` or ``meta``) instead of the source's own.
        require_final: for a run, refuse one that did not finish (:class:`infosam.runs.UnfinishedRunError`).
        require_run: ``source`` must be a folder (``infosam eval RUN_DIR``): anything else is refused here, the
            one place the path is looked at.

    Raises:
        FileNotFoundError: a path that does not exist and is no model name.
        SourceError: a folder that is not a run, or an option that does not apply to this kind of source.
    """
    from ..config import Config, ModelConfig

    if isinstance(source, ModelSource):
        return source
    options = {
        "checkpoint": checkpoint,
        "weights": weights,
        "image_size": image_size,
        "attention": attention,
        "require_final": require_final,
    }
    if isinstance(source, Sam):
        found = ModelSource("module", source, **options)
    elif isinstance(source, Config | ModelConfig):
        if isinstance(source, Config):
            config = copy.deepcopy(source)
        else:
            config = seeded(Config(model=copy.deepcopy(source)))
        found = ModelSource("config", source, config=config, **options)
    else:
        path = Path(source).expanduser()
        is_dir = path.is_dir()
        if require_run and not is_dir:
            raise FileNotFoundError(f"RUN_DIR {source} is not a folder")
        if is_dir:
            from ..runs import RunDir

            run = RunDir(path)
            try:
                config = run.read_config()  # checks the folder holds a run, once
            except FileNotFoundError:
                raise SourceError(
                    f"{path} is a folder but not a run folder (no {run.config_file.name})"
                ) from None
            found = ModelSource("run", source, path=path, config=config, **options)
        elif path.is_file():
            kind = "export" if is_student_file(path) else "checkpoint"
            found = ModelSource(kind, source, path=path, **options)
        else:
            from ..sam.specs import SPECS

            if str(source) not in SPECS:
                raise FileNotFoundError(
                    f"{source} is neither a run folder, an exported or SAM checkpoint file, nor a SAM model name "
                    f"({', '.join(SPECS)})"
                )
            found = ModelSource("name", str(source), **options)
    _check_options(found)
    return found


def _check_options(source: ModelSource) -> None:
    """SourceError naming the source and the option when an option does not apply to its kind."""
    allowed = {
        "run": {"checkpoint", "weights", "attention", "require_final"},
        "export": {"attention"},
        "checkpoint": {"image_size", "attention"},
        "name": {"checkpoint", "image_size", "attention"},
        "config": {"attention"},
        "module": set(),
    }[source.kind]
    what = {
        "run": "a run folder",
        "export": "a self-contained export",
        "checkpoint": "a SAM checkpoint file",
        "name": "a SAM model name",
        "config": "a model config",
        "module": "a built model",
    }[source.kind]
    why = {
        "checkpoint": "its base weights are its own",
        "weights": "PEFT weights belong to a run folder",
        "image_size": "image_size is for a SAM model name; a run's or a config's input size is its own",
        "attention": "a built model's attention is its own",
        "require_final": "only a run folder can be unfinished",
    }
    for name in ("checkpoint", "weights", "image_size", "attention", "require_final"):
        if getattr(source, name) not in (None, False) and name not in allowed:
            raise SourceError(f"{source} is {what}: {name} does not apply ({why[name]})")
    if source.kind == "name" and source.checkpoint is None and source.given not in RANDOM_MODELS:
        raise SourceError(
            f"a checkpoint is required for model {source.given} (random weights make no sense to segment with)"
        )


def open_model(
    source: str | Path | Config | ModelConfig | Sam | ModelSource,
    *,
    checkpoint: str | Path | None = None,
    weights: str | Path | None = None,
    image_size: int | None = None,
    attention: str | None = None,
    require_final: bool = False,
    device: str | torch.device = "cpu",
    teacher: bool = False,
) -> OpenedModel:
    """The model ``source`` names, in eval mode on ``device``: :func:`resolve` then :meth:`ModelSource.open`.

    ``teacher=True`` also gives a student's pretrained base (a run's: built from its config as training built it;
    an export's: the base weights stored in the file). See :func:`resolve` for the options; a resolved
    :class:`ModelSource` is opened as it is (the options are then its own).
    """
    if isinstance(source, ModelSource):
        return source.open(device=device, teacher=teacher)
    found = resolve(
        source,
        checkpoint=checkpoint,
        weights=weights,
        image_size=image_size,
        attention=attention,
        require_final=require_final,
    )
    return found.open(device=device, teacher=teacher)


def load_model(path: str | Path, *, part: str = "student", device: str | torch.device = "cpu") -> Sam:
    """Load a model to segment with, from whatever ``path`` is, in eval mode (:func:`open_model`).

    - a run folder (holds ``config.yaml``): its fine-tuned student, or with ``part="teacher"`` its pretrained base;
    - a self-contained ``infosam`` export (``.safetensors``): the same, without the run folder;
    - a plain SAM state dict (an official ``.pth`` or a ``--format sam`` export): that model (``part`` is ignored;
      the architecture is recognised from the weights).

    The model is used as :func:`infosam.predict.predict_probabilities` and friends take it; a plain state-dict
    export can equally be loaded by Meta's ``sam_model_registry[name](checkpoint=path)``.

    Raises:
        ValueError: ``part`` is not ``student`` or ``teacher``, or the file is none of the above.
        FileNotFoundError: ``path`` does not exist.
    """
    if part not in ("student", "teacher"):
        raise ValueError(f"part must be 'student' or 'teacher', got {part!r}")
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model {path} does not exist (expected a run folder or an exported file)")
    opened = open_model(path, device=device, teacher=part == "teacher")
    return opened.teacher if part == "teacher" else opened.model
