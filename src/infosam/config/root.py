"""The whole config (:class:`Config`): its sections, and the rules that span sections or touch files."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .sections import (
    CacheConfig,
    ConfigError,
    DataConfig,
    DistillConfig,
    EvalConfig,
    InfoSAMConfig,
    ModelConfig,
    PeftConfig,
    TrainConfig,
    _Section,
)


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
        from ..distill.registry import OBJECTIVES

        method = self.distill_method
        return OBJECTIVES[method].min_batch if method in OBJECTIVES else 1

    def objective_options(self) -> Any:
        """The validated options of the chosen objective (:func:`infosam.distill.registry.objective_options`):
        ``distill.options.<method>``, or the fields of its own section (InfoSAM: ``infosam``); ``None`` for
        ``none``."""
        from ..distill.registry import OBJECTIVES, objective_options

        method = self.distill_method
        cls = OBJECTIVES.get(method)
        if cls is None:
            return None
        if cls.options_section is None:
            return objective_options(method, self.distill.options.get(method))
        section = getattr(self, cls.options_section)
        return objective_options(
            method, {f.name: getattr(section, f.name) for f in dataclasses.fields(cls.Options)}
        )

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
        from ..distill.registry import OBJECTIVES
        from ..peft.registry import prefix_cache_conflict

        cls = OBJECTIVES.get(self.distill_method)
        if cls is not None and cls.needs_features and self.cache.enabled:
            raise ConfigError(
                f"distill.method={self.distill_method} reads the encoders' intermediate features, which the "
                "teacher cache and the student-prefix cache skip; set cache.enabled=false"
            )
        conflict = prefix_cache_conflict(self.peft.methods)  # a PEFT method that reads what the cache skips
        if conflict is not None and self.cache.enabled and self.cache.student_prefix:
            raise ConfigError(
                f"peft.methods {conflict}, which the student-prefix cache "
                "skips; set cache.student_prefix=false (or cache.enabled=false)"
            )
