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
  metadata, the SAM model (name, input size) and the PEFT spec. :func:`infosam.load_model` (:mod:`infosam.load`)
  rebuilds the student (or the teacher) from it alone; ``infosam predict`` and ``infosam serve`` accept it in
  place of a run folder.
- ``onnx``: two graphs in Meta's split, one image-encoder call per image and many cheap prompt calls:
  ``encoder.onnx`` (image (1, 3, S, S) normalised and padded -> embeddings (1, C, h, w)) and ``decoder.onnx``
  (embeddings + points (B, N, 2) + labels (B, N) -> single-mask low-res logits (B, 1, 4h, 4w) and IoU (B, 1)),
  with B (prompts) and N (points per prompt) dynamic. A box is two points labelled 2 and 3, a padding point is
  labelled -1 (Meta's ONNX convention); :func:`onnx_prompt` builds these arrays from a :class:`Prompt`.
  Upscaling to the original image size is left to the caller (the model family's ``transform.postprocess``):
  traced with this torch, Meta's in-graph crop keeps the size of the example image it was exported with.

Modules: :mod:`.formats` (merging and the three writers), :mod:`.onnx_runtime` (running an ONNX export),
:mod:`.command` (:func:`export_run`). Loading any source, an export included, is :mod:`infosam.load`'s; its
:func:`~infosam.load.load_model` and :func:`~infosam.load.is_student_file` are re-exported here.
"""

from ..load import FORMAT_KEY, FORMAT_VERSION, is_student_file, load_model, load_student_file
from .command import default_out, export_run
from .formats import (
    DECODER_FILE,
    ENCODER_FILE,
    FORMATS,
    MERGEABLE,
    ONNX_INFO_FILE,
    ONNX_OPSET,
    PromptDecoderGraph,
    UnmergeableError,
    check_layout,
    export_onnx,
    export_sam,
    export_student_file,
    merge_peft,
    onnx_model,
    unmergeable_methods,
)
from .onnx_runtime import OnnxSegmenter, onnx_prompt

__all__ = [
    "DECODER_FILE",
    "ENCODER_FILE",
    "FORMATS",
    "FORMAT_KEY",
    "FORMAT_VERSION",
    "MERGEABLE",
    "ONNX_INFO_FILE",
    "ONNX_OPSET",
    "OnnxSegmenter",
    "PromptDecoderGraph",
    "UnmergeableError",
    "check_layout",
    "default_out",
    "export_onnx",
    "export_run",
    "export_sam",
    "export_student_file",
    "is_student_file",
    "load_model",
    "load_student_file",
    "merge_peft",
    "onnx_model",
    "onnx_prompt",
    "unmergeable_methods",
]
