"""A self-contained student file (``infosam export RUN_DIR --format infosam``): told from its metadata, read back
into the student and its pretrained base without the run folder.

The file holds the base SAM's tensors (``base.*``), the student's trained PEFT tensors (``peft.*``) and, in its
metadata, :data:`FORMAT_KEY`, the SAM model (``name``, ``image_size``) and the PEFT spec.
:func:`infosam.export.formats.export_student_file` writes it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from segment_anything.modeling import Sam

from .base import ModelSource, OpenedModel, SourceError, opener

FORMAT_KEY = "infosam_format"
"""Metadata key that marks a self-contained student file (``infosam export --format infosam``)."""
FORMAT_VERSION = "student-v1"
MODEL_KEY = "infosam_model"
PEFT_KEY = "infosam_peft"


@opener("export")
def _open_export(source: ModelSource, teacher: bool) -> OpenedModel:
    student, base, sam = load_student_file(source.path, attention=source.attention or "fold")
    description = {"model": sam["name"], "checkpoint": None, "export": str(source.path)}
    return OpenedModel(student, source, description, base if teacher else None, sam)


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

    from ..guard import check_finite
    from ..model import build_base
    from ..peft import PeftSpec, apply_peft, trainable_state_dict

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
