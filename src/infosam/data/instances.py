"""Instance datasets: COCO instance JSON and instance-label images, one sample per object.

Layouts (``root`` is the dataset folder; :func:`infosam.data.formats.open_dataset` detects them):

* **COCO instance JSON**: ``root/annotations.json`` (or ``root/<split>.json``, or ``root/<split>/annotations.json``)
  with ``images`` (``id``, ``file_name``, ``width``, ``height``), ``annotations`` (``id``, ``image_id``,
  ``category_id``, ``segmentation`` as polygons or RLE, ``iscrowd``) and ``categories`` (``id``, ``name``).
  ``file_name`` is relative to the ``images/`` folder next to the JSON file (or to the JSON's folder when there
  is no ``images/``). Masks are decoded by ``pycocotools`` at the JSON's ``width`` x ``height``, which must be
  the image's upright size. Crowd annotations (``iscrowd: 1``) are skipped unless asked (``data.include_crowd``)
  and counted; a category filter (``data.categories``, names) keeps only those categories.
* **Instance-label images**: ``root/images/`` + ``root/labels/`` paired by stem (splits as for images/ + masks/:
  ``root/<split>/images`` + ``root/<split>/labels`` or a stem list ``root/<split>.txt``). A label image is an 8- or
  16-bit grey PNG or TIFF (or a palette PNG, read as indices) of the image's size: 0 is background, each other
  value one object. An image whose label image is all zero has no object (counted, not an error).

Each object is one sample (:class:`~infosam.data.formats.Pair` with an ``object``): its ``id`` is
``<image id>#<object id>`` (image id: the image path relative to ``root``; object id: the COCO annotation id or
the label value), so test prompts, which are seeded by the sample id, differ between objects of one image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .reading import ImageInfo, ImageReadError, load_pixels, open_image, orient_mask

COCO_FILE = "annotations.json"
LABELS_DIR = "labels"
OUTSIDE_TOLERANCE = 1.0
"""A polygon vertex may lie this many pixels outside ``[0, W] x [0, H]`` (tools round outwards); farther is an
error."""


@dataclass(frozen=True)
class ListingProblem:
    """A problem found while listing (before any pixel is read): ``kind``, the file, and why."""

    kind: str
    path: str
    detail: str
    annotation: int | None = None
    """The annotation it is about (left out of the samples, so skipping bad samples gets rid of it); ``None``
    for a problem of the listing as a whole (an unknown category name), which nothing skipped removes."""


@dataclass(frozen=True)
class CocoObject:
    """One COCO annotation: where it comes from and its segmentation (polygons or RLE)."""

    image_id: str
    object_id: int
    annotation_file: Path
    width: int
    height: int
    segmentation: Any = field(compare=False, hash=False, repr=False)
    category: str = ""

    @property
    def where(self) -> str:
        return f"annotation {self.object_id}"

    def problems(self, image_size: tuple[int, int] | None) -> list[tuple[str, str]]:
        """``(kind, detail)`` of what is wrong with this annotation for an image of upright ``(W, H)`` size."""
        out: list[tuple[str, str]] = []
        w, h = self.width, self.height
        if image_size is not None and image_size != (w, h):
            out.append(
                (
                    "size mismatch",
                    f"the JSON gives {w}x{h} (WxH) but the image file is {image_size[0]}x{image_size[1]}",
                )
            )
            return out
        seg = self.segmentation
        if isinstance(seg, list):
            if not seg:
                return [("degenerate annotation", "empty polygon list")]
            for poly in seg:
                if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                    n = len(poly) if isinstance(poly, list) else 0
                    return [
                        ("degenerate annotation", f"a polygon needs >= 3 (x, y) vertices; got {n} numbers")
                    ]
            xy = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in seg])
            bad = (xy[:, 0] < -OUTSIDE_TOLERANCE) | (xy[:, 0] > w + OUTSIDE_TOLERANCE)
            bad |= (xy[:, 1] < -OUTSIDE_TOLERANCE) | (xy[:, 1] > h + OUTSIDE_TOLERANCE)
            if bad.any():
                x, y = xy[np.flatnonzero(bad)[0]]
                return [("outside image", f"polygon vertex ({x:g}, {y:g}) lies outside the {w}x{h} image")]
        elif isinstance(seg, dict):
            size = seg.get("size")
            if size is None or "counts" not in seg:
                return [("degenerate annotation", "an RLE needs 'size' and 'counts'")]
            if list(size) != [h, w]:
                return [
                    (
                        "degenerate annotation",
                        f"RLE size {list(size)} (HxW) differs from the image's [{h}, {w}]",
                    )
                ]
        else:
            return [
                ("degenerate annotation", f"segmentation is neither polygons nor RLE ({type(seg).__name__})")
            ]
        try:
            mask = self.decode()
        except Exception as err:  # pycocotools raises bare exceptions on malformed RLE
            return [("degenerate annotation", f"cannot decode the segmentation ({err})")]
        if not mask.any():
            out.append(("empty object", "the segmentation covers no pixel"))
        return out

    def decode(self) -> np.ndarray:
        """``(H, W)`` bool mask of the annotation."""
        return decode_segmentation(self.segmentation, self.height, self.width)

    def read_mask(self, mask_path: Path, image_shape: tuple[int, int], image_info: ImageInfo) -> np.ndarray:
        if image_shape != (self.height, self.width):
            raise ValueError(
                f"{self.annotation_file}: {self.where}: the JSON gives {self.width}x{self.height} (WxH) but "
                f"image {self.image_id} is {image_shape[1]}x{image_shape[0]}"
            )
        return self.decode()


def decode_segmentation(seg: Any, height: int, width: int) -> np.ndarray:
    """``(H, W)`` bool mask of a COCO segmentation: polygons (merged), uncompressed or compressed RLE."""
    import warnings

    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():  # pycocotools' __array__ predates NumPy 2's copy keyword
        warnings.simplefilter("ignore", DeprecationWarning)
        return _decode(mask_utils, seg, height, width)


def _decode(mask_utils, seg: Any, height: int, width: int) -> np.ndarray:
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg.get("counts"), list):
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        counts = seg["counts"]
        rle = {"size": list(seg["size"]), "counts": counts.encode() if isinstance(counts, str) else counts}
    return mask_utils.decode(rle).astype(bool)


def encode_rle(mask: np.ndarray) -> dict:
    """COCO compressed RLE of an ``(H, W)`` bool mask, JSON-ready (``counts`` as text)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


@dataclass(frozen=True)
class LabelObject:
    """One object of an instance-label image: the pixels equal to ``object_id`` (``None``: the label file could
    not be listed, so its objects are unknown; reading it raises the reader's error)."""

    image_id: str
    object_id: int | None

    @property
    def where(self) -> str:
        return f"object {self.object_id}"

    def read_mask(self, mask_path: Path, image_shape: tuple[int, int], image_info: ImageInfo) -> np.ndarray:
        labels = read_labels(mask_path, image_info)
        if labels.shape != tuple(image_shape):
            raise ValueError(
                f"{mask_path}: label image size {labels.shape[1]}x{labels.shape[0]} (WxH) differs from image "
                f"{self.image_id} size {image_shape[1]}x{image_shape[0]}"
            )
        return labels == self.object_id


def read_labels(path: Path, image_info: ImageInfo | None = None) -> np.ndarray:
    """``(H, W)`` integer ids of an instance-label image (oriented like a mask, :mod:`infosam.data.reading`)."""
    img, info = open_image(path)
    load_pixels(img, path)
    if img.mode not in ("L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N", "1"):
        raise ImageReadError(
            f"{path}: a label image must be 8- or 16-bit grey (or palette indices), got mode {img.mode}"
        )
    img = orient_mask(img, info, image_info or ImageInfo(info.stored_size, 1, info.mode))
    return np.asarray(img).astype(np.int64)


# --------------------------------------------------------------------------------------------- COCO listing


@dataclass
class CocoListing:
    """What :func:`list_coco` found: the objects (image path, object), problems found while listing, notes."""

    objects: list[tuple[Path, CocoObject]]
    problems: list[ListingProblem]
    notes: list[str]


def coco_file(root: Path, split: str | None) -> Path:
    """The annotation file of ``split`` (see the module doc); FileNotFoundError naming what was tried."""
    if split not in (None, "all"):
        path = Path(split).expanduser()
        if path.suffix.lower() == ".json" and (path.is_absolute() or len(path.parts) > 1):
            if not path.is_file():
                raise FileNotFoundError(f"split file not found: {path}")
            return path
        tried = [root / split / COCO_FILE, root / f"{split}.json", root / split]
        for t in tried:
            if t.is_file():
                return t
        found = sorted(p.name for p in root.glob("*.json")) + sorted(
            d.name for d in root.iterdir() if (d / COCO_FILE).is_file()
        )
        raise FileNotFoundError(
            f"{root}: split {split!r} not found (no {split}/{COCO_FILE}, no {split}.json); available: {found}"
        )
    if (root / COCO_FILE).is_file():
        return root / COCO_FILE
    splits = sorted(d.name for d in root.iterdir() if (d / COCO_FILE).is_file())
    raise FileNotFoundError(
        f"{root}: no {COCO_FILE} at the top; it is split into {splits}: choose one (--split)"
    )


def coco_image_dir(annotation_file: Path) -> Path:
    """Folder that ``file_name`` is relative to: ``images/`` next to the JSON, else the JSON's folder."""
    folder = annotation_file.parent / "images"
    return folder if folder.is_dir() else annotation_file.parent


def list_coco(
    root: Path,
    annotation_file: Path,
    *,
    categories: list[str] | None = None,
    include_crowd: bool = False,
) -> CocoListing:
    """Every object of ``annotation_file`` (sorted by image id then annotation id), with listing problems:
    ``unknown category`` (a filter name not among the file's categories, or an annotation's ``category_id`` not
    listed), ``missing image`` (an annotation's ``image_id`` not among the file's images), and notes (crowd
    annotations skipped)."""
    name = str(annotation_file)
    try:
        data = json.loads(annotation_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{annotation_file}: not a readable COCO JSON file ({err})") from err
    if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations", "categories")):
        raise ValueError(
            f"{annotation_file}: a COCO instance file needs 'images', 'annotations' and 'categories'"
        )
    problems: list[ListingProblem] = []
    notes: list[str] = []
    names = {c["id"]: str(c.get("name", c["id"])) for c in data["categories"]}
    wanted: set | None = None
    if categories is not None:
        known = set(names.values())
        for c in categories:
            if c not in known:
                problems.append(
                    ListingProblem(
                        "unknown category", name, f"category {c!r} is not among the file's {sorted(known)}"
                    )
                )
        wanted = {i for i, n in names.items() if n in set(categories)}
    image_dir = coco_image_dir(annotation_file)
    images = {im["id"]: im for im in data["images"]}
    objects = []
    crowd = 0
    for ann in data["annotations"]:
        aid = ann.get("id")
        if ann.get("category_id") not in names:
            problems.append(
                ListingProblem(
                    "unknown category",
                    name,
                    f"annotation {aid}: category_id {ann.get('category_id')} is not listed",
                    aid,
                )
            )
            continue
        if wanted is not None and ann["category_id"] not in wanted:
            continue
        if ann.get("iscrowd", 0) and not include_crowd:
            crowd += 1
            continue
        im = images.get(ann.get("image_id"))
        if im is None:
            problems.append(
                ListingProblem(
                    "missing image",
                    name,
                    f"annotation {aid}: image_id {ann.get('image_id')} is not listed",
                    aid,
                )
            )
            continue
        path = image_dir / im["file_name"]
        image_id = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix()
        obj = CocoObject(
            image_id=image_id,
            object_id=int(aid),
            annotation_file=annotation_file,
            width=int(im["width"]),
            height=int(im["height"]),
            segmentation=ann.get("segmentation"),
            category=names[ann["category_id"]],
        )
        objects.append((path, obj))
    if crowd:
        notes.append(f"{crowd} crowd annotation(s) skipped (iscrowd=1; data.include_crowd: true uses them)")
    objects.sort(key=lambda o: (o[1].image_id, o[1].object_id))
    return CocoListing(objects, problems, notes)
