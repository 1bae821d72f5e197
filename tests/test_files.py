"""The one atomic writer (infosam.files) and its file-mode policy, on its own and as the writers of the project use it."""

import ast
import errno
import os
import stat
from pathlib import Path

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


# --------------------------------------------------------------------------------------------- no plain writes

SRC = Path(__file__).resolve().parents[1] / "src" / "infosam"
WRITE_METHODS = {
    "write_text",
    "write_bytes",
    "save",
    "savez",
    "savez_compressed",
    "savetxt",
    "imwrite",
    "savefig",
}
WRITE_FUNCTIONS = {"save_file", "imwrite"}  # safetensors' save_file, imageio/cv2's imwrite imported by name
# Writes allowed in place, each with why: (file under src/infosam, the function holding the write).
ALLOWED = {
    (
        "checkpoints.py",
        "weights_writer.write",
    ): "RelationModule.save writes through weightfile.save_safetensors "
    "(atomic); the folder it writes into is itself a temporary",
    ("checkpoints.py", "write_manifest"): "fills a weights/checkpoint folder while it has its temporary name "
    "(atomic_write moves the whole folder into place)",
    (
        "weightfile.py",
        "_sort_metadata",
    ): "rewrites the header of save_safetensors's temporary, before it is moved",
    (
        "runs.py",
        "MetricsLog.append",
    ): "an append-only log, one line per step: rewriting it whole each step would "
    "cost O(steps^2); a crash loses at most the last line, which resume drops anyway",
    ("runs.py", "RunDir.log_samples"): "an append-only debug log of sample ids, one line per batch",
}


def _destination(call: ast.Call) -> list[ast.AST]:
    """The expressions a write call may name its target with: the receiver of a path method, else the arguments."""
    func = call.func
    if isinstance(func, ast.Attribute) and func.attr in ("write_text", "write_bytes"):
        return [func.value]
    return [*call.args, *(k.value for k in call.keywords)]


def _is_write(call: ast.Call) -> bool:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    if name == "open":  # open(path, "w"), path.open("w"), gzip.open(path, "wt"): a mode that writes
        modes = [*call.args[:2], *(k.value for k in call.keywords if k.arg == "mode")]
        return any(
            isinstance(m, ast.Constant) and isinstance(m.value, str) and set(m.value) & set("wax+")
            for m in modes
        )
    if isinstance(func, ast.Attribute):
        return name in WRITE_METHODS
    return name in WRITE_FUNCTIONS


def _plain_writes(path: Path) -> list[str]:
    """``file:line: call`` for each write in ``path`` that names neither a temporary (``tmp``, the name every
    atomic_write callback gives its argument) nor an in-memory buffer (a name bound to io.BytesIO/StringIO), and
    is not in :data:`ALLOWED`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    buffers = {
        t.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Call)
        and getattr(node.value.func, "attr", getattr(node.value.func, "id", "")) in ("BytesIO", "StringIO")
        for t in node.targets
        if isinstance(t, ast.Name)
    }
    relative = str(path.relative_to(SRC))
    found = []

    def visit(node: ast.AST, scope: tuple[str, ...]) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            scope = (*scope, node.name)
        if isinstance(node, ast.Call) and _is_write(node):
            names = {n.id for d in _destination(node) for n in ast.walk(d) if isinstance(n, ast.Name)}
            if not ("tmp" in names or names & buffers or (relative, ".".join(scope)) in ALLOWED):
                found.append(
                    f"{relative}:{node.lineno}: {ast.unparse(node)} (in {'.'.join(scope) or 'the module'})"
                )
        for child in ast.iter_child_nodes(node):
            visit(child, scope)

    visit(tree, ())
    return found


def test_every_file_is_written_atomically():
    """docs/architecture.md: every file is written through ``files.atomic_write*``. No module but files.py writes
    a file in place (a reader, or a crash, would otherwise see half of it)."""
    plain = [
        w
        for p in sorted(SRC.rglob("*.py"))
        if p.name != "files.py" or p.parent != SRC
        for w in _plain_writes(p)
    ]
    assert not plain, "plain writes (use infosam.files.atomic_write*, atomic_save_image):\n" + "\n".join(
        plain
    )


def test_the_write_scan_sees_a_plain_write(tmp_path, monkeypatch):
    """The scan is not vacuous: each kind of plain write is caught; a temporary's and a buffer's are not."""
    fake = SRC / "fake.py"  # never written: only its relative name is used
    monkeypatch.setattr(
        Path, "read_text", lambda self, **k: source if self == fake else Path.read_text(self, **k)
    )
    source = (
        "import io\n"
        "def f(path, image, x):\n"
        "    path.write_text('a')\n"
        "    image.save(path)\n"
        "    torch.save(x, path)\n"
        "    with open(path, 'wb') as f: pass\n"
        "    save_file(x, str(path))\n"
        "    open(path).read()\n"
        "    atomic_write(path, lambda tmp: tmp.write_text('a'))\n"
        "    buffer = io.BytesIO()\n"
        "    torch.save(x, buffer)\n"
    )
    lines = [w.split(":")[1] for w in _plain_writes(fake)]
    assert lines == ["3", "4", "5", "6", "7"]


def test_atomic_save_image_writes_what_pil_writes(tmp_path, umask_022):
    """Byte for byte the file ``image.save(path)`` gives, the format taken from the suffix; an unknown suffix is
    PIL's own error; nothing is left behind."""
    import numpy as np
    from PIL import Image

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8))
    for suffix in (".png", ".jpg", ".bmp"):
        image.save(tmp_path / f"plain{suffix}")
        files.atomic_save_image(tmp_path / f"atomic{suffix}", image)
        assert (tmp_path / f"atomic{suffix}").read_bytes() == (tmp_path / f"plain{suffix}").read_bytes(), (
            suffix
        )
        assert _mode(tmp_path / f"atomic{suffix}") == 0o644
    with pytest.raises(ValueError, match="unknown file extension: .nope"):
        files.atomic_save_image(tmp_path / "x.nope", image)
    assert not _leftovers(tmp_path) and not (tmp_path / "x.nope").exists()
