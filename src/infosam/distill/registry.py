"""The registry of distillation objectives: every ``distill.method`` but ``none`` (no teacher: plain PEFT).

``infosam`` (the default) is InfoSAM's own objective (:class:`infosam.distill.infosam.InfoSAMLoss`, options in the
``infosam`` config section); the others are the baselines of the paper's comparison, options under
``distill.options.<method>``. Each is an :class:`~infosam.distill.objective.Objective` in :data:`OBJECTIVES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from segment_anything.modeling import Sam

from .ibd import IBD
from .infosam import InfoSAMLoss
from .logit import LogitKD
from .mobilesam import MobileSAMDistill
from .objective import Objective, ObjectiveOptions
from .pkd import PKD
from .pkt import PKT
from .reviewkd import ReviewKD
from .semckd import SemCKD
from .tinysam import TinySAMDistill
from .vid import VID

OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls
    for cls in (InfoSAMLoss, LogitKD, PKD, PKT, VID, IBD, SemCKD, ReviewKD, MobileSAMDistill, TinySAMDistill)
}
METHODS: tuple[str, ...] = (*OBJECTIVES, "none")
"""Every valid ``distill.method``."""


def objective_options(
    method: str, options: Mapping[str, Any] | ObjectiveOptions | None = None
) -> ObjectiveOptions:
    """Validated options of ``method`` (an :data:`OBJECTIVES` name) from ``{option: value}``; ValueError names a
    bad one. Options already built (an instance of the method's ``Options``) are returned as they are."""
    if method not in OBJECTIVES:
        raise ValueError(f"distill.method must be one of {', '.join(METHODS)}; got {method!r}")
    cls = OBJECTIVES[method].Options
    return options if isinstance(options, cls) else cls.from_options(method, options)


def build_objective(
    method: str, options: Mapping[str, Any] | ObjectiveOptions | None, model: Sam
) -> Objective:
    """The objective ``method`` for a student/teacher pair built like ``model`` (its embedding width and, for the
    feature objectives, its feature taps and their widths); draws its learned parts' initial values from torch's
    global generator. ``options`` as for :func:`objective_options`."""
    from ..sam.family import FAMILIES, family_of, labels
    from .features import feature_taps, tap_dims

    if method == InfoSAMLoss.name:  # its own build: a fresh or a frozen relation module, on every family
        return InfoSAMLoss.build(objective_options(method, options), model)
    family = family_of(model)
    if not family.distill_baselines:
        supported = labels(f for f in FAMILIES.values() if f.distill_baselines)
        raise ValueError(
            f"distill.method={method!r}: the distillation baselines are built and tested for {supported} "
            f"students; on {family.label} ({family.why_not['distill_baselines']}) use infosam or none"
        )
    opts = objective_options(method, options)
    cls = OBJECTIVES[method]
    taps = feature_taps(model) if cls.needs_features else ()
    objective = cls(opts, embed_dim=model.spec.prompt_embed_dim, dims=tap_dims(model, taps))
    objective.taps = taps
    return objective
