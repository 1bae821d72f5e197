"""Shared fixtures: tiny SAM models and the optional real data beside the project."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def cpu_line() -> str:
    """Name the CPU and the SIMD path torch, oneDNN and MKL take, so a log says which float path the real-model
    tolerances were met on (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``, ``MKL_ENABLE_INSTRUCTIONS`` and
    ``MKL_CBWR`` set it)."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model
            )
    except OSError:
        pass
    caps = {
        k: os.environ[k]
        for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR")
        if k in os.environ
    }
    return f"cpu: {model}; torch SIMD path: {torch.backends.cpu.get_cpu_capability()}" + (
        f"; capped by {caps}" if caps else ""
    )


def pytest_terminal_summary(terminalreporter) -> None:
    """End every run (``-q`` included) with the CPU line, so a CI log tells which SIMD path passed."""
    terminalreporter.write_line(cpu_line())


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


def shared_weights_root() -> Path:
    """Where real pretrained weights live: $INFOSAM_WEIGHTS, else ../shared/weights beside the repository."""
    return Path(os.environ.get("INFOSAM_WEIGHTS", REPO.parent / "shared" / "weights"))


@pytest.fixture(scope="session")
def mobile_sam_weights() -> Path:
    """The official MobileSAM file ``mobile_sam.pt``; the test is skipped when it is absent."""
    path = shared_weights_root() / "mobile_sam.pt"
    if not path.is_file():
        pytest.skip(f"MobileSAM weights not found at {path} (set INFOSAM_WEIGHTS to their folder)")
    return path


REAL_MODEL_SCORE_ATOL = 2e-3
"""Tolerance of a per-image score (IoU, Dice) of a real model computed by two code paths. Real-model float32
outputs differ in their last bits across SIMD paths (AVX2, AVX-512, ARM, CUDA kernels), so a few pixels whose logit
sits within ~1e-5 of the threshold flip: measured 4.7e-6 on one leaf image between an Intel AVX-512 and an AMD AVX2
machine. 2e-3 is a few boundary pixels of a small object, far below any difference a result reports."""


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
