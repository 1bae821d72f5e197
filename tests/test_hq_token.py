"""HQ-SAM's output token (``hq_token``): its decoder by hand against Meta's parts, the per-image rows of the early
feature in a batched decode, SAM frozen, and the prefix-cache refusal; the contract matrix is tests/test_peft.py."""

from __future__ import annotations

import pytest
import torch

from infosam.model import build_base
from infosam.peft import apply_peft
from infosam.peft.hq_token import HQMaskDecoder
from infosam.sam.forward import decode, encode_images


def _student(family: str = "tiny", **options):
    model = build_base(family, seed=0)
    apply_peft(model, "hq_token", {"hq_token": options} if options else None)
    return model


@pytest.mark.parametrize("family", ["tiny", "tiny_tinyvit"])
def test_batched_decode_reads_each_images_early_feature(family):
    model = _student(family)
    size = model.image_encoder.img_size
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[4.0, 4.0, 40.0, 40.0], [10.0, 2.0, 50.0, 30.0]])
    with torch.no_grad():
        both = decode(model, encode_images(model, images), boxes=boxes)
        one = [decode(model, encode_images(model, images[b : b + 1]), boxes=boxes[b : b + 1]) for b in (0, 1)]
    for b in (0, 1):
        torch.testing.assert_close(both.low_res_logits[b : b + 1], one[b].low_res_logits)
    assert not torch.allclose(both.low_res_logits[0], both.low_res_logits[1])


def test_sam_plus_hq_mask_by_hand():
    """hq_token_only=false: SAM's mask of the 6-token decoder plus hf_mlp(token) . (maskfeature + fused features)."""
    model = _student(hq_token_only=False)
    decoder = model.mask_decoder
    assert isinstance(decoder, HQMaskDecoder)
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    early = []
    block = model.image_encoder.blocks[1]  # the first global-attention block of the tiny ViT (ViT-B: 2)
    handle = block.register_forward_hook(lambda _m, _i, o: early.append(o))
    with torch.no_grad():
        emb = model.image_encoder(images)
        handle.remove()
        sparse, dense = model.prompt_encoder(
            points=None, boxes=torch.tensor([[4.0, 4.0, 40.0, 40.0]]), masks=None
        )
        pe = model.prompt_encoder.get_dense_pe()
        masks, _ = decoder(emb, pe, sparse, dense, multimask_output=False)
        d, hq = decoder.base_layer, decoder.hq
        tokens = torch.cat([d.iou_token.weight, d.mask_tokens.weight, hq.hf_token.weight])[None]
        hs, src = d.transformer(emb + dense, pe, torch.cat([tokens, sparse], 1))
        up = d.output_upscaling(src.transpose(1, 2).view(emb.shape))
        sam = (d.output_hypernetworks_mlps[0](hs[:, 1]) @ up.flatten(2)).view(1, 1, *up.shape[-2:])
        fused = (
            hq.embedding_maskfeature(up)
            + hq.embedding_encoder(emb)
            + hq.compress_vit_feat(early[0].permute(0, 3, 1, 2))
        )
        hq_mask = (hq.hf_mlp(hs[:, 5]) @ fused.flatten(2)).view(1, 1, *up.shape[-2:])
    torch.testing.assert_close(masks, sam + hq_mask)


def test_sam_stays_frozen_and_only_the_hq_parts_train():
    model = _student()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("mask_decoder.hq.") for n in trainable)


def test_decoder_without_the_early_feature_names_the_option():
    model = _student()
    with torch.no_grad(), pytest.raises(RuntimeError, match="cache.student_prefix=false"):
        decode(model, torch.zeros(1, 32, 8, 8), boxes=torch.tensor([[4.0, 4.0, 40.0, 40.0]]))
