"""One door from whatever names a model to that model, ready to segment with.

:func:`open_model` is the only place evaluation, prediction, the web page, export, the experiment runner and
:func:`infosam.load_model` turn a source into a model. A source is one of:

- a run folder (holds ``config.yaml``): its fine-tuned student, base SAM from the run's config (read once) plus
  the saved PEFT weights; ``teacher=True`` also builds the pretrained base it was trained from;
- a self-contained student file (``infosam export RUN_DIR --format infosam``): the same, without the run folder;
- a plain SAM state dict (an official ``.pth`` of ViT-B/L/H, LiteMedSAM, MobileSAM or SAM 2, or an
  ``infosam export --format sam``/``sam2`` file): that model, its architecture recognised from the weights;
- a SAM model name (``vit_b``, ``litemedsam``, ``tiny``, ...) with ``checkpoint`` (``"bundled"`` for
  LiteMedSAM's packaged weights; the random ``tiny`` test models need none): zero-shot SAM;
- a :class:`~infosam.config.ModelConfig` (zero-shot SAM of that section) or a whole :class:`~infosam.config.Config`
  (the pretrained base that config trains from: its ``train.seed`` draws whatever no checkpoint covers, so a random
  test model is the very teacher a run of that config had);
- an already-built SAM module, used as given.

The encoder attention (:func:`infosam.model.build_base`'s ``attention``: fast SDPA kernels, TinyViT's included) is
chosen here for every inference caller: a run's or config's own ``model.attention``, otherwise ``"fold"``.

:func:`resolve` looks at a source without building anything (a run's config is read, an export's metadata), so
callers check their other inputs before the (possibly slow) build of :meth:`ModelSource.open`.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from segment_anything.modeling import Sam

if TYPE_CHECKING:
    from .config import Config, EvalConfig, ModelConfig

log = logging.getLogger(__name__)

KINDS = ("run", "export", "checkpoint", "name", "config", "module")
"""What a source can be: run folder, self-contained student file, plain SAM state dict, SAM model name,
Config/ModelConfig, built module."""

FORMAT_KEY = "infosam_format"
"""Metadata key that marks a self-contained student file (``infosam export --format infosam``)."""
FORMAT_VERSION = "student-v1"
MODEL_KEY = "infosam_model"
PEFT_KEY = "infosam_peft"

RANDOM_MODELS = ("tiny", "tiny_tinyvit")
"""Model names that may be built without a checkpoint (random weights: tests and CPU examples)."""


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
    """A source looked at but not yet built: see :func:`resolve`."""

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
        from .config import EvalConfig

        return copy.deepcopy(self.config.eval) if self.config is not None else EvalConfig()

    def open(self, *, device: str | torch.device = "cpu", teacher: bool = False) -> OpenedModel:
        """Build (or load) the model on ``device`` in eval mode; ``teacher`` also gives a student's pretrained base.

        Raises:
            FileNotFoundError: the run holds no trained weights, or its recorded SAM checkpoint moved.
            ValueError: damaged weights, weights holding NaN/inf, or a file that is no SAM.
        """
        opener = {
            "run": _open_run,
            "export": _open_export,
            "checkpoint": _open_checkpoint,
            "name": _open_name,
            "config": _open_config,
            "module": _open_module,
        }[self.kind]
        opened = opener(self, teacher)
        opened.model = opened.model.eval().to(device)
        if opened.teacher is not None:
            opened.teacher = opened.teacher.eval().to(device)
        return opened


def resolve(
    source: str | Path | Config | ModelConfig | Sam | ModelSource,
    *,
    checkpoint: str | Path | None = None,
    weights: str | Path | None = None,
    image_size: int | None = None,
    attention: str | None = None,
    require_final: bool = False,
) -> ModelSource:
    """What ``source`` is (see the module docstring), with the options checked against it; nothing is built.

    A run folder's config is read here, once; a file's kind is told from its header (an export's metadata), a
    plain state dict is only read when opened.

    Args:
        checkpoint: base SAM weights: for a run, instead of the path its config records (moved files); for a model
            name, the weights to load (``"bundled"``: LiteMedSAM's packaged file).
        weights: for a run, a ``peft.safetensors`` to load instead of the run's newest.
        image_size: for a model name, the input side (default the spec's).
        attention: the encoder attention (``fold``, ``mask`` or ``meta``) instead of the source's own.
        require_final: for a run, refuse one that did not finish (:class:`infosam.runs.UnfinishedRunError`).

    Raises:
        FileNotFoundError: a path that does not exist and is no model name.
        SourceError: a folder that is not a run, or an option that does not apply to this kind of source.
    """
    from .config import Config, ModelConfig

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
            config = _seeded(Config(model=copy.deepcopy(source)))
        found = ModelSource("config", source, config=config, **options)
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            from .runs import RunDir

            run = RunDir(path)
            if not run.is_run():
                raise SourceError(f"{path} is a folder but not a run folder (no config.yaml)")
            found = ModelSource("run", source, path=path, config=run.read_config(), **options)
        elif path.is_file():
            kind = "export" if is_student_file(path) else "checkpoint"
            found = ModelSource(kind, source, path=path, **options)
        else:
            from .sam.specs import SPECS

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


def load_run(
    run_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    require_final: bool = False,
) -> tuple[Config, Sam]:
    """The config and fine-tuned student of a run folder, in eval mode (:func:`open_model` of a run).

    Base SAM from the run's config (+ its SAM checkpoint), then the saved PEFT weights; the relation module is a
    training-time device and is not loaded.

    Args:
        run_dir: the run folder written by :func:`infosam.train.train`.
        checkpoint: base SAM weights to use instead of the path recorded in the run's config (moved files).
        weights: a ``peft.safetensors`` to load instead of :meth:`infosam.runs.RunDir.student_weights`'s choice
            (which warns when the run did not finish and names the weights it takes).
        device: where the student goes.
        require_final: refuse a run without intact final weights (:class:`infosam.runs.UnfinishedRunError`).

    Raises:
        FileNotFoundError: not a run folder, no trained weights, or the recorded SAM checkpoint moved.
        ValueError: the weights are damaged or hold NaN/inf.
    """
    from .runs import RunDir

    path = Path(run_dir).expanduser()
    if not RunDir(path).is_run():
        raise FileNotFoundError(f"{path} is not a run folder (no {RunDir(path).config_file.name})")
    opened = open_model(
        path, checkpoint=checkpoint, weights=weights, device=device, require_final=require_final
    )
    return opened.config, opened.model


# --------------------------------------------------------------------------------------------- openers


def _with_attention(config: Config, attention: str | None) -> Config:
    """``config`` with ``model.attention`` replaced when one is asked for (a copy; the run's own is untouched)."""
    if attention is None:
        return config
    config = copy.deepcopy(config)
    config.model.attention = attention
    return config


def _open_run(source: ModelSource, teacher: bool) -> OpenedModel:
    """A run's student from its config (read by :func:`resolve`) and its newest (or the given) PEFT weights."""
    from .model import build_configured
    from .peft import load_peft
    from .runs import RunDir
    from .sam.checkpoint import BUNDLED

    run = RunDir(source.path)
    config = _with_attention(source.config, source.attention)
    if source.weights is None:
        weights = run.student_weights(require_final=source.require_final)
    else:
        weights = given_weights(source.weights)
    recorded = config.model.checkpoint
    if source.checkpoint is not None:
        config = copy.deepcopy(config)
        config.model.checkpoint = str(source.checkpoint)
    elif recorded is not None and recorded != BUNDLED and not _recorded_file(recorded):
        raise FileNotFoundError(
            f"base SAM checkpoint {recorded} (model.checkpoint in {run.config_file}) not found; "
            "pass --checkpoint with its new location"
        )
    student = build_configured(config)
    load_peft(weights, student)
    base = build_configured(config) if teacher else None
    description = run_description(run, weights, config)
    sam = {"name": config.model.name, "image_size": config.model.image_size}
    return OpenedModel(student, source, description, base, sam, config)


def given_weights(weights: str | Path) -> Path:
    """The PEFT weights file that ``--weights`` names: a ``peft.safetensors`` or a weights/checkpoint folder
    holding one (a run's ``weights/final``, ``checkpoints/step-000100``), checked against the folder's manifest.

    Raises:
        FileNotFoundError: a folder without ``peft.safetensors`` (the message names the folder).
        infosam.checkpoints.CheckpointError: the folder's files do not match its manifest.
    """
    from .checkpoints import PEFT_FILE, peft_file, verify_folder

    path = Path(weights).expanduser()
    if path.is_dir():
        if not peft_file(path).is_file():
            raise FileNotFoundError(
                f"{path} is a folder without {PEFT_FILE}: pass a weights folder (a run's weights/final) "
                f"or a {PEFT_FILE} file"
            )
        verify_folder(path)
        return peft_file(path)
    verify_folder(path.parent)  # given weights inside a weights folder: checked against its manifest
    return path


def run_description(run, weights: Path, config: Config) -> dict:
    """What an evaluation of a run's student says of its model: the run folder, the weights file, whether the run
    finished, the SAM model and base checkpoint (``config``: the run's, with any new checkpoint location)."""
    return {
        "run": str(run.path),
        "weights": str(weights),
        "run_finished": run.is_finished(),
        "model": config.model.name,
        "checkpoint": config.model.checkpoint,
    }


def _open_export(source: ModelSource, teacher: bool) -> OpenedModel:
    student, base, sam = load_student_file(source.path, attention=source.attention or "fold")
    description = {"model": sam["name"], "checkpoint": None, "export": str(source.path)}
    return OpenedModel(student, source, description, base if teacher else None, sam)


def _open_checkpoint(source: ModelSource, teacher: bool) -> OpenedModel:
    from .model import build_base
    from .sam.checkpoint import inspect_checkpoint

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
    config = _zero_shot_config(info["spec"], str(source.path), size, source.attention)
    return OpenedModel(model, source, description, model if teacher else None, sam, config)


def _open_name(source: ModelSource, teacher: bool) -> OpenedModel:
    from .model import build_base

    name = source.given
    model = build_base(
        name, checkpoint=source.checkpoint, image_size=source.image_size, attention=source.attention or "fold"
    )
    description = {"model": name, "checkpoint": None if source.checkpoint is None else str(source.checkpoint)}
    if source.image_size is not None:
        description["image_size"] = source.image_size
    sam = {"name": name, "image_size": source.image_size}
    checkpoint = None if source.checkpoint is None else str(source.checkpoint)
    config = _zero_shot_config(name, checkpoint, source.image_size, source.attention)
    return OpenedModel(model, source, description, model if teacher else None, sam, config)


def _zero_shot_config(
    name: str, checkpoint: str | None, image_size: int | None, attention: str | None
) -> Config:
    """The config whose base model is this zero-shot SAM (for its caches; seed 0, as it was built)."""
    from .config import Config, ModelConfig

    model = ModelConfig(
        name=name, checkpoint=checkpoint, image_size=image_size, attention=attention or "fold"
    )
    return _seeded(Config(model=model))


def _seeded(config: Config) -> Config:
    """``config`` with ``train.seed`` 0: a bare model section is built with :func:`infosam.model.build_base`'s
    default seed, not a training run's default."""
    config.train.seed = 0
    return config


def _open_config(source: ModelSource, teacher: bool) -> OpenedModel:
    from .model import build_configured

    config = _with_attention(source.config, source.attention)
    model = build_configured(config)
    m = config.model
    description = {"model": m.name, "checkpoint": m.checkpoint}
    sam = {"name": m.name, "image_size": m.image_size}
    return OpenedModel(model, source, description, model if teacher else None, sam, config)


def _open_module(source: ModelSource, teacher: bool) -> OpenedModel:
    model = source.given
    spec = getattr(model, "spec", None)
    name = getattr(spec, "name", type(model).__name__)
    sam = {"name": name, "image_size": getattr(model.image_encoder, "img_size", None)}
    return OpenedModel(model, source, {"model": name, "checkpoint": None}, model if teacher else None, sam)


# --------------------------------------------------------------------------------------------- student files


def is_student_file(path: str | Path) -> bool:
    """Whether ``path`` is a self-contained student file (``infosam export --format infosam``)."""
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    path = Path(path)
    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get(FORMAT_KEY) == FORMAT_VERSION
    except (SafetensorError, OSError):
        return False


def load_student_file(path: str | Path, *, attention: str = "fold") -> tuple[Sam, Sam, dict]:
    """``(student, teacher, sam)`` from a self-contained file, both in eval mode on the CPU (strict loads);
    ``sam`` is the recorded ``name`` and ``image_size``.

    Raises:
        SourceError: not such a file, or its tensors do not fit the recorded model and PEFT.
        ValueError: its PEFT tensors hold NaN/inf.
    """
    from safetensors.torch import load_file, safe_open

    from .guard import check_finite
    from .model import build_base
    from .peft import PeftSpec, apply_peft, trainable_state_dict

    path = Path(path)
    if not is_student_file(path):
        raise SourceError(
            f"{path} is not an infosam export (infosam export RUN_DIR --format infosam writes one)"
        )
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    sam = json.loads(metadata[MODEL_KEY])
    spec = PeftSpec.from_dict(json.loads(metadata[PEFT_KEY]))
    tensors = load_file(str(path))
    base = {k[5:]: v for k, v in tensors.items() if k.startswith("base.")}
    peft_tensors = {k[5:]: v for k, v in tensors.items() if k.startswith("peft.")}
    check_finite(peft_tensors, str(path), hint="; these weights come from a diverged run and cannot be used")
    # arbitrary weights, overwritten by the strict load below
    teacher = build_base(sam["name"], image_size=sam.get("image_size"), attention=attention, seed=0)
    try:
        teacher.load_state_dict(base, strict=True)
    except RuntimeError as err:
        raise SourceError(f"{path}: base weights do not fit SAM {sam['name']!r}: {err}") from err
    student = copy.deepcopy(teacher)
    apply_peft(student, spec.methods, spec.options)
    expected = trainable_state_dict(student)
    if set(expected) != set(peft_tensors):
        raise SourceError(
            f"{path}: PEFT tensors do not match the {spec.name!r} student "
            f"(missing {sorted(set(expected) - set(peft_tensors))[:3]}, "
            f"unexpected {sorted(set(peft_tensors) - set(expected))[:3]})"
        )
    with torch.no_grad():
        for key, value in peft_tensors.items():
            expected[key].copy_(value)
    student.requires_grad_(False)
    return student.eval(), teacher.requires_grad_(False).eval(), sam


# --------------------------------------------------------------------------------------------- the public loader


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


__all__ = [
    "KINDS",
    "ModelSource",
    "OpenedModel",
    "SourceError",
    "is_student_file",
    "load_model",
    "load_student_file",
    "open_model",
    "resolve",
]


def _recorded_file(checkpoint: str) -> bool:
    """Whether a run's recorded ``model.checkpoint`` (``$VARS`` expanded; an unset one counts as missing) exists."""
    from .sam.checkpoint import CheckpointError, expand_path

    try:
        return expand_path(checkpoint).is_file()
    except CheckpointError:
        return False
