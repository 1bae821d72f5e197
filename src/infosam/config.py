"""Training configuration: nested dataclasses with defaults, YAML loading, dotted overrides and validation.

A config file is YAML whose top-level keys are the sections below. A file may start from others with
``inherit: base.yaml`` (or a list), paths relative to the file; later files and the file itself win, key by key.
Overrides use dotted keys (``train.lr=1e-4``), values parsed as YAML scalars.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PRECISIONS = ("no", "fp16", "bf16")
ATTENTIONS = ("fold", "mask", "meta")
SEG_LOSSES = ("structure", "structure_release", "focal_dice_iou", "focal_dice_iou_release")
EVAL_PROMPTS = ("box", "points")


@dataclass
class ModelConfig:
    name: str = "vit_b"
    """SAM variant: vit_b, vit_l, vit_h or tiny (tests and the demo)."""
    checkpoint: str | None = None
    """Official SAM weights (e.g. sam_vit_b_01ec64.pth); null = random initialisation (tests only)."""
    image_size: int | None = None
    """Override of the spec's input side (1024 for ViT-B/L/H, 64 for tiny); null = the spec's."""
    attention: str = "fold"
    """Encoder attention: fold (fused SDPA, rel-pos bias folded in, no HW x HW matrix), mask (SDPA with the bias as
    a mask) or meta (Meta's original). All three compute the same function up to float rounding."""


@dataclass
class PeftConfig:
    methods: str = "adapter+decoder"
    """PEFT methods joined by '+': decoder, bitfit, adapter, adaptformer, lora (the paper's student: adapter+decoder)."""
    options: dict[str, dict] = field(default_factory=dict)
    """Per-method options, e.g. {adapter: {init: torch}, lora: {rank: 4}}."""


@dataclass
class DataConfig:
    path: str = ""
    """Dataset folder: a Conv-LoRA CSV folder or an images/ + masks/ folder (required)."""
    train_split: str = "train"
    """Training split: 'train', 'test' or a CSV file name inside data.path (e.g. train.csv)."""
    test_split: str = "test"
    """Test split, as train_split (e.g. test_Kvasir.csv)."""
    skip_bad_pairs: bool = False
    """Skip unreadable or mismatched image/mask pairs (with a warning) instead of refusing to train."""


@dataclass
class TrainConfig:
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
    """Mixed precision: no, fp16 (CUDA) or bf16."""
    grad_accum: int = 1
    """Batches whose gradients are summed before one optimizer step."""
    grad_clip: float | None = None
    """Clip the gradient norm to this value; null = no clipping (the paper)."""
    num_workers: int = 0
    """DataLoader worker processes."""
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


@dataclass
class InfoSAMConfig:
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


@dataclass
class EvalConfig:
    last_epochs: int = 5
    """Evaluate on the test split after each of the last this many epochs (the paper: 5)."""
    epochs: list[int] | None = None
    """Explicit 1-based epochs to evaluate after; overrides last_epochs when set."""
    prompt: str = "box"
    """Test prompt: box (noisy box) or points (n_fg foreground + n_bg background points; Road)."""
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


@dataclass
class CacheConfig:
    enabled: bool = False
    """Read the teacher's image embeddings from a cache (filled on first use) instead of running its encoder."""
    dir: str = "~/.cache/infosam/teacher"
    """Folder of the teacher cache; a stale cache (other weights or preprocessing) is refused."""


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


class ConfigError(ValueError):
    """An invalid configuration; the message names the option and the valid choices."""


# --------------------------------------------------------------------------------------------- building


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _check_value(name: str, tp: Any, value: Any) -> Any:
    """Return ``value`` converted to annotation ``tp`` or raise :class:`ConfigError` naming ``name``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(name, arg, value)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{name}: invalid value {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads '2e-4' (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        hint = " (quote it: YAML reads yes/no/on/off as booleans)" if isinstance(value, bool) else ""
        raise ConfigError(f"{name} must be a string, got {value!r}{hint}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        return [_check_value(f"{name}[{i}]", item, v) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {value!r}")
        return {str(k): (dict(v) if isinstance(v, dict) else v) for k, v in value.items()}
    raise TypeError(f"unsupported config annotation {tp!r} for {name}")  # pragma: no cover


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    """Instantiate dataclass ``cls`` from a nested dict, refusing unknown keys and wrong types."""
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
        else:
            if prefix == "train." and key == "precision" and value is False:
                value = "no"  # YAML 1.1 reads an unquoted `no` as false
            kwargs[key] = _check_value(f"{prefix}{key}", tp, value)
    return cls(**kwargs)


def config_from_dict(data: dict) -> Config:
    """Build a :class:`Config` from a nested dict (missing keys take their defaults), without validation."""
    return _build(Config, data)


def config_to_dict(config: Config) -> dict:
    """The config as a plain nested dict (YAML-serialisable)."""
    return dataclasses.asdict(config)


# --------------------------------------------------------------------------------------------- YAML + overrides


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml_tree(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a YAML config and the files it inherits from, merged (the file itself wins)."""
    path = Path(path).expanduser().resolve()
    if path in _seen:
        raise ConfigError(f"{path}: inherit loop through {' -> '.join(str(p) for p in _seen)}")
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
        merged = _deep_merge(merged, read_yaml_tree(path.parent / parent, (*_seen, path)))
    return _deep_merge(merged, data)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` overrides (values parsed as YAML scalars) to a nested dict."""
    data = dict(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.option=value (e.g. train.lr=1e-4)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r}: empty option name")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {err}") from err
        parts = key.split(".")
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, dict) else {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults), apply dotted overrides, and validate it."""
    data = read_yaml_tree(path) if path is not None else {}
    data = apply_overrides(data, list(overrides or []))
    config = config_from_dict(data)
    validate_config(config)
    return config


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (loadable by :func:`load_config`)."""
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=False)
    Path(path).write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------------------------- validation


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def validate_config(config: Config) -> None:
    """Check every option's range and the options' consistency; raise :class:`ConfigError` naming the option."""
    from .sam.specs import SPECS

    _choice("model.name", config.model.name, tuple(SPECS))
    _choice("model.attention", config.model.attention, ATTENTIONS)
    if config.model.image_size is not None and config.model.image_size < 16:
        raise ConfigError(f"model.image_size must be >= 16 or null, got {config.model.image_size}")
    _validate_peft(config.peft)
    if not config.data.path:
        raise ConfigError(
            "data.path is required: the dataset folder (Conv-LoRA CSV folder or images/ + masks/)"
        )
    t = config.train
    if t.lr <= 0:
        raise ConfigError(f"train.lr must be > 0, got {t.lr}")
    if not 0 <= t.min_lr <= t.lr:
        raise ConfigError(f"train.min_lr must be between 0 and train.lr ({t.lr}), got {t.min_lr}")
    for name in ("batch_size", "epochs", "grad_accum", "save_every_steps", "log_every_steps"):
        if getattr(t, name) < 1:
            raise ConfigError(f"train.{name} must be >= 1, got {getattr(t, name)}")
    if t.num_workers < 0:
        raise ConfigError(f"train.num_workers must be >= 0, got {t.num_workers}")
    if t.grad_clip is not None and t.grad_clip <= 0:
        raise ConfigError(f"train.grad_clip must be > 0 or null, got {t.grad_clip}")
    _choice("train.precision", t.precision, PRECISIONS)
    _choice("train.seg_loss", t.seg_loss, SEG_LOSSES)
    i = config.infosam
    if i.enabled and t.batch_size < 2:
        raise ConfigError(
            f"train.batch_size must be >= 2 when infosam.enabled is true (its entropies run over the batch); "
            f"got {t.batch_size}"
        )
    for name in ("lam", "lam1", "lam2"):
        if getattr(i, name) < 0:
            raise ConfigError(f"infosam.{name} must be >= 0, got {getattr(i, name)}")
    if i.frozen_relation is not None and not Path(i.frozen_relation).expanduser().is_file():
        raise ConfigError(f"infosam.frozen_relation: file not found: {i.frozen_relation}")
    e = config.eval
    _choice("eval.prompt", e.prompt, EVAL_PROMPTS)
    if e.last_epochs < 0:
        raise ConfigError(f"eval.last_epochs must be >= 0, got {e.last_epochs}")
    if e.epochs is not None:
        bad = [n for n in e.epochs if not 1 <= n <= t.epochs]
        if bad:
            raise ConfigError(f"eval.epochs must lie in 1..train.epochs ({t.epochs}); got {bad}")
    if e.prompt == "points" and (e.n_fg < 0 or e.n_bg < 0 or e.n_fg + e.n_bg < 1):
        raise ConfigError(
            f"eval.n_fg and eval.n_bg must be >= 0 with at least one point; got {e.n_fg}, {e.n_bg}"
        )
    if e.metrics is not None:
        from .metrics import METRIC_NAMES

        bad = [m for m in e.metrics if m not in METRIC_NAMES]
        if bad:
            raise ConfigError(f"eval.metrics: unknown metric(s) {bad}; valid: {', '.join(METRIC_NAMES)}")
    if e.batch_size < 1:
        raise ConfigError(f"eval.batch_size must be >= 1, got {e.batch_size}")
    if not config.output:
        raise ConfigError("output must name the run folder")


def _validate_peft(peft: PeftConfig) -> None:
    from .peft import resolve_configs

    try:
        resolve_configs(peft.methods, peft.options)
    except ValueError as err:
        raise ConfigError(f"peft.methods / peft.options: {err}") from err


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
    defaults = Config()
    for section in dataclasses.fields(Config):
        value = getattr(defaults, section.name)
        if not dataclasses.is_dataclass(value):
            rows.append((section.name, value, docs["Config"].get(section.name, "")))
            continue
        for f in dataclasses.fields(value):
            rows.append(
                (
                    f"{section.name}.{f.name}",
                    getattr(value, f.name),
                    docs[type(value).__name__].get(f.name, ""),
                )
            )
    return rows
