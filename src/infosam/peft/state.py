"""Saving and loading a student's trainable tensors (safetensors) together with the PEFT spec that made it."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from torch import nn

from ..guard import check_finite
from ..weightfile import require_safetensors, save_safetensors
from .registry import PeftSpec, apply_peft

# safetensors metadata keys (string values only).
_SPEC_KEY = "infosam_peft"
_MODEL_KEY = "sam_spec"


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters with ``requires_grad``, by their qualified name (wrapped names, e.g.
    ``...attn.adapter.0``)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def save_peft(path: str | Path, model: nn.Module, peft_spec: PeftSpec) -> None:
    """Write the trainable tensors of ``model`` and ``peft_spec`` (JSON in the metadata) to ``path``
    atomically.

    The SAM spec name (``model.spec.name`` when set) is recorded too, so loading into another architecture
    fails with a clear message.
    """
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in trainable_state_dict(model).items()}
    metadata = {_SPEC_KEY: json.dumps(peft_spec.to_dict())}
    spec = getattr(model, "spec", None)
    if spec is not None:
        metadata[_MODEL_KEY] = spec.name
    save_safetensors(path, tensors, metadata)


def read_peft_spec(path: str | Path) -> PeftSpec:
    """The :class:`PeftSpec` stored in a file written by :func:`save_peft` (tensors are not read)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PEFT weights file not found: {path}")
    require_safetensors(path, "a PEFT weights file (written by save_peft)")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except SafetensorError as err:
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from err
    if _SPEC_KEY not in metadata:
        raise ValueError(
            f"{path} has no '{_SPEC_KEY}' metadata: it was not written by infosam.peft.save_peft"
        )
    return PeftSpec.from_dict(json.loads(metadata[_SPEC_KEY]))


def load_peft(path: str | Path, model: nn.Module) -> PeftSpec:
    """Apply the spec saved in ``path`` to ``model`` (a freshly built, pretrained base) and load its tensors
    strictly.

    Raises:
        FileNotFoundError: no such file. ValueError: not a save_peft file, another SAM architecture, a NaN or
        infinity in a tensor, or keys/shapes that do not match the student
            (the message names the file and the offending keys).
    """
    path = Path(path)
    spec = read_peft_spec(path)
    with safe_open(str(path), framework="pt") as f:
        saved_model = (f.metadata() or {}).get(_MODEL_KEY)
    model_spec = getattr(model, "spec", None)
    if saved_model and model_spec is not None and model_spec.name != saved_model:
        raise ValueError(f"{path} was trained on SAM {saved_model!r}, but the model is {model_spec.name!r}")
    apply_peft(model, spec.methods, spec.options)
    tensors = load_file(str(path))
    check_finite(tensors, str(path), hint="; these weights come from a diverged run and cannot be used")
    expected = trainable_state_dict(model)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match the {spec.name!r} student: missing {len(missing)} key(s) {missing[:5]}, "
            f"unexpected {len(unexpected)} key(s) {unexpected[:5]}"
        )
    for key, value in tensors.items():
        if value.shape != expected[key].shape:
            raise ValueError(
                f"{path}: tensor {key!r} has shape {tuple(value.shape)}, "
                f"the model expects {tuple(expected[key].shape)}"
            )
    with torch.no_grad():
        for key, value in tensors.items():
            expected[key].copy_(value)
    return spec
