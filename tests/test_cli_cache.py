"""``infosam cache info|clear``: shows the teacher behind a cache, clears only cache files, refuses other folders."""

from __future__ import annotations

import torch

from infosam.cache import TeacherCache, teacher_fingerprint
from infosam.cli import main
from infosam.sam.specs import get_spec


def test_info_and_clear(tmp_path, capsys):
    cache = TeacherCache(tmp_path, teacher_fingerprint(get_spec("tiny"), None, {"image_size": 64}))
    cache.put(["a", "b"], torch.zeros(2, 32, 8, 8))
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["cache", "info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "images: 2" in out and "tiny at 64 px" in out and "float16" in out
    assert main(["cache", "clear", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    assert main(["cache", "info", str(tmp_path)]) == 2
    assert "not a teacher cache" in capsys.readouterr().err
