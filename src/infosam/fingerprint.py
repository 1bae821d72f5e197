"""Fingerprints of the caches: what a cached entry depends on besides its content key.

A cache's manifest records its fingerprint (:mod:`infosam.cache`), and a folder made for another one is refused.
:func:`teacher_fingerprint` describes the frozen teacher (architecture, weights, preprocessing, compute precision);
:func:`model_teacher_fingerprint` derives it from a built teacher and its configured weights, the one derivation
training, evaluation and the benchmarks share; the student-prefix store adds its boundary and weights to it
(:func:`infosam.prefix.prefix_fingerprint`).

**Spec fields at their default are left out** (:func:`spec_fingerprint`), the rule the experiment config hash
follows (:func:`infosam.experiment.grid.config_hash`): adding a field with a default to
:class:`~infosam.sam.specs.SamSpec` keeps every existing fingerprint, so users' caches keep opening after an upgrade.
The other side of the rule: **changing an existing field's default changes what an omitted field means without
changing the fingerprint, so it requires bumping the cache format** (:data:`infosam.cache.FORMAT`), or entries
computed under the old default would be served.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from segment_anything.modeling import Sam

_PRECISIONS = {
    "no": "float32",
    "float32": "float32",
    "fp32": "float32",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
}


def precision_name(precision: str | torch.dtype | None) -> str:
    """The compute dtype name recorded in a fingerprint: ``"no"``/``None``/float32 -> ``"float32"``, ``"bf16"`` ->
    ``"bfloat16"``, ``"fp16"`` -> ``"float16"`` (config names and torch dtypes accepted)."""
    name = "no" if precision is None else str(precision).removeprefix("torch.")
    if name not in _PRECISIONS:
        raise ValueError(
            f"cache precision must be one of no, fp16, bf16 (or a torch dtype), got {precision!r}"
        )
    return _PRECISIONS[name]


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's content (~1 s for ViT-B's 375 MB), remembered per (path, size, mtime) in this process."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
        _SHA_MEMO[key] = digest.hexdigest()
    return _SHA_MEMO[key]


def spec_fingerprint(spec: Any) -> dict:
    """The fields of a spec dataclass that differ from their defaults (every field without a default is kept).

    Adding a defaulted field to the spec class therefore leaves every existing fingerprint unchanged; changing an
    existing field's default requires bumping the cache format (module docstring). A mapping is returned as given.

    Args:
        spec: a :class:`~infosam.sam.specs.SamSpec` (any dataclass instance), or an already described mapping.
    """
    if not (dataclasses.is_dataclass(spec) and not isinstance(spec, type)):
        return dict(spec)
    values = dataclasses.asdict(spec)
    kept = {}
    for f in dataclasses.fields(spec):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            kept[f.name] = values[f.name]
            continue
        if _jsonable(values[f.name]) != _jsonable(default):
            kept[f.name] = values[f.name]
    return kept


def teacher_fingerprint(
    spec: Any,
    checkpoint_path: str | Path | None,
    preprocessing: Mapping[str, Any],
    *,
    precision: str | torch.dtype | None,
    model: nn.Module | None = None,
) -> dict:
    """What determines the teacher's embeddings besides the input: architecture, weights, preprocessing, precision.

    Args:
        spec: the :class:`infosam.sam.specs.SamSpec`, described by :func:`spec_fingerprint` (the fields that differ
            from their defaults, image size included when it does).
        checkpoint_path: the official weights file, hashed by size + sha256 of its content; None for random weights.
        preprocessing: the input transform's own description (family, size, interpolation, normalisation, version),
            e.g. :meth:`infosam.sam.transforms.SamTransform.fingerprint`.
        precision: the autocast precision the teacher's encoder computes under (config ``train.precision``: no,
            fp16, bf16, or a torch dtype); entries computed under bf16 are never served to a float32 run.
        model: with no checkpoint, the teacher itself: its state dict is hashed instead (random weights differ by
            seed, and a cache must not mix them).
    """
    if not isinstance(preprocessing, Mapping) or not preprocessing:
        raise ValueError(
            f"teacher_fingerprint: preprocessing must be a non-empty dict, got {preprocessing!r}"
        )
    weights: dict[str, Any] | None = None
    if checkpoint_path is not None:
        path = Path(checkpoint_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"teacher checkpoint {path} not found (needed to fingerprint the teacher cache)"
            )
        weights = {"file": path.name, "size": path.stat().st_size, "sha256": file_sha256(path)}
    elif model is not None:
        weights = {"state_dict_sha256": _state_dict_sha256(model)}
    return _jsonable(
        {
            "spec": spec_fingerprint(spec),
            "weights": weights,
            "preprocessing": dict(preprocessing),
            "precision": precision_name(precision),
        }
    )


def model_teacher_fingerprint(
    teacher: Sam, checkpoint: str | Path | None, precision: str | torch.dtype | None
) -> dict:
    """:func:`teacher_fingerprint` of a built ``teacher``: its spec, its transform's description, the weights file
    ``checkpoint`` (a config's ``model.checkpoint``: a path, ``"bundled"`` for the package's verified file, or None),
    and ``precision``; a teacher without a checkpoint (random weights) is fingerprinted by its state dict, so two
    such teachers never share entries."""
    from .sam.checkpoint import resolve_checkpoint  # 'bundled' -> the package's verified file
    from .sam.transforms import get_transform

    preprocessing = get_transform(teacher.spec).fingerprint()
    weights = None if checkpoint is None else resolve_checkpoint(checkpoint)
    return teacher_fingerprint(
        teacher.spec,
        weights,
        preprocessing,
        precision=precision,
        model=teacher if weights is None else None,
    )


def _state_dict_sha256(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    """Tuples -> lists etc., so a fingerprint compares equal to itself after a JSON round trip."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))
