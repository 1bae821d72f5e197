"""Shared fixtures: tiny SAM models and the optional real data beside the project."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    """Where the real image/mask sets live: $INFOSAM_DATA, else ../shared/data beside the repository."""
    return Path(os.environ.get("INFOSAM_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def kvasir_dir() -> Path:
    """The real Kvasir-SEG folder (images/ + masks/); the test is skipped when it is absent."""
    path = shared_data_root() / "kvasir-seg"
    if not (path / "images").is_dir() or not (path / "masks").is_dir():
        pytest.skip(f"real data not found at {path} (set INFOSAM_DATA)")
    return path


@pytest.fixture
def leaf_dir() -> Path:
    """The real leaf-disease folder (images/ + masks/); the test is skipped when it is absent."""
    path = shared_data_root() / "leaf-disease"
    if not (path / "images").is_dir() or not (path / "masks").is_dir():
        pytest.skip(f"real data not found at {path} (set INFOSAM_DATA)")
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread; on a shared, loaded CPU more threads mostly wait on each other. A
    module asks for it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_sam():
    """Factory for a randomly initialised tiny SAM (same builder as ViT-B/L/H), seeded for reproducibility."""
    from infosam.sam.build import build_sam

    def make(seed: int = 0, **overrides):
        torch.manual_seed(seed)
        return build_sam("tiny", **overrides)

    return make
