"""Writing a fine-tuned student in the formats of ``infosam export`` (see :mod:`infosam.export`).

Merging (:func:`merge_peft`: PEFT folded into the plain architecture's weights), then the writers: a plain state
dict (:func:`export_sam`, also SAM 2's official layout), the self-contained student file
(:func:`export_student_file`, read back by :func:`infosam.load.load_student_file`) and the two ONNX graphs
(:func:`export_onnx`, run by :class:`infosam.export.onnx_runtime.OnnxSegmenter`).
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import torch
from segment_anything.modeling import Sam
from torch import Tensor, nn

from ..files import atomic_write
from ..load import FORMAT_KEY, FORMAT_VERSION, MODEL_KEY, PEFT_KEY
from ..peft import PeftSpec, trainable_state_dict
from ..sam.attention import disable_fast_attention
from ..sam.frozen_conv import disable_frozen_conv
from ..sam.layernorm import disable_fused_layernorm
from ..sam.tinyvit_attention import disable_sdpa_attention
from ..sam.transforms import make_transform

FORMATS = ("sam", "sam2", "infosam", "onnx")
OFFICIAL_FORMATS = ("sam", "sam2")
"""The formats that write a model family's official checkpoint layout (its ``Family.export_format``)."""
MERGEABLE = ("decoder", "bitfit", "lora")
"""PEFT methods whose result is expressible as weights of the unmodified architecture."""
ONNX_OPSET = 17
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
ONNX_INFO_FILE = "model.json"


class UnmergeableError(ValueError):
    """The student's PEFT adds layers that the plain SAM architecture has no place for."""


# --------------------------------------------------------------------------------------------- merging


def unmergeable_methods(model: Sam) -> list[str]:
    """The PEFT methods applied to ``model`` that cannot be folded into the plain architecture."""
    spec = getattr(model, "peft_spec", None)
    return [] if spec is None else [m for m in spec.methods if m not in MERGEABLE]


def merge_peft(model: Sam) -> Sam:
    """A copy of ``model`` with its PEFT folded into plain weights: the base architecture's modules and
    state-dict keys, Meta's attention, eval mode. ``model`` itself is left unchanged.

    Raises:
        UnmergeableError: an adapter method (``adapter``, ``adaptformer``) is applied; the message points to the
            self-contained format.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    blocked = unmergeable_methods(model)
    if blocked:
        raise UnmergeableError(
            f"PEFT {'+'.join(model.peft_spec.methods)!r} cannot be folded into plain SAM weights: "
            f"{' and '.join(blocked)} {'adds' if len(blocked) == 1 else 'add'} layers the original architecture "
            "does not have. Use "
            "`infosam export RUN_DIR --format infosam` for one self-contained file that infosam predict/serve "
            "and infosam.load_model() read, or --format onnx for onnxruntime"
        )
    merged = copy.deepcopy(model).eval()
    wrapped = [(name, m) for name, m in merged.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, module in wrapped:
        module.merge(safe_merge=True)  # safe_merge: refuses to write NaN/inf into the weights
        parent_name, _, child = name.rpartition(".")
        setattr(merged.get_submodule(parent_name), child, module.get_base_layer())
    disable_fast_attention(merged)
    disable_sdpa_attention(merged)
    disable_fused_layernorm(merged)
    disable_frozen_conv(merged)
    merged.__dict__.pop("peft_spec", None)
    merged.requires_grad_(False)
    leftovers = [k for k in merged.state_dict() if "base_layer" in k or "lora_" in k]
    if leftovers:  # a wrapper this function does not know: never write a half-merged file
        raise UnmergeableError(f"PEFT wrappers left after merging: {leftovers[:3]}")
    return merged


def check_layout(state: dict[str, Tensor], reference: nn.Module) -> None:
    """Raise ValueError unless ``state`` has exactly the keys and shapes of ``reference.state_dict()``."""
    expected = reference.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(
            f"merged weights do not fit the base architecture: missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, wrong shapes {wrong[:3]}"
        )


def export_sam(
    student: Sam,
    teacher: Sam,
    out: str | Path,
    *,
    overwrite: bool = False,
    official_key: str | None = None,
    extra: dict[str, Tensor] | None = None,
) -> Path:
    """Write the merged student as a plain state dict at ``out`` (``torch.save``, atomically); with
    ``official_key`` (SAM 2: ``"model"``) the state dict is stored under that key, as official checkpoints are.

    ``teacher`` (a plain base of the same architecture) is the layout reference: the file is checked to load
    strictly into it before anything is written. ``extra`` tensors are added after that check: what the
    release's own builder expects beside SAM (MobileSAM's unused classifier head, :func:`release_head_state`).
    """
    out = _check_out(out, overwrite)
    merged = merge_peft(student)
    state = {k: v.detach().cpu().contiguous() for k, v in merged.state_dict().items()}
    check_layout(state, teacher)
    state.update(extra or {})
    payload = state if official_key is None else {official_key: state}
    atomic_write(out, lambda tmp: torch.save(payload, tmp))
    return out


def release_head_state(spec, checkpoint: str | Path | None) -> dict[str, Tensor]:
    """The classifier-head tensors a release's own builder loads strictly beside SAM, for a spec whose release
    model carries one (MobileSAM's TinyViT: ``image_encoder.norm_head.*``, ``image_encoder.head.*``; SAM never
    runs them). Copied from the base ``checkpoint`` when it holds them, so an exported student differs from the
    release file only where it was trained; zeros otherwise (a random base). ``{}`` for every other spec."""
    from ..sam.checkpoint import resolve_checkpoint
    from ..sam.tinyvit import RELEASE_CLASSES, release_head_parameters
    from ..weightfile import torch_load

    if not release_head_parameters(spec):
        return {}
    d = spec.tinyvit_embed_dims[-1]
    shapes = {
        "image_encoder.norm_head.weight": (d,),
        "image_encoder.norm_head.bias": (d,),
        "image_encoder.head.weight": (RELEASE_CLASSES, d),
        "image_encoder.head.bias": (RELEASE_CLASSES,),
    }
    stored = {}
    if checkpoint is not None:
        stored = torch_load(resolve_checkpoint(checkpoint), map_location="cpu", weights_only=True)
    return {
        k: stored[k].detach().cpu().contiguous()
        if k in stored and tuple(stored[k].shape) == shape
        else torch.zeros(shape)
        for k, shape in shapes.items()
    }


# --------------------------------------------------------------------------------------------- self-contained


def export_student_file(
    student: Sam, teacher: Sam, model: dict, out: str | Path, *, overwrite: bool = False
) -> Path:
    """Write the self-contained ``infosam`` file: base weights, PEFT weights, SAM model and PEFT spec.

    Args:
        student: the PEFT student (``student.peft_spec`` set by :func:`infosam.peft.apply_peft`).
        teacher: its pretrained base without PEFT (its weights are stored as ``base.<key>``).
        model: ``name`` and ``image_size`` of the SAM (other keys are ignored).
    """
    from ..weightfile import save_safetensors

    out = _check_out(out, overwrite)
    spec: PeftSpec | None = getattr(student, "peft_spec", None)
    if spec is None:
        raise ValueError("the student has no PEFT applied (model.peft_spec is missing): nothing to export")
    tensors = {f"base.{k}": v.detach().cpu().contiguous().clone() for k, v in teacher.state_dict().items()}
    tensors |= {
        f"peft.{k}": v.detach().cpu().contiguous().clone() for k, v in trainable_state_dict(student).items()
    }
    metadata = {
        FORMAT_KEY: FORMAT_VERSION,
        MODEL_KEY: json.dumps({"name": model["name"], "image_size": model.get("image_size")}),
        PEFT_KEY: json.dumps(spec.to_dict()),
    }
    return save_safetensors(out, tensors, metadata)


# --------------------------------------------------------------------------------------------- ONNX


class PromptDecoderGraph(nn.Module):
    """Prompt encoder + mask decoder as one traceable module, built from Meta's ``SamOnnxModel`` pieces.

    Meta's point embedding (``SamOnnxModel._embed_points``: labels 0/1 points, 2/3 box corners, -1 padding) and
    ``MaskDecoder.predict_masks``; no mask input (the dense prompt is the no-mask embedding, as in the project's
    decode) and only the single-mask output, the one ``multimask_output=False`` returns.
    """

    def __init__(self, model: Sam) -> None:
        super().__init__()
        from segment_anything.utils.onnx import SamOnnxModel

        self.meta = SamOnnxModel(model, return_single_mask=False)

    def forward(
        self, image_embeddings: Tensor, point_coords: Tensor, point_labels: Tensor
    ) -> tuple[Tensor, Tensor]:
        """image_embeddings (1, C, h, w); point_coords (B, N, 2) in input-frame pixels; point_labels (B, N) float.

        Returns single-mask low-res logits (B, 1, 4h, 4w) and predicted IoU (B, 1).
        """
        sam = self.meta.model
        sparse = self.meta._embed_points(point_coords, point_labels)
        dense = sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        masks, iou = sam.mask_decoder.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
        )
        return masks[:, :1], iou[:, :1]


def onnx_model(student: Sam) -> Sam:
    """The module to trace: the merged student when its PEFT merges, else a copy with Meta's attention."""
    if not unmergeable_methods(student):
        return merge_peft(student)
    model = copy.deepcopy(student).eval()
    disable_fast_attention(model)  # trace Meta's plain attention (same function, see sam.attention)
    disable_sdpa_attention(model)  # and the TinyViT package's own
    disable_fused_layernorm(model)
    disable_frozen_conv(model)
    return model.requires_grad_(False)


def export_onnx(student: Sam, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``encoder.onnx``, ``decoder.onnx`` and ``model.json`` (sizes; the model family's transform and its
    description: resize, normalisation, padding) into ``out_dir``.

    Exported with the TorchScript-based ``torch.onnx.export`` (``dynamo=False``, opset 17).
    """
    out_dir = Path(out_dir)
    targets = check_output("onnx", out_dir, overwrite)
    model = onnx_model(student)
    size = model.image_encoder.img_size
    image = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        embeddings = model.image_encoder(image)
    grid = embeddings.shape[-1]
    out_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python constants in Meta's code
        atomic_write(
            targets[0],
            lambda tmp: torch.onnx.export(
                model.image_encoder,
                (image,),
                str(tmp),
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=["image"],
                output_names=["image_embeddings"],
            ),
        )
        coords = torch.tensor([[[1.0, 1.0], [size / 2, size / 2]]])
        labels = torch.tensor([[2.0, 3.0]])
        atomic_write(
            targets[1],
            lambda tmp: torch.onnx.export(
                PromptDecoderGraph(model),
                (embeddings, coords, labels),
                str(tmp),
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=["image_embeddings", "point_coords", "point_labels"],
                output_names=["low_res_logits", "iou_predictions"],
                dynamic_axes={
                    "point_coords": {0: "prompts", 1: "points"},
                    "point_labels": {0: "prompts", 1: "points"},
                    "low_res_logits": {0: "prompts"},
                    "iou_predictions": {0: "prompts"},
                },
            ),
        )
    info = {
        "model": model.spec.name,
        "transform": model.spec.transform,
        "image_size": size,
        "embedding_shape": list(embeddings.shape[1:]),
        "low_res_size": 4 * grid,
        "preprocessing": make_transform(model.spec.transform, size).fingerprint(),
        "inputs": "encoder: image (1, 3, S, S) resized, normalised and zero-padded bottom/right as 'preprocessing' "
        "says; decoder: image_embeddings, "
        "point_coords (B, N, 2) input-frame xy, point_labels (B, N): 1 fg, 0 bg, 2/3 box corners, -1 padding",
    }
    atomic_write(targets[2], lambda tmp: tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8"))
    return out_dir


# --------------------------------------------------------------------------------------------- files


def check_output(fmt: str, out: str | Path, overwrite: bool) -> list[Path]:
    """The files an export in ``fmt`` to ``out`` writes, after refusing what would stop it half-way: an existing
    output without ``overwrite``, and for ``onnx`` a missing ``onnx`` package (the ``[export]`` extra). Cheap: call
    it before building the model."""
    if fmt != "onnx":
        return [_check_out(out, overwrite)]
    out_dir = Path(out)
    targets = [out_dir / n for n in (ENCODER_FILE, DECODER_FILE, ONNX_INFO_FILE)]
    for target in targets:
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} exists; pass --overwrite (overwrite=True) to replace it")
    from ..extras import require

    require("onnx", "infosam export --format onnx")  # torch.onnx.export writes through it
    return targets


def _check_out(out: str | Path, overwrite: bool) -> Path:
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite (overwrite=True) to replace it")
    if out.is_dir():
        raise FileExistsError(f"{out} is a folder; name a file to write")
    return out
