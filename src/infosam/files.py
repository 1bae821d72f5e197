"""The project's one way to write a file or folder so that no reader ever sees half of it, and its file modes.

Every file or folder is first written under a temporary name in the same folder (``.tmp-NAME-PID-TOKEN``: the pid
and a random token keep two writers of the same path, two grid shards filling one cache say, apart) and then
moved into place with ``os.replace``, which is atomic on one filesystem. A write that fails, including a full
disk, leaves nothing behind; a killed writer leaves only a ``.tmp-`` name, which :func:`is_temporary` recognises
and the owners of a folder clean away (:meth:`infosam.runs.RunDir.remove_temporaries`).

Modes: what the project writes gets the permissions the user's umask gives any new file (``0o666 & ~umask``,
folders ``0o777 & ~umask``), whatever the writing library would have chosen (``tempfile.mkstemp`` makes 0600);
weights, caches, records and exports are ordinary files, readable where the user's other files are.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from .errors import RunError

TMP_PREFIX = ".tmp-"
OLD_PREFIX = ".old-"
_SUFFIX = re.compile(r"-\d+(?:-[0-9a-f]{8})?$")  # -PID-TOKEN (older versions wrote -PID only)

__all__ = [
    "TMP_PREFIX",
    "NoSpaceError",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_save_image",
    "atomic_write_text",
    "create_exclusive",
    "file_mode",
    "final_name",
    "is_temporary",
    "remove",
    "sha256_file",
    "write_json",
]


class NoSpaceError(RunError):
    """The disk filled up during a write; the message names the folder (temporaries are already removed)."""


def file_mode(*, folder: bool = False) -> int:
    """The permissions every file (or folder) the project writes gets: the user's umask applied to 0666 (0777)."""
    umask = os.umask(0)  # the only way to read it; set back at once
    os.umask(umask)
    return (0o777 if folder else 0o666) & ~umask


def _temporary(path: Path, prefix: str = TMP_PREFIX) -> Path:
    return path.with_name(f"{prefix}{path.name}-{os.getpid()}-{secrets.token_hex(4)}")


def final_name(name: str | Path) -> str:
    """The name a temporary (``.tmp-NAME-PID-TOKEN`` or ``.old-...``) stands for: ``NAME``; other names unchanged."""
    name = Path(name).name
    for prefix in (TMP_PREFIX, OLD_PREFIX):
        if name.startswith(prefix):
            return _SUFFIX.sub("", name[len(prefix) :])
    return name


def is_temporary(name: str | Path) -> bool:
    """Whether ``name`` is a writer's temporary (or a folder moved aside while being replaced)."""
    name = Path(name).name
    return name.startswith((TMP_PREFIX, OLD_PREFIX)) and bool(_SUFFIX.search(name))


def remove(path: Path) -> None:
    """Remove a file, link or folder if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def no_space(err: BaseException) -> bool:
    """Whether ``err`` is a full disk (an OSError, or safetensors' wrapped 'os error 28')."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    return "No space left on device" in text or "os error 28" in text


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file or folder beside ``path``, then move it to ``path`` at once.

    ``write`` creates ``tmp`` itself (a file, or a folder it fills). An existing file at ``path`` is replaced in one
    step; an existing folder is moved aside first and removed after. Raises :class:`NoSpaceError` naming the folder
    when the disk fills up; whatever fails, the temporary is removed and ``path`` keeps its old content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        write(tmp)
        if tmp.is_file():
            os.chmod(tmp, file_mode())
    except BaseException as err:
        remove(tmp)
        if no_space(err):
            raise NoSpaceError(f"no space left on {path.parent} while writing {path.name}") from err
        raise
    if (
        path.is_dir() and not path.is_symlink()
    ):  # a folder holding files cannot be renamed over: move it aside
        old = _temporary(path, OLD_PREFIX)
        os.replace(path, old)
        os.replace(tmp, path)
        remove(old)
    else:
        os.replace(tmp, path)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_save_image(path: str | Path, image, **params) -> Path:
    """Write a PIL ``image`` to ``path`` atomically, in the format its suffix names (``.png``, ``.jpg``, ...), as
    ``image.save(path, **params)`` would (the temporary's name has no image suffix, so the format is given)."""
    from PIL import Image

    path = Path(path)
    ext = path.suffix.lower()
    image_format = Image.registered_extensions().get(ext)
    if image_format is None:
        raise ValueError(f"unknown file extension: {ext}")  # PIL's own words for it
    return atomic_write(path, lambda tmp: image.save(tmp, format=image_format, **params))


def write_json(path: str | Path, data: object, *, sort_keys: bool = False) -> Path:
    """Write ``data`` as indented JSON (a final newline), atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=sort_keys) + "\n")


def create_exclusive(path: str | Path, text: str) -> bool:
    """Create ``path`` holding ``text`` unless it exists; True when this call created it.

    The content appears whole (written under a temporary name, then hard-linked into place, which fails when
    ``path`` exists). On a filesystem without hard links it falls back to a rename, which may replace a file another
    process created at the same moment: use it for content every racing writer agrees on (a cache manifest).
    """
    path = Path(path)
    tmp = _temporary(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, file_mode())
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:
            if path.exists():
                return False
            os.replace(tmp, path)
            return True
    finally:
        tmp.unlink(missing_ok=True)


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file's content, read afresh (what a manifest or checksum list is verified against)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
