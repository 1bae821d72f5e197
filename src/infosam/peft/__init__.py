"""Parameter-efficient fine-tuning of SAM: one file per method, composable by name (``"adapter+decoder"``).

from infosam.peft import apply_peft, save_peft, load_peft
spec = apply_peft(sam, "adapter+decoder", {"adapter": {"init": "torch"}})
save_peft("student.safetensors", sam, spec)      # only the trainable tensors + the spec
load_peft("student.safetensors", build_sam("vit_b", checkpoint=...))
"""

from __future__ import annotations

from .base import MethodConfig
from .count import count_parameters
from .registry import METHODS, PeftSpec, apply_peft, parse_methods, parse_option_assignments, resolve_configs
from .state import load_peft, read_peft_spec, save_peft, trainable_state_dict

__all__ = [
    "METHODS",
    "MethodConfig",
    "PeftSpec",
    "apply_peft",
    "count_parameters",
    "load_peft",
    "parse_methods",
    "parse_option_assignments",
    "read_peft_spec",
    "resolve_configs",
    "save_peft",
    "trainable_state_dict",
]
