"""The synthetic two-domain generator: deterministic, well-formed folder datasets, a real domain shift."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from infosam.data.synthetic import DOMAINS, synthetic_pair, write_synthetic_dataset


@pytest.mark.parametrize("domain", DOMAINS)
def test_pair_shapes_and_values(domain):
    image, mask = synthetic_pair(3, domain=domain, size=(48, 80), seed=1)
    assert image.shape == (48, 80, 3) and image.dtype == np.uint8
    assert mask.shape == (48, 80) and set(np.unique(mask)) <= {0, 1}
    assert 0.01 < mask.mean() < 0.5  # one visible object, never the whole image


@pytest.mark.parametrize("domain", DOMAINS)
def test_pairs_are_deterministic_and_differ_by_index(domain):
    a = synthetic_pair(5, domain=domain, seed=7)
    b = synthetic_pair(5, domain=domain, seed=7)
    c = synthetic_pair(6, domain=domain, seed=7)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_domains_differ_in_contrast():
    """Source objects stand out strongly from the background; target objects much less."""

    def contrast(domain):
        values = []
        for i in range(10):
            image, mask = synthetic_pair(i, domain=domain)
            grey = image.astype(float).mean(-1)
            values.append(abs(grey[mask == 1].mean() - grey[mask == 0].mean()))
        return np.mean(values)

    assert contrast("source") > 2.5 * contrast("target")


def test_write_folder_dataset(tmp_path):
    root = write_synthetic_dataset(tmp_path / "set", 4, domain="target", size=32, seed=2, start=10)
    stems = sorted(p.stem for p in (root / "images").glob("*.png"))
    assert stems == [f"target_{i:05d}" for i in range(10, 14)]
    assert stems == sorted(p.stem for p in (root / "masks").glob("*.png"))
    mask = np.asarray(Image.open(root / "masks" / f"{stems[0]}.png"))
    assert mask.ndim == 2 and set(np.unique(mask)) <= {0, 255}
    image = np.asarray(Image.open(root / "images" / f"{stems[0]}.png"))
    assert image.shape == (32, 32, 3)
    expected, _ = synthetic_pair(10, domain="target", size=32, seed=2)
    assert np.array_equal(image, expected)


def test_write_refuses_non_empty_folder_and_bad_arguments(tmp_path):
    write_synthetic_dataset(tmp_path, 1)
    with pytest.raises(FileExistsError, match="images"):
        write_synthetic_dataset(tmp_path, 1)
    with pytest.raises(ValueError, match="source, target"):
        synthetic_pair(0, domain="other")
    with pytest.raises(ValueError, match=">= 1"):
        write_synthetic_dataset(tmp_path / "x", 0)
