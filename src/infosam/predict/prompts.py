"""What to segment: prompts in an image's original pixels, and the images and objects they go with.

A :class:`Prompt` is given in the ORIGINAL pixel coordinates of the upright image (x right, y down); boxes can also
come from a mask file per image (:func:`mask_prompt`, the mask read as a dataset reads it), a COCO file
(:func:`coco_object_prompts`) or a box list (:func:`box_list_prompts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..data.prompts import tight_box
from ..data.reading import IMAGE_EXTENSIONS, open_image, read_mask

BOX_LIST_COLUMNS = ("image", "x0", "y0", "x1", "y1")


@dataclass(frozen=True)
class Prompt:
    """One prompt for one image, in that image's original pixel coordinates (x right, y down)."""

    box: tuple[float, float, float, float] | None = None
    """(x0, y0, x1, y1) with x0 < x1 and y0 < y1."""
    points: tuple[tuple[float, float], ...] = ()
    """(x, y) points."""
    labels: tuple[int, ...] = field(default=())
    """One label per point: 1 foreground, 0 background."""

    def __post_init__(self) -> None:
        if self.box is None and not self.points:
            raise ValueError("a prompt needs a box and/or points")
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if not (x0 < x1 and y0 < y1):
                raise ValueError(f"box must be x0 y0 x1 y1 with x0 < x1 and y0 < y1; got {self.box}")
        if len(self.labels) != len(self.points):
            raise ValueError(f"{len(self.points)} point(s) need as many labels, got {len(self.labels)}")
        if any(label not in (0, 1) for label in self.labels):
            raise ValueError(
                f"point labels must be 1 (foreground) or 0 (background); got {list(self.labels)}"
            )

    def check_inside(self, width: int, height: int, name: str) -> None:
        """Raise ValueError naming ``name`` when the prompt lies outside a ``width`` x ``height`` image."""
        coords = list(self.points) + ([self.box[:2], self.box[2:]] if self.box is not None else [])
        for x, y in coords:
            if not (0 <= x <= width and 0 <= y <= height):
                raise ValueError(
                    f"prompt coordinate ({x:g}, {y:g}) lies outside {name} ({width}x{height} pixels, W x H)"
                )


def list_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files named in ``inputs`` (files, or folders whose image files are taken in sorted order).

    Raises:
        FileNotFoundError: an input does not exist, or a folder holds no image file.
        ValueError: two images share a stem (their outputs would collide).
    """
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise FileNotFoundError(f"{item} holds no image file ({', '.join(IMAGE_EXTENSIONS)})")
            files.extend(found)
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"image {item} does not exist")
    seen: dict[str, Path] = {}
    for path in files:
        if path.stem in seen:
            raise ValueError(
                f"{seen[path.stem]} and {path} share the stem {path.stem!r}; their outputs would collide"
            )
        seen[path.stem] = path
    return files


def mask_prompt(masks_dir: Path, image_path: Path) -> Prompt:
    """A box prompt from the mask with the same stem as ``image_path`` in ``masks_dir`` (any image suffix): the
    tight box of the mask read and oriented as a dataset reads it (:func:`infosam.data.reading.read_mask`)."""
    candidates = [masks_dir / f"{image_path.stem}{s}" for s in IMAGE_EXTENSIONS]
    found = [p for p in candidates if p.is_file()]
    if not found:
        raise FileNotFoundError(
            f"no mask for {image_path.name} in {masks_dir} (looked for {image_path.stem}.png etc.)"
        )
    image, image_info = open_image(image_path)
    image.close()
    box = tight_box(read_mask(found[0], image_info))
    if box is None:
        raise ValueError(f"mask {found[0]} is empty: no box can be derived from it")
    return Prompt(box=tuple(box.tolist()))


def coco_object_prompts(annotation_file: str | Path, *, include_crowd: bool = False) -> list[tuple]:
    """``(image path, annotation id, box Prompt, COCO image id, category id)`` for every annotation of a COCO file:
    the box is the annotation's ``bbox`` (``x, y, w, h``), or the tight box of its segmentation when it has no
    bbox. Images resolve as for training (:func:`infosam.data.instances.coco_image_dir`)."""
    import json

    from ..data.instances import coco_image_dir, decode_segmentation

    path = Path(annotation_file)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        images = {im["id"]: im for im in data["images"]}
        annotations = data["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a COCO file with 'images' and 'annotations' ({err})") from err
    folder = coco_image_dir(path)
    out = []
    for ann in annotations:
        if ann.get("iscrowd", 0) and not include_crowd:
            continue
        aid = ann.get("id")
        im = images.get(ann.get("image_id"))
        if im is None:
            raise ValueError(f"{path}: annotation {aid}: image_id {ann.get('image_id')} is not listed")
        if ann.get("bbox"):
            x, y, w, h = (float(v) for v in ann["bbox"])
            box = (x, y, x + w, y + h)
        else:
            mask = decode_segmentation(ann["segmentation"], int(im["height"]), int(im["width"]))
            found = tight_box(mask)
            if found is None:
                raise ValueError(f"{path}: annotation {aid}: empty segmentation and no bbox")
            box = tuple(found.tolist())
        try:
            prompt = Prompt(box=box)
        except ValueError as err:
            raise ValueError(f"{path}: annotation {aid}: {err}") from err
        out.append((folder / im["file_name"], int(aid), prompt, im["id"], ann.get("category_id")))
    return out


def box_list_prompts(box_list: str | Path) -> list[tuple]:
    """Prompts of a box list: a CSV with columns ``image`` (path, relative to the CSV's folder), ``x0 y0 x1 y1``
    (original pixels) and optionally ``object_id`` (default: the row's number among its image's rows, from 1),
    ``image_id`` and ``category_id`` (copied into the results JSON)."""
    import csv

    path = Path(box_list)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in BOX_LIST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {missing}; a box list needs {list(BOX_LIST_COLUMNS)}"
            )
        rows = list(reader)
    out, counts = [], {}
    for line, row in enumerate(rows, start=2):
        image = path.parent / row["image"]
        counts[image] = counts.get(image, 0) + 1
        try:
            box = tuple(float(row[c]) for c in BOX_LIST_COLUMNS[1:])
            prompt = Prompt(box=box)
            object_id = int(row["object_id"]) if row.get("object_id") else counts[image]
            category = int(row["category_id"]) if row.get("category_id") else None
        except ValueError as err:
            raise ValueError(f"{path}:{line}: {err}") from err
        image_id = row.get("image_id") or image.name
        image_id = int(image_id) if str(image_id).isdigit() else image_id
        out.append((image, object_id, prompt, image_id, category))
    return out
