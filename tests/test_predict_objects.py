"""``infosam predict --coco / --boxes``: one mask per object and a COCO results JSON whose RLE masks
``pycocotools`` reads back."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from infosam.cli import main
from infosam.config import config_from_dict
from infosam.model import build_base
from infosam.peft import apply_peft
from infosam.predict import RESULTS_FILE, box_list_prompts, coco_object_prompts
from infosam.runs import RunDir
from instance_data import two_object_coco


@pytest.fixture
def run_dir(tmp_path):
    run = RunDir(tmp_path / "run").create()
    config = config_from_dict(
        {"model": {"name": "tiny"}, "data": {"path": str(tmp_path)}, "output": str(run.path)}
    )
    student = build_base("tiny", seed=config.train.seed)
    spec = apply_peft(student, "adapter+decoder", {"adapter": {"init": "torch"}})
    run.write_config(config)
    run.save_weights(student, spec)
    return run.path


def test_predict_coco_round_trips_rle_through_pycocotools(run_dir, tmp_path, capsys):
    ann = two_object_coco(tmp_path / "coco", n_images=2, size=40)
    out = tmp_path / "preds"
    assert main(["predict", str(run_dir), "--coco", str(ann), "--out", str(out), "--device", "cpu"]) == 0
    assert "wrote 4 object mask(s)" in capsys.readouterr().out  # the crowd annotation skipped
    results = json.loads((out / RESULTS_FILE).read_text())
    assert [(r["image_id"], r["object_id"], r["category_id"]) for r in results] == [
        (1, 1, 1),
        (1, 2, 2),
        (2, 3, 1),
        (2, 4, 2),
    ]
    sizes = []
    for r in results:
        written = (
            np.asarray(Image.open(out / "masks" / f"im{r['image_id'] - 1}" / f"{r['object_id']}.png")) > 0
        )
        assert written.shape == (40, 40)
        sizes.append(int(written.sum()))
        assert np.array_equal(
            mask_utils.decode({**r["segmentation"], "counts": r["segmentation"]["counts"]}), written
        )
    assert any(0 < n < 40 * 40 for n in sizes), sizes  # not a trivial (empty or full) round trip
    # the COCO tools read the results back against the ground truth
    gt = COCO(str(ann))
    loaded = gt.loadRes(str(out / RESULTS_FILE))
    for r in results:
        back = loaded.annToMask(
            next(
                a
                for a in loaded.loadAnns(loaded.getAnnIds(imgIds=[r["image_id"]]))
                if a["object_id"] == r["object_id"]
            )
        )
        assert np.array_equal(
            back > 0,
            np.asarray(Image.open(out / "masks" / f"im{r['image_id'] - 1}" / f"{r['object_id']}.png")) > 0,
        )
    # nothing a user wrote is overwritten
    before = (out / RESULTS_FILE).read_bytes()
    assert main(["predict", str(run_dir), "--coco", str(ann), "--out", str(out), "--device", "cpu"]) == 2
    assert "exists" in capsys.readouterr().err
    assert (out / RESULTS_FILE).read_bytes() == before


def test_coco_prompts_use_bbox_else_segmentation(tmp_path):
    ann = two_object_coco(tmp_path / "coco", n_images=1, size=40)
    data = json.loads(ann.read_text())
    data["annotations"][0]["bbox"] = [1, 2, 10, 20]
    ann.write_text(json.dumps(data))
    listed = coco_object_prompts(ann)
    assert listed[0][2].box == (1.0, 2.0, 11.0, 22.0)
    assert listed[1][2].box == (28.0, 10.0, 39.0, 39.0)  # tight box of the RLE rectangle


def test_box_list_prompts_and_bad_rows(tmp_path):
    (tmp_path / "boxes.csv").write_text("image,x0,y0,x1,y1\nimages/a.png,1,2,10,12\nimages/a.png,3,3,9,9\n")
    listed = box_list_prompts(tmp_path / "boxes.csv")
    assert [(p.name, o, pr.box, i) for p, o, pr, i, _ in listed] == [
        ("a.png", 1, (1.0, 2.0, 10.0, 12.0), "a.png"),
        ("a.png", 2, (3.0, 3.0, 9.0, 9.0), "a.png"),
    ]
    (tmp_path / "bad.csv").write_text("image,x0,y0,x1,y1\nimages/a.png,10,2,1,12\n")
    with pytest.raises(ValueError, match="bad.csv:2: box must be"):
        box_list_prompts(tmp_path / "bad.csv")


def test_predict_boxes_outside_image_writes_nothing(run_dir, tmp_path, capsys):
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    (tmp_path / "boxes.csv").write_text("image,x0,y0,x1,y1\nimages/a.png,1,2,10,12\nimages/a.png,3,3,90,9\n")
    out = tmp_path / "preds"
    assert main(["predict", str(run_dir), "--boxes", str(tmp_path / "boxes.csv"), "--out", str(out)]) != 0
    assert "object 2" in capsys.readouterr().err
    assert not out.exists()


def test_eval_cli_scores_coco_per_object(run_dir, tmp_path, capsys):
    """`infosam eval` on a COCO folder: one row per object keyed by image and object id, both means."""
    two_object_coco(tmp_path / "coco", n_images=2, size=40)
    out = tmp_path / "ev"
    args = ["eval", str(run_dir), "--data", str(tmp_path / "coco"), "--out", str(out), "--device", "cpu"]
    assert main([*args, "--categories", "nucleus"]) == 0
    text = capsys.readouterr().out
    assert "per object (2 objects)" in text and "per image:" in text
    header, *rows = (out / "per_image.csv").read_text().splitlines()
    assert header.startswith("id,image,object,")
    assert [r.split(",")[:3] for r in rows] == [
        ["images/im0.png#2", "images/im0.png", "2"],
        ["images/im1.png#4", "images/im1.png", "4"],
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_objects"] == 2 and summary["n_images"] == 2 and "per_image" in summary


def test_eval_cli_takes_the_runs_categories_and_crowd_setting(tmp_path, capsys):
    """A run trained on data.categories [cell] with crowd annotations is scored on those objects by default, as
    it was trained and tested; --categories / --no-include-crowd given on the command line win."""
    data = tmp_path / "coco"
    two_object_coco(data, n_images=2, size=40)  # cells 1, 3; nuclei 2, 4; crowd cell 999 on im0
    run = RunDir(tmp_path / "run").create()
    config = config_from_dict(
        {
            "model": {"name": "tiny"},
            "data": {"path": str(data), "categories": ["cell"], "include_crowd": True},
            "output": str(run.path),
        }
    )
    student = build_base("tiny", seed=config.train.seed)
    run.write_config(config)
    run.save_weights(student, apply_peft(student, "adapter+decoder", {"adapter": {"init": "torch"}}))

    def scored(name, *extra):
        out = tmp_path / name
        args = ["eval", str(run.path), "--data", str(data), "--out", str(out), "--device", "cpu", *extra]
        assert main(args) == 0, capsys.readouterr().err
        return [r.split(",")[0] for r in (out / "per_image.csv").read_text().splitlines()[1:]]

    assert scored("own") == ["images/im0.png#1", "images/im0.png#999", "images/im1.png#3"]
    assert scored("no-crowd", "--no-include-crowd") == ["images/im0.png#1", "images/im1.png#3"]
    assert scored("nuclei", "--categories", "nucleus") == ["images/im0.png#2", "images/im1.png#4"]


def test_predict_coco_writes_one_overlay_per_image_with_every_object(run_dir, tmp_path, capsys):
    """Beside the masks, OUT/overlays/<stem>.png: the image with each of its objects' masks tinted in its own
    colour and its box drawn; an existing overlay is kept (nothing written) unless --overwrite."""
    from infosam.data.reading import read_image
    from infosam.predict import overlay_objects

    ann = two_object_coco(tmp_path / "coco", n_images=2, size=40)
    out = tmp_path / "preds"
    args = ["predict", str(run_dir), "--coco", str(ann), "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    assert "overlays" in capsys.readouterr().out
    results = json.loads((out / RESULTS_FILE).read_text())
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["im0.png", "im1.png"]
    listed = coco_object_prompts(ann)
    for stem, image_id in (("im0", 1), ("im1", 2)):
        image, _ = read_image(tmp_path / "coco" / "images" / f"{stem}.png")
        masks = [
            np.asarray(Image.open(out / "masks" / stem / f"{r['object_id']}.png")) > 0
            for r in results
            if r["image_id"] == image_id
        ]
        prompts = [p for _, _, p, i, _ in listed if i == image_id]
        want = np.asarray(overlay_objects(image, masks, prompts))
        assert np.array_equal(np.asarray(Image.open(out / "overlays" / f"{stem}.png")), want)
    assert not np.array_equal(want, image)  # the masks are drawn
    (out / RESULTS_FILE).unlink()
    shutil.rmtree(out / "masks")
    before = (out / "overlays" / "im0.png").read_bytes()
    assert main(args) == 2
    assert "overlays" in capsys.readouterr().err and not (out / RESULTS_FILE).exists()
    assert (out / "overlays" / "im0.png").read_bytes() == before
