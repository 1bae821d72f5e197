"""Dataset formats: the Conv-LoRA CSV benchmark layout, plain image/mask folders, and the two instance formats
(COCO instance JSON, instance-label images; :mod:`infosam.data.instances`), whose samples are single objects.

Layouts recognised by :func:`open_dataset` (``root`` is the folder given):

* **Conv-LoRA CSV** (the paper's benchmark suite): ``root/<split>.csv`` with columns ``image`` and ``label``
  holding paths relative to ``root``. ``split`` is the CSV name (``train.csv``, ``test_Kvasir.csv``) or its stem
  (``train``, ``test_Kvasir``); ``"test"`` also finds the only ``test_*.csv`` when there is no ``test.csv``.
* **Image/mask folders**: ``root/images/`` and ``root/masks/`` whose files pair by stem
  (``images/a.jpg`` + ``masks/a.png``). With ``split=None`` (or ``"all"``) the whole folder is used; a split
  named ``s`` is ``root/s/images`` + ``root/s/masks`` if that folder exists, else a list file ``root/s.txt``
  (one stem per line, ``#`` comments) selecting pairs from ``root/images`` and ``root/masks``.
* **A split file anywhere**: ``split`` may also be the path of an existing ``.txt`` stem list (folder layout) or
  ``.csv`` file (columns ``image`` and ``label`` relative to ``root``, either layout) outside ``root``, e.g. the
  explicit splits an experiment writes into its own folder so that the dataset folder is never written to.

* **COCO instance JSON** and **instance-label images** (``images/`` + ``labels/``): see
  :mod:`infosam.data.instances`. One sample per object, ``id`` ``<image id>#<object id>``.

Every binary sample's ``id`` is the image path relative to ``root`` in POSIX form (stable across machines and
processes; the teacher-embedding cache is keyed by it).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..sam.transforms import SamTransform, make_transform
from .instances import (
    COCO_FILE,
    LABELS_DIR,
    CocoObject,
    LabelObject,
    ListingProblem,
    coco_file,
    list_coco,
    read_labels,
)
from .reading import IMAGE_EXTENSIONS, ImageReadError, read_image, read_mask

CSV_COLUMNS = ("image", "label")

LAYOUT_HELP = (
    "expected either the Conv-LoRA layout (ROOT/<split>.csv with columns 'image' and 'label' holding paths "
    "relative to ROOT) or image/mask folders (ROOT/images/ and ROOT/masks/ with the same file stems, optionally "
    "per split: ROOT/<split>/images + ROOT/<split>/masks, or a stem list ROOT/<split>.txt), a COCO instance "
    "file (ROOT/annotations.json + ROOT/images/) or instance-label images (ROOT/images/ + ROOT/labels/)"
)


class DatasetFormatError(ValueError):
    """A dataset folder whose layout is not one of the supported ones, or a bad split/CSV."""


@dataclass(frozen=True)
class Pair:
    """One image/mask pair as listed by a dataset. A path is ``None`` when a folder lacks the counterpart."""

    id: str
    image_path: Path | None
    mask_path: Path | None
    object: CocoObject | LabelObject | None = None
    """The one object this sample is (instance formats), read from ``mask_path`` (the label image, or the COCO
    file); ``None`` for the binary formats, whose mask file is the sample's mask."""


class SegmentationDataset(Dataset):
    """Image/mask pairs as model inputs, made by ``transform`` (the model's
    :func:`~infosam.sam.transforms.get_transform`; default Meta's SAM transform at ``image_size``, 1024 when
    neither is given). ``ds[i]`` is a dict:

    * ``image``: ``(3, S, S)`` float32, normalised and zero-padded (S = ``image_size``)
    * ``mask``: ``(1, S, S)`` float32 in {0, 1}, resized nearest and zero-padded like the image
    * ``id``: str, image path relative to the dataset root
    * ``original_size``: ``(2,)`` int64 ``(H, W)`` of the upright image
    * ``input_size``: ``(2,)`` int64 ``(h, w)`` after resizing (the valid, unpadded region)
    * ``image_path``, ``mask_path``: str
    * instance formats only: ``image_id`` (str) and ``object_id`` (int), the sample being one object

    ``listing_problems`` (found while listing, e.g. an unknown category name) and ``notes`` (e.g. crowd
    annotations skipped) are reported by :mod:`infosam.data.check` with the per-sample problems.
    """

    def __init__(
        self,
        root: str | Path,
        pairs: list[Pair],
        *,
        image_size: int | None = None,
        split: str | None = None,
        transform: SamTransform | None = None,
        listing_problems: list[ListingProblem] | None = None,
        notes: list[str] | None = None,
    ):
        self.root = Path(root)
        self.pairs = list(pairs)
        self.split = split
        self.transform = _transform(transform, image_size)
        self.listing_problems = list(listing_problems or [])
        self.notes = list(notes or [])

    @property
    def is_instances(self) -> bool:
        """Whether samples are objects (COCO / instance-label images) rather than image/mask pairs."""
        return any(p.object is not None for p in self.pairs)

    @property
    def image_size(self) -> int:
        """Side S of the square model input."""
        return self.transform.image_size

    def __len__(self) -> int:
        return len(self.pairs)

    def __repr__(self) -> str:
        return f"SegmentationDataset(root={str(self.root)!r}, split={self.split!r}, n={len(self)}, image_size={self.image_size})"

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.pairs]

    def subset(self, indices: Iterable[int]) -> SegmentationDataset:
        """The same dataset restricted to ``indices`` (in that order)."""
        return self._remade([self.pairs[i] for i in indices], self.transform)

    def with_transform(self, transform: SamTransform) -> SegmentationDataset:
        """The same pairs made into model inputs by ``transform`` (e.g. a model's own, once it is known)."""
        return self._remade(self.pairs, transform)

    def _remade(self, pairs: list[Pair], transform: SamTransform) -> SegmentationDataset:
        """A dataset of ``pairs`` by ``transform``, with this one's root, split, listing problems and notes."""
        return SegmentationDataset(
            self.root,
            pairs,
            split=self.split,
            transform=transform,
            listing_problems=self.listing_problems,
            notes=self.notes,
        )

    def read_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The upright ``(H, W, 3)`` uint8 image and ``(H, W)`` bool mask at original resolution."""
        pair = self.pairs[index]
        if pair.image_path is None:
            raise FileNotFoundError(f"{self.root}: mask {pair.mask_path} has no image (id {pair.id})")
        if pair.mask_path is None:
            raise FileNotFoundError(f"{self.root}: image {pair.image_path} has no mask (id {pair.id})")
        image, info = read_image(pair.image_path)
        if pair.object is not None:
            return image, pair.object.read_mask(pair.mask_path, image.shape[:2], info)
        mask = read_mask(pair.mask_path, info)
        if mask.shape != image.shape[:2]:
            raise ValueError(
                f"{pair.mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} (WxH) differs from image "
                f"{pair.image_path} size {image.shape[1]}x{image.shape[0]}"
            )
        return image, mask

    def __getitem__(self, index: int) -> dict:
        return self.sample(index)

    def sample(self, index: int, *, with_original_mask: bool = False) -> dict:
        """``ds[index]``; with ``with_original_mask`` also ``"original_mask"``: ``(H, W)`` bool tensor (for metrics
        at original resolution; its size varies, so batches need a collate that keeps it as a list)."""
        image, mask = self.read_pair(index)
        x, (h, w) = self.transform.image(image)
        pair = self.pairs[index]
        extra = {"original_mask": torch.from_numpy(mask)} if with_original_mask else {}
        if pair.object is not None:
            extra.update(image_id=pair.object.image_id, object_id=pair.object.object_id)
        return {
            **extra,
            "image": x,
            "mask": self.transform.mask(mask),
            "id": pair.id,
            "original_size": torch.tensor(image.shape[:2], dtype=torch.int64),
            "input_size": torch.tensor((h, w), dtype=torch.int64),
            "image_path": str(pair.image_path),
            "mask_path": str(pair.mask_path),
        }


def detect_format(root: str | Path) -> str:
    """``"csv"`` (Conv-LoRA), ``"folders"`` (images/ + masks/), ``"coco"`` (``annotations.json`` at the top or per
    split folder) or ``"labels"`` (images/ + labels/); :class:`DatasetFormatError` otherwise.

    A folder with CSV files that have ``image`` and ``label`` columns is a Conv-LoRA folder. Other CSV files (notes,
    a spreadsheet of results) do not make one: a folder with images/ + masks/ (at its root or per split) and only
    such CSV files is read as image/mask folders.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetFormatError(f"{root}: dataset folder not found; {LAYOUT_HELP}")
    csvs = sorted(root.glob("*.csv"))
    if any(_is_split_csv(c) for c in csvs):
        return "csv"
    if folder_splits(root) or ((root / "images").is_dir() and (root / "masks").is_dir()):
        return "folders"
    if (root / COCO_FILE).is_file() or any((d / COCO_FILE).is_file() for d in root.iterdir() if d.is_dir()):
        return "coco"
    if folder_splits(root, LABELS_DIR) or ((root / "images").is_dir() and (root / LABELS_DIR).is_dir()):
        return "labels"
    if csvs:
        return "csv"  # reading its split says which columns are missing
    raise DatasetFormatError(f"{root}: no CSV files and no images/ + masks/ folders; {LAYOUT_HELP}")


def _is_split_csv(path: Path) -> bool:
    """Whether the header of ``path`` names the Conv-LoRA columns ``image`` and ``label``."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return all(c in [h.strip() for h in header] for c in CSV_COLUMNS)


def csv_splits(root: str | Path) -> list[str]:
    """Names of the CSV files in ``root`` that are Conv-LoRA splits (columns ``image`` and ``label``), sorted."""
    return sorted(p.name for p in Path(root).glob("*.csv") if _is_split_csv(p))


def folder_splits(root: str | Path, masks: str = "masks") -> list[str]:
    """Names of the subfolders of ``root`` that hold ``images/`` and ``masks/`` (a split each), sorted."""
    root = Path(root)
    return sorted(d.name for d in root.iterdir() if (d / "images").is_dir() and (d / masks).is_dir())


def _transform(transform: SamTransform | None, image_size: int | None) -> SamTransform:
    if transform is None:
        return make_transform("sam", 1024 if image_size is None else image_size)
    if image_size is not None and image_size != transform.image_size:
        raise ValueError(f"image_size {image_size} differs from the transform's {transform.image_size}")
    return transform


def open_dataset(
    root: str | Path,
    *,
    split: str | None = None,
    image_size: int | None = None,
    transform: SamTransform | None = None,
    categories: list[str] | None = None,
    include_crowd: bool = False,
) -> SegmentationDataset:
    """Open the dataset at ``root`` (layout detected, see the module doc) for ``split``.

    Samples are made by ``transform`` (pass ``get_transform(model.spec)`` of the model they feed); without one,
    Meta's SAM transform at ``image_size`` (default 1024).

    Only lists the pairs (cheap); files are read per sample. Missing counterparts are kept in ``pairs`` with a
    ``None`` path so that :func:`infosam.data.check.check_dataset` can report them all at once.

    Instance formats list one pair per object (label images are read once here to find their ids);
    ``categories`` (names) and ``include_crowd`` filter COCO annotations (ignored by the other formats).
    """
    root = Path(root)
    fmt = detect_format(root)
    transform = _transform(transform, image_size)
    if fmt == "coco":
        try:
            listing = list_coco(
                root, coco_file(root, split), categories=categories, include_crowd=include_crowd
            )
        except (FileNotFoundError, ValueError) as err:
            raise DatasetFormatError(str(err)) from err
        pairs = [
            Pair(id=f"{o.image_id}#{o.object_id}", image_path=path, mask_path=o.annotation_file, object=o)
            for path, o in listing.objects
        ]
        return SegmentationDataset(
            root,
            pairs,
            split=split,
            transform=transform,
            listing_problems=listing.problems,
            notes=listing.notes,
        )
    if fmt == "labels":
        split_file = _split_file(split)
        listed = (
            _folder_pairs(root, root, _read_stem_list(split_file), LABELS_DIR)
            if split_file is not None and split_file.suffix.lower() == ".txt"
            else list_folder_pairs(root, split, LABELS_DIR)
        )
        pairs, notes = _label_objects(listed)
        return SegmentationDataset(root, pairs, split=split, transform=transform, notes=notes)
    split_file = _split_file(split)
    if split_file is not None and split_file.suffix.lower() == ".csv":
        pairs = _read_csv_pairs(root, split_file)
    elif split_file is not None:
        if fmt != "folders":
            raise DatasetFormatError(
                f"{split_file}: a stem list needs an images/ + masks/ dataset, but {root} is a CSV dataset; "
                "give a .csv split file instead"
            )
        pairs = _folder_pairs(root, root, _read_stem_list(split_file))
    else:
        pairs = list_csv_pairs(root, split) if fmt == "csv" else list_folder_pairs(root, split)
    return SegmentationDataset(root, pairs, split=split, transform=transform)


def _label_objects(pairs: list[Pair]) -> tuple[list[Pair], list[str]]:
    """One pair per non-zero id of each label image. A label image that is missing or unreadable stays one pair
    with ``object_id`` ``None``, so that the check reports it; one without objects is counted in the notes."""
    out: list[Pair] = []
    empty = 0
    for pair in pairs:
        ids: list[int] | None = None
        if pair.image_path is not None and pair.mask_path is not None:
            try:
                ids = [int(v) for v in np.unique(read_labels(pair.mask_path)) if v != 0]
            except ImageReadError:
                ids = None
        if ids is None:
            out.append(Pair(pair.id, pair.image_path, pair.mask_path, LabelObject(pair.id, None)))
            continue
        empty += not ids
        out += [Pair(f"{pair.id}#{k}", pair.image_path, pair.mask_path, LabelObject(pair.id, k)) for k in ids]
    notes = [f"{empty} label image(s) without objects (all zero)"] if empty else []
    return out, notes


def resolve_csv(root: Path, split: str | None) -> Path:
    """The CSV file of ``split`` in ``root`` (see the module doc for the names accepted)."""
    available = sorted(p.name for p in root.glob("*.csv"))
    if split is None:
        raise DatasetFormatError(f"{root}: a Conv-LoRA dataset needs a split; choose one of {available}")
    name = split if split.endswith(".csv") else f"{split}.csv"
    if (root / name).is_file():
        return root / name
    if split == "test":
        tests = [n for n in available if n.startswith("test")]
        if len(tests) == 1:
            return root / tests[0]
    also = folder_splits(root)
    hint = (
        f" (the folder also holds the image/mask split folder(s) {also}, but its CSV file(s) with 'image' and "
        "'label' columns make it a Conv-LoRA folder: move them out to read the folders)"
        if also
        else ""
    )
    raise DatasetFormatError(f"{root}: split {split!r} not found; choose one of {available}{hint}")


def _split_file(split: str | None) -> Path | None:
    """``split`` as a split file path (``.txt`` or ``.csv``, containing a folder separator or absolute), when it
    names an existing file; ``None`` for a split name. A path-like split that does not exist is an error."""
    if split is None or not split.lower().endswith((".txt", ".csv")):
        return None
    path = Path(split).expanduser()
    if not (path.is_absolute() or len(path.parts) > 1):
        return None  # a bare name: a split inside the dataset folder
    if not path.is_file():
        raise DatasetFormatError(f"split file not found: {path}")
    return path


def list_csv_pairs(root: Path, split: str | None) -> list[Pair]:
    """Pairs listed by the split's CSV (columns ``image``, ``label``; paths relative to ``root``)."""
    return _read_csv_pairs(root, resolve_csv(root, split))


def _read_csv_pairs(root: Path, csv_path: Path) -> list[Pair]:
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in CSV_COLUMNS if c not in columns]
        if missing:
            raise DatasetFormatError(
                f"{csv_path}: missing column(s) {missing}; found {columns}, expected {list(CSV_COLUMNS)}"
            )
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    pairs = []
    for line, row in enumerate(rows, start=2):
        if not row["image"] or not row["label"]:
            raise DatasetFormatError(f"{csv_path}:{line}: empty 'image' or 'label' entry")
        image_id = Path(row["image"]).as_posix()
        pairs.append(Pair(id=image_id, image_path=root / row["image"], mask_path=root / row["label"]))
    return pairs


def list_folder_pairs(root: Path, split: str | None, masks: str = "masks") -> list[Pair]:
    """Pairs of ``images/`` and ``masks/`` (or ``masks``) matched by stem (see the module doc for splits)."""
    stems: list[str] | None = None
    base = root
    splits = folder_splits(root, masks)
    if split in (None, "all") and splits and not (root / "images").is_dir():
        raise DatasetFormatError(
            f"{root}: no images/ + masks/ at the top; it is split into {splits}: choose one (split / --split)"
        )
    if split not in (None, "all"):
        if (root / split / "images").is_dir() and (root / split / masks).is_dir():
            base = root / split
        elif (root / f"{split}.txt").is_file():
            stems = _read_stem_list(root / f"{split}.txt")
        else:
            choices = sorted(
                [d.name for d in root.iterdir() if (d / "images").is_dir()]
                + [p.stem for p in root.glob("*.txt")]
            )
            raise DatasetFormatError(
                f"{root}: split {split!r} not found (no {split}/images + {split}/{masks}, no {split}.txt); "
                f"available: {choices or ['all']}"
            )
    return _folder_pairs(root, base, stems, masks)


def _folder_pairs(root: Path, base: Path, stems: list[str] | None, mask_dir: str = "masks") -> list[Pair]:
    if not (base / "images").is_dir() or not (base / mask_dir).is_dir():
        raise DatasetFormatError(f"{base}: images/ or {mask_dir}/ missing; {LAYOUT_HELP}")
    images = _files_by_stem(base / "images")
    masks = _files_by_stem(base / mask_dir)
    wanted = stems if stems is not None else sorted(set(images) | set(masks))
    pairs = []
    for stem in wanted:
        image = images.get(stem)
        mask = masks.get(stem)
        if stems is not None and image is None:
            image_id = f"images/{stem}"
        else:
            image_id = (image or mask).relative_to(root).as_posix()
        pairs.append(Pair(id=image_id, image_path=image, mask_path=mask))
    return pairs


def _files_by_stem(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            if p.stem in files:
                raise DatasetFormatError(
                    f"{folder}: two files share the stem {p.stem!r}: {files[p.stem].name}, {p.name}"
                )
            files[p.stem] = p
    return files


def _read_stem_list(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [Path(line).stem for line in lines if line]
