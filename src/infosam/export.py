"""Export a fine-tuned student so that other tools can use it without the run folder.

Three formats (``infosam export RUN_DIR --format ...``):

- ``sam``: a plain state dict in the base model's own key layout (``torch.save``, like Meta's ``.pth`` files).
  Methods that only change existing weights are folded in: ``decoder``, ``bitfit`` (and trained LayerNorms), and
  ``lora``, whose low-rank update is merged into the wrapped Linear by ``peft``'s own ``merge()``. Meta's
  ``sam_model_registry[name](checkpoint=...)`` (or any builder of the same architecture) loads it unchanged.
  ``adapter`` and ``adaptformer`` add layers the plain architecture does not have, so they are refused here.
- ``sam2``: the same merge for a SAM 2 student, saved in SAM 2's official layout (``{"model": state_dict}``, the
  keys of Meta's ``SAM2Base``), which ``sam2.build_sam.build_sam2(config, ckpt_path)`` loads strictly and
  ``SAM2ImagePredictor`` runs. ``sam`` and ``sam2`` each refuse the other family.
- ``infosam``: one self-contained safetensors file for any PEFT method: the pretrained base weights
  (``base.<key>``, the zero-shot teacher), the trained PEFT tensors (``peft.<key>``, wrapped names) and, in the
  metadata, the SAM model (name, input size) and the PEFT spec. :func:`load_model` rebuilds the student (or the
  teacher) from it alone; ``infosam predict`` and ``infosam serve`` accept it in place of a run folder.
- ``onnx``: two graphs in Meta's split, one image-encoder call per image and many cheap prompt calls:
  ``encoder.onnx`` (image (1, 3, S, S) normalised and padded -> embeddings (1, C, h, w)) and ``decoder.onnx``
  (embeddings + points (B, N, 2) + labels (B, N) -> single-mask low-res logits (B, 1, 4h, 4w) and IoU (B, 1)),
  with B (prompts) and N (points per prompt) dynamic. A box is two points labelled 2 and 3, a padding point is
  labelled -1 (Meta's ONNX convention); :func:`onnx_prompt` builds these arrays from a :class:`Prompt`.
  Upscaling to the original image size is left to the caller (the model family's ``transform.postprocess``):
  traced with this torch, Meta's in-graph crop keeps the size of the example image it was exported with.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from segment_anything.modeling import Sam
from torch import Tensor, nn

from .files import atomic_write
from .guard import check_finite
from .peft import PeftSpec, apply_peft, trainable_state_dict
from .predict import Prompt
from .sam.attention import disable_fast_attention
from .sam.layernorm import disable_fused_layernorm
from .sam.tinyvit_attention import disable_sdpa_attention
from .sam.transforms import SamTransform, make_transform

FORMATS = ("sam", "sam2", "infosam", "onnx")
MERGEABLE = ("decoder", "bitfit", "lora")
"""PEFT methods whose result is expressible as weights of the unmodified architecture."""
FORMAT_KEY = "infosam_format"
FORMAT_VERSION = "student-v1"
_MODEL_KEY = "infosam_model"
_PEFT_KEY = "infosam_peft"
ONNX_OPSET = 17
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
ONNX_INFO_FILE = "model.json"


class UnmergeableError(ValueError):
    """The student's PEFT adds layers that the plain SAM architecture has no place for."""


# --------------------------------------------------------------------------------------------- run folders


def open_run(
    run_dir: str | Path, *, checkpoint: str | Path | None = None, require_final: bool = False
) -> tuple[dict, Sam, Sam]:
    """``(model, student, teacher)`` of a run folder, both in eval mode on the CPU.

    ``model`` is the run's ``model`` config as a dict (``name``, ``checkpoint``, ``image_size``, ``attention``);
    the student comes from :func:`infosam.runs.load_run` (an unfinished run: its newest intact checkpoint, with a
    warning; ``require_final`` refuses it); ``teacher`` is the pretrained base without PEFT, built through the
    same :func:`infosam.model.build_base` with the same seed.
    """
    import dataclasses

    from .model import build_configured, load_run

    config, student = load_run(run_dir, checkpoint=checkpoint, require_final=require_final)
    return dataclasses.asdict(config.model), student, build_configured(config).eval()


def _build_plain(model: dict) -> Sam:
    """A base SAM of ``model`` (name, image_size) with arbitrary weights, to be overwritten by a strict load."""
    from .model import build_base

    return build_base(model["name"], image_size=model.get("image_size"), seed=0)


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
    student: Sam, teacher: Sam, out: str | Path, *, overwrite: bool = False, official_key: str | None = None
) -> Path:
    """Write the merged student as a plain state dict at ``out`` (``torch.save``, atomically); with
    ``official_key`` (SAM 2: ``"model"``) the state dict is stored under that key, as official checkpoints are.

    ``teacher`` (a plain base of the same architecture) is the layout reference: the file is checked to load
    strictly into it before anything is written.
    """
    out = _check_out(out, overwrite)
    merged = merge_peft(student)
    state = {k: v.detach().cpu().contiguous() for k, v in merged.state_dict().items()}
    check_layout(state, teacher)
    payload = state if official_key is None else {official_key: state}
    atomic_write(out, lambda tmp: torch.save(payload, tmp))
    return out


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
    from safetensors.torch import save_file

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
        _MODEL_KEY: json.dumps({"name": model["name"], "image_size": model.get("image_size")}),
        _PEFT_KEY: json.dumps(spec.to_dict()),
    }
    atomic_write(out, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return out


def is_student_file(path: str | Path) -> bool:
    """Whether ``path`` is a file written by :func:`export_student_file`."""
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


def load_student_file(path: str | Path) -> tuple[dict, Sam, Sam]:
    """``(model, student, teacher)`` from a self-contained file, both in eval mode on the CPU (strict loads)."""
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not is_student_file(path):
        raise ValueError(
            f"{path} is not an infosam export (infosam export RUN_DIR --format infosam writes one)"
        )
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    model = json.loads(metadata[_MODEL_KEY])
    spec = PeftSpec.from_dict(json.loads(metadata[_PEFT_KEY]))
    tensors = load_file(str(path))
    base = {k[5:]: v for k, v in tensors.items() if k.startswith("base.")}
    peft_tensors = {k[5:]: v for k, v in tensors.items() if k.startswith("peft.")}
    check_finite(peft_tensors, str(path), hint="; these weights come from a diverged run and cannot be used")
    teacher = _build_plain(model)
    try:
        teacher.load_state_dict(base, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path}: base weights do not fit SAM {model['name']!r}: {err}") from err
    student = copy.deepcopy(teacher)
    apply_peft(student, spec.methods, spec.options)
    expected = trainable_state_dict(student)
    if set(expected) != set(peft_tensors):
        raise ValueError(
            f"{path}: PEFT tensors do not match the {spec.name!r} student "
            f"(missing {sorted(set(expected) - set(peft_tensors))[:3]}, "
            f"unexpected {sorted(set(peft_tensors) - set(expected))[:3]})"
        )
    with torch.no_grad():
        for key, value in peft_tensors.items():
            expected[key].copy_(value)
    student.requires_grad_(False)
    return model, student.eval(), teacher.requires_grad_(False).eval()


def load_model(path: str | Path, *, part: str = "student", device: str | torch.device = "cpu") -> Sam:
    """Load a model to segment with, from whatever ``path`` is, in eval mode.

    - a run folder (holds ``config.yaml``): its fine-tuned student, or with ``part="teacher"`` its pretrained base;
    - a self-contained ``infosam`` export (``.safetensors``): the same, without the run folder;
    - a plain SAM state dict (an official ``.pth`` or a ``--format sam`` export): that model (``part`` is ignored;
      the architecture is recognised from the weights).

    The model is used as :func:`infosam.predict.predict_probabilities` and friends take it; a plain state-dict
    export can equally be loaded by Meta's ``sam_model_registry[name](checkpoint=path)``.

    Raises:
        ValueError: ``part`` is not ``student`` or ``teacher``, or the file is none of the above.
        FileNotFoundError: ``path`` does not exist.
    """
    if part not in ("student", "teacher"):
        raise ValueError(f"part must be 'student' or 'teacher', got {part!r}")
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model {path} does not exist (expected a run folder or an exported file)")
    if path.is_dir():
        if not (path / "config.yaml").is_file():
            raise ValueError(f"{path} is a folder but not a run folder (no config.yaml)")
        _, student, teacher = open_run(path)
    elif is_student_file(path):
        _, student, teacher = load_student_file(path)
    else:
        from .predict import load_zero_shot
        from .sam.checkpoint import inspect_checkpoint

        info = inspect_checkpoint(path)  # CheckpointError (a ValueError) names the file when it is no SAM
        if info["spec"] is None:
            raise ValueError(f"{path}: the weights match none of the known SAM models")
        student = teacher = load_zero_shot(info["spec"], path, image_size=info["image_size"])
    chosen = student if part == "student" else teacher
    return chosen.eval().to(device)


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
    return model.requires_grad_(False)


def export_onnx(student: Sam, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``encoder.onnx``, ``decoder.onnx`` and ``model.json`` (sizes; the model family's transform and its
    description: resize, normalisation, padding) into ``out_dir``.

    Exported with the TorchScript-based ``torch.onnx.export`` (``dynamo=False``, opset 17).
    """
    out_dir = Path(out_dir)
    targets = [out_dir / n for n in (ENCODER_FILE, DECODER_FILE, ONNX_INFO_FILE)]
    for target in targets:
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} exists; pass --overwrite (overwrite=True) to replace it")
    from .extras import require

    require("onnx", "infosam export --format onnx")  # torch.onnx.export writes through it
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


def onnx_prompt(
    prompt: Prompt, original_size: tuple[int, int], transform: SamTransform
) -> tuple[np.ndarray, np.ndarray]:
    """``point_coords`` (1, N, 2) float32 and ``point_labels`` (1, N) float32 for the decoder graph.

    Coordinates go through the model's ``transform`` (as :func:`infosam.predict.map_prompt`): points first, then
    the box as two corners labelled 2 and 3; without a box, one padding point labelled -1 is appended, as Meta's
    prompt encoder does, so the graph sees the same tokens as the project's decode.
    """
    coords, labels = [], []
    if prompt.points:
        coords += transform.coords(np.asarray(prompt.points, dtype=np.float64), original_size).tolist()
        labels += list(prompt.labels)
    if prompt.box is not None:
        corners = np.asarray(prompt.box, dtype=np.float64).reshape(2, 2)
        coords += transform.coords(corners, original_size).tolist()
        labels += [2, 3]
    else:
        coords.append([0.0, 0.0])
        labels.append(-1)
    return np.asarray([coords], dtype=np.float32), np.asarray([labels], dtype=np.float32)


@dataclass
class OnnxSegmenter:
    """Run the two exported graphs with onnxruntime: the project's preprocessing, then encoder, then decoder."""

    folder: Path

    def __post_init__(self) -> None:
        from .extras import require

        ort = require("onnxruntime", "running an ONNX export")

        self.folder = Path(self.folder)
        info_path = self.folder / ONNX_INFO_FILE
        if not info_path.is_file():
            raise FileNotFoundError(f"{info_path} not found: is {self.folder} an infosam ONNX export?")
        self.info = json.loads(info_path.read_text(encoding="utf-8"))
        providers = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(str(self.folder / ENCODER_FILE), providers=providers)
        self.decoder = ort.InferenceSession(str(self.folder / DECODER_FILE), providers=providers)
        self.transform = make_transform(self.info["transform"], self.info["image_size"])

    def encode(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """Embeddings (1, C, h, w) of ``image`` (H, W, 3) uint8 RGB and its resized size (h, w)."""
        pixels, input_size = self.transform.image(image)
        (embeddings,) = self.encoder.run(None, {"image": pixels[None].numpy()})
        return embeddings, input_size

    def decode(
        self, embeddings: np.ndarray, coords: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Low-res logits (B, 1, 4h, 4w) and IoU (B, 1) for ``coords`` (B, N, 2) and ``labels`` (B, N)."""
        logits, iou = self.decoder.run(
            None,
            {
                "image_embeddings": embeddings,
                "point_coords": coords.astype(np.float32),
                "point_labels": labels.astype(np.float32),
            },
        )
        return logits, iou

    def segment(self, image: np.ndarray, prompt: Prompt) -> tuple[np.ndarray, float]:
        """Logits (H, W) at the original size of ``image`` and the predicted IoU, for one prompt."""
        original = (int(image.shape[0]), int(image.shape[1]))
        embeddings, input_size = self.encode(image)
        logits, iou = self.decode(embeddings, *onnx_prompt(prompt, original, self.transform))
        full = self.transform.postprocess(torch.from_numpy(logits[:1]), input_size, original)
        return full[0, 0].numpy(), float(iou[0, 0])


# --------------------------------------------------------------------------------------------- files


def default_out(run_dir: str | Path, fmt: str) -> Path:
    """Where ``infosam export`` writes by default: ``RUN_DIR/export/{sam.pth, student.safetensors, onnx/}``."""
    from .runs import RunDir

    names = {"sam": "sam.pth", "sam2": "sam2.pt", "infosam": "student.safetensors", "onnx": "onnx"}
    return RunDir(run_dir).export_dir / names[fmt]


def export_run(
    run_dir: str | Path,
    fmt: str,
    out: str | Path | None = None,
    *,
    checkpoint: str | Path | None = None,
    overwrite: bool = False,
    require_final: bool = False,
) -> Path:
    """Export the student of ``run_dir`` in format ``fmt`` (``sam``, ``infosam`` or ``onnx``); returns the path.
    An unfinished run exports its newest intact checkpoint with a warning, unless ``require_final`` (then
    :class:`infosam.runs.UnfinishedRunError`).

    Raises:
        UnmergeableError: ``sam`` asked for an adapter student. FileExistsError: the output exists.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    model, student, teacher = open_run(run_dir, checkpoint=checkpoint, require_final=require_final)
    if fmt in ("sam", "sam2") and unmergeable_methods(student):
        merge_peft(student)  # raises the explanatory UnmergeableError before anything is written
    _check_family(fmt, student)
    out = Path(out) if out is not None else default_out(run_dir, fmt)
    if fmt == "sam":
        return export_sam(student, teacher, out, overwrite=overwrite)
    if fmt == "sam2":
        return export_sam(student, teacher, out, overwrite=overwrite, official_key="model")
    if fmt == "infosam":
        return export_student_file(student, teacher, model, out, overwrite=overwrite)
    return export_onnx(student, out, overwrite=overwrite)


def _check_family(fmt: str, student: Sam) -> None:
    """Refuse a format that does not fit the student's model family, naming the one that does."""
    from .sam.sam2 import is_sam2

    sam2 = is_sam2(student)
    if fmt == "sam" and sam2:
        raise ValueError("this run's model is a SAM 2: export it with --format sam2 (or infosam)")
    if fmt == "sam2" and not sam2:
        raise ValueError(
            f"--format sam2 is for SAM 2 runs; this run's model is {student.spec.name}: use --format sam"
        )
    if fmt == "onnx" and sam2:
        raise ValueError("--format onnx is not implemented for SAM 2 yet: use --format sam2 or infosam")


def _check_out(out: str | Path, overwrite: bool) -> Path:
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite (overwrite=True) to replace it")
    if out.is_dir():
        raise FileExistsError(f"{out} is a folder; name a file to write")
    return out
