"""``infosam predict``: prompts mapped from original pixels, masks at original sizes, overlays, no overwrites."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from infosam.cli import main
from infosam.config import config_from_dict
from infosam.data.prompts import tight_box
from infosam.data.synthetic import synthetic_pair
from infosam.load import load_run
from infosam.model import build_base
from infosam.peft import apply_peft
from infosam.predict import Prompt, map_prompt, predict_files
from infosam.predict import images as predict_images
from infosam.predict import segment as predict_module  # the module that runs the model
from infosam.runs import RunDir
from infosam.sam.checkpoint import save_sam_checkpoint
from infosam.sam.transforms import MetaSamTransform


def box_from_mask(mask):
    return tuple(tight_box(mask).tolist())


SIZES = [(40, 70), (90, 50), (64, 64)]  # (H, W): landscape, portrait, square


@pytest.fixture
def images(tmp_path):
    """Three synthetic images of different sizes in images/, their masks in masks/."""
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    for i, size in enumerate(SIZES):
        image, mask = synthetic_pair(i, domain="target", size=size)
        Image.fromarray(image).save(tmp_path / "images" / f"img{i}.png")
        Image.fromarray(mask * 255).save(tmp_path / "masks" / f"img{i}.png")
    return tmp_path


@pytest.fixture
def run_dir(tmp_path):
    """A run folder as train() leaves it: config.yaml + PEFT weights of a tiny adapter+decoder student."""
    run = RunDir(tmp_path / "run").create()
    config = config_from_dict(
        {"model": {"name": "tiny"}, "data": {"path": str(tmp_path)}, "output": str(run.path)}
    )
    student = build_base("tiny", seed=config.train.seed)
    spec = apply_peft(student, "adapter+decoder", {"adapter": {"init": "torch"}})
    run.write_config(config)
    run.save_weights(student, spec)
    return run.path, student.eval()


def test_map_prompt_gives_decode_keywords():
    prompt = Prompt(box=(10, 20, 30, 40), points=((5, 6), (7, 8)), labels=(1, 0))
    out = map_prompt(prompt, (128, 64), MetaSamTransform(64))  # scale 0.5 on both axes
    assert torch.equal(out["boxes"], torch.tensor([[5.0, 10.0, 15.0, 20.0]]))
    assert torch.equal(out["points"], torch.tensor([[[2.5, 3.0], [3.5, 4.0]]]))
    assert torch.equal(out["point_labels"], torch.tensor([[1, 0]]))


def test_prompt_validation():
    with pytest.raises(ValueError, match="x0 < x1"):
        Prompt(box=(10, 10, 5, 20))
    with pytest.raises(ValueError, match="labels"):
        Prompt(points=((1, 2),), labels=())
    with pytest.raises(ValueError, match="needs a box"):
        Prompt()
    with pytest.raises(ValueError, match="outside img.png"):
        Prompt(box=(0, 0, 80, 10)).check_inside(70, 40, "img.png")
    assert box_from_mask(np.pad(np.ones((2, 3)), ((4, 1), (5, 2)))) == (5.0, 4.0, 7.0, 5.0)


def test_predict_writes_masks_at_original_sizes_and_overlays(run_dir, images, tmp_path, capsys):
    run, _ = run_dir
    out = tmp_path / "out"
    assert (
        main(
            ["predict", *map(str, [run, images / "images"]), "--box", "5", "5", "30", "35", "--out", str(out)]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert f"{len(SIZES)}/{len(SIZES)} images" in err  # progress on a folder (issue 22, item 10)
    for i, (h, w) in enumerate(SIZES):
        mask = np.asarray(Image.open(out / "masks" / f"img{i}.png"))
        assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
        overlay = Image.open(out / "overlays" / f"img{i}.png")
        assert overlay.size == (w, h) and overlay.mode == "RGB"


def test_predict_passes_mapped_prompts_to_the_student(run_dir, images, tmp_path, monkeypatch):
    """The box reaches the model in input-frame coordinates, and the student is the saved one."""
    run, trained = run_dir
    seen = []
    real_forward = predict_module.sam_forward

    def spy(model, pixels, **prompts):
        seen.append(prompts)
        return real_forward(model, pixels, **prompts)

    monkeypatch.setattr(predict_module, "sam_forward", spy)
    _, student = load_run(run)
    for (name, a), b in zip(student.named_parameters(), trained.parameters(), strict=True):
        assert torch.equal(a, b), name
    predict_files(
        student, [images / "images" / "img0.png"], tmp_path / "o", prompt=Prompt(box=(7, 4, 35, 20))
    )
    # img0 is 40 x 70 (H x W) -> 37 x 64 in the 64 x 64 input frame (Meta's rounding).
    expected = torch.tensor([[7 * 64 / 70, 4 * 37 / 40, 35 * 64 / 70, 20 * 37 / 40]])
    torch.testing.assert_close(seen[0]["boxes"], expected)


def test_box_per_image_from_masks_folder(run_dir, images, tmp_path, monkeypatch):
    run, _ = run_dir
    boxes = []
    monkeypatch.setattr(
        predict_images,
        "predict_logits",
        lambda m, img, p: boxes.append(p.box) or np.zeros(img.shape[:2]),
    )
    _, student = load_run(run)
    written = predict_files(student, [images / "images"], tmp_path / "o", masks_dir=images / "masks")
    assert [p.image.name for p in written] == ["img0.png", "img1.png", "img2.png"] and len(boxes) == 3
    for i, box in enumerate(boxes):
        mask = np.asarray(Image.open(images / "masks" / f"img{i}.png"))
        assert box == box_from_mask(mask)


def test_never_overwrites_and_names_files(run_dir, images, tmp_path, capsys):
    run, _ = run_dir
    out = tmp_path / "out"
    args = [
        "predict",
        str(run),
        str(images / "images" / "img1.png"),
        "--points",
        "10",
        "20",
        "1",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    before = (out / "masks" / "img1.png").stat().st_mtime_ns
    assert main(args) == 2
    assert "img1.png exists" in capsys.readouterr().err
    assert (out / "masks" / "img1.png").stat().st_mtime_ns == before
    assert main([*args, "--overwrite"]) == 0

    (images / "broken.png").write_bytes(b"not an image")
    assert (
        main(
            ["predict", str(run), str(images / "broken.png"), "--box", "1", "1", "5", "5", "--out", str(out)]
        )
        == 2
    )
    assert "broken.png" in capsys.readouterr().err
    assert (
        main(["predict", str(run), str(images / "images" / "img0.png"), "--box", "1", "1", "69", "45"]) == 2
    )
    assert "img0.png" in capsys.readouterr().err  # box below the 40-pixel-high image
    empty = tmp_path / "empty_masks"
    empty.mkdir()
    assert main(["predict", str(run), str(images / "images" / "img0.png"), "--masks", str(empty)]) == 2
    assert "no mask for img0.png" in capsys.readouterr().err
    assert main(["predict", str(run), str(images / "images"), "--points", "1", "2"]) == 2
    assert "triples" in capsys.readouterr().err


def test_zero_shot_model_without_run(images, tmp_path):
    sam = build_base("tiny", seed=3)
    checkpoint = save_sam_checkpoint(sam, tmp_path / "tiny.pth")
    out = tmp_path / "zs"
    args = [
        "predict",
        "--model",
        "tiny",
        "--checkpoint",
        str(checkpoint),
        str(images / "images"),
        "--box",
        "2",
        "2",
        "30",
        "30",
    ]
    assert main([*args, "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["img0.png", "img1.png", "img2.png"]
    assert main(["predict", "--model", "tiny", str(images / "images"), "--box", "2", "2", "30", "30"]) == 2


def test_exif_rotated_jpeg_predict_sees_what_the_dataset_sees(run_dir, tmp_path, monkeypatch):
    """A phone JPEG stored sideways (EXIF orientation 6) with its mask drawn on the stored pixels: prediction and
    the dataset read identical upright pixels, the same mask and so the same box."""
    from infosam.data.formats import open_dataset

    run, _ = run_dir
    root = tmp_path / "phone"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    stored, mask = synthetic_pair(0, domain="target", size=(40, 70))  # stored H x W = 40 x 70
    mask[:, :20] = 0  # an off-centre object, so a wrong orientation moves the box
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: upright 70 x 40
    Image.fromarray(stored).save(root / "images" / "phone.jpg", exif=exif, quality=95)
    Image.fromarray(mask * 255).save(root / "masks" / "phone.png")

    seen = []
    real_forward = predict_module.sam_forward

    def spy(model, pixels, **prompts):
        seen.append((pixels, prompts))
        return real_forward(model, pixels, **prompts)

    monkeypatch.setattr(predict_module, "sam_forward", spy)
    _, student = load_run(run)
    (job,) = predict_files(student, [root / "images"], tmp_path / "out", masks_dir=root / "masks")

    dataset = open_dataset(root, transform=MetaSamTransform(64))
    sample = dataset[0]
    image, truth = dataset.read_pair(0)
    assert image.shape[:2] == (70, 40)  # the dataset turned it upright
    pixels, prompts = seen[0]
    assert torch.equal(pixels[0], sample["image"])
    assert job.prompt.box == box_from_mask(truth)
    expected = MetaSamTransform(64).boxes(torch.tensor([job.prompt.box]), (70, 40))
    torch.testing.assert_close(prompts["boxes"], expected)
    written = np.asarray(Image.open(job.mask))
    assert written.shape == (70, 40)


def test_masks_threshold_logits_not_float32_probabilities(run_dir, images, tmp_path, monkeypatch):
    """A logit of 1e-8 is foreground (SAM: logits > 0), though float32 sigmoid(1e-8) rounds to exactly 0.5."""
    assert torch.sigmoid(torch.tensor(1e-8)).item() == 0.5  # why sigmoid(x) > 0.5 is the wrong test
    run, _ = run_dir
    _, student = load_run(run)

    def tiny_positive_logits(model, pixels, **prompts):
        return SimpleNamespace(low_res_logits=torch.full((1, 1, 16, 16), 1e-8))

    monkeypatch.setattr(predict_module, "sam_forward", tiny_positive_logits)
    (written,) = predict_files(
        student, [images / "images" / "img2.png"], tmp_path / "o", prompt=Prompt(box=(1, 1, 9, 9))
    )
    assert (np.asarray(Image.open(written.mask)) == 255).all()
    assert (
        predict_module.predict_probabilities(student, np.zeros((8, 8, 3), np.uint8), Prompt(box=(1, 1, 5, 5)))
        == 0.5
    ).all()
    for t in (0.3, 0.5, 0.9):
        cut = predict_module.probability_to_logit(t)
        assert torch.sigmoid(torch.tensor(cut, dtype=torch.float64)).item() == pytest.approx(t, abs=1e-15)
    assert predict_module.probability_to_logit(0.5) == 0.0
    with pytest.raises(ValueError, match="threshold must be a probability strictly between 0 and 1, got 1.0"):
        predict_files(
            student,
            [images / "images" / "img2.png"],
            tmp_path / "p",
            prompt=Prompt(box=(1, 1, 9, 9)),
            threshold=1.0,
        )
    assert not (tmp_path / "p").exists()


# --------------------------------------------------------------------------------------------- checked before work


@pytest.fixture
def no_model_load(monkeypatch):
    """Loading any model fails the test: the checks below must answer before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr("infosam.load.ModelSource.open", refuse)  # every source is opened there


def _truncated_jpeg(path):
    import io

    buf = io.BytesIO()
    Image.fromarray(np.full((48, 48, 3), 120, np.uint8)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def test_every_image_is_decoded_before_anything_is_written(run_dir, images, tmp_path, capsys, no_model_load):
    run, _ = run_dir
    folder = images / "images"
    _truncated_jpeg(
        folder / "img1b.jpg"
    )  # sorts between good images: a lazy predictor would write img0 first
    (folder / "zz.png").write_bytes(b"not an image either")
    out = tmp_path / "out"
    assert main(["predict", str(run), str(folder), "--box", "1", "1", "20", "20", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "img1b.jpg" in err and "zz.png" in err and "nothing written" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_existing_outputs_and_bad_options_are_refused_before_the_model_loads(
    run_dir, images, tmp_path, capsys, no_model_load
):
    run, _ = run_dir
    image = str(images / "images" / "img2.png")
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "img2.png").write_bytes(b"user file")
    assert main(["predict", str(run), image, "--box", "1", "1", "20", "20", "--out", str(out)]) == 2
    assert "img2.png exists" in capsys.readouterr().err
    assert (out / "masks" / "img2.png").read_bytes() == b"user file"

    assert main(["predict", str(run), image, "--box", "1", "1", "20", "20", "--threshold", "2"]) == 2
    err = capsys.readouterr().err
    assert "threshold" in err and "between 0 and 1" in err

    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    assert main(["predict", str(run), image, "--box", "1", "1", "20", "20", "--out", str(a_file)]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and len(err.strip().splitlines()) == 1
    assert a_file.read_text() == "mine"


def test_usage_line_and_default_output_is_git_ignored():
    import shutil
    import subprocess
    from pathlib import Path

    from infosam.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    usage = sub.choices["predict"].format_usage()
    assert "RUN_DIR IMAGE [IMAGE ...]" in usage and "[RUN_DIR IMAGES ...]" not in usage
    repo = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or not (repo / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "-q", "predictions/masks/a.png"], cwd=repo, check=False)
    assert ignored.returncode == 0, "the default predict output folder predictions/ must be git-ignored"
