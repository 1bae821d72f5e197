"""What a weights file holds, told by its first bytes and never by its name.

``torch.load`` hands any path ending in ``.safetensors`` to safetensors, and safetensors reads any file as its own
format, so a ``torch.save`` file named ``relation.safetensors`` (or a safetensors file named ``.pth``) would fail
with a raw reader error. Everything in the package that reads weights goes through here: :func:`torch_load`
reads a torch file whatever its name, :func:`require_safetensors` refuses a file that is not safetensors with one
line naming the file and what it holds.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

TORCH_ZIP = b"PK\x03\x04"  # torch.save's zip format (PyTorch >= 1.6)
TORCH_PICKLE = b"\x80\x02"  # torch.save's legacy pickle format (protocol 2)

# safetensors: an 8-byte little-endian header length, then that many bytes of JSON.
_MAX_HEADER = 100_000_000


def kind(path: str | Path) -> str | None:
    """``"safetensors"``, ``"torch"`` or ``None`` (neither), from the file's first bytes."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(9)
        # safetensors first: its 8-byte length can start with 0x80 (a 128-byte header), a pickle's first byte.
        if len(head) == 9 and head[8:9] == b"{":
            (n,) = struct.unpack("<Q", head[:8])
            if n <= min(_MAX_HEADER, path.stat().st_size - 8):
                f.seek(8)
                try:
                    json.loads(f.read(n))
                    return "safetensors"
                except (ValueError, UnicodeDecodeError):
                    pass
    return "torch" if head.startswith((TORCH_ZIP, TORCH_PICKLE)) else None


def describe(path: str | Path) -> str:
    """A few words on what the file holds, e.g. ``"a torch.save file (zip)"`` or ``"a PNG image"``."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(16)
    found = kind(path)
    if found == "safetensors":
        return "a safetensors file"
    if head.startswith(TORCH_ZIP):
        return "a torch.save file (zip)"
    if head.startswith(TORCH_PICKLE):
        return "a torch.save file (legacy pickle)"
    if not head:
        return "nothing (0 bytes)"
    if head.startswith(b"\x89PNG"):
        return "a PNG image"
    if head.startswith(b"\xff\xd8\xff"):
        return "a JPEG image"
    if head.lstrip().startswith(b"<"):
        return "an HTML/XML page (a failed download?)"
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return f"unknown data starting with {head[:4]!r}"


def require_safetensors(path: str | Path, what: str, *, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` with one line (``"<path> is not <what>: it holds <...>"``) unless ``path`` is safetensors."""
    if kind(path) != "safetensors":
        raise error(f"{path} is not {what}: it holds {describe(path)}, not a safetensors file")


def torch_load(path: str | Path, *, mmap: bool = False, **kwargs):
    """``torch.load(path, ...)`` that reads a torch file even when its name ends in ``.safetensors`` (through a
    file object, where torch cannot dispatch on the name; ``mmap`` needs a path and is dropped there)."""
    path = Path(path)
    if not path.name.endswith(".safetensors"):
        return torch.load(path, mmap=mmap, **kwargs)
    with open(path, "rb") as f:
        return torch.load(f, **kwargs)


def save_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write ``tensors`` and ``metadata`` as a safetensors file, atomically, byte for byte the same on every save
    of the same contents.

    safetensors keeps the metadata in a Rust hash map, so its keys come out in a different order from one save to
    the next (two saves of the same module gave two files; their digests, in a checkpoint's manifest, differed).
    The header is rewritten here with the metadata keys sorted: the same JSON, the same length, the same tensors
    (their order and offsets are safetensors' own, already deterministic)."""
    from safetensors.torch import save_file

    from .files import atomic_write

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp), metadata=metadata)
        _sort_metadata(tmp)

    return atomic_write(path, write)


def _sort_metadata(path: Path) -> None:
    """Rewrite the header of the safetensors file ``path`` in place with ``__metadata__``'s keys sorted."""
    with open(path, "r+b") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        raw = f.read(n)
        header = json.loads(raw)
        if len(header.get("__metadata__") or {}) < 2:
            return
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        header = {"__metadata__": header.pop("__metadata__"), **header}  # where safetensors puts it: first
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) > n or json.loads(text) != json.loads(
            raw
        ):  # pragma: no cover - never for safetensors' JSON
            return  # keep safetensors' own (valid) header rather than risk the file
        f.seek(8)
        f.write(text.ljust(n, b" "))  # safetensors pads its header with spaces
