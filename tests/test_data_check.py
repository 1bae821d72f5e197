"""``infosam data check`` / validate_dataset: every bad input is reported with its file, good odd inputs pass."""

import io
import shutil

import numpy as np
import pytest
from PIL import Image

from infosam.cli import data as data_cli
from infosam.data.check import (
    DatasetCheckError,
    check_dataset,
    in_between_fraction,
    level_histogram,
    validate_dataset,
)
from infosam.data.formats import open_dataset


def main(argv):
    """``infosam data ...`` through this module's parser only (the full CLI imports every subcommand)."""
    import argparse

    parser = argparse.ArgumentParser(prog="infosam")
    data_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def rgb(h=30, w=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def rect_mask(h=30, w=40, value=255):
    m = np.zeros((h, w), np.uint8)
    m[5:20, 8:30] = value
    return m


def save(array, path, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)


def truncated_jpeg(path):
    buf = io.BytesIO()
    Image.fromarray(rgb(64, 64)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


@pytest.fixture
def messy(tmp_path):
    """A folder dataset with one pair per bad kind and the good-but-odd kinds that must pass."""
    root = tmp_path / "messy"
    img, msk = root / "images", root / "masks"
    # Good, if unusual.
    save(rgb(), img / "ok.png")
    save(rect_mask(), msk / "ok.png")
    save(np.dstack([rgb(), np.full((30, 40), 9, np.uint8)]), img / "rgba.png")
    save(rect_mask(value=1), msk / "rgba.png")  # 0/1 mask
    save((rgb()[..., 0].astype(np.uint16) * 257), img / "gray16.png")
    save(rect_mask(), msk / "gray16.jpg", quality=75)  # JPEG mask with compression noise
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40x30, shown 30x40
    Image.fromarray(rgb()).save(img / "rotated.jpg", exif=exif.tobytes())
    save(rect_mask(), msk / "rotated.png")  # stored frame, no EXIF: turned with the image
    # Bad.
    truncated_jpeg(img / "truncated.jpg")
    save(rect_mask(64, 64), msk / "truncated.png")
    save(rgb(), img / "mismatch.png")
    save(rect_mask(31, 40), msk / "mismatch.png")
    save(rgb(), img / "empty.png")
    save(np.zeros((30, 40), np.uint8), msk / "empty.png")
    save(rgb(), img / "photo.png")
    save(rgb(seed=1)[..., 1], msk / "photo.png")
    save(rgb(), img / "nomask.png")
    save(rect_mask(), msk / "noimage.png")
    (msk / "garbage.png").write_text("not a png")
    save(rgb(), img / "garbage.png")
    return root


EXPECTED = {
    ("unreadable image", "images/truncated.jpg"),
    ("size mismatch", "masks/mismatch.png"),
    ("empty mask", "masks/empty.png"),
    ("not a two-level mask", "masks/photo.png"),
    ("missing mask", "nomask"),
    ("missing image", "noimage"),
    ("unreadable mask", "masks/garbage.png"),
}


def test_check_reports_every_problem_with_its_file(messy):
    report = check_dataset(messy, workers=2)
    assert report.n_pairs == 11
    found = {(p.kind, p.path) for p in report.errors}
    for kind, name in EXPECTED:
        assert any(k == kind and name in path for k, path in found), (kind, name, found)
    assert len(report.errors) == len(EXPECTED), report.format()
    assert report.n_valid == 4 and not report.warnings
    text = report.format()
    assert "11 pairs checked" in text and "4 valid, 7 with errors" in text
    assert "1 x error: empty mask" in text and "masks/photo.png" in text


def test_good_odd_pairs_load(messy):
    ds = open_dataset(messy, image_size=64)
    good, report = validate_dataset(ds, skip_bad=True, workers=1)
    assert sorted(good.ids) == ["images/gray16.png", "images/ok.png", "images/rgba.png", "images/rotated.jpg"]
    assert len(report.bad_indices) == 7
    for i in range(len(good)):
        s = good[i]
        assert s["image"].shape == (3, 64, 64) and s["mask"].sum() > 0
    rotated = good[good.ids.index("images/rotated.jpg")]
    assert rotated["original_size"].tolist() == [40, 30]


def test_validate_refuses_bad_dataset_naming_files(messy):
    ds = open_dataset(messy, image_size=64)
    with pytest.raises(DatasetCheckError) as err:
        validate_dataset(ds, workers=1)
    msg = str(err.value)
    assert "skip_bad" in msg and "truncated.jpg" in msg and "photo.png" in msg and "4 clean pairs" in msg


def test_cli_data_check_exit_code_and_output(messy, capsys, tmp_path):
    assert main(["data", "check", str(messy)]) == 1
    out = capsys.readouterr().out
    assert "7 with errors" in out and "images/truncated.jpg" in out and "masks/garbage.png" in out
    clean = tmp_path / "clean"
    save(rgb(), clean / "images" / "a.png")
    save(rect_mask(), clean / "masks" / "a.png")
    assert main(["data", "check", str(clean)]) == 0
    assert "1 valid, 0 with errors" in capsys.readouterr().out


def test_two_level_rule():
    rng = np.random.default_rng(0)
    mask = np.zeros((200, 200), np.uint8)
    mask[:, ::20] = 255  # thin lines (road-like), 5 % foreground
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, "JPEG", quality=60)
    noisy = np.asarray(Image.open(buf))
    assert in_between_fraction(level_histogram(noisy)) < 0.10
    photo = rng.integers(0, 256, (200, 200), dtype=np.uint8)
    assert in_between_fraction(level_histogram(photo)) > 0.4
    assert in_between_fraction(level_histogram(np.zeros((5, 5), np.uint8))) == 0.0


def test_kvasir_subset_check_cli(kvasir_dir, tmp_path, capsys):
    ds = open_dataset(kvasir_dir)
    pairs = ds.pairs[::20]  # 50 pairs, listed by absolute paths in a Conv-LoRA CSV
    rows = "".join(f"{p.image_path},{p.mask_path}\n" for p in pairs)
    (tmp_path / "test.csv").write_text("image,label\n" + rows)
    assert main(["data", "check", str(tmp_path), "--split", "test.csv"]) == 0
    assert "50 pairs checked" in (out := capsys.readouterr().out) and "50 valid, 0 with errors" in out


def test_kvasir_copy_with_three_corrupted_files(kvasir_dir, tmp_path):
    ds = open_dataset(kvasir_dir)
    root = tmp_path / "kv"
    for p in ds.pairs[:10]:
        for src, sub in ((p.image_path, "images"), (p.mask_path, "masks")):
            (root / sub).mkdir(parents=True, exist_ok=True)
            shutil.copy(src, root / sub / src.name)
    names = [p.image_path.stem for p in ds.pairs[:10]]
    image = root / "images" / f"{names[1]}.jpg"
    image.write_bytes(image.read_bytes()[:5000])  # truncated
    mask = root / "masks" / f"{names[4]}.png"
    Image.open(mask).resize((50, 50)).save(mask)  # wrong size
    photo = root / "masks" / f"{names[7]}.png"
    Image.open(root / "images" / f"{names[7]}.jpg").convert("L").save(photo)  # photo as mask
    report = check_dataset(root)
    bad = {(p.kind, p.path.split("/")[-1]) for p in report.errors}
    assert bad == {
        ("unreadable image", f"{names[1]}.jpg"),
        ("size mismatch", f"{names[4]}.png"),
        ("not a two-level mask", f"{names[7]}.png"),
    }
    assert report.n_valid == 7


# --------------------------------------------------------------------------------------------- split by split


def _conv_lora(root, splits):
    """A Conv-LoRA folder: images/ + masks/ and one CSV per split listing its stems."""
    root.mkdir(parents=True, exist_ok=True)
    for stems in splits.values():
        for stem in stems:
            save(rgb(), root / "images" / f"{stem}.png")
            save(rect_mask(), root / "masks" / f"{stem}.png")
    for name, stems in splits.items():
        rows = "".join(f"images/{s}.png,masks/{s}.png\n" for s in stems)
        (root / name).write_text("image,label\n" + rows)
    return root


def test_conv_lora_folder_is_checked_split_by_split_without_split(tmp_path, capsys):
    root = _conv_lora(tmp_path / "polyp", {"train.csv": ["a", "b"], "test_Kvasir.csv": ["c"]})
    assert main(["data", "check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "(split test_Kvasir.csv): 1 pairs" in out and "(split train.csv): 2 pairs" in out
    assert "2 splits checked: all valid" in out
    (root / "images" / "c.png").write_bytes(b"broken")
    assert main(["data", "check", str(root)]) == 1
    assert "errors in test_Kvasir.csv" in capsys.readouterr().out


def test_a_folder_with_one_csv_needs_no_split(tmp_path, capsys):
    root = _conv_lora(tmp_path / "one", {"test_only.csv": ["a"]})
    assert main(["data", "check", str(root)]) == 0
    assert "(split test_only.csv): 1 pairs checked" in capsys.readouterr().out


def test_zero_pairs_is_an_error(tmp_path, capsys):
    header_only = _conv_lora(tmp_path / "h", {"train.csv": []})
    assert main(["data", "check", str(header_only)]) == 1
    assert "no image/mask pairs" in capsys.readouterr().out
    empty = tmp_path / "e"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    assert main(["data", "check", str(empty)]) == 1
    assert "no image/mask pairs" in capsys.readouterr().out
    with pytest.raises(DatasetCheckError, match="no image/mask pairs"):
        validate_dataset(open_dataset(empty), skip_bad=True)


def _split_folders(root):
    for split, stem in (("train", "a"), ("test", "b")):
        save(rgb(), root / split / "images" / f"{stem}.png")
        save(rect_mask(), root / split / "masks" / f"{stem}.png")
    return root


def test_split_folders_with_a_stray_csv_are_read_as_folders(tmp_path, capsys):
    root = _split_folders(tmp_path / "plain")
    (root / "results.csv").write_text("epoch,IoU\n1,0.5\n")  # notes, not a Conv-LoRA split
    assert open_dataset(root, split="train").ids == ["train/images/a.png"]
    assert main(["data", "check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "(split test): 1 pairs" in out and "(split train): 1 pairs" in out
    with pytest.raises(Exception, match=r"split into \['test', 'train'\]"):
        open_dataset(root)


def test_split_folders_beside_a_real_split_csv_are_explained(tmp_path):
    root = _split_folders(tmp_path / "mixed")
    (root / "extra.csv").write_text("image,label\ntrain/images/a.png,train/masks/a.png\n")
    with pytest.raises(Exception, match=r"also holds the image/mask split folder\(s\) \['test', 'train'\]"):
        open_dataset(root, split="train")
