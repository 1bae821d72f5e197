"""Checking every image/mask pair of a dataset at once, before anything trains on it.

Problems found (all reported together, each naming its files):

* errors: ``missing image``, ``missing mask``, ``unreadable image`` (not an image, truncated, corrupt),
  ``unreadable mask``, ``size mismatch`` (mask size differs from the image's upright size, see
  :mod:`infosam.data.reading` for the orientation rule), ``empty mask`` (no foreground after binarisation),
  ``not a two-level mask``.
* warnings: ``full mask`` (foreground everywhere).
* instance formats (one sample per object, :mod:`infosam.data.instances`), one line per bad annotation naming
  the file and the annotation (or label) id: ``missing image``, ``unreadable image``, ``size mismatch`` (the
  JSON's width/height, or the label image's size, differs from the image's upright size), ``outside image`` (a
  polygon vertex more than 1 px outside the image), ``degenerate annotation`` (a polygon with under 3 vertices,
  an RLE of another size, a segmentation that does not decode), ``empty object`` (no pixel), ``unknown category``
  (a category filter name the file lacks, or an annotation whose category is not listed), ``missing labels`` /
  ``unreadable labels``. Each image is decoded once however many objects it holds. Notes (crowd annotations
  skipped, label images without objects) are printed under the summary line.

**Two-level test.** Let ``lo`` and ``hi`` be the darkest and brightest grey levels of the mask and ``R = hi - lo``.
Pixels farther than ``R / 4`` from both ``lo`` and ``hi`` (the middle half of the range) are "in between". A
mask is two-level when at most ``MAX_IN_BETWEEN`` (10 %) of its pixels are in between: JPEG ringing and
anti-aliased edges touch only pixels along the boundary (well under 10 %, even for thin roads), while a photo
given as a mask has most of its pixels in between.

Speed: pairs are checked in a thread pool (PIL decodes outside the GIL); JPEG images are decoded at reduced
scale (``Image.draft``), which still reads the whole stream, so truncation is still detected.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .formats import Pair, SegmentationDataset, open_dataset
from .reading import ImageInfo, ImageReadError, load_pixels, open_image, orient_mask, to_gray

logger = logging.getLogger(__name__)

MAX_IN_BETWEEN = 0.10


class DatasetCheckError(ValueError):
    """A dataset with errors, refused before training; the message lists every problem."""


@dataclass(frozen=True)
class Problem:
    """One problem of one pair: ``kind`` (see the module doc), ``severity`` ("error"/"warning"), the file, why."""

    index: int
    id: str
    kind: str
    severity: str
    path: str
    detail: str
    indices: tuple[int, ...] = ()
    """All samples this problem makes bad when it is about a file several objects share (a label image), else
    empty (just ``index``). Index -1: a problem of the listing (e.g. an unknown category name), fatal always;
    -2: an annotation left out while listing (e.g. its category is not listed), so skipping bad samples is
    enough."""

    def __str__(self) -> str:
        return f"{self.severity}: {self.kind}: {self.path}: {self.detail}"


@dataclass
class CheckReport:
    """Result of :func:`check_pairs`: every problem found, the number of pairs and the time taken."""

    root: str
    split: str | None
    n_pairs: int
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    unit: str = "pairs"
    """What a sample is: "pairs" (image/mask) or "objects" (instance formats)."""

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def bad_indices(self) -> list[int]:
        """Indices (into the dataset's pairs) of pairs with at least one error."""
        return sorted({i for p in self.errors for i in (p.indices or (p.index,)) if i >= 0})

    @property
    def n_valid(self) -> int:
        return self.n_pairs - len(self.bad_indices)

    @property
    def ok(self) -> bool:
        """No error and at least one pair (a header-only CSV or empty folders are an error too)."""
        return not self.errors and self.n_pairs > 0

    @property
    def listing_errors(self) -> list[Problem]:
        """Errors of the listing itself (index -1): no sample can be dropped to get rid of them."""
        return [p for p in self.errors if p.index == -1]

    def counts(self) -> Counter:
        """Number of problems per ``(severity, kind)``."""
        return Counter((p.severity, p.kind) for p in self.problems)

    def format(self, *, limit: int | None = None) -> str:
        """Human-readable report: a summary line, counts per kind, then each problem (at most ``limit``)."""
        where = self.root + (f" (split {self.split})" if self.split else "")
        lines = [
            f"{where}: {self.n_pairs} {self.unit} checked in {self.seconds:.1f} s: {self.n_valid} valid, "
            f"{len(self.bad_indices)} with errors, {len(self.warnings)} warning(s)"
        ]
        lines += [f"  note: {n}" for n in self.notes]
        if self.n_pairs == 0:
            what = "objects" if self.unit == "objects" else "image/mask pairs"
            lines.append(f"  error: no {what} (empty folders, or a CSV with a header and no rows)")
        for (severity, kind), n in sorted(self.counts().items()):
            lines.append(f"  {n:6d} x {severity}: {kind}")
        shown = self.problems if limit is None else self.problems[:limit]
        lines += [f"  {p}" for p in shown]
        if len(shown) < len(self.problems):
            lines.append(f"  ... and {len(self.problems) - len(shown)} more")
        return "\n".join(lines)


def level_histogram(gray: np.ndarray) -> np.ndarray:
    """Pixel count per grey level (index = level) of an integer ``(H, W)`` mask."""
    return np.bincount(np.clip(gray, 0, None).ravel(), minlength=2)


def in_between_fraction(hist: np.ndarray) -> float:
    """Fraction of pixels in the middle half between the darkest and brightest levels (see the module doc)."""
    levels = np.flatnonzero(hist)
    lo, hi = int(levels[0]), int(levels[-1])
    span = hi - lo
    if span == 0:
        return 0.0
    first, last = int(np.floor(lo + span / 4)) + 1, int(np.ceil(hi - span / 4))
    return float(hist[first:last].sum() / hist.sum())


def check_pair(index: int, pair: Pair) -> list[Problem]:
    """Every problem of one pair (an empty list when it is fine)."""
    out: list[Problem] = []

    def add(kind: str, path: Path | str | None, detail: str, severity: str = "error") -> None:
        out.append(Problem(index, pair.id, kind, severity, str(path), detail))

    if pair.image_path is None and pair.mask_path is None:  # a split list naming an id the folder lacks
        add("missing image", pair.id, "neither an image nor a mask of this id")
        return out
    if pair.image_path is None:
        add("missing image", _sibling(pair.mask_path, "images"), f"no image for mask {pair.mask_path}")
    elif not pair.image_path.is_file():
        add("missing image", pair.image_path, "image file not found")
    if pair.mask_path is None:
        add("missing mask", _sibling(pair.image_path, "masks"), f"no mask for image {pair.image_path}")
    elif not pair.mask_path.is_file():
        add("missing mask", pair.mask_path, "mask file not found")
    if out:
        return out
    image_info = _check_image(pair.image_path, add)
    _check_mask(pair.mask_path, image_info, pair.image_path, add)
    return out


def _sibling(path: Path, folder: str) -> str:
    """Where a folder-layout counterpart was expected: ``<root>/<folder>/<stem>.*``."""
    return str(path.parent.parent / folder / f"{path.stem}.*")


def _check_image(path: Path, add) -> ImageInfo | None:
    try:
        img, info = open_image(path)
        if img.format == "JPEG":
            img.draft("RGB", (max(1, img.size[0] // 8), max(1, img.size[1] // 8)))
        load_pixels(img, path)
        return info
    except ImageReadError as err:
        add("unreadable image", path, str(err).removeprefix(f"{path}: "))
        return None


def _check_mask(path: Path, image_info: ImageInfo | None, image_path: Path, add) -> None:
    try:
        img, info = open_image(path)
        load_pixels(img, path)
        img = orient_mask(img, info, image_info or ImageInfo(info.stored_size, 1, info.mode))
        if img.mode == "L":
            hist, max_level = np.asarray(img.histogram(), dtype=np.int64), 255  # fast path: no array copy
        else:
            gray, max_level = to_gray(img)
            hist = level_histogram(gray)
    except ImageReadError as err:
        add("unreadable mask", path, str(err).removeprefix(f"{path}: "))
        return
    if image_info is not None and img.size != image_info.upright_size:
        (mw, mh), (iw, ih) = img.size, image_info.upright_size
        add("size mismatch", path, f"mask is {mw}x{mh} (WxH) but image {image_path.name} is {iw}x{ih}")
    fraction = in_between_fraction(hist)
    levels = np.flatnonzero(hist)
    if fraction > MAX_IN_BETWEEN:
        add(
            "not a two-level mask",
            path,
            f"{fraction:.0%} of pixels lie between the two extreme grey levels {levels[0]} and "
            f"{levels[-1]} (at most {MAX_IN_BETWEEN:.0%} allowed): is this a photo rather than a mask?",
        )
        return
    n_fg = int(hist[1]) if levels[-1] == 1 else int(hist[int(np.floor(max_level / 2)) + 1 :].sum())
    if n_fg == 0:
        add("empty mask", path, f"no foreground (all pixels <= {max_level / 2:g}, or an all-zero 0/1 mask)")
    elif n_fg == hist.sum():
        add("full mask", path, "foreground covers the whole image", severity="warning")


def check_pairs(
    pairs: list[Pair],
    *,
    root: str | Path = "",
    split: str | None = None,
    workers: int | None = None,
    listing_problems: list | None = None,
    notes: list[str] | None = None,
) -> CheckReport:
    """Check every pair (thread pool of ``workers``, default ``min(8, cpu_count)``) and report all problems.

    Object pairs (instance formats) are checked per image, each image decoded once; ``listing_problems``
    (:class:`~infosam.data.instances.ListingProblem`) and ``notes`` come from the listing and join the report."""
    start = time.perf_counter()
    workers = workers or min(8, os.cpu_count() or 1)
    objects = any(p.object is not None for p in pairs)
    problems = [
        Problem(-1 if lp.annotation is None else -2, "", lp.kind, "error", lp.path, lp.detail)
        for lp in listing_problems or []
    ]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        if objects:
            groups: dict[tuple, list[int]] = {}
            for i, p in enumerate(pairs):
                groups.setdefault((p.image_path, p.mask_path), []).append(i)
            results = list(pool.map(lambda g: check_objects(g, [pairs[i] for i in g]), groups.values()))
        else:
            results = list(pool.map(check_pair, range(len(pairs)), pairs))
    problems += [p for r in results for p in r]
    unit = "objects" if objects else "pairs"
    return CheckReport(
        str(root), split, len(pairs), problems, time.perf_counter() - start, list(notes or []), unit
    )


def check_objects(indices: list[int], pairs: list[Pair]) -> list[Problem]:
    """Every problem of the objects of one image (same image and annotation/label file): one line per bad
    annotation for COCO, one line per label image for a bad label image (all its objects bad)."""
    from .instances import CocoObject

    out: list[Problem] = []
    first = pairs[0]
    image_path = first.image_path
    if isinstance(first.object, CocoObject):

        def per_object(kind: str, path, detail: str) -> None:
            for i, p in zip(indices, pairs, strict=True):
                out.append(Problem(i, p.id, kind, "error", str(path), f"{p.object.where}: {detail}"))

        if not image_path.is_file():
            per_object("missing image", image_path, f"image file not found ({first.mask_path})")
            return out
        info = _check_image(image_path, lambda kind, path, detail: per_object(kind, path, detail))
        size = info.upright_size if info is not None else None
        if info is None:
            return out
        for i, p in zip(indices, pairs, strict=True):
            for kind, detail in p.object.problems(size):
                where = f"{p.object.where} (image {image_path.name})"
                out.append(Problem(i, p.id, kind, "error", str(p.mask_path), f"{where}: {detail}"))
        return out
    # Instance-label images: problems of the files are one line for all the image's objects.
    members = tuple(indices)

    def add(kind: str, path, detail: str, severity: str = "error") -> None:
        out.append(Problem(indices[0], first.id, kind, severity, str(path), detail, members))

    if image_path is None:
        add(
            "missing image",
            _sibling(first.mask_path, "images"),
            f"no image for label image {first.mask_path}",
        )
    elif not image_path.is_file():
        add("missing image", image_path, "image file not found")
    if first.mask_path is None:
        add("missing labels", _sibling(image_path, "labels"), f"no label image for image {image_path}")
    elif not first.mask_path.is_file():
        add("missing labels", first.mask_path, "label image not found")
    if out:
        return out
    info = _check_image(image_path, add)
    from .instances import read_labels

    try:
        labels = read_labels(first.mask_path, info)
    except ImageReadError as err:
        add("unreadable labels", first.mask_path, str(err).removeprefix(f"{first.mask_path}: "))
        return out
    if info is not None and labels.shape[::-1] != info.upright_size:
        (iw, ih), (lh, lw) = info.upright_size, labels.shape
        add(
            "size mismatch",
            first.mask_path,
            f"label image is {lw}x{lh} (WxH) but image {image_path.name} is {iw}x{ih}",
        )
    return out


def check_dataset(
    path: str | Path,
    *,
    split: str | None = None,
    workers: int | None = None,
    categories: list[str] | None = None,
    include_crowd: bool = False,
) -> CheckReport:
    """Open the dataset at ``path`` (any supported layout) and check every pair (or object) of ``split``."""
    ds = open_dataset(path, split=split, categories=categories, include_crowd=include_crowd)
    return check_dataset_object(ds, workers=workers)


def check_dataset_object(dataset: SegmentationDataset, *, workers: int | None = None) -> CheckReport:
    """:func:`check_pairs` of an opened dataset, with its listing problems and notes."""
    return check_pairs(
        dataset.pairs,
        root=dataset.root,
        split=dataset.split,
        workers=workers,
        listing_problems=dataset.listing_problems,
        notes=dataset.notes,
    )


def check_dataset_splits(
    path: str | Path,
    *,
    split: str | None = None,
    workers: int | None = None,
    categories: list[str] | None = None,
    include_crowd: bool = False,
) -> list[CheckReport]:
    """:func:`check_dataset` for ``split``, or, without one, for every split of a dataset that has several: each
    Conv-LoRA CSV file (columns ``image`` and ``label``) or each ``<split>/images`` + ``<split>/masks`` folder. A
    plain ``images/`` + ``masks/`` folder is one report."""
    from .formats import csv_splits, detect_format, folder_splits
    from .instances import COCO_FILE

    kw = {"workers": workers, "categories": categories, "include_crowd": include_crowd}
    if split is None:
        root = Path(path)
        fmt = detect_format(root)
        if fmt == "csv":
            splits = csv_splits(root)
        elif fmt == "coco":
            top = (root / COCO_FILE).is_file()
            splits = [] if top else sorted(d.name for d in root.iterdir() if (d / COCO_FILE).is_file())
        else:
            masks = "labels" if fmt == "labels" else "masks"
            splits = [] if (root / "images").is_dir() else folder_splits(root, masks)
        if splits:
            return [check_dataset(root, split=s, **kw) for s in splits]
    return [check_dataset(path, split=split, **kw)]


def validate_dataset(
    dataset: SegmentationDataset, *, skip_bad: bool = False, workers: int | None = None
) -> tuple[SegmentationDataset, CheckReport]:
    """Check ``dataset`` before training.

    Raises :class:`DatasetCheckError` listing every problem when there are errors, unless ``skip_bad``: then
    the pairs with errors are dropped (logged as a warning, listed in the returned report's ``bad_indices``
    and ``errors``) and the clean subset is returned.
    """
    report = check_dataset_object(dataset, workers=workers)
    if report.n_pairs == 0:
        where = f"{dataset.root}" + (f" (split {dataset.split})" if dataset.split else "")
        raise DatasetCheckError(
            f"{where}: no image/mask pairs (empty folders, or a CSV with a header and no rows)"
        )
    if report.ok:
        return dataset, report
    if not skip_bad or report.listing_errors:
        raise DatasetCheckError(
            f"dataset has errors (to train on the {report.n_valid} clean pairs, add --set data.skip_bad_pairs=true "
            f"or set data.skip_bad_pairs: true in the config):\n" + report.format(limit=50)
        )
    bad = set(report.bad_indices)
    skipped = ", ".join(sorted({p.path for p in report.errors}))
    logger.warning("skipping %d bad pair(s) of %s: %s", len(bad), dataset.root, skipped)
    return dataset.subset([i for i in range(len(dataset)) if i not in bad]), report
