"""InfoSAM as an entry of the distillation registry: ``distill.method=infosam`` (the default).

:class:`InfoSAMLoss` owns the relation module and returns :func:`infosam.distill.loss.infosam_terms`; its options
(:class:`InfoSAMOptions`) are the ``infosam`` config section's: the term weights ``lam``, ``lam1``, ``lam2``, the
global-batch Gram matrices and the frozen relation module of InfoSAM-T. Unlike the baselines, its learned part
(the relation module, unless frozen) is saved as a weights file of its own beside the student's, not in the resume
state, and a training step reports its two terms and the relation maps' statistics
(:data:`infosam.distill.loss.RELATION_STATS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segment_anything.modeling import Sam
from torch import Tensor, nn

from .entropy import Gather, all_gather_rows
from .loss import RELATION_STATS, InfoSAMWeights, SamFeatures, infosam_terms
from .objective import Objective, options_from_mapping
from .relation import RelationModule


@dataclass(frozen=True)
class InfoSAMOptions:
    """InfoSAM's options (fields of the ``infosam`` config section of the same names)."""

    lam: float = 1.0
    """Overall weight of the InfoSAM objective next to the segmentation loss."""
    lam1: float = 1.0
    """Weight of the relation-compression term L_r."""
    lam2: float = 0.5
    """Weight of the relation-distillation term L_d."""
    global_batch: bool = False
    """With several processes, build the Gram matrices over the global batch (all-gathered rows)."""
    frozen_relation: str | None = None
    """Load this trained relation module and keep it frozen (InfoSAM-T); null = train a fresh one."""

    def __post_init__(self) -> None:
        _ = self.weights  # InfoSAMWeights owns the rules of the weights

    @property
    def weights(self) -> InfoSAMWeights:
        """The term weights."""
        return InfoSAMWeights(lam=self.lam, lam1=self.lam1, lam2=self.lam2)

    @classmethod
    def from_options(cls, method: str, options: Mapping[str, Any] | None) -> InfoSAMOptions:
        """Build from ``{field: value}`` (the ``infosam`` section's fields); unknown names or ill-typed values
        raise ValueError naming them."""
        return options_from_mapping(cls, method, options, "infosam.")


class InfoSAMLoss(Objective):
    """The InfoSAM objective: a thin module around :func:`infosam.distill.loss.infosam_terms` that owns the
    relation module (so it sits in the optimizer).

    Args:
        relation: the relation module (``RelationModule(dim)``, or a frozen loaded one for InfoSAM-T).
        weights: term weights (default: the paper's).
        gather: optional row all-gather for multi-process training.
    """

    name = "infosam"
    Options = InfoSAMOptions  # type: ignore[assignment]  (not distill.options: the infosam section)
    min_batch = 2
    options_section = "infosam"
    module_name = "infosam"  # the trainee's keys stay infosam.relation.*
    title = "InfoSAM"
    learned_title = "relation module"
    stats = RELATION_STATS
    stats_group = "relation"
    keeps_resume_state = False  # the relation module is a weights file of its own

    def __init__(
        self,
        relation: RelationModule,
        weights: InfoSAMWeights | None = None,
        *,
        gather: Gather | None = None,
    ) -> None:
        nn.Module.__init__(self)
        self.relation = relation
        self.weights = InfoSAMWeights() if weights is None else weights
        self.gather = gather

    @classmethod
    def build(cls, options: InfoSAMOptions, model: Sam) -> InfoSAMLoss:
        """The objective for a student like ``model``: a fresh relation module of its embedding width (drawn from
        torch's global generator), or the frozen one ``options.frozen_relation`` names."""
        if options.frozen_relation is not None:
            relation = RelationModule.load(options.frozen_relation, frozen=True)
        else:
            relation = RelationModule(model.spec.prompt_embed_dim)
        return cls(relation, options.weights, gather=all_gather_rows if options.global_batch else None)

    def forward(
        self, teacher: SamFeatures, student: SamFeatures, masks: Tensor | None = None
    ) -> dict[str, Tensor]:
        """See :func:`infosam.distill.loss.infosam_terms` (``masks`` is not read)."""
        return infosam_terms(self.relation, teacher, student, self.weights, gather=self.gather)

    def step_terms(self, terms: dict[str, Tensor]) -> dict[str, Tensor]:
        """``relation`` (L_r), ``distill`` (L_d), ``infosam`` (the weighted total) and the relation statistics."""
        return {
            "relation": terms["relation"],
            "distill": terms["distill"],
            "infosam": terms["total"],
            **{name: terms[name] for name in RELATION_STATS},
        }

    def saved_module(self) -> nn.Module | None:
        """The relation module while it trains (a frozen one is not saved: the config names its file)."""
        return self.relation if any(p.requires_grad for p in self.relation.parameters()) else None

    def load_saved(self, path: Path) -> None:
        """Load the relation module a resume checkpoint holds."""
        saved = RelationModule.load(path, dim=self.relation.dim, frozen=False)
        self.relation.load_state_dict(saved.state_dict())
