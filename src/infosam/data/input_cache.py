"""Preprocessed-input cache: decode and resize each image/mask pair once, then read the model inputs back.

Decoding a 1920 x 1072 JPEG and resizing it costs tens of milliseconds per image and epoch, for a result that depends
only on the two files and the transform. :class:`CachedInputDataset` is a :class:`SegmentationDataset` whose samples
come from a :class:`~infosam.cache.TensorStore`:

- key: sha256 over the sha256 of the image file's bytes and of the mask file's bytes (a file replaced in place, or
  another dataset with the same names, is another key);
- fingerprint: the transform's own :meth:`~infosam.sam.transforms.SamTransform.fingerprint` and this module's
  reader version (EXIF orientation, binarisation), so another model size or recipe is refused, never served;
- content: ``image`` exactly as the transform made it (float32, so the teacher cache's keys, which hash the
  preprocessed tensor, are unchanged), ``mask`` (uint8 {0, 1}, returned as float32), the original mask (bool, for
  metrics at the original resolution), ``original_size`` and ``input_size``.

A sample read from the store equals the one decoded from the files bitwise (tested).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import Tensor

from ..cache import TensorStore, file_sha256
from .formats import SegmentationDataset

INPUT_KIND = "preprocessed-inputs"
READER_VERSION = 1
"""Bumped whenever decoding (orientation, colour conversion, mask binarisation) changes what a file decodes to."""


def input_fingerprint(dataset: SegmentationDataset) -> dict:
    """What a cached sample depends on besides the two files: the transform and the reader."""
    return {"transform": dataset.transform.fingerprint(), "reader_version": READER_VERSION}


def open_input_store(directory: str | Path, dataset: SegmentationDataset) -> TensorStore:
    """The input store in ``directory`` for ``dataset``'s transform (refused if made for another one)."""
    return TensorStore(Path(directory).expanduser(), INPUT_KIND, input_fingerprint(dataset), torch.float32)


class CachedInputDataset(SegmentationDataset):
    """``dataset``'s samples (same pairs, transform and fields), decoded once and then read from ``store``.

    Args:
        dataset: the dataset to cache.
        store: from :func:`open_input_store` for this dataset's transform.
    """

    def __init__(self, dataset: SegmentationDataset, store: TensorStore) -> None:
        super().__init__(dataset.root, dataset.pairs, split=dataset.split, transform=dataset.transform)
        if (
            store.manifest["fingerprint"] != input_fingerprint(dataset)
            or store.manifest["kind"] != INPUT_KIND
        ):
            raise ValueError(f"input cache {store.directory} was opened for another transform or kind")
        self.store = store
        self.decoded = 0
        """Samples decoded from their files by this object (a warm store leaves it at 0 in this process)."""

    def subset(self, indices: list[int]) -> CachedInputDataset:
        """The same cached dataset restricted to ``indices`` (in that order)."""
        return CachedInputDataset(super().subset(indices), self.store)

    def key(self, index: int) -> str:
        """Content key of pair ``index``: sha256 of (sha256 of the image file, sha256 of the mask file)."""
        pair = self.pairs[index]
        if pair.image_path is None or pair.mask_path is None:
            self.read_pair(index)  # raises the dataset's own one-line error for a missing counterpart
        parts = f"{file_sha256(pair.image_path)}:{file_sha256(pair.mask_path)}"
        if pair.object is not None:  # one object of a COCO file or label image: the file is shared
            parts += f":{type(pair.object).__name__}:{pair.object.object_id}"
        return hashlib.sha256(parts.encode()).hexdigest()

    def sample(self, index: int, *, with_original_mask: bool = False) -> dict:
        """``ds[index]`` (see :class:`SegmentationDataset`), from the store when it holds the pair."""
        key = self.key(index)
        found = self.store.get_tensors([key])
        if found is None:
            decoded = super().sample(index, with_original_mask=True)
            self.decoded += 1
            self.store.put_tensors(
                [key],
                {
                    "image": decoded["image"][None],
                    "mask": decoded["mask"].to(torch.uint8)[None],
                    "original_mask": decoded["original_mask"][None],
                    "original_size": decoded["original_size"][None],
                    "input_size": decoded["input_size"][None],
                },
            )
            found = self.store.get_tensors([key])
            if found is None:
                raise RuntimeError(
                    f"input cache {self.store.directory}: an entry just written cannot be read"
                )
        row = {name: t[0] for name, t in found.items()}
        pair = self.pairs[index]
        out: dict[str, Tensor | str | int] = (
            {"original_mask": row["original_mask"]} if with_original_mask else {}
        )
        if pair.object is not None:
            out.update(image_id=pair.object.image_id, object_id=pair.object.object_id)
        out.update(
            {
                "image": row["image"],
                "mask": row["mask"].float(),
                "id": pair.id,
                "original_size": row["original_size"],
                "input_size": row["input_size"],
                "image_path": str(pair.image_path),
                "mask_path": str(pair.mask_path),
            }
        )
        return out
