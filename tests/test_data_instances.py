"""COCO instance JSON and instance-label images: detection, one sample per object, and ``infosam data check``
reporting one line per bad annotation (file and annotation id)."""

import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image

from infosam.cli import data as data_cli
from infosam.data.check import DatasetCheckError, check_dataset, validate_dataset
from infosam.data.formats import detect_format, open_dataset
from infosam.data.instances import decode_segmentation, encode_rle
from infosam.data.prompts import tight_box
from instance_data import label_dataset, rect_polygon, two_object_coco, uncompressed_rle, write_coco


def main(argv):
    parser = argparse.ArgumentParser(prog="infosam")
    data_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_coco_objects_one_sample_each(tmp_path):
    root = tmp_path / "coco"
    two_object_coco(root, n_images=2)
    assert detect_format(root) == "coco"
    ds = open_dataset(root, image_size=64)
    # two objects per image, the crowd annotation skipped and counted
    assert ds.ids == ["images/im0.png#1", "images/im0.png#2", "images/im1.png#3", "images/im1.png#4"]
    assert ds.notes == ["1 crowd annotation(s) skipped (iscrowd=1; data.include_crowd: true uses them)"]
    image, mask = ds.read_pair(0)
    assert image.shape == (48, 48, 3) and mask.shape == (48, 48)
    # the polygon rectangle (4, 6)-(20, 30) covers pixel columns 4..19, rows 6..29 (pycocotools' rasterisation)
    assert tight_box(mask).tolist() == [4, 6, 19, 29]
    _, right = ds.read_pair(1)
    assert tight_box(right).tolist() == [28, 10, 43, 39]  # the RLE rectangle, exactly
    s = ds[1]
    assert s["image_id"] == "images/im0.png" and s["object_id"] == 2 and s["id"] == "images/im0.png#2"
    assert s["mask"].shape == (1, 64, 64)
    assert len(open_dataset(root, include_crowd=True)) == 5
    assert open_dataset(root, categories=["nucleus"]).ids == ["images/im0.png#2", "images/im1.png#4"]


def test_rle_round_trip_through_pycocotools():
    mask = np.zeros((30, 41), bool)
    mask[3:17, 5:33] = True
    mask[20, 40] = True
    rle = encode_rle(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [30, 41]
    back = decode_segmentation(json.loads(json.dumps(rle)), 30, 41)
    assert np.array_equal(back, mask)
    assert np.array_equal(decode_segmentation(uncompressed_rle(mask), 30, 41), mask)


@pytest.mark.parametrize("bits", [8, 16])
def test_label_images_one_sample_per_id(tmp_path, bits):
    root = label_dataset(tmp_path / "labels", bits=bits)
    assert detect_format(root) == "labels"
    ds = open_dataset(root, image_size=64)
    third = 300 if bits == 16 else 3
    assert ds.ids == [f"images/s{i}.png#{k}" for i in range(2) for k in (1, 2, third)]
    _, mask = ds.read_pair(2)
    assert tight_box(mask).tolist() == [22, 22, 35, 29]
    assert ds[2]["object_id"] == third
    report = check_dataset(root)
    assert report.ok and report.unit == "objects" and report.n_pairs == 6


def test_label_tiff_and_empty_label_image_counted(tmp_path):
    root = label_dataset(tmp_path / "t", n_images=1)
    lab = np.asarray(Image.open(root / "labels" / "s0.png"))
    (root / "labels" / "s0.png").unlink()
    Image.fromarray(lab.astype(np.uint16)).save(root / "labels" / "s0.tif")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(root / "images" / "blank.png")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(root / "labels" / "blank.png")
    ds = open_dataset(root)
    assert ds.ids == ["images/s0.png#1", "images/s0.png#2", "images/s0.png#300"]
    assert ds.notes == ["1 label image(s) without objects (all zero)"]


@pytest.fixture
def bad_coco(tmp_path):
    """One bad annotation per kind of the issue (and a good one)."""
    root = tmp_path / "bad"
    images = [
        {"file_name": "good.png", "width": 40, "height": 30},
        {"file_name": "gone.png", "width": 40, "height": 30, "write": False},
        {"file_name": "wrong_size.png", "width": 40, "height": 30, "pixels": (32, 40)},
    ]
    tiny = np.zeros((30, 40), np.uint8)
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [rect_polygon(2, 2, 20, 20)]},
        {
            "id": 2,
            "image_id": 2,
            "category_id": 1,
            "segmentation": [rect_polygon(2, 2, 20, 20)],
        },  # missing image
        {"id": 3, "image_id": 1, "category_id": 1, "segmentation": [rect_polygon(30, 2, 55, 20)]},  # outside
        {"id": 4, "image_id": 1, "category_id": 1, "segmentation": uncompressed_rle(tiny)},  # empty
        {"id": 5, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 5, 5]]},  # degenerate (2 vertices)
        {"id": 6, "image_id": 3, "category_id": 1, "segmentation": [rect_polygon(2, 2, 20, 20)]},  # size
        {
            "id": 7,
            "image_id": 1,
            "category_id": 9,
            "segmentation": [rect_polygon(2, 2, 20, 20)],
        },  # unknown cat
    ]
    write_coco(root, images, anns, categories=[{"id": 1, "name": "cell"}])
    return root


def test_data_check_coco_one_line_per_bad_annotation(bad_coco, capsys):
    assert main(["data", "check", str(bad_coco), "--categories", "cell", "dog"]) == 1
    out = capsys.readouterr().out
    errors = [line.strip() for line in out.splitlines() if line.strip().startswith("error:")]
    expected = {
        ("missing image", "gone.png", "annotation 2"),
        ("outside image", "annotations.json", "annotation 3"),
        ("empty object", "annotations.json", "annotation 4"),
        ("degenerate annotation", "annotations.json", "annotation 5"),
        ("size mismatch", "annotations.json", "annotation 6"),
        ("unknown category", "annotations.json", "annotation 7"),
        ("unknown category", "annotations.json", "'dog'"),
    }
    assert len(errors) == len(expected), out
    for kind, file, what in expected:
        assert sum(kind in e and file in e and what in e for e in errors) == 1, (kind, what, out)
    assert "annotation 1" not in out  # the good one
    assert "5 with errors" in out


def test_bad_coco_refused_before_training_and_skip_keeps_listing_errors_fatal(bad_coco):
    ds = open_dataset(bad_coco, image_size=64)
    with pytest.raises(DatasetCheckError, match="annotation 3"):
        validate_dataset(ds)
    clean, report = validate_dataset(ds, skip_bad=True)  # category 9 is an annotation error: dropped with it
    assert clean.ids == ["images/good.png#1"]
    with pytest.raises(DatasetCheckError, match="'dog'"):
        validate_dataset(open_dataset(bad_coco, categories=["cell", "dog"]), skip_bad=True)


def test_data_check_label_size_mismatch_is_one_line(tmp_path, capsys):
    root = label_dataset(tmp_path / "l")
    Image.fromarray(np.ones((20, 40), np.uint8)).save(root / "labels" / "s1.png")
    assert main(["data", "check", str(root)]) == 1
    out = capsys.readouterr().out
    errors = [line for line in out.splitlines() if line.strip().startswith("error:")]
    assert len(errors) == 1 and "s1.png" in errors[0] and "size mismatch" in errors[0], out
    ds = open_dataset(root)
    clean, report = validate_dataset(ds, skip_bad=True)
    assert clean.ids == ["images/s0.png#1", "images/s0.png#2", "images/s0.png#300"]
    with pytest.raises(ValueError, match="label image size 40x20"):
        ds.read_pair(len(ds) - 1)


def test_coco_sample_tensor_equals_mask(tmp_path):
    root = tmp_path / "c"
    two_object_coco(root, n_images=1, size=32)
    ds = open_dataset(root, image_size=32)
    s = ds.sample(0, with_original_mask=True)
    assert torch.equal(s["mask"][0].bool(), s["original_mask"])  # 32 px input: no resize


def test_input_cache_keeps_objects_of_one_image_apart(tmp_path):
    """The input cache keys a sample by its files; objects share theirs, so the object id joins the key."""
    from infosam.data.input_cache import CachedInputDataset, open_input_store

    root = tmp_path / "c"
    two_object_coco(root, n_images=1, size=32)
    ds = open_dataset(root, image_size=32)
    cached = CachedInputDataset(ds, open_input_store(tmp_path / "store", ds))
    assert cached.key(0) != cached.key(1)
    for i in range(2):
        for _ in range(2):  # decoded, then read back
            s = cached.sample(i, with_original_mask=True)
            assert torch.equal(s["mask"], ds[i]["mask"]) and s["object_id"] == ds[i]["object_id"]
