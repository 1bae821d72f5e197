"""The one atomic writer (infosam.files) and its file-mode policy, on its own and as the writers of the project use it."""

import errno
import os
import stat

import pytest
import torch
from safetensors.torch import save_file

from infosam import files
from infosam.files import NoSpaceError
from infosam.runs import RunDir


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith((files.TMP_PREFIX, files.OLD_PREFIX))]


def test_a_failed_write_keeps_the_old_content_and_leaves_nothing(tmp_path):
    target = tmp_path / "a.txt"
    files.atomic_write_text(target, "old")

    def half(tmp):
        tmp.write_text("half of the new")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        files.atomic_write(target, half)
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_a_full_disk_is_named_and_cleaned(tmp_path):
    def full(tmp):
        tmp.write_bytes(b"x")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(NoSpaceError, match=f"no space left on {tmp_path} while writing w.bin"):
        files.atomic_write(tmp_path / "w.bin", full)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_is_replaced_whole(tmp_path):
    target = tmp_path / "weights"

    def fill(names):
        def write(tmp):
            tmp.mkdir()
            for n in names:
                (tmp / n).write_text(n)

        return write

    files.atomic_write(target, fill(["a", "b"]))
    files.atomic_write(target, fill(["c"]))
    assert sorted(p.name for p in target.iterdir()) == ["c"]
    assert _leftovers(tmp_path) == []


def test_every_writer_gets_the_umask_mode_even_from_a_private_creator(tmp_path, umask_022):
    def private(tmp):  # what tempfile.mkstemp would make
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"x")
        os.close(fd)

    assert _mode(files.atomic_write(tmp_path / "p", private)) == 0o644
    os.umask(0o077)
    assert (
        _mode(files.atomic_write_text(tmp_path / "q", "x")) == 0o600
    )  # the user's umask decides, not the writer
    assert files.file_mode() == 0o600 and files.file_mode(folder=True) == 0o700


def test_weights_cache_and_export_files_share_one_mode(tmp_path, umask_022, tiny_sam):
    from infosam.cache import TeacherCache, content_keys, teacher_fingerprint
    from infosam.peft import apply_peft, save_peft
    from infosam.sam.specs import get_spec

    model = tiny_sam()
    spec = apply_peft(model, ["decoder"])
    save_peft(tmp_path / "peft.safetensors", model, spec)
    fp = teacher_fingerprint(get_spec("tiny"), None, {"family": "sam", "size": 64}, precision="no")
    cache = TeacherCache(tmp_path / "cache", fp)
    images = torch.rand(1, 3, 64, 64)
    cache.put(content_keys(images), torch.rand(1, 8, 4, 4))
    written = [tmp_path / "peft.safetensors", *sorted((tmp_path / "cache").iterdir())]
    assert {p.name: _mode(p) for p in written} == {p.name: 0o644 for p in written}


def test_temporary_names_are_unique_and_map_back(tmp_path):
    seen = []

    def record(tmp):
        seen.append(tmp.name)
        tmp.write_text("x")

    files.atomic_write(tmp_path / "step-000004", record)
    files.atomic_write(tmp_path / "step-000004", record)
    assert seen[0] != seen[1]  # two writers of one path never share a temporary
    for name in seen:
        assert files.is_temporary(name)
        assert files.final_name(name) == "step-000004"
    assert files.final_name(".tmp-step-000004-123") == "step-000004"  # the older -PID names
    assert files.final_name("step-000004") == "step-000004"
    assert not files.is_temporary(".tmp-other-tool")  # someone else's dot-file is not ours


def test_remove_temporaries_moves_an_orphaned_old_folder_back(tmp_path):
    run = RunDir(tmp_path / "run")
    (run.path / "weights").mkdir(parents=True)
    aside = run.path / "weights" / ".old-final-77-0123abcd"  # a replace killed between its two renames
    aside.mkdir()
    (aside / "peft.safetensors").write_text("kept")
    (run.path / ".tmp-config.yaml-77-89abcdef").write_text("half")
    removed = run.remove_temporaries()
    assert (run.path / "weights" / "final" / "peft.safetensors").read_text() == "kept"
    assert [p.name for p in removed] == [".tmp-config.yaml-77-89abcdef"]


def test_create_exclusive_never_replaces(tmp_path):
    path = tmp_path / "manifest.json"
    assert files.create_exclusive(path, "first")
    assert not files.create_exclusive(path, "second")
    assert path.read_text() == "first"
    assert _leftovers(tmp_path) == []


def test_safetensors_written_through_the_writer_read_back(tmp_path):
    path = files.atomic_write(
        tmp_path / "t.safetensors", lambda tmp: save_file({"w": torch.ones(3)}, str(tmp))
    )
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(path))["w"], torch.ones(3))
