"""SAM 2 from Meta's ``sam2`` package: forward parity with ``SAM2ImagePredictor``, the tensors InfoSAM reads, and
strict loading of checkpoints in the official layout (random weights: none can be downloaded here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor

from infosam.sam.build import build_sam
from infosam.sam.checkpoint import CheckpointError, load_checkpoint
from infosam.sam.forward import decode, encode_images, sam_forward
from infosam.sam.sam2 import Sam2Model, compose_sam2
from infosam.sam.specs import SPECS
from infosam.sam.transforms import get_transform

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def pair(name: str, seed: int = 0) -> tuple[Sam2Model, SAM2ImagePredictor]:
    """The project's model and Meta's predictor over the very same modules (random weights, eval mode)."""
    torch.manual_seed(seed)
    spec = SPECS[name]
    base = compose_sam2(spec).eval()
    model = Sam2Model(base, spec)
    predictor = SAM2ImagePredictor(base)
    g = spec.embedding_size  # the predictor hard-codes 1024 px feature sizes; a tiny model needs its own
    predictor._bb_feat_sizes = [(4 * g, 4 * g), (2 * g, 2 * g), (g, g)]
    return model, predictor


def image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def ours(model: Sam2Model, rgb: np.ndarray, **prompts):
    """The project's path: its SAM 2 transform, encode_images + decode, postprocess to the original size."""
    transform = get_transform(model.spec)
    pixels, input_size = transform.image(rgb)
    size = rgb.shape[:2]
    kwargs = {}
    if "box" in prompts:
        kwargs["boxes"] = transform.boxes(torch.tensor([prompts["box"]], dtype=torch.float32), size)
    if "points" in prompts:
        kwargs["points"] = transform.coords(torch.tensor([prompts["points"]], dtype=torch.float32), size)
        kwargs["point_labels"] = torch.tensor([prompts["labels"]])
    with torch.no_grad():
        out = sam_forward(model, pixels[None], **kwargs)
        return out, transform.postprocess(out.low_res_logits, input_size, size)


def meta(predictor: SAM2ImagePredictor, rgb: np.ndarray, **prompts):
    predictor.set_image(rgb)
    with torch.no_grad():
        masks, iou, low_res = predictor.predict(
            point_coords=np.array(prompts["points"], dtype=np.float32) if "points" in prompts else None,
            point_labels=np.array(prompts["labels"]) if "points" in prompts else None,
            box=np.array(prompts["box"], dtype=np.float32) if "box" in prompts else None,
            multimask_output=False,
            return_logits=True,
        )
    return torch.from_numpy(masks), torch.from_numpy(iou), torch.from_numpy(low_res)


PROMPTS = [
    {"box": [12.0, 20.0, 90.0, 70.0]},
    {"points": [[40.0, 30.0]], "labels": [1]},
    {"box": [5.0, 8.0, 60.0, 77.0], "points": [[30.0, 40.0], [10.0, 10.0]], "labels": [1, 0]},
]


@pytest.mark.parametrize("prompts", PROMPTS)
def test_tiny_forward_equals_sam2_image_predictor_bitwise(prompts):
    model, predictor = pair("tiny_sam2")
    rgb = image(96, 150)  # not square: SAM 2 stretches to the square input
    out, logits = ours(model, rgb, **prompts)
    masks, iou, low_res = meta(predictor, rgb, **prompts)
    assert torch.equal(logits, masks[None])
    assert torch.equal(out.low_res_logits.clamp(-32.0, 32.0), low_res[None])
    assert torch.equal(out.iou_predictions, iou[None])
    # the high-resolution path is live: zeroing s0 changes the logits
    packed = encode_images(model, get_transform(model.spec).image(rgb)[0][None])
    c = model.spec.prompt_embed_dim
    zeroed = packed.clone()
    zeroed[:, 2 * c :] = 0
    with torch.no_grad():
        other = decode(model, zeroed, boxes=torch.tensor([[10.0, 10.0, 90.0, 90.0]]))
        same = decode(model, packed, boxes=torch.tensor([[10.0, 10.0, 90.0, 90.0]]))
    assert not torch.equal(other.low_res_logits, same.low_res_logits)


def test_hiera_tiny_spec_equals_sam2_image_predictor_bitwise():
    """The released SAM 2.1 tiny architecture at 1024 px (random weights), box prompt."""
    model, predictor = pair("sam2_hiera_tiny")
    rgb = image(120, 160, seed=1)
    prompts = {"box": [20.0, 15.0, 130.0, 100.0]}
    out, logits = ours(model, rgb, **prompts)
    masks, iou, low_res = meta(predictor, rgb, **prompts)
    assert out.image_embeddings.shape == (1, 256, 64, 64)
    assert out.low_res_logits.shape == (1, 1, 256, 256)
    assert torch.equal(logits, masks[None])
    assert torch.equal(out.low_res_logits.clamp(-32.0, 32.0), low_res[None])
    assert torch.equal(out.iou_predictions, iou[None])


def test_infosam_tensors_are_what_the_decoder_used():
    """image_embeddings is the embedding the two-way transformer attends to; mask_tokens is mask token 0, whose
    hypernetwork output times the upscaled embedding rebuilds the single-mask logits (training mode: no dynamic
    multimask fallback)."""
    torch.manual_seed(0)
    model = build_sam("tiny_sam2").train()
    seen = {}

    def src(_module, args) -> None:
        seen["src"] = args[0].detach().clone()

    def upscaled(_module, _inputs, output) -> None:  # the last activation of the upscaling (act2)
        seen["upscaled"] = output.detach().clone()

    hooks = [
        model.mask_decoder.transformer.register_forward_pre_hook(src),
        model.mask_decoder.output_upscaling[4].register_forward_hook(upscaled),
    ]
    images = torch.randn(2, 3, 128, 128)
    boxes = torch.tensor([[10.0, 12.0, 80.0, 90.0], [30.0, 5.0, 120.0, 60.0]])
    with torch.no_grad():
        out = sam_forward(model, images, boxes=boxes)
        _, dense = model.prompt_encoder(
            points=(boxes.reshape(-1, 2, 2), torch.tensor([[2, 3]] * 2)), boxes=None, masks=None
        )
    for h in hooks:
        h.remove()
    assert out.image_embeddings.shape == (2, 32, 8, 8) and out.mask_tokens.shape == (2, 1, 32)
    assert torch.equal(seen["src"], out.image_embeddings + dense)
    weights = model.mask_decoder.output_hypernetworks_mlps[0](out.mask_tokens)  # (B, 1, C/8)
    b, c, h, w = seen["upscaled"].shape
    rebuilt = (weights @ seen["upscaled"].view(b, c, h * w)).view(b, 1, h, w)
    torch.testing.assert_close(rebuilt, out.low_res_logits, rtol=0, atol=1e-6)
    with torch.no_grad():
        tokens = decode(model, encode_images(model, images), boxes=boxes, tokens_only=True)
    assert tokens.low_res_logits is None and torch.equal(tokens.mask_tokens, out.mask_tokens)


def save_official(model: Sam2Model, path) -> None:
    torch.save({"model": model.state_dict()}, path)


def test_strict_loading_round_trip_and_meta_loads_it(tmp_path):
    torch.manual_seed(0)
    source = build_sam("tiny_sam2")
    path = tmp_path / "sam2.1_tiny_random.pt"
    save_official(source, path)
    torch.manual_seed(1)
    target = build_sam("tiny_sam2", checkpoint=path)
    expected = source.state_dict()
    assert set(target.state_dict()) == set(expected)
    assert all(torch.equal(v, expected[k]) for k, v in target.state_dict().items())
    spec = SPECS["tiny_sam2"]  # Meta's builder loads the same file (it raises on missing/unexpected keys)
    meta_model = build_sam2(
        spec.sam2_config, str(path), device="cpu", hydra_overrides_extra=list(spec.sam2_overrides)
    )
    assert all(torch.equal(v, expected[k]) for k, v in meta_model.state_dict().items())


def test_checkpoint_errors_explain(tmp_path):
    torch.manual_seed(0)
    model = build_sam("tiny_sam2")
    good = tmp_path / "good.pt"
    save_official(model, good)
    with pytest.raises(CheckpointError, match="nope.pt"):
        load_checkpoint(build_sam("tiny_sam2"), tmp_path / "nope.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_checkpoint(build_sam("tiny_sam2"), truncated)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.pt"):
        load_checkpoint(build_sam("tiny_sam2"), text)
    state = dict(model.state_dict())
    del state["no_mem_embed"]
    partial = tmp_path / "partial.pt"
    torch.save({"model": state}, partial)
    with pytest.raises(CheckpointError, match="missing.*no_mem_embed"):
        load_checkpoint(build_sam("tiny_sam2"), partial)
    with pytest.raises(
        CheckpointError, match=r"looks like tiny_sam2 \(SAM 2.1 Hiera, embed 8.*model is sam2_hiera_tiny"
    ):
        load_checkpoint(build_sam("sam2_hiera_tiny"), good)


def test_baseline_objectives_refuse_sam2_by_name():
    from infosam.distill.registry import build_objective
    from infosam.model import build_base

    with pytest.raises(ValueError, match=r"distill\.method='mobilesam'.*SAM 2.*use infosam or none"):
        build_objective("mobilesam", None, build_base("tiny_sam2", seed=0))
