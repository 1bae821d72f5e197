"""SAM 2 (Meta's ``sam2`` package) as a model family: built with Meta's builder, wrapped, never copied or edited.

:func:`build_sam2_model` composes the package's own Hydra config (``configs/sam2.1/sam2.1_hiera_t.yaml`` ...,
plus the spec's overrides for the tiny test model) and instantiates Meta's ``SAM2Base`` exactly as
``sam2.build_sam.build_sam2`` does (the same post-processing overrides: eval-mode dynamic multimask fallback).
:class:`Sam2Model` adopts that model's children and top-level parameters under their own names, so its state-dict
keys are exactly those of an official checkpoint's ``model`` entry (and of what ``build_sam2`` loads), and exposes
what the rest of the pipeline reads of a SAM: ``image_encoder`` (Meta's Hiera + FPN neck), ``prompt_encoder``
(``sam_prompt_encoder``), ``mask_decoder`` (``sam_mask_decoder``) and ``spec``. The memory attention and memory
encoder (video only) are kept for strict loading and export but never run.

One image forward is what ``SAM2ImagePredictor.set_image`` + ``predict(multimask_output=False)`` compute:

- :func:`encode`: ``image_encoder`` -> FPN levels; the decoder's ``conv_s0`` / ``conv_s1`` project the two
  high-resolution levels (``SAM2Base.forward_image``); ``no_mem_embed`` is added to the lowest-resolution level
  (the image embedding, C x g x g, 256 x 64 x 64 at 1024 px). The three maps travel as ONE tensor so the
  pipeline's encode -> cache -> decode path stays unchanged: the two high-resolution maps are folded onto the
  g x g grid with ``pixel_unshuffle`` (an exact permutation), giving (B, 4C, g, g) = [embedding C | s1 C | s0 2C].
- :func:`decode`: unfolds the packed tensor, turns a box into the two corner points with labels 2 and 3 placed
  before any clicks (as the predictor does), and calls Meta's mask decoder with ``multimask_output=False`` and the
  high-resolution features.

InfoSAM's inputs on SAM 2 (:class:`infosam.sam.forward.SamOutput`): ``image_embeddings`` is the C x g x g
embedding the decoder attends to (after ``no_mem_embed``), and ``mask_tokens`` is mask token 0 after the two-way
transformer (``hs[:, 2]``: SAM 2's decoder puts an object-score token before the IoU token), the token whose
hypernetwork output gives the single-mask logits. In eval mode SAM 2's decoder may return one of the multimask
outputs instead when token 0's mask is unstable (``dynamic_multimask_via_stability``, as in the predictor); the
InfoSAM token stays token 0 (in training mode the decoder always returns token 0's mask).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .output import SamOutput, TokensCaptured

if TYPE_CHECKING:
    from .specs import SamSpec

# What SAM2Base.build_sam2 adds with apply_postprocessing=True (the predictor's eval-mode behaviour).
POSTPROCESSING = (
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
)
INSTALL = "pip install --no-build-isolation 'sam2>=1.1' with SAM2_BUILD_CUDA=0 (or: pip install -e '.[sam2]')"


def _sam2_package():
    """Import Meta's ``sam2`` (which registers its Hydra config module).

    Raises:
        MissingExtraError: sam2 (or what it imports: hydra, iopath) is missing or unusable; an ImportError, so
            callers that catch ImportError still do, and one line on the command line, as for the other extras.
    """
    from ..extras import MissingExtraError

    try:
        import sam2  # noqa: F401  (initialises Hydra with the package's configs)
        from sam2.modeling.sam2_base import SAM2Base
    except ImportError as err:
        if isinstance(err, ModuleNotFoundError) and err.name is not None:
            cause = f"{err.name.split('.')[0]} is not installed"
        else:
            cause = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MissingExtraError(f"the SAM 2 family needs Meta's sam2 package ({cause}): {INSTALL}") from err
    return SAM2Base


def compose_sam2(spec: SamSpec) -> nn.Module:
    """Meta's ``SAM2Base`` for ``spec`` with random weights, instantiated from the package's Hydra config like
    ``sam2.build_sam.build_sam2`` (which cannot take ``device='cpu'`` without also loading or moving weights)."""
    _sam2_package()
    from hydra import compose
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    overrides = [*spec.sam2_overrides, *POSTPROCESSING]
    cfg = compose(config_name=spec.sam2_config, overrides=overrides)
    OmegaConf.resolve(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # flash-attention / CUDA-extension notes on CPU
        return instantiate(cfg.model, _recursive_=True)


class Sam2Model(nn.Module):
    """Meta's ``SAM2Base`` modules under their own names, read by the pipeline like a SAM (see the module doc).

    ``prompt_encoder`` and ``mask_decoder`` are aliases (properties) of ``sam_prompt_encoder`` /
    ``sam_mask_decoder``, so state-dict keys keep Meta's names.
    """

    def __init__(self, base: nn.Module, spec: SamSpec) -> None:
        super().__init__()
        for name, param in base.named_parameters(recurse=False):
            self.register_parameter(name, param)
        for name, buffer in base.named_buffers(recurse=False):
            self.register_buffer(name, buffer)
        for name, child in base.named_children():
            self.add_module(name, child)
        self.directly_add_no_mem_embed = bool(base.directly_add_no_mem_embed)
        self.use_high_res_features_in_sam = bool(base.use_high_res_features_in_sam)
        self.num_feature_levels = int(base.num_feature_levels)
        self.image_encoder.img_size = spec.image_size  # what export/report read of any SAM encoder
        self.spec = spec

    @property
    def prompt_encoder(self) -> nn.Module:
        return self.sam_prompt_encoder

    @property
    def mask_decoder(self) -> nn.Module:
        return self.sam_mask_decoder

    def forward(self, *args, **kwargs):  # pragma: no cover - the pipeline calls encode/decode
        raise TypeError(
            "Sam2Model has no forward: use infosam.sam.forward.sam_forward (or encode_images/decode)"
        )


def build_sam2_model(spec: SamSpec) -> Sam2Model:
    """A :class:`Sam2Model` of ``spec`` with random weights (eval mode)."""
    return Sam2Model(compose_sam2(spec), spec)


def packed_channels(model: Sam2Model) -> int:
    """Channels of the packed encoder output: C (embedding) + C (s1 folded) + 2C (s0 folded), or C alone."""
    c = model.spec.prompt_embed_dim
    return 4 * c if model.use_high_res_features_in_sam else c


def encode(model: Sam2Model, images: Tensor) -> Tensor:
    """(B, 3, S, S) normalised images -> (B, 4C, g, g) packed features (see the module doc)."""
    out = model.image_encoder(images)
    levels = out["backbone_fpn"][-model.num_feature_levels :]
    embedding = levels[-1]
    if model.directly_add_no_mem_embed:
        embedding = embedding + model.no_mem_embed.view(1, -1, 1, 1)
    if not model.use_high_res_features_in_sam:
        return embedding
    s0 = model.sam_mask_decoder.conv_s0(levels[0])
    s1 = model.sam_mask_decoder.conv_s1(levels[1])
    return torch.cat([embedding, F.pixel_unshuffle(s1, 2), F.pixel_unshuffle(s0, 4)], dim=1)


def unpack(model: Sam2Model, packed: Tensor) -> tuple[Tensor, list[Tensor] | None]:
    """(B, 4C, g, g) -> (embedding (B, C, g, g), [s0 (B, C/8, 4g, 4g), s1 (B, C/4, 2g, 2g)]) or (embedding, None)."""
    c = model.spec.prompt_embed_dim
    if packed.shape[1] != packed_channels(model):
        raise ValueError(
            f"SAM 2 features must be (B, {packed_channels(model)}, g, g) as infosam.sam.forward.encode_images "
            f"packs them; got {tuple(packed.shape)}"
        )
    # The predictor hands the decoder the embedding stored token-major ((h, w, B, C) in memory: it adds
    # no_mem_embed to the flattened (hw, B, C) sequence); the decoder's matmuls round differently on other
    # layouts, so the same layout keeps the logits bitwise equal.
    embedding = packed[:, :c].permute(2, 3, 0, 1).contiguous().permute(2, 3, 0, 1)
    if not model.use_high_res_features_in_sam:
        return embedding, None
    s1 = F.pixel_shuffle(packed[:, c : 2 * c], 2)
    s0 = F.pixel_shuffle(packed[:, 2 * c :], 4)
    return embedding, [s0, s1]


def prompt_points(
    boxes: Tensor | None, points: Tensor | None, point_labels: Tensor | None
) -> tuple[Tensor, Tensor]:
    """SAM 2's prompt form: a box becomes its two corners with labels 2, 3, placed before any clicks."""
    coords, labels = [], []
    if boxes is not None:
        coords.append(boxes.reshape(-1, 2, 2))
        labels.append(torch.tensor([[2, 3]], dtype=torch.int, device=boxes.device).repeat(boxes.shape[0], 1))
    if points is not None:
        coords.append(points)
        labels.append(point_labels.to(torch.int))
    return torch.cat(coords, dim=1), torch.cat(labels, dim=1)


def mask_token_index(model: Sam2Model) -> int:
    """Position of mask token 0 among the decoder's output tokens (after the object-score token, if any)."""
    return 2 if model.sam_mask_decoder.pred_obj_scores else 1


def decode(
    model: Sam2Model,
    packed: Tensor,
    boxes: Tensor | None,
    points: Tensor | None,
    point_labels: Tensor | None,
    tokens_only: bool,
) -> SamOutput:
    """:func:`infosam.sam.forward.decode` for SAM 2: what ``SAM2ImagePredictor._predict`` does with one prompt per
    image.

    SAM 2's decoder takes B images with B prompts in one call (``repeat_image=False``), so no per-image loop.
    """
    embedding, high_res = unpack(model, packed)
    sparse, dense = model.sam_prompt_encoder(
        points=prompt_points(boxes, points, point_labels), boxes=None, masks=None
    )
    index = mask_token_index(model)
    tokens: list[Tensor] = []

    def capture(_module, _inputs, output) -> None:
        tokens.append(output[0][:, index : index + 1])
        if tokens_only:
            raise TokensCaptured

    handle = model.sam_mask_decoder.transformer.register_forward_hook(capture)
    logits = ious = None
    try:
        logits, ious, _, _ = model.sam_mask_decoder(
            image_embeddings=embedding,
            image_pe=model.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
            repeat_image=False,
            high_res_features=high_res,
        )
    except TokensCaptured:
        pass
    finally:
        handle.remove()
    if len(tokens) != 1:
        raise RuntimeError(f"expected one two-way-transformer call, saw {len(tokens)}")
    return SamOutput(embedding, tokens[0], logits, ious)
