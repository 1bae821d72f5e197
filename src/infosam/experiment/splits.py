"""The split lists of a grid's datasets: the parts a target dataset trains on, and the images of every split.

A dataset's images are listed as ``(image, label)`` paths relative to its folder and shuffled once by its
``split_seed``; folds, the test part and training sets are cut from that order (:func:`make_splits`), or given
as fixed image lists (``split_files``). The grid file format is :mod:`infosam.experiment.grid`.
"""

from __future__ import annotations

import csv
import io
from collections import Counter

import numpy as np

from .grid import DatasetEntry, GridError

ALL_REST = "trainall"
"""The part of a dataset with a ``test`` part and no ``train`` sizes: it trains on every image not in the test."""
FIXED = "fixed"
"""The part of a dataset whose split is given as image lists (``split_files``)."""
HELDOUT = "heldout"
"""The split of a dataset's held-out images (its retention set for other datasets)."""


def parts(d: DatasetEntry) -> list[str]:
    """The split parts a target dataset trains on (:mod:`infosam.experiment.grid`)."""
    if d.split_files is not None:
        return [FIXED]
    if d.folds is not None:
        return [f"fold{k}of{d.folds}" for k in range(1, d.folds + 1)]
    return [f"train{_label(v)}" for v in d.train] or [ALL_REST]


def _label(value: float) -> str:
    return str(int(value)) if value >= 1 else f"{value:g}".replace(".", "p")


def _count(value: float, n: int, where: str) -> int:
    k = int(value) if value >= 1 else int(round(value * n))
    if not 1 <= k <= n:
        raise GridError(f"{where}: {value} selects {k} of {n} images; 1..{n} are possible")
    return k


def list_images(d: DatasetEntry) -> list[tuple[str, str]]:
    """``(image, label)`` paths relative to the dataset folder, sorted by image path."""
    from ..data.formats import open_dataset

    dataset = open_dataset(d.path, split=d.source_split, image_size=16)
    pairs = []
    for p in dataset.pairs:
        if p.image_path is None or p.mask_path is None:
            raise GridError(f"{d.path}: {p.id} lacks its image or mask; run `infosam data check {d.path}`")
        pairs.append(
            (p.image_path.relative_to(d.path).as_posix(), p.mask_path.relative_to(d.path).as_posix())
        )
    return sorted(pairs)


def make_splits(d: DatasetEntry) -> dict[str, list[tuple[str, str]]]:
    """The split lists of a dataset: ``heldout`` and, for a target, ``<part>-train`` / ``<part>-test`` per part.

    The images are shuffled once by ``split_seed``; folds are contiguous slices of that order, the test part is its
    head, and training sets are prefixes of the rest (so a smaller one is a subset of a larger one).
    """
    if d.split_files is not None:
        return _fixed_splits(d)
    pairs = list_images(d)
    n = len(pairs)
    order = [pairs[i] for i in np.random.default_rng(d.split_seed).permutation(n)]
    splits: dict[str, list[tuple[str, str]]] = {}
    where = f"datasets.{d.name}"
    if d.folds is not None:
        if n < d.folds:
            raise GridError(
                f"{where}.folds: {d.folds} folds need at least {d.folds} images, {d.path} has {n}"
            )
        bounds = np.linspace(0, n, d.folds + 1).round().astype(int)
        for k in range(d.folds):
            test = order[bounds[k] : bounds[k + 1]]
            train = order[: bounds[k]] + order[bounds[k + 1] :]
            splits[f"fold{k + 1}of{d.folds}-train"] = sorted(train)
            splits[f"fold{k + 1}of{d.folds}-test"] = sorted(test)
        splits[HELDOUT] = sorted(pairs)
    elif d.test is not None:
        k = _count(d.test, n, f"{where}.test")
        test, rest = order[:k], order[k:]
        splits[HELDOUT] = sorted(test)
        if d.target and not d.train:
            if not rest:
                raise GridError(
                    f"{where}.test: the test part takes all {n} images of {d.path}: none left to train on"
                )
            splits[f"{ALL_REST}-train"] = sorted(rest)
            splits[f"{ALL_REST}-test"] = sorted(test)
        elif d.target:
            for value in d.train:
                m = _count(value, len(rest), f"{where}.train")
                part = f"train{_label(value)}"
                splits[f"{part}-train"] = sorted(rest[:m])
                splits[f"{part}-test"] = sorted(test)
    else:
        splits[HELDOUT] = sorted(pairs)
    return splits


def _fixed_splits(d: DatasetEntry) -> dict[str, list[tuple[str, str]]]:
    """The split lists of a dataset with ``split_files``: each list checked as ``infosam data check --split``
    does (every pair readable, a mask that is a mask), inside the dataset folder, no image twice, train and test
    apart."""
    from ..data.check import check_dataset
    from ..data.formats import open_dataset

    lists = {}
    for key, path in d.split_files.items():
        where = f"datasets.{d.name}.split_files.{key}"
        if not path.is_file():
            raise GridError(f"{where}: {path} not found")
        try:
            report = check_dataset(d.path, split=str(path))
            dataset_pairs = open_dataset(d.path, split=str(path), image_size=16).pairs
        except (OSError, ValueError) as err:
            raise GridError(f"{where}: {path}: {err}") from None
        errors = [p for p in report.problems if p.severity == "error"]
        if not dataset_pairs or errors:
            why = str(errors[0]) if errors else "no image/mask pairs"
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise GridError(f"{where}: {path}: {why}{more}; see `infosam data check {d.path} --split {path}`")
        out = []
        for p in dataset_pairs:
            try:
                out.append(
                    (p.image_path.relative_to(d.path).as_posix(), p.mask_path.relative_to(d.path).as_posix())
                )
            except ValueError:
                raise GridError(
                    f"{where}: {path}: {p.image_path} lies outside the dataset folder {d.path}"
                ) from None
        twice = sorted(image for image, count in Counter(i for i, _ in out).items() if count > 1)
        if twice:
            raise GridError(f"{where}: {path} lists {twice[0]} more than once")
        lists[key] = sorted(out)
    both = sorted({i for i, _ in lists["train"]} & {i for i, _ in lists["test"]})
    if both:
        raise GridError(
            f"datasets.{d.name}.split_files: {len(both)} image(s) in both the train and the test list "
            f"({both[0]}, ...): a test image must never be trained on"
        )
    return {f"{FIXED}-train": lists["train"], f"{FIXED}-test": lists["test"], HELDOUT: lists["test"]}


def split_text(pairs: list[tuple[str, str]]) -> str:
    """A split list as CSV text (``image,label`` header, one pair per line)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["image", "label"])
    writer.writerows(pairs)
    return out.getvalue()
