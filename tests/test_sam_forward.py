"""sam_forward equals Meta's SamPredictor, batches exactly, keeps gradients and captures the mask token cleanly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor
from segment_anything.utils.transforms import ResizeLongestSide

from infosam.sam.build import build_sam
from infosam.sam.forward import SamOutput, decode, encode_images, sam_forward


def _image(seed: int, height: int = 48, width: int = 80) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _meta_input(model, image: np.ndarray) -> torch.Tensor:
    """(1, 3, S, S) built exactly as SamPredictor.set_image does: resize longest side, normalise, pad."""
    resized = ResizeLongestSide(model.image_encoder.img_size).apply_image(image)
    x = torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None].float()
    return model.preprocess(x)


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_box_matches_sam_predictor(tiny_sam):
    model = tiny_sam(seed=1)
    image = _image(0)
    box = np.array([10, 5, 60, 40])
    predictor = SamPredictor(model)
    predictor.set_image(image)
    _, iou_ref, logits_ref = predictor.predict(box=box, multimask_output=False, return_logits=True)

    box_in = ResizeLongestSide(64).apply_boxes(box, image.shape[:2])
    with torch.no_grad():
        out = sam_forward(model, _meta_input(model, image), boxes=torch.as_tensor(box_in, dtype=torch.float))
    torch.testing.assert_close(out.low_res_logits[0], torch.from_numpy(logits_ref), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.iou_predictions[0], torch.from_numpy(iou_ref), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("with_box", [False, True])
def test_points_match_sam_predictor(tiny_sam, with_box):
    model = tiny_sam(seed=2)
    image = _image(1)
    coords, labels = np.array([[20.0, 15.0], [70.0, 30.0], [5.0, 40.0]]), np.array([1, 0, 1])
    box = np.array([4, 2, 75, 45]) if with_box else None
    predictor = SamPredictor(model)
    predictor.set_image(image)
    _, iou_ref, logits_ref = predictor.predict(
        point_coords=coords, point_labels=labels, box=box, multimask_output=False, return_logits=True
    )

    transform = ResizeLongestSide(64)
    points = torch.as_tensor(transform.apply_coords(coords, image.shape[:2]), dtype=torch.float)[None]
    boxes = None
    if with_box:
        boxes = torch.as_tensor(transform.apply_boxes(box, image.shape[:2]), dtype=torch.float)
    with torch.no_grad():
        out = sam_forward(
            model,
            _meta_input(model, image),
            boxes=boxes,
            points=points,
            point_labels=torch.as_tensor(labels)[None],
        )
    torch.testing.assert_close(out.low_res_logits[0], torch.from_numpy(logits_ref), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.iou_predictions[0], torch.from_numpy(iou_ref), rtol=1e-5, atol=1e-5)


def test_batch_equals_separate_calls_and_shapes(tiny_sam):
    model = tiny_sam(seed=3)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, 64, 64, generator=gen)
    boxes = torch.tensor([[4.0, 4.0, 30.0, 40.0], [10.0, 0.0, 63.0, 20.0], [0.0, 0.0, 63.0, 63.0]])
    points = torch.randint(0, 64, (3, 2, 2), generator=gen).float()
    labels = torch.tensor([[1, 0], [1, 1], [0, 1]])
    with torch.no_grad():
        batched = sam_forward(model, images, boxes=boxes, points=points, point_labels=labels)
        singles = [
            sam_forward(
                model,
                images[i : i + 1],
                boxes=boxes[i : i + 1],
                points=points[i : i + 1],
                point_labels=labels[i : i + 1],
            )
            for i in range(3)
        ]
    assert isinstance(batched, SamOutput)
    assert batched.image_embeddings.shape == (3, 32, 8, 8)
    assert batched.mask_tokens.shape == (3, 1, 32)
    assert batched.low_res_logits.shape == (3, 1, 32, 32)
    assert batched.iou_predictions.shape == (3, 1)
    for field in ("image_embeddings", "mask_tokens", "low_res_logits", "iou_predictions"):
        expected = torch.cat([getattr(s, field) for s in singles])
        torch.testing.assert_close(getattr(batched, field), expected, rtol=1e-4, atol=1e-5)
    # different prompts really give different masks (the batch is not one prompt broadcast)
    assert not torch.allclose(batched.low_res_logits[0], batched.low_res_logits[1])


def test_gradients_reach_encoder_and_decoder(tiny_sam):
    model = tiny_sam(seed=4)
    model.train()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    out = sam_forward(model, images, boxes=torch.tensor([[2.0, 2.0, 40.0, 50.0], [8.0, 8.0, 60.0, 30.0]]))
    (out.low_res_logits.square().mean() + out.iou_predictions.sum() + out.mask_tokens.sum()).backward()
    for name in (
        "image_encoder.patch_embed.proj.weight",
        "image_encoder.blocks.0.attn.qkv.weight",
        "image_encoder.neck.0.weight",
        "mask_decoder.transformer.layers.0.self_attn.q_proj.weight",
        "mask_decoder.output_hypernetworks_mlps.0.layers.0.weight",
        "mask_decoder.iou_prediction_head.layers.0.weight",
    ):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_mask_token_rebuilds_the_logits_and_hooks_are_removed(tiny_sam):
    """The captured token is the one the single mask is made from: Meta's decoder turns it into the logits through
    output_hypernetworks_mlps[0] and the upscaled image embedding, so doing that by hand must give the logits."""
    model = tiny_sam(seed=5)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    boxes = torch.tensor([[5.0, 6.0, 50.0, 40.0], [12.0, 3.0, 60.0, 30.0]])
    upscaled = []
    handle = model.mask_decoder.output_upscaling.register_forward_hook(
        lambda _m, _i, out: upscaled.append(out)
    )
    before = _hooks(model)
    with torch.no_grad():
        out = sam_forward(model, images, boxes=boxes)
        assert _hooks(model) == before
        handle.remove()
        for b in range(2):
            embedding = upscaled[b]  # (1, C', 4h, 4w), one decoder call per image
            weights = model.mask_decoder.output_hypernetworks_mlps[0](out.mask_tokens[b])  # (1, C')
            rebuilt = (weights @ embedding.flatten(2)).view(1, *embedding.shape[-2:])
            torch.testing.assert_close(rebuilt, out.low_res_logits[b], rtol=1e-5, atol=1e-5)


def test_hook_removed_when_decoder_fails(tiny_sam):
    model = tiny_sam(seed=6)
    emb = torch.zeros(1, 32, 8, 8)

    def boom(*_):
        raise RuntimeError("boom")

    failing = model.mask_decoder.output_upscaling.register_forward_hook(boom)
    before = _hooks(model)
    with pytest.raises(RuntimeError, match="boom"):
        decode(model, emb, boxes=torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    assert _hooks(model) == before
    failing.remove()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "needs a prompt"),
        ({"boxes": torch.zeros(2, 4)}, r"boxes must be \(1, 4\)"),
        ({"points": torch.zeros(1, 2, 2)}, "point_labels"),
        ({"points": torch.zeros(1, 2, 2), "point_labels": torch.zeros(1, 3)}, "point_labels must be"),
    ],
)
def test_bad_prompts_are_named(tiny_sam, kwargs, match):
    with pytest.raises(ValueError, match=match):
        decode(tiny_sam(), torch.zeros(1, 32, 8, 8), **kwargs)


def test_wrong_image_size_is_named(tiny_sam):
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\)"):
        encode_images(tiny_sam(), torch.zeros(1, 3, 32, 32))


@pytest.mark.slow
def test_vit_b_shapes():
    torch.manual_seed(0)
    model = build_sam("vit_b")
    with torch.no_grad():
        out = sam_forward(
            model, torch.randn(1, 3, 1024, 1024), boxes=torch.tensor([[100.0, 200.0, 600.0, 700.0]])
        )
    assert out.image_embeddings.shape == (1, 256, 64, 64)
    assert out.mask_tokens.shape == (1, 1, 256)
    assert out.low_res_logits.shape == (1, 1, 256, 256)
    assert out.iou_predictions.shape == (1, 1)


def test_tokens_only_decode_gives_the_same_tokens_and_skips_the_mask_head(tiny_sam):
    """The teacher's decode stops after the two-way transformer: the same mask tokens as a full decode, the
    upscaling never runs, no hook is left behind, and the decoder can be called normally afterwards."""
    model = tiny_sam(seed=7)
    emb = torch.randn(3, 32, 8, 8, generator=torch.Generator().manual_seed(3))
    boxes = torch.tensor([[5.0, 6.0, 50.0, 40.0], [12.0, 3.0, 60.0, 30.0], [0.0, 0.0, 63.0, 63.0]])
    upscaled = []
    counter = model.mask_decoder.output_upscaling.register_forward_hook(lambda *_: upscaled.append(1))
    before = _hooks(model)
    with torch.no_grad():
        full = decode(model, emb, boxes=boxes)
        assert len(upscaled) == 3
        short = decode(model, emb, boxes=boxes, tokens_only=True)
        assert len(upscaled) == 3  # the mask head never ran
        assert _hooks(model) == before
        assert short.low_res_logits is None and short.iou_predictions is None
        torch.testing.assert_close(short.mask_tokens, full.mask_tokens, rtol=0, atol=0)
        assert short.image_embeddings is emb
        again = decode(model, emb, boxes=boxes)
    counter.remove()
    torch.testing.assert_close(again.low_res_logits, full.low_res_logits, rtol=0, atol=0)
