"""Preprocessed-input cache: samples read back equal the decoded ones bitwise, a warm store decodes nothing, a file
replaced in place is a miss (never stale), and a store made for another transform is refused."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import infosam.data.formats as formats_module
from infosam.cache import CacheMismatchError
from infosam.data.formats import open_dataset
from infosam.data.input_cache import CachedInputDataset, open_input_store
from infosam.data.synthetic import write_synthetic_dataset
from infosam.sam.specs import get_spec
from infosam.sam.transforms import get_transform


def _assert_same_sample(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == b[key].dtype and torch.equal(value, b[key]), key
        else:
            assert value == b[key], key


@pytest.fixture
def count_decodes(monkeypatch):
    calls = []
    original = formats_module.read_image

    def counting(path):
        calls.append(path)
        return original(path)

    monkeypatch.setattr(formats_module, "read_image", counting)
    return calls


@pytest.mark.parametrize("model", ["tiny", "tiny_tinyvit"])
def test_cached_samples_equal_decoded_ones_and_a_warm_store_decodes_nothing(tmp_path, count_decodes, model):
    root = write_synthetic_dataset(tmp_path / "data", 3, size=(48, 80))
    plain = open_dataset(root, transform=get_transform(get_spec(model)))
    store = open_input_store(tmp_path / "inputs", plain)
    cold = CachedInputDataset(plain, store)
    reference = [plain.sample(i, with_original_mask=True) for i in range(3)]
    count_decodes.clear()
    first = [cold.sample(i, with_original_mask=True) for i in range(3)]
    assert cold.decoded == 3 and len(count_decodes) == 3
    count_decodes.clear()
    warm = CachedInputDataset(plain, open_input_store(tmp_path / "inputs", plain))
    again = [warm[i] for i in range(3)] + [warm.subset([2, 0]).sample(0, with_original_mask=True)]
    assert warm.decoded == 0 and count_decodes == []
    for ref, got in zip(reference, first, strict=True):
        _assert_same_sample(ref, got)
    for ref, got in zip(reference, again[:3], strict=True):
        ref = {k: v for k, v in ref.items() if k != "original_mask"}
        _assert_same_sample(ref, got)
    _assert_same_sample(reference[2], again[3])


def test_a_file_replaced_in_place_is_a_miss_not_stale(tmp_path):
    root = write_synthetic_dataset(tmp_path / "data", 2)
    plain = open_dataset(root, transform=get_transform(get_spec("tiny")))
    cached = CachedInputDataset(plain, open_input_store(tmp_path / "inputs", plain))
    before = cached[0]["image"]
    image_path = plain.pairs[0].image_path
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(image_path)  # same name, new content
    shutil.copystat(
        plain.pairs[1].image_path, image_path
    )  # even a copied mtime does not hide it: size differs
    fresh = CachedInputDataset(plain, open_input_store(tmp_path / "inputs", plain))
    after = fresh[0]["image"]
    assert fresh.decoded == 1 and not torch.equal(before, after)
    assert torch.equal(after, plain[0]["image"])


def test_a_store_for_another_transform_is_refused(tmp_path):
    root = write_synthetic_dataset(tmp_path / "data", 1)
    small = open_dataset(root, transform=get_transform(get_spec("tiny")))
    open_input_store(tmp_path / "inputs", small)
    other = open_dataset(root, transform=get_transform(get_spec("tiny", image_size=32)))
    with pytest.raises(CacheMismatchError, match="image_size"):
        open_input_store(tmp_path / "inputs", other)
    with pytest.raises(ValueError, match="another transform"):
        CachedInputDataset(other, open_input_store(tmp_path / "inputs", small))


def test_real_leaf_samples_round_trip(tmp_path, leaf_dir):
    plain = open_dataset(leaf_dir, transform=get_transform(get_spec("litemedsam")))
    cached = CachedInputDataset(plain.subset([0, 1]), open_input_store(tmp_path / "inputs", plain))
    for i in range(2):
        cached.sample(i, with_original_mask=True)
    for i in range(2):
        _assert_same_sample(
            plain.sample(i, with_original_mask=True), cached.sample(i, with_original_mask=True)
        )
    assert cached.decoded == 2
