"""Dataset formats and the reading rules: layouts, binarisation, EXIF orientation, odd image modes, real data."""

import io
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from infosam.data.formats import DatasetFormatError, open_dataset
from infosam.data.prompts import tight_box
from infosam.data.reading import ImageReadError, read_image, read_mask


def make_pair(root, stem, *, size=(40, 30), box=(5, 5, 20, 15), ext=".png", sub=""):
    """Write images/<stem>.png (random RGB) and masks/<stem><ext> (0/255 rectangle) under root/sub."""
    w, h = size
    rng = np.random.default_rng(abs(hash(stem)) % 2**32)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), dtype=np.uint8)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 255
    base = root / sub if sub else root
    (base / "images").mkdir(parents=True, exist_ok=True)
    (base / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(base / "images" / f"{stem}.png")
    Image.fromarray(mask).save(base / "masks" / f"{stem}{ext}")
    return image, mask > 0


def with_orientation(img: Image.Image, path, orientation: int, fmt="JPEG"):
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, format=fmt, exif=exif.tobytes(), quality=95)


def test_folder_layout_sample_dict(tmp_path):
    image, mask = make_pair(tmp_path, "a")
    make_pair(tmp_path, "b", size=(30, 50))
    ds = open_dataset(tmp_path, image_size=64)
    assert len(ds) == 2 and ds.ids == ["images/a.png", "images/b.png"]
    s = ds[0]
    assert s["image"].shape == (3, 64, 64) and s["mask"].shape == (1, 64, 64)
    assert s["original_size"].tolist() == [30, 40] and s["input_size"].tolist() == [48, 64]
    assert s["id"] == "images/a.png" and s["mask_path"].endswith("masks/a.png")
    assert s["mask"].sum() > 0 and set(s["mask"].unique().tolist()) == {0.0, 1.0}
    # Default collate works (all tensors have fixed shapes).
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 64, 64) and batch["original_size"].shape == (2, 2)


def test_folder_splits_by_subfolder_and_list(tmp_path):
    make_pair(tmp_path, "a", sub="train")
    make_pair(tmp_path, "b", sub="test")
    assert open_dataset(tmp_path, split="test").ids == ["test/images/b.png"]
    flat = tmp_path / "flat"
    for stem in "xyz":
        make_pair(flat, stem)
    (flat / "val.txt").write_text("# held out\nz\nx.png\n")
    assert open_dataset(flat, split="val").ids == ["images/z.png", "images/x.png"]
    with pytest.raises(DatasetFormatError, match="split 'nope' not found"):
        open_dataset(flat, split="nope")


def test_csv_layout(tmp_path):
    make_pair(tmp_path, "a")
    make_pair(tmp_path, "b")
    (tmp_path / "train.csv").write_text("image,label\nimages/a.png,masks/a.png\n")
    (tmp_path / "test_Kvasir.csv").write_text("image,label\nimages/b.png,masks/b.png\n")
    assert open_dataset(tmp_path, split="train.csv").ids == ["images/a.png"]
    assert open_dataset(tmp_path, split="train").ids == ["images/a.png"]
    assert open_dataset(tmp_path, split="test").ids == ["images/b.png"]  # the only test_*.csv
    with pytest.raises(DatasetFormatError, match=r"choose one of \['test_Kvasir.csv', 'train.csv'\]"):
        open_dataset(tmp_path, split="val")
    with pytest.raises(DatasetFormatError, match="needs a split"):
        open_dataset(tmp_path)
    (tmp_path / "bad.csv").write_text("img,mask\na,b\n")
    with pytest.raises(DatasetFormatError, match=r"bad.csv: missing column\(s\) \['image', 'label'\]"):
        open_dataset(tmp_path, split="bad")


def test_unknown_layout_names_path_and_expected_layout(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DatasetFormatError) as err:
        open_dataset(tmp_path)
    assert (
        str(tmp_path) in str(err.value)
        and "images/" in str(err.value)
        and "'image' and 'label'" in str(err.value)
    )
    with pytest.raises(DatasetFormatError, match="not found"):
        open_dataset(tmp_path / "missing")


@pytest.mark.parametrize("levels", [(0, 255), (0, 1)])
def test_mask_binarisation_0_255_and_0_1(tmp_path, levels):
    m = np.zeros((10, 12), dtype=np.uint8)
    m[2:5, 3:9] = levels[1]
    Image.fromarray(m).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png").sum() == 18


def test_jpeg_and_rgb_and_16bit_masks(tmp_path):
    m = np.zeros((32, 32), dtype=np.uint8)
    m[8:24, 8:24] = 255
    Image.fromarray(m).save(tmp_path / "m.jpg", quality=70)
    Image.fromarray(np.stack([m] * 3, axis=2)).save(tmp_path / "rgb.png")
    Image.fromarray(m.astype(np.uint16) * 257).save(tmp_path / "m16.png")
    for name in ("m.jpg", "rgb.png", "m16.png"):
        np.testing.assert_array_equal(read_mask(tmp_path / name), m > 0, err_msg=name)


def test_rgba_gray_and_16bit_images_become_rgb_uint8(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(np.dstack([rgb, np.full((20, 30), 7, np.uint8)]), "RGBA").save(tmp_path / "rgba.png")
    out, _ = read_image(tmp_path / "rgba.png")
    np.testing.assert_array_equal(out, rgb)  # alpha dropped
    gray16 = (np.arange(600, dtype=np.uint16).reshape(20, 30) * 100).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    out, _ = read_image(tmp_path / "g16.png")
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3)
    np.testing.assert_array_equal(out[..., 0], np.rint(gray16.astype(float) * 255 / 65535).astype(np.uint8))
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g8.png")
    out, _ = read_image(tmp_path / "g8.png")
    np.testing.assert_array_equal(out, np.repeat(rgb[..., :1], 3, axis=2))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_image_and_its_mask_stay_aligned(tmp_path, orientation):
    # Stored pixels: bright block in the top-left corner of a 40x24 (WxH) image; the mask marks that block.
    stored = np.zeros((24, 40, 3), dtype=np.uint8)
    stored[:8, :10] = 255
    mask = np.zeros((24, 40), dtype=np.uint8)
    mask[:8, :10] = 255
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with_orientation(Image.fromarray(stored), tmp_path / "images" / "a.jpg", orientation)
    Image.fromarray(mask).save(tmp_path / "masks" / "a.png")  # no EXIF: drawn on the stored pixels
    from PIL import ImageOps

    upright = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "images" / "a.jpg")).convert("RGB"))
    ds = open_dataset(tmp_path, image_size=64)
    image, m = ds.read_pair(0)
    np.testing.assert_array_equal(image, upright)
    assert m.shape == image.shape[:2]
    assert image[m].min() > 200 and image[~m].max() < 60  # the mask still covers the bright block
    if orientation in (6, 8):
        # A mask already saved upright (its size is the upright size) is left alone.
        Image.fromarray((upright[..., 0] > 128).astype(np.uint8) * 255).save(tmp_path / "masks" / "a.png")
        image, m = ds.read_pair(0)
        assert image[m].min() > 200 and image[~m].max() < 60


def test_reading_errors_name_the_file(tmp_path):
    with pytest.raises(ImageReadError, match="nope.png: file not found"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ImageReadError, match="text.png: not a readable image"):
        read_image(tmp_path / "text.png")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageReadError, match="cut.jpg: unreadable or truncated"):
        read_image(tmp_path / "cut.jpg")


def test_size_mismatch_and_missing_mask_name_the_files(tmp_path):
    make_pair(tmp_path, "a")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "masks" / "a.png")
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "images" / "lonely.png")
    ds = open_dataset(tmp_path, image_size=64)
    with pytest.raises(
        ValueError, match=r"a.png: mask size 10x10 \(WxH\) differs from image .*a.png size 40x30"
    ):
        ds[0]
    with pytest.raises(FileNotFoundError, match="lonely.png has no mask"):
        ds[1]


def test_real_kvasir_samples(kvasir_dir, tmp_path):
    ds = open_dataset(kvasir_dir, image_size=1024)
    assert len(ds) == 1000
    for i in (0, 500):
        s = ds[i]
        h, w = s["original_size"].tolist()
        assert s["image"].shape == (3, 1024, 1024) and s["mask"].shape == (1, 1024, 1024)
        assert max(s["input_size"].tolist()) == 1024 and s["mask"].sum() > 0
        image, mask = ds.read_pair(i)
        assert image.shape == (h, w, 3) and mask.shape == (h, w) and image.dtype == np.uint8
        box = tight_box(s["mask"][0])
        ys, xs = torch.nonzero(s["mask"][0], as_tuple=True)
        assert box[0] <= xs.min() and box[2] >= xs.max() and box[1] <= ys.min() and box[3] >= ys.max()
    # A Conv-LoRA style CSV over a few copied pairs reads the same samples.
    for p in ds.pairs[:3]:
        for src, sub in ((p.image_path, "images"), (p.mask_path, "masks")):
            (tmp_path / sub).mkdir(exist_ok=True)
            shutil.copy(src, tmp_path / sub / src.name)
    rows = "".join(f"images/{p.image_path.name},masks/{p.mask_path.name}\n" for p in ds.pairs[:3])
    (tmp_path / "test_Kvasir.csv").write_text("image,label\n" + rows)
    csv_ds = open_dataset(tmp_path, split="test_Kvasir.csv", image_size=1024)
    assert csv_ds.ids == ds.ids[:3]
    torch.testing.assert_close(csv_ds[0]["mask"], ds[0]["mask"])


def test_sample_with_original_mask(tmp_path):
    _, mask = make_pair(tmp_path, "a")
    s = open_dataset(tmp_path, image_size=64).sample(0, with_original_mask=True)
    assert s["original_mask"].dtype == torch.bool and torch.equal(s["original_mask"], torch.from_numpy(mask))
