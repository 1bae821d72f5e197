"""InfoSAM's information-theoretic objectives: matrix Renyi entropy, the relation module and the two losses."""

from .entropy import (
    all_gather_rows,
    gram_matrix,
    hadamard_normalized,
    joint_entropy,
    log2_frobenius_sq,
    mutual_information,
    normalize_rows,
    normalize_trace,
    renyi2,
)
from .infosam import InfoSAMLoss
from .loss import InfoSAMWeights, distill_loss, infosam_terms, relation_loss
from .relation import RelationModule

__all__ = [
    "InfoSAMLoss",
    "InfoSAMWeights",
    "RelationModule",
    "all_gather_rows",
    "distill_loss",
    "gram_matrix",
    "hadamard_normalized",
    "infosam_terms",
    "joint_entropy",
    "log2_frobenius_sq",
    "mutual_information",
    "normalize_rows",
    "normalize_trace",
    "relation_loss",
    "renyi2",
]
