"""Official-format SAM checkpoints load strictly, resize across image sizes, and fail with messages naming the file."""

from __future__ import annotations

import pytest
import torch

from infosam.sam.build import build_sam
from infosam.sam.checkpoint import CheckpointError, inspect_checkpoint, load_checkpoint, save_sam_checkpoint
from infosam.sam.forward import sam_forward

BOX = torch.tensor([[4.0, 6.0, 40.0, 50.0]])


def _outputs(model, size: int = 64):
    images = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return sam_forward(model, images, boxes=BOX * size / 64)


@pytest.mark.parametrize("wrapped", [False, True])
def test_round_trip_gives_identical_outputs(tiny_sam, tmp_path, wrapped):
    source = tiny_sam(seed=1)
    path = tmp_path / "sam_tiny.pth"
    if wrapped:
        torch.save({"model": source.state_dict(), "epoch": 3}, path)
    else:
        assert save_sam_checkpoint(source, path) == path
    target = tiny_sam(seed=2)
    load_checkpoint(target, path)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    a, b = _outputs(source), _outputs(target)
    assert torch.equal(a.low_res_logits, b.low_res_logits)
    assert torch.equal(a.mask_tokens, b.mask_tokens)


def test_build_sam_loads_checkpoint(tiny_sam, tmp_path):
    path = save_sam_checkpoint(tiny_sam(seed=3), tmp_path / "tiny.pth")
    model = build_sam("tiny", checkpoint=path)
    assert torch.equal(_outputs(model).low_res_logits, _outputs(tiny_sam(seed=3)).low_res_logits)


@pytest.mark.parametrize("size", [32, 128])
def test_other_image_size_resizes_position_tables(tiny_sam, tmp_path, size):
    source = tiny_sam(seed=4)
    with torch.no_grad():  # rel_pos tables start at zero; make them informative
        for block in source.image_encoder.blocks:
            block.attn.rel_pos_h.normal_()
            block.attn.rel_pos_w.normal_()
    path = save_sam_checkpoint(source, tmp_path / "tiny64.pth")
    target = tiny_sam(seed=5, image_size=size)
    load_checkpoint(target, path)

    grid = size // 8
    pos = target.image_encoder.pos_embed
    assert pos.shape == (1, grid, grid, 32)
    expected = torch.nn.functional.interpolate(
        source.image_encoder.pos_embed.permute(0, 3, 1, 2),
        size=(grid, grid),
        mode="bicubic",
        align_corners=False,
    ).permute(0, 2, 3, 1)
    torch.testing.assert_close(pos, expected)
    for i, (src_block, dst_block) in enumerate(
        zip(source.image_encoder.blocks, target.image_encoder.blocks, strict=True)
    ):
        if i in (1, 3):  # global attention: table length 2 * grid - 1, interpolated
            for name in ("rel_pos_h", "rel_pos_w"):
                table = getattr(src_block.attn, name)  # (15, 16) for the 8 x 8 grid
                resized = torch.nn.functional.interpolate(table.T[None], size=2 * grid - 1, mode="linear")[
                    0
                ].T
                torch.testing.assert_close(getattr(dst_block.attn, name), resized)
        else:  # windowed attention depends only on the window: copied unchanged
            assert torch.equal(dst_block.attn.rel_pos_h, src_block.attn.rel_pos_h)
    # everything size-independent is copied exactly
    assert torch.equal(target.mask_decoder.iou_token.weight, source.mask_decoder.iou_token.weight)
    out = _outputs(target, size)
    assert out.low_res_logits.shape == (1, 1, 4 * grid, 4 * grid)
    assert torch.isfinite(out.low_res_logits).all()


def test_inspect_checkpoint(tiny_sam, tmp_path):
    model = tiny_sam()
    info = inspect_checkpoint(save_sam_checkpoint(model, tmp_path / "t.pth"))
    assert info["spec"] == "tiny"
    assert (info["encoder_embed_dim"], info["encoder_depth"], info["image_size"]) == (32, 4, 64)
    assert info["encoder_global_attn_indexes"] == (1, 3)
    assert info["n_params"] == sum(t.numel() for t in model.state_dict().values())


def test_other_architecture_is_named(tiny_sam, tmp_path):
    path = save_sam_checkpoint(tiny_sam(encoder_embed_dim=48, encoder_depth=6), tmp_path / "wide.pth")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tiny_sam(), path)
    message = str(info.value)
    assert str(path) in message
    assert (
        "looks like an unknown SAM variant (embed 48, 6 blocks) but the model is tiny (embed 32, 4 blocks)"
        in message
    )
    assert "unexpected keys (e.g. image_encoder.blocks.4." in message
    assert "shape-mismatched keys" in message and "checkpoint (48," in message


def _vit_h_like(path):
    """A small file with ViT-H's telltale shapes (patch embed 1280 wide, 32 blocks) but few tensors."""
    state = {"image_encoder.patch_embed.proj.weight": torch.zeros(1280, 3, 16, 16)}
    state.update({f"image_encoder.blocks.{i}.norm1.weight": torch.zeros(1280) for i in range(32)})
    state["mask_decoder.iou_token.weight"] = torch.zeros(1, 256)
    torch.save(state, path)
    return path


def test_missing_keys_are_counted(tiny_sam, tmp_path):
    state = tiny_sam().state_dict()
    del state["mask_decoder.iou_token.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(
        CheckpointError, match=r"partial\.pth does not fit.*1 missing keys \(e\.g\. mask_decoder"
    ):
        load_checkpoint(tiny_sam(), tmp_path / "partial.pth")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"hello, this is not a checkpoint\n", "not a PyTorch checkpoint: it looks like a text file"),
        (b"\x89PNG\r\n\x1a\n" + bytes(64), "not a PyTorch checkpoint: it is a PNG image"),
        (b"", "is empty"),
    ],
)
def test_not_a_checkpoint(tiny_sam, tmp_path, content, problem):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=problem) as info:
        load_checkpoint(tiny_sam(), path)
    assert str(path) in str(info.value)


def test_truncated_file(tiny_sam, tmp_path):
    path = save_sam_checkpoint(tiny_sam(), tmp_path / "cut.pth")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        load_checkpoint(tiny_sam(), path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file(tiny_sam, tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pth does not exist"):
        load_checkpoint(tiny_sam(), tmp_path / "nope.pth")


@pytest.mark.parametrize(
    ("obj", "problem"),
    [
        ([torch.zeros(2)], "holds a list, not a state dict"),
        ({"a": 1}, "not a state dict of tensors"),
        ({"model": {"w": "text"}}, "not a state dict of tensors"),
    ],
)
def test_not_a_state_dict(tiny_sam, tmp_path, obj, problem):
    path = tmp_path / "odd.pth"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=problem) as info:
        load_checkpoint(tiny_sam(), path)
    assert str(path) in str(info.value)


class _Unsafe:
    pass


def test_arbitrary_pickle_is_refused(tiny_sam, tmp_path):
    path = tmp_path / "unsafe.pth"
    torch.save({"model": _Unsafe()}, path)
    with pytest.raises(
        CheckpointError, match=r"references test_sam_checkpoint\._Unsafe.*not unpickled"
    ) as info:
        load_checkpoint(tiny_sam(), path)
    assert str(path) in str(info.value)


@pytest.mark.slow
def test_vit_b_round_trip_and_vit_h_file_named(tmp_path):
    """The one real-size check: a random ViT-B state dict (~375 MB) loads into build_sam('vit_b')."""
    torch.manual_seed(0)
    model = build_sam("vit_b")
    path = save_sam_checkpoint(model, tmp_path / "sam_vit_b_random.pth")
    with torch.no_grad():
        model.mask_decoder.iou_token.weight.zero_()
    load_checkpoint(model, path)
    assert model.mask_decoder.iou_token.weight.abs().sum() > 0
    assert inspect_checkpoint(path)["spec"] == "vit_b"

    vit_h = _vit_h_like(tmp_path / "sam_vit_h.pth")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(model, vit_h)
    message = str(info.value)
    assert str(vit_h) in message
    assert "looks like vit_h (embed 1280, 32 blocks) but the model is vit_b (embed 768, 12 blocks)" in message
    assert "build_sam('vit_h')" in message
