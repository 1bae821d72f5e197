"""``infosam cache info|clear``: shows the teacher behind a cache, clears only cache files, refuses other folders."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from infosam.cache import TeacherCache, content_keys, teacher_fingerprint
from infosam.cli import main
from infosam.sam.specs import get_spec
from infosam.sam.transforms import MetaSamTransform


def test_info_and_clear(tmp_path, capsys):
    fingerprint = teacher_fingerprint(
        get_spec("tiny"), None, MetaSamTransform(64).fingerprint(), precision="bf16"
    )
    cache = TeacherCache(tmp_path, fingerprint)
    cache.put(content_keys(torch.randn(2, 3, 64, 64)), torch.zeros(2, 32, 8, 8))
    (tmp_path / "keep.txt").write_text("mine")
    save_file({"w": torch.ones(1)}, str(tmp_path / "my_trained_weights.safetensors"))
    assert main(["cache", "info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "entries: 2" in out and "tiny at 64 px, computed in bfloat16" in out and "float16" in out
    assert main(["cache", "clear", str(tmp_path)]) == 0
    assert "removed 3 cache files" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt", "my_trained_weights.safetensors"]
    assert main(["cache", "info", str(tmp_path)]) == 2
    assert "not an infosam cache" in capsys.readouterr().err
    assert main(["cache", "clear", str(tmp_path)]) == 2
    assert "not an infosam cache" in capsys.readouterr().err
    assert len(list(tmp_path.iterdir())) == 2
