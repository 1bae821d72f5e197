"""Checking every image/mask pair of a dataset at once, before anything trains on it.

Problems found (all reported together, each naming its files):

* errors: ``missing image``, ``missing mask``, ``unreadable image`` (not an image, truncated, corrupt),
  ``unreadable mask``, ``size mismatch`` (mask size differs from the image's upright size, see
  :mod:`infosam.data.reading` for the orientation rule), ``empty mask`` (no foreground after binarisation),
  ``not a two-level mask``.
* warnings: ``full mask`` (foreground everywhere).

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

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def bad_indices(self) -> list[int]:
        """Indices (into the dataset's pairs) of pairs with at least one error."""
        return sorted({p.index for p in self.errors})

    @property
    def n_valid(self) -> int:
        return self.n_pairs - len(self.bad_indices)

    @property
    def ok(self) -> bool:
        """No error and at least one pair (a header-only CSV or empty folders are an error too)."""
        return not self.errors and self.n_pairs > 0

    def counts(self) -> Counter:
        """Number of problems per ``(severity, kind)``."""
        return Counter((p.severity, p.kind) for p in self.problems)

    def format(self, *, limit: int | None = None) -> str:
        """Human-readable report: a summary line, counts per kind, then each problem (at most ``limit``)."""
        where = self.root + (f" (split {self.split})" if self.split else "")
        lines = [
            f"{where}: {self.n_pairs} pairs checked in {self.seconds:.1f} s: {self.n_valid} valid, "
            f"{len(self.bad_indices)} with errors, {len(self.warnings)} warning(s)"
        ]
        if self.n_pairs == 0:
            lines.append("  error: no image/mask pairs (empty folders, or a CSV with a header and no rows)")
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
    pairs: list[Pair], *, root: str | Path = "", split: str | None = None, workers: int | None = None
) -> CheckReport:
    """Check every pair (thread pool of ``workers``, default ``min(8, cpu_count)``) and report all problems."""
    start = time.perf_counter()
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(check_pair, range(len(pairs)), pairs))
    problems = [p for r in results for p in r]
    return CheckReport(str(root), split, len(pairs), problems, time.perf_counter() - start)


def check_dataset(path: str | Path, *, split: str | None = None, workers: int | None = None) -> CheckReport:
    """Open the dataset at ``path`` (any supported layout) and check every pair of ``split``."""
    ds = open_dataset(path, split=split)
    return check_pairs(ds.pairs, root=ds.root, split=split, workers=workers)


def check_dataset_splits(
    path: str | Path, *, split: str | None = None, workers: int | None = None
) -> list[CheckReport]:
    """:func:`check_dataset` for ``split``, or, without one, for every split of a dataset that has several: each
    Conv-LoRA CSV file (columns ``image`` and ``label``) or each ``<split>/images`` + ``<split>/masks`` folder. A
    plain ``images/`` + ``masks/`` folder is one report."""
    from .formats import csv_splits, detect_format, folder_splits

    if split is None:
        root = Path(path)
        fmt = detect_format(root)
        splits = (
            csv_splits(root) if fmt == "csv" else ([] if (root / "images").is_dir() else folder_splits(root))
        )
        if splits:
            return [check_dataset(root, split=s, workers=workers) for s in splits]
    return [check_dataset(path, split=split, workers=workers)]


def validate_dataset(
    dataset: SegmentationDataset, *, skip_bad: bool = False, workers: int | None = None
) -> tuple[SegmentationDataset, CheckReport]:
    """Check ``dataset`` before training.

    Raises :class:`DatasetCheckError` listing every problem when there are errors, unless ``skip_bad``: then
    the pairs with errors are dropped (logged as a warning, listed in the returned report's ``bad_indices``
    and ``errors``) and the clean subset is returned.
    """
    report = check_pairs(dataset.pairs, root=dataset.root, split=dataset.split, workers=workers)
    if report.n_pairs == 0:
        where = f"{dataset.root}" + (f" (split {dataset.split})" if dataset.split else "")
        raise DatasetCheckError(
            f"{where}: no image/mask pairs (empty folders, or a CSV with a header and no rows)"
        )
    if report.ok:
        return dataset, report
    if not skip_bad:
        raise DatasetCheckError(
            f"dataset has errors (to train on the {report.n_valid} clean pairs, add --set data.skip_bad_pairs=true "
            f"or set data.skip_bad_pairs: true in the config):\n" + report.format(limit=50)
        )
    bad = set(report.bad_indices)
    skipped = ", ".join(sorted({p.path for p in report.errors}))
    logger.warning("skipping %d bad pair(s) of %s: %s", len(bad), dataset.root, skipped)
    return dataset.subset([i for i in range(len(dataset)) if i not in bad]), report
